-- kv_meta: one row. rev is the current revision, compact_rev the compact
-- revision (-1: never compacted, as in etcd).
CREATE TABLE kv_meta (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	rev         INTEGER NOT NULL,
	compact_rev INTEGER NOT NULL
);
INSERT INTO kv_meta (id, rev, compact_rev) VALUES (1, 1, -1);

-- kv_log: every change of every key. A key changes at most twice in one
-- revision (a from-key delete and a put of it in the same txn, which etcd allows).
CREATE TABLE kv_log (
	rev        INTEGER NOT NULL,
	sub        INTEGER NOT NULL,
	key        BLOB    NOT NULL,
	deleted    INTEGER NOT NULL,
	create_rev INTEGER NOT NULL,
	prev_rev   INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	lease      INTEGER NOT NULL,
	value      BLOB    NOT NULL,
	PRIMARY KEY (rev, sub)
);
CREATE UNIQUE INDEX kv_log_key_rev ON kv_log (key, rev, sub);

-- kv_current: the live version of each key, so latest reads never scan history.
CREATE TABLE kv_current (
	key        BLOB    PRIMARY KEY,
	create_rev INTEGER NOT NULL,
	mod_rev    INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	lease      INTEGER NOT NULL,
	value      BLOB    NOT NULL
);
CREATE INDEX kv_current_lease ON kv_current (lease) WHERE lease <> 0;

-- kv_lease: expiry_ms is Unix milliseconds.
CREATE TABLE kv_lease (
	id        INTEGER PRIMARY KEY,
	ttl       INTEGER NOT NULL,
	expiry_ms INTEGER NOT NULL
);
CREATE INDEX kv_lease_expiry ON kv_lease (expiry_ms);
