-- kv_meta.timeline counts the fences: each time an instance found the
-- database's revision below one it had already seen (a failover to a
-- replica that was behind, a restore from a backup), it moved rev and
-- compact_rev past every revision handed out before and raised timeline,
-- so that every instance drops what it cached and cancels its watches.
ALTER TABLE kv_meta ADD COLUMN timeline bigint NOT NULL DEFAULT 0;
