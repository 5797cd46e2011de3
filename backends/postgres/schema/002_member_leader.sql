-- kv_member.leader marks the instance holding the leader lock, so that the
-- other instances can forward their writes to it (one group commit, one
-- fsync, for the writes of every instance).
ALTER TABLE kv_member ADD COLUMN leader boolean NOT NULL DEFAULT false;
