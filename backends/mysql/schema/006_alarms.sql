-- kv_alarm: raised alarms (etcd's NOSPACE and CORRUPT, by their AlarmType
-- numbers), one row per member that raised each. Every instance reads
-- them, so every instance enforces them, until disarmed.
CREATE TABLE kv_alarm (
	member_id BIGINT UNSIGNED NOT NULL,
	alarm     INT             NOT NULL,
	PRIMARY KEY (member_id, alarm)
) ENGINE=InnoDB;

-- kv_leader_move: a leader transfer in progress (Maintenance.MoveLeader).
-- Until it expires (Unix milliseconds, database clock), only the target
-- instance may take the leader lock.
CREATE TABLE kv_leader_move (
	id       INT             NOT NULL PRIMARY KEY,
	target   BIGINT UNSIGNED NOT NULL,
	until_ms BIGINT          NOT NULL
) ENGINE=InnoDB;
