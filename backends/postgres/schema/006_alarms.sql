-- kv_alarm: raised alarms (etcd's NOSPACE and CORRUPT, by their AlarmType
-- numbers), one row per member that raised each. Every instance reads
-- them, so every instance enforces them, until disarmed.
CREATE TABLE kv_alarm (
	member_id bigint  NOT NULL,
	alarm     integer NOT NULL,
	PRIMARY KEY (member_id, alarm)
);

-- kv_leader_move: a leader transfer in progress (Maintenance.MoveLeader).
-- Until it expires, only the target instance may take the leader lock.
CREATE TABLE kv_leader_move (
	id     integer     PRIMARY KEY CHECK (id = 1),
	target bigint      NOT NULL,
	until  timestamptz NOT NULL
);
