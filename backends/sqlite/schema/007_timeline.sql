-- kv_meta.timeline counts the fences: each time the instance found the
-- database's revision below one it had already seen (the file replaced by
-- an older copy), it moved rev and compact_rev past every revision handed
-- out before and raised timeline (see backends.Engine).
ALTER TABLE kv_meta ADD COLUMN timeline INTEGER NOT NULL DEFAULT 0;
