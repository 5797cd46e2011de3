-- kv_compact: how far compaction's cleanup has got. Every kv_log row below
-- cleaned_rev has been processed as a superseding row (its older versions
-- and, below the compact revision, tombstones removed). Cleanup runs in
-- short transactions that lock this row, not kv_meta, so writers never wait
-- for it; a cleanup cut short is resumed from here by the next compaction.
CREATE TABLE kv_compact (
	id          integer PRIMARY KEY CHECK (id = 1),
	cleaned_rev bigint  NOT NULL
);
INSERT INTO kv_compact (id, cleaned_rev) SELECT 1, GREATEST(compact_rev, 0) FROM kv_meta WHERE id = 1;
