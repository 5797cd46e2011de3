-- kv_current_key: the keys alone, for COUNT(*) over a key range. Every
-- limited Range answers etcd's count (the keys left in the range; a
-- paginated list asks it on every page), and InnoDB counting through the
-- primary key reads the clustered index, which holds every value: with
-- 2 KiB values some thirty times the pages of this index. Rows of a
-- secondary index carry the primary key, which here is the key itself.
ALTER TABLE kv_current ADD INDEX kv_current_key (k);
