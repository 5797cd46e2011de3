-- kv_meta: one row. rev is the current revision, compact_rev the compact
-- revision (-1: never compacted, as in etcd). Writers lock this row
-- (SELECT ... FOR UPDATE): it is the global write lock.
CREATE TABLE kv_meta (
	id          INT    NOT NULL PRIMARY KEY,
	rev         BIGINT NOT NULL,
	compact_rev BIGINT NOT NULL
) ENGINE=InnoDB;
INSERT INTO kv_meta (id, rev, compact_rev) VALUES (1, 1, -1);

-- kv_log: every change of every key. Keys are VARBINARY, compared bytewise.
-- A key changes at most twice in one revision (a from-key delete and a put of
-- it in the same txn, which etcd allows).
CREATE TABLE kv_log (
	rev        BIGINT          NOT NULL,
	sub        BIGINT          NOT NULL,
	k          VARBINARY(2048) NOT NULL,
	deleted    TINYINT(1)      NOT NULL,
	create_rev BIGINT          NOT NULL,
	prev_rev   BIGINT          NOT NULL,
	version    BIGINT          NOT NULL,
	lease      BIGINT          NOT NULL,
	v          LONGBLOB        NOT NULL,
	PRIMARY KEY (rev, sub),
	UNIQUE KEY kv_log_key_rev (k, rev, sub)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;

-- kv_current: the live version of each key.
CREATE TABLE kv_current (
	k          VARBINARY(2048) NOT NULL PRIMARY KEY,
	create_rev BIGINT          NOT NULL,
	mod_rev    BIGINT          NOT NULL,
	version    BIGINT          NOT NULL,
	lease      BIGINT          NOT NULL,
	v          LONGBLOB        NOT NULL,
	KEY kv_current_lease (lease)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;

-- kv_lease: expiry_ms is Unix milliseconds on the database clock.
CREATE TABLE kv_lease (
	id        BIGINT NOT NULL PRIMARY KEY,
	ttl       BIGINT NOT NULL,
	expiry_ms BIGINT NOT NULL,
	KEY kv_lease_expiry (expiry_ms)
) ENGINE=InnoDB;

-- kv_member: live kvsql instances, for Cluster.MemberList.
CREATE TABLE kv_member (
	id           BIGINT UNSIGNED NOT NULL PRIMARY KEY,
	name         VARCHAR(255)    NOT NULL,
	client_urls  TEXT            NOT NULL,
	heartbeat_ms BIGINT          NOT NULL
) ENGINE=InnoDB;
