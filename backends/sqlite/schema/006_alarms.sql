-- kv_alarm: raised alarms (etcd's NOSPACE and CORRUPT, by their AlarmType
-- numbers), one row per member that raised each. They persist across
-- restarts, as etcd's do, until disarmed.
CREATE TABLE kv_alarm (
	member_id INTEGER NOT NULL,
	alarm     INTEGER NOT NULL,
	PRIMARY KEY (member_id, alarm)
);
