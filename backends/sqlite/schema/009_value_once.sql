-- kv_current stops holding a copy of each value: its row names the kv_log
-- row (mod_rev, mod_sub) that holds it, and reads fetch it from there by
-- kv_log's primary key. Each put then writes its value once, not twice.
-- Compaction never removes a key's newest kv_log row while the key lives,
-- so the row a kv_current row names is always there.
--
-- The table is copied rather than altered: DROP COLUMN would leave the
-- rows in their half-empty pages until a VACUUM, while dropping the old
-- table puts all of its pages on the free list, where new rows reuse them.
CREATE TABLE kv_current_new (
	key        BLOB    PRIMARY KEY,
	create_rev INTEGER NOT NULL,
	mod_rev    INTEGER NOT NULL,
	mod_sub    INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	lease      INTEGER NOT NULL
);
INSERT INTO kv_current_new (key, create_rev, mod_rev, mod_sub, version, lease)
	SELECT c.key, c.create_rev, c.mod_rev,
		COALESCE((SELECT l.sub FROM kv_log l WHERE l.key = c.key AND l.rev = c.mod_rev AND l.deleted = 0), 0),
		c.version, c.lease
	FROM kv_current c ORDER BY c.key;
DROP TABLE kv_current;
ALTER TABLE kv_current_new RENAME TO kv_current;
CREATE INDEX kv_current_lease ON kv_current (lease) WHERE lease <> 0;
