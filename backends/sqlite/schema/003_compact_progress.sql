-- kv_compact: how far compaction's cleanup has got. Every kv_log row below
-- cleaned_rev has been processed as a superseding row (its older versions
-- and, below the compact revision, tombstones removed). Cleanup runs in
-- short transactions; a cleanup cut short is resumed from here by the next
-- compaction.
CREATE TABLE kv_compact (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	cleaned_rev INTEGER NOT NULL
);
INSERT INTO kv_compact (id, cleaned_rev) SELECT 1, MAX(compact_rev, 0) FROM kv_meta WHERE id = 1;
