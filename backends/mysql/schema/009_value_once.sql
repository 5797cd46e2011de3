-- kv_current stops holding a copy of each value: its row names the kv_log
-- row (mod_rev, mod_sub) that holds it, and reads fetch it from there by
-- kv_log's primary key. Each put then writes its value once, not twice.
-- Compaction never removes a key's newest kv_log row while the key lives,
-- so the row a kv_current row names is always there.
--
-- MySQL commits each DDL statement on its own, so the value column goes
-- in the same statement that adds mod_sub, before mod_sub is filled in:
-- an older kvsql still writing kv_current (which would leave mod_sub
-- stale) fails from that statement on. Without the values the clustered
-- index is as narrow as kv_current_key (schema/008), which counts no
-- longer need, and FORCE rebuilds the table so that the values' space is
-- given back now.
ALTER TABLE kv_current ADD COLUMN mod_sub BIGINT NOT NULL DEFAULT 0 AFTER mod_rev,
	DROP COLUMN v, DROP INDEX kv_current_key, FORCE;
UPDATE kv_current c JOIN kv_log l ON l.k = c.k AND l.rev = c.mod_rev AND l.deleted = 0
	SET c.mod_sub = l.sub;
