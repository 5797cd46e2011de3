package postgres

import "github.com/kvsql/kvsql/backends"

// Every statement the PostgreSQL dialect runs. Range statements take
// ($1 keysOnly, $2 key[, $3 end][, rev], limit); a NULL limit means none.
// bytea compares bytewise, so key order is etcd's.
const (
	// NotifyChannel is the LISTEN/NOTIFY channel; the payload is the newest
	// committed revision.
	NotifyChannel = "kvsql_commits"

	qRevisions  = `SELECT rev, compact_rev FROM kv_meta WHERE id = 1`
	qBeginWrite = `BEGIN ISOLATION LEVEL READ COMMITTED`
	qLockMeta   = `SELECT rev, compact_rev FROM kv_meta WHERE id = 1 FOR UPDATE`
	// The session timeouts (Config.SessionTimeout), in milliseconds: for
	// the write transaction only, and for the leader lock's session.
	// qCheckAt fails (division by zero, codeCheckFailed) unless kv_meta is
	// at revision $1 and, if $2 is not 0, auth_meta at revision $2; a
	// missing row fails it too (NULL is no match). The divisor depends on
	// the rows, so the planner cannot fold it.
	qCheckAt = `SELECT 1 / (CASE WHEN (SELECT rev FROM kv_meta WHERE id = 1) = $1::bigint
		AND ($2::bigint = 0 OR (SELECT revision FROM auth_meta WHERE id = 1) = $2::bigint) THEN 1 ELSE 0 END)`
	qIdleTxTimeout      = `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`
	qIdleSessionTimeout = `SELECT set_config('idle_session_timeout', $1, false)`
	qSetRevision        = `WITH u AS (UPDATE kv_meta SET rev = $1 WHERE id = 1)
		SELECT pg_notify('` + NotifyChannel + `', $1::text)`
	qSetCompact = `UPDATE kv_meta SET compact_rev = $1 WHERE id = 1`
	qTimeline   = `SELECT timeline FROM kv_meta WHERE id = 1`
	// qFence moves the current and compact revisions to $1 and raises the
	// timeline (backends.Engine's fence), notifying $1 like a commit.
	qFence = `WITH u AS (UPDATE kv_meta SET rev = $1, compact_rev = $1, timeline = timeline + 1 WHERE id = 1 RETURNING timeline)
		SELECT u.timeline, pg_notify('` + NotifyChannel + `', $1::text) FROM u`

	// curValue is the value of kv_current row c: kv_current names the
	// kv_log row that holds it (schema/009), one primary-key lookup, made
	// only for the rows a read returns.
	curValue        = `(SELECT v.value FROM kv_log v WHERE v.rev = c.mod_rev AND v.sub = c.mod_sub)`
	curCols         = `c.key, c.create_rev, c.mod_rev, c.version, c.lease, CASE WHEN $1 THEN ''::bytea ELSE ` + curValue + ` END`
	qCurrentSingle  = `SELECT ` + curCols + ` FROM kv_current c WHERE c.key = $2 LIMIT $3`
	qCurrentRange   = `SELECT ` + curCols + ` FROM kv_current c WHERE c.key >= $2 AND c.key < $3 ORDER BY c.key LIMIT $4`
	qCurrentFromKey = `SELECT ` + curCols + ` FROM kv_current c WHERE c.key >= $2 ORDER BY c.key LIMIT $3`
	// qGetLatest reads the revision and one key in one statement: one snapshot.
	qGetLatest = `SELECT m.rev, c.create_rev, c.mod_rev, c.version, c.lease, CASE WHEN $2 THEN ''::bytea ELSE ` + curValue + ` END
		FROM kv_meta m LEFT JOIN kv_current c ON c.key = $1 WHERE m.id = 1`
	// qGetLatestMany is qGetLatest for several keys: one row per live key
	// (a single row with NULL columns if none is).
	qGetLatestMany = `SELECT m.rev, c.key, c.create_rev, c.mod_rev, c.version, c.lease, CASE WHEN $2 THEN ''::bytea ELSE ` + curValue + ` END
		FROM kv_meta m LEFT JOIN kv_current c ON c.key = ANY($1::bytea[]) WHERE m.id = 1`
	qCountCurSingle  = `SELECT COUNT(*) FROM kv_current WHERE key = $1`
	qCountCurRange   = `SELECT COUNT(*) FROM kv_current WHERE key >= $1 AND key < $2`
	qCountCurFromKey = `SELECT COUNT(*) FROM kv_current WHERE key >= $1`

	// A key's state at rev is its newest kv_log row at or below rev, if
	// that row is not a tombstone.
	logCols        = `l.key, l.create_rev, l.rev, l.version, l.lease, CASE WHEN $1 THEN ''::bytea ELSE l.value END`
	qLogSingle     = `SELECT ` + logCols + ` FROM kv_log l WHERE l.key = $2 AND l.rev <= $3 AND NOT l.deleted AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= $3) LIMIT $4`
	qLogRange      = `SELECT ` + logCols + ` FROM kv_log l WHERE l.key >= $2 AND l.key < $3 AND l.rev <= $4 AND NOT l.deleted AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= $4) ORDER BY l.key LIMIT $5`
	qLogFromKey    = `SELECT ` + logCols + ` FROM kv_log l WHERE l.key >= $2 AND l.rev <= $3 AND NOT l.deleted AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= $3) ORDER BY l.key LIMIT $4`
	qCountLogSngl  = `SELECT COUNT(*) FROM kv_log l WHERE l.key = $1 AND l.rev <= $2 AND NOT l.deleted AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= $2)`
	qCountLogRange = `SELECT COUNT(*) FROM kv_log l WHERE l.key >= $1 AND l.key < $2 AND l.rev <= $3 AND NOT l.deleted AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= $3)`
	qCountLogFrom  = `SELECT COUNT(*) FROM kv_log l WHERE l.key >= $1 AND l.rev <= $2 AND NOT l.deleted AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= $2)`

	// qAppendLog appends rows (as parallel arrays) to kv_log.
	qAppendLog = `INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::boolean[], $5::bigint[],
			$6::bigint[], $7::bigint[], $8::bigint[], $9::bytea[])`

	// qApplyCurrent brings kv_current up to date with the newest row of each
	// key (the keys are distinct): deletes, then upserts of the rows that
	// point at the kv_log rows holding the values.
	qApplyCurrent = `WITH rows AS (
			SELECT * FROM unnest($1::bytea[], $2::boolean[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
				AS r(key, deleted, create_rev, mod_rev, mod_sub, version, lease)
		), removed AS (
			DELETE FROM kv_current c USING rows WHERE rows.deleted AND c.key = rows.key
		)
		INSERT INTO kv_current (key, create_rev, mod_rev, mod_sub, version, lease)
		SELECT key, create_rev, mod_rev, mod_sub, version, lease FROM rows WHERE NOT deleted
		ON CONFLICT (key) DO UPDATE SET create_rev = excluded.create_rev, mod_rev = excluded.mod_rev,
			mod_sub = excluded.mod_sub, version = excluded.version, lease = excluded.lease`

	qCurrentMany = `SELECT c.key, c.create_rev, c.mod_rev, c.version, c.lease, ` + curValue + ` FROM kv_current c WHERE c.key = ANY($1::bytea[])`

	// prevJoin attaches each event's previous version (prev_kv). It is a
	// LATERAL subquery with OFFSET 0, which PostgreSQL never flattens into
	// a plain join: one index lookup per event. As a plain join the
	// planner, unable to tell how few rows the revision range holds,
	// chose a merge join that read and sorted all of kv_log on every
	// read (220 ms at 55 000 revisions, growing with the history).
	prevJoin = `LEFT JOIN LATERAL (SELECT q.create_rev, q.rev, q.version, q.lease, q.value FROM kv_log q
			WHERE l.prev_rev <> 0 AND q.key = l.key AND q.rev = l.prev_rev AND NOT q.deleted OFFSET 0) p ON true`

	qChanges = `SELECT l.rev, l.key, l.deleted, l.create_rev, l.version, l.lease, l.value,
			p.create_rev, p.rev, p.version, p.lease, p.value
		FROM kv_log l ` + prevJoin + `
		WHERE l.rev > $1 AND l.rev <= $2 ORDER BY l.rev, l.sub`

	// qChangesUpToCurrent is qChanges capped at the current revision, with
	// the current and compact revisions in front: one statement, so one
	// snapshot. kv_meta's row is always there, so a read that finds no
	// events still returns one row (with NULL events) carrying the revisions.
	qChangesUpToCurrent = `SELECT m.rev, m.compact_rev, l.rev, l.key, l.deleted, l.create_rev, l.version, l.lease, l.value,
			p.create_rev, p.rev, p.version, p.lease, p.value
		FROM kv_meta m
		LEFT JOIN kv_log l ON l.rev > $1 AND l.rev <= LEAST($2::bigint, m.rev)
		` + prevJoin + `
		WHERE m.id = 1 ORDER BY l.rev, l.sub`

	// qHistory pages through kv_log in (rev, sub) order after ($1, $2).
	qHistory = `SELECT rev, sub, key, deleted, create_rev, prev_rev, version, lease, value FROM kv_log
		WHERE rev >= $1 AND (rev > $1 OR sub > $2) ORDER BY rev, sub LIMIT $3`

	// Compaction's cleanup (backends.CompactTx). qDeleteSuperseded takes
	// (compact, from, to): for each row n of the step, the older rows of
	// its key below compact go, found through kv_log_key_rev.
	qCleanedTo    = `SELECT cleaned_rev FROM kv_compact WHERE id = 1 FOR UPDATE`
	qSetCleanedTo = `UPDATE kv_compact SET cleaned_rev = $1 WHERE id = 1`
	qStepEnd      = `SELECT rev FROM kv_log WHERE rev >= $1 AND rev <= $2 ORDER BY rev, sub OFFSET $3 LIMIT 1`
	// The rows are found with one index lookup per row of the step (a
	// LATERAL subquery with OFFSET 0 is never flattened into a join) and
	// deleted by their physical address: the planner cannot know that
	// earlier steps left each key at most a version or two below the step,
	// and would otherwise hash-join all of kv_log.
	qDeleteSuperseded = `DELETE FROM kv_log WHERE ctid = ANY(ARRAY(
		SELECT o.ctid FROM kv_log n CROSS JOIN LATERAL (
			SELECT q.ctid FROM kv_log q
			WHERE q.key = n.key AND (q.rev, q.sub) < (n.rev, n.sub) AND q.rev < $1 OFFSET 0) o
		WHERE n.rev >= $2 AND n.rev < $3 AND n.rev <= $1))`
	qDeleteTombstones = `DELETE FROM kv_log WHERE rev >= $2 AND rev < $3 AND rev < $1 AND deleted`

	qLeaseInsert = `INSERT INTO kv_lease (id, ttl, expiry) VALUES ($1, $2::bigint, clock_timestamp() + $2::bigint * interval '1 second')
		ON CONFLICT (id) DO NOTHING`
	qLeaseGet = `SELECT ttl, (EXTRACT(EPOCH FROM (expiry - clock_timestamp())) * 1000)::bigint FROM kv_lease WHERE id = $1`
	// An expired lease is not renewed: it is about to be revoked (etcd does the same).
	qLeaseRenew = `UPDATE kv_lease SET expiry = clock_timestamp() + ttl * interval '1 second'
		WHERE id = $1 AND expiry > clock_timestamp() RETURNING ttl`
	qLeaseDelete  = `DELETE FROM kv_lease WHERE id = $1`
	qLeaseExtend  = `UPDATE kv_lease SET expiry = clock_timestamp() + ttl * interval '1 second'`
	qLeaseKeys    = `SELECT c.key, c.create_rev, c.mod_rev, c.version, c.lease, ` + curValue + ` FROM kv_current c WHERE c.lease = $1 ORDER BY c.key`
	qLeases       = `SELECT id FROM kv_lease ORDER BY id`
	qLeaseExpired = `SELECT id FROM kv_lease WHERE expiry <= clock_timestamp() ORDER BY expiry LIMIT $1`
	qLeaseRows    = `SELECT id, ttl, (EXTRACT(EPOCH FROM (expiry - clock_timestamp())) * 1000)::bigint FROM kv_lease
		WHERE id > $1 ORDER BY id LIMIT $2`

	qAlarms      = `SELECT member_id, alarm FROM kv_alarm ORDER BY member_id, alarm`
	qAlarmInsert = `INSERT INTO kv_alarm (member_id, alarm) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	qAlarmDelete = `DELETE FROM kv_alarm WHERE member_id = $1 AND alarm = $2`

	// qSize measures kvsql's tables (kv_*): their total allocated size
	// (heap, TOAST, indexes, free-space and visibility maps), and an
	// estimate of the part in use, from the statistics PostgreSQL keeps
	// anyway (no extension, no table scan):
	//   - heap: live rows (pg_stat_all_tables.n_live_tup, current within a
	//     second of each commit) times their average stored width
	//     (pg_stats.avg_width summed over the columns, from the last
	//     ANALYZE, plus 28 bytes of tuple header and line pointer); before
	//     a table's first ANALYZE, its size times the live share of its
	//     rows (n_live_tup against n_dead_tup);
	//   - TOAST: live chunks times the largest chunk's 2032 bytes;
	//   - indexes and maps: their size times the heap's in-use share.
	// Each part is at most its allocated size.
	qSize = `WITH t AS (
			SELECT pg_total_relation_size(c.oid) AS total,
				pg_relation_size(c.oid) AS heap,
				COALESCE(pg_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS toast,
				COALESCE(s.n_live_tup, 0) AS live, COALESCE(s.n_dead_tup, 0) AS dead,
				COALESCE(ts.n_live_tup, 0) AS toast_live,
				(SELECT sum(p.avg_width) FROM pg_stats p WHERE p.schemaname = n.nspname AND p.tablename = c.relname) AS width
			FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace
			LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
			LEFT JOIN pg_stat_all_tables ts ON ts.relid = c.reltoastrelid
			WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'kv\_%'
		), u AS (
			SELECT total, heap, toast,
				LEAST(heap, CASE WHEN width IS NOT NULL THEN live * (width + 28) ELSE heap * live / GREATEST(live + dead, 1) END) AS heap_used,
				LEAST(toast, toast_live * 2032) AS toast_used
			FROM t
		)
		SELECT COALESCE(sum(total), 0)::bigint,
			COALESCE(sum(heap_used + toast_used + (total - heap - toast) * CASE WHEN heap > 0 THEN heap_used::float8 / heap ELSE 1 END), 0)::bigint
		FROM u`

	// qVacuum makes the space of dead rows reusable and refreshes the
	// planner statistics qSize reads; unlike VACUUM FULL it takes no lock
	// that blocks reads or writes, and it gives space back to the file
	// system only from the end of a table.
	qVacuum = `VACUUM (ANALYZE) kv_log, kv_current, kv_lease, kv_meta, kv_member, kv_alarm, kv_leader_move`

	qHeartbeat = `INSERT INTO kv_member (id, name, client_urls, heartbeat, leader) VALUES ($1, $2, $3, clock_timestamp(), $4)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, client_urls = excluded.client_urls, heartbeat = excluded.heartbeat, leader = excluded.leader`
	// qUnmarkLeaders clears the leader mark of every other instance: the
	// caller holds the leader lock, so any other mark is stale.
	qUnmarkLeaders = `UPDATE kv_member SET leader = false WHERE leader AND id <> $1`
	qMembers       = `SELECT id, name, client_urls, leader FROM kv_member WHERE heartbeat > clock_timestamp() - $1 * interval '1 millisecond' ORDER BY id`
	qForgetMember  = `DELETE FROM kv_member WHERE id = $1`

	// Auth state (see auth.go). qAuthLock is the auth write lock; token
	// expiry is on the database clock.
	qAuthMeta     = `SELECT enabled, revision FROM auth_meta WHERE id = 1`
	qAuthLock     = `SELECT enabled, revision FROM auth_meta WHERE id = 1 FOR UPDATE`
	qAuthRevision = `SELECT revision FROM auth_meta WHERE id = 1`
	qAuthUsers    = `SELECT data FROM auth_user ORDER BY name`
	qAuthRoles    = `SELECT data FROM auth_role ORDER BY name`
	qAuthSetMeta  = `UPDATE auth_meta SET enabled = $1, revision = $2 WHERE id = 1`
	qAuthPutUser  = `INSERT INTO auth_user (name, data) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET data = excluded.data`
	qAuthDelUser  = `DELETE FROM auth_user WHERE name = $1`
	qAuthPutRole  = `INSERT INTO auth_role (name, data) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET data = excluded.data`
	qAuthDelRole  = `DELETE FROM auth_role WHERE name = $1`
	qTokenDropFor = `DELETE FROM auth_token WHERE name = $1`
	qTokenDropAll = `DELETE FROM auth_token`
	qTokenAdd     = `INSERT INTO auth_token (token, name, expiry) VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')`
	qTokenUser    = `SELECT name FROM auth_token WHERE token = $1 AND expiry > clock_timestamp()`
	qTokenTouch   = `UPDATE auth_token SET expiry = clock_timestamp() + $2 * interval '1 millisecond' WHERE token = ANY($1::text[])`
	qTokenPurge   = `DELETE FROM auth_token WHERE expiry <= clock_timestamp()`
	qSecretSet    = `UPDATE auth_meta SET secret = $1 WHERE id = 1 AND secret IS NULL`
	qSecret       = `SELECT secret FROM auth_meta WHERE id = 1`

	// leaderLockKey is the advisory lock that elects the instance doing
	// lease expiry ("kvsql" in ASCII).
	leaderLockKey = 0x6b7673716c
	// qTryLead takes the leader lock if it is free, unless a leader move
	// to another instance ($2 is this one) is in progress. CASE evaluates
	// the lock only when no such move is.
	qTryLead = `SELECT CASE WHEN EXISTS (SELECT 1 FROM kv_leader_move WHERE target <> $2 AND until > clock_timestamp())
		THEN false ELSE pg_try_advisory_lock($1) END`
	// qMoveDone ends a leader move once its target ($1) holds the lock.
	qMoveDone = `DELETE FROM kv_leader_move WHERE target = $1`
	// qMoveLeader records a leader move to $1 for $2 milliseconds.
	qMoveLeader = `INSERT INTO kv_leader_move (id, target, until) VALUES (1, $1, clock_timestamp() + $2 * interval '1 millisecond')
		ON CONFLICT (id) DO UPDATE SET target = excluded.target, until = excluded.until`

	// migrateLockKey serialises schema migrations of instances starting at once.
	migrateLockKey = 0x6b7673716d
)

// rangeStatements picks the range and count statements by key-range shape.
var rangeStatements = &backends.RangeStatements{
	Current:      [3]string{qCurrentSingle, qCurrentRange, qCurrentFromKey},
	Log:          [3]string{qLogSingle, qLogRange, qLogFromKey},
	CountCurrent: [3]string{qCountCurSingle, qCountCurRange, qCountCurFromKey},
	CountLog:     [3]string{qCountLogSngl, qCountLogRange, qCountLogFrom},
}
