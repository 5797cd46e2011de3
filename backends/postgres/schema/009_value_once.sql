-- kv_current stops holding a copy of each value: its row names the kv_log
-- row (mod_rev, mod_sub) that holds it, and reads fetch it from there by
-- kv_log's primary key. Each put then writes its value once, not twice.
-- Compaction never removes a key's newest kv_log row while the key lives,
-- so the row a kv_current row names is always there.
--
-- The value column is dropped before the rows are rewritten, so that the
-- new row versions carry no value; the old ones (and their TOAST chunks)
-- become dead rows that VACUUM makes reusable.
ALTER TABLE kv_current ADD COLUMN mod_sub bigint NOT NULL DEFAULT 0;
ALTER TABLE kv_current DROP COLUMN value;
UPDATE kv_current c SET mod_sub = l.sub FROM kv_log l
	WHERE l.key = c.key AND l.rev = c.mod_rev AND NOT l.deleted;
ALTER TABLE kv_current ALTER COLUMN mod_sub DROP DEFAULT;
