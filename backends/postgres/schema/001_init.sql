-- kv_meta: one row. rev is the current revision, compact_rev the compact
-- revision (-1: never compacted, as in etcd). Writers lock this row
-- (SELECT ... FOR UPDATE): it is the global write lock.
CREATE TABLE kv_meta (
	id          integer PRIMARY KEY CHECK (id = 1),
	rev         bigint  NOT NULL,
	compact_rev bigint  NOT NULL
);
INSERT INTO kv_meta (id, rev, compact_rev) VALUES (1, 1, -1);

-- kv_log: every change of every key. A key changes at most twice in one
-- revision (a from-key delete and a put of it in the same txn, which etcd allows).
CREATE TABLE kv_log (
	rev        bigint  NOT NULL,
	sub        bigint  NOT NULL,
	key        bytea   NOT NULL,
	deleted    boolean NOT NULL,
	create_rev bigint  NOT NULL,
	prev_rev   bigint  NOT NULL,
	version    bigint  NOT NULL,
	lease      bigint  NOT NULL,
	value      bytea   NOT NULL,
	PRIMARY KEY (rev, sub)
);
CREATE UNIQUE INDEX kv_log_key_rev ON kv_log (key, rev, sub);

-- kv_current: the live version of each key, so latest reads never scan history.
CREATE TABLE kv_current (
	key        bytea  PRIMARY KEY,
	create_rev bigint NOT NULL,
	mod_rev    bigint NOT NULL,
	version    bigint NOT NULL,
	lease      bigint NOT NULL,
	value      bytea  NOT NULL
);
CREATE INDEX kv_current_lease ON kv_current (lease) WHERE lease <> 0;

-- kv_lease: expiry is on the database clock, so every instance agrees.
CREATE TABLE kv_lease (
	id     bigint      PRIMARY KEY,
	ttl    bigint      NOT NULL,
	expiry timestamptz NOT NULL
);
CREATE INDEX kv_lease_expiry ON kv_lease (expiry);

-- kv_member: live kvsql instances, for Cluster.MemberList.
CREATE TABLE kv_member (
	id          bigint      PRIMARY KEY,
	name        text        NOT NULL,
	client_urls text        NOT NULL,
	heartbeat   timestamptz NOT NULL
);
