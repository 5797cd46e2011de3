package mysql

import "github.com/kvsql/kvsql/backends"

// Every statement the MySQL/MariaDB dialect runs, with ? placeholders (each
// argument is passed once per placeholder). Keys are VARBINARY, which
// compares bytewise. nowMS is the database clock in Unix milliseconds.
const (
	nowMS = `CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)`

	qRevisions = `SELECT rev, compact_rev FROM kv_meta WHERE id = 1`
	qLockMeta  = `SELECT rev, compact_rev FROM kv_meta WHERE id = 1 FOR UPDATE`
	// qBeginWrite opens a write transaction and takes the write lock: one
	// multi-statement query (see dialect.BeginBatch).
	//
	// Its last statement reads auth_meta's revision: a statement of its
	// own, so that under READ COMMITTED its snapshot is taken after the lock
	// was granted (every auth change that committed before is seen, and no
	// other can commit until this transaction ends: UpdateAuth takes the
	// lock too).
	qBeginWrite = `SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
		START TRANSACTION;
		` + qLockMeta + `;
		` + qAuthRevision
	// qCheckAt fails with error 1242 (a scalar subquery of two rows,
	// errCheckFailed) unless kv_meta is at revision ? and, if the next ?
	// is not 0, auth_meta at that revision (given twice); a missing row
	// fails it too.
	qCheckAt = `SELECT (SELECT 1 UNION ALL SELECT 1 FROM DUAL WHERE NOT (
		COALESCE((SELECT rev FROM kv_meta WHERE id = 1) = ?, FALSE)
		AND (? = 0 OR COALESCE((SELECT revision FROM auth_meta WHERE id = 1) = ?, FALSE))))`
	// qBeginChecked opens a write transaction, takes the write lock and
	// checks it (CommitChecked).
	qBeginChecked = `SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
		START TRANSACTION;
		` + qLockMeta + `;
		` + qCheckAt
	qSetRevision = `UPDATE kv_meta SET rev = ? WHERE id = 1`
	qSetCompact  = `UPDATE kv_meta SET compact_rev = ? WHERE id = 1`
	qTimeline    = `SELECT timeline FROM kv_meta WHERE id = 1`
	// qFence moves the current and compact revisions to the argument and
	// raises the timeline (backends.Engine's fence); takes the revision
	// twice.
	qFence = `UPDATE kv_meta SET rev = ?, compact_rev = ?, timeline = timeline + 1 WHERE id = 1`

	// Range statements take (keysOnly, key[, end][, rev], limit).
	// curValue is the value of kv_current row c: kv_current names the
	// kv_log row that holds it (schema/009), one primary-key lookup, made
	// only for the rows a read returns.
	curValue        = `(SELECT v.v FROM kv_log v WHERE v.rev = c.mod_rev AND v.sub = c.mod_sub)`
	curCols         = `c.k, c.create_rev, c.mod_rev, c.version, c.lease, IF(?, '', ` + curValue + `)`
	qCurrentSingle  = `SELECT ` + curCols + ` FROM kv_current c WHERE c.k = ? LIMIT ?`
	qCurrentRange   = `SELECT ` + curCols + ` FROM kv_current c WHERE c.k >= ? AND c.k < ? ORDER BY c.k LIMIT ?`
	qCurrentFromKey = `SELECT ` + curCols + ` FROM kv_current c WHERE c.k >= ? ORDER BY c.k LIMIT ?`
	// qGetLatest reads the revision and one key in one statement: one
	// consistent read. Takes (keysOnly, key).
	qGetLatest = `SELECT m.rev, c.create_rev, c.mod_rev, c.version, c.lease, IF(?, '', ` + curValue + `)
		FROM kv_meta m LEFT JOIN kv_current c ON c.k = ? WHERE m.id = 1`
	// Counts read kv_current's clustered index, which holds no values
	// (schema/009).
	qCountCurSingle  = `SELECT COUNT(*) FROM kv_current WHERE k = ?`
	qCountCurRange   = `SELECT COUNT(*) FROM kv_current WHERE k >= ? AND k < ?`
	qCountCurFromKey = `SELECT COUNT(*) FROM kv_current WHERE k >= ?`

	// A key's state at rev is its newest kv_log row at or below rev, if
	// that row is not a tombstone. These take rev twice.
	logCols        = `l.k, l.create_rev, l.rev, l.version, l.lease, IF(?, '', l.v)`
	newest         = ` AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.k = l.k AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?)`
	qLogSingle     = `SELECT ` + logCols + ` FROM kv_log l WHERE l.k = ? AND l.rev <= ?` + newest + ` LIMIT ?`
	qLogRange      = `SELECT ` + logCols + ` FROM kv_log l WHERE l.k >= ? AND l.k < ? AND l.rev <= ?` + newest + ` ORDER BY l.k LIMIT ?`
	qLogFromKey    = `SELECT ` + logCols + ` FROM kv_log l WHERE l.k >= ? AND l.rev <= ?` + newest + ` ORDER BY l.k LIMIT ?`
	qCountLogSngl  = `SELECT COUNT(*) FROM kv_log l WHERE l.k = ? AND l.rev <= ?` + newest
	qCountLogRange = `SELECT COUNT(*) FROM kv_log l WHERE l.k >= ? AND l.k < ? AND l.rev <= ?` + newest
	qCountLogFrom  = `SELECT COUNT(*) FROM kv_log l WHERE l.k >= ? AND l.rev <= ?` + newest

	// Multi-row statements: the Write method repeats the row placeholder
	// group once per row (placeholders only; values are always bound).
	qInsertLogHead = `INSERT INTO kv_log (rev, sub, k, deleted, create_rev, prev_rev, version, lease, v) VALUES `
	qInsertLogRow  = `(?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qUpsertCurHead = `INSERT INTO kv_current (k, create_rev, mod_rev, mod_sub, version, lease) VALUES `
	qUpsertCurRow  = `(?, ?, ?, ?, ?, ?)`
	qUpsertCurTail = ` ON DUPLICATE KEY UPDATE create_rev = VALUES(create_rev), mod_rev = VALUES(mod_rev),
		mod_sub = VALUES(mod_sub), version = VALUES(version), lease = VALUES(lease)`
	qDeleteCurHead   = `DELETE FROM kv_current WHERE k IN (`
	qCurrentManyHead = `SELECT c.k, c.create_rev, c.mod_rev, c.version, c.lease, ` + curValue + ` FROM kv_current c WHERE c.k IN (`
	qPlaceholderTail = `)`

	qChanges = `SELECT l.rev, l.k, l.deleted, l.create_rev, l.version, l.lease, l.v,
			p.create_rev, p.rev, p.version, p.lease, p.v
		FROM kv_log l LEFT JOIN kv_log p ON l.prev_rev <> 0 AND p.k = l.k AND p.rev = l.prev_rev AND p.deleted = 0
		WHERE l.rev > ? AND l.rev <= ? ORDER BY l.rev, l.sub`

	// qChangesUpToCurrent is qChanges capped at the current revision, with
	// the current and compact revisions in front: one statement, so one
	// InnoDB read view. kv_meta's row is always there, so a read that finds
	// no events still returns one row (with NULL events) carrying the
	// revisions.
	qChangesUpToCurrent = `SELECT m.rev, m.compact_rev, l.rev, l.k, l.deleted, l.create_rev, l.version, l.lease, l.v,
			p.create_rev, p.rev, p.version, p.lease, p.v
		FROM kv_meta m
		LEFT JOIN kv_log l ON l.rev > ? AND l.rev <= LEAST(?, m.rev)
		LEFT JOIN kv_log p ON l.prev_rev <> 0 AND p.k = l.k AND p.rev = l.prev_rev AND p.deleted = 0
		WHERE m.id = 1 ORDER BY l.rev, l.sub`

	// qHistory pages through kv_log in (rev, sub) order; it takes
	// (afterRev, afterRev, afterSub, limit).
	qHistory = `SELECT rev, sub, k, deleted, create_rev, prev_rev, version, lease, v FROM kv_log
		WHERE rev >= ? AND (rev > ? OR sub > ?) ORDER BY rev, sub LIMIT ?`

	// Compaction's cleanup (backends.CompactTx). qDeleteSuperseded takes
	// (from, to, compact, compact): for each row n of the step, the older
	// rows of its key below compact go, found through kv_log_key_rev.
	// qDeleteTombstones takes (from, to, compact).
	qCleanedTo        = `SELECT cleaned_rev FROM kv_compact WHERE id = 1 FOR UPDATE`
	qSetCleanedTo     = `UPDATE kv_compact SET cleaned_rev = ? WHERE id = 1`
	qStepEnd          = `SELECT rev FROM kv_log WHERE rev >= ? AND rev <= ? ORDER BY rev, sub LIMIT ?, 1`
	qDeleteSuperseded = `DELETE o FROM kv_log n JOIN kv_log o
			ON o.k = n.k AND o.rev <= n.rev AND (o.rev < n.rev OR o.sub < n.sub)
		WHERE n.rev >= ? AND n.rev < ? AND n.rev <= ? AND o.rev < ?`
	qDeleteTombstones = `DELETE FROM kv_log WHERE rev >= ? AND rev < ? AND rev < ? AND deleted = 1`

	qLeaseInsert  = `INSERT IGNORE INTO kv_lease (id, ttl, expiry_ms) VALUES (?, ?, ` + nowMS + ` + ? * 1000)`
	qLeaseGet     = `SELECT ttl, expiry_ms - ` + nowMS + ` FROM kv_lease WHERE id = ?`
	qLeaseRenew   = `UPDATE kv_lease SET expiry_ms = ` + nowMS + ` + ttl * 1000 WHERE id = ? AND expiry_ms > ` + nowMS
	qLeaseExtend  = `UPDATE kv_lease SET expiry_ms = ` + nowMS + ` + ttl * 1000`
	qLeaseTTL     = `SELECT ttl FROM kv_lease WHERE id = ?`
	qLeaseDelete  = `DELETE FROM kv_lease WHERE id = ?`
	qLeaseKeys    = `SELECT c.k, c.create_rev, c.mod_rev, c.version, c.lease, ` + curValue + ` FROM kv_current c WHERE c.lease = ? ORDER BY c.k`
	qLeases       = `SELECT id FROM kv_lease ORDER BY id`
	qLeaseExpired = `SELECT id FROM kv_lease WHERE expiry_ms <= ` + nowMS + ` ORDER BY expiry_ms LIMIT ?`
	qLeaseRows    = `SELECT id, ttl, expiry_ms - ` + nowMS + ` FROM kv_lease WHERE id > ? ORDER BY id LIMIT ?`

	qAlarms      = `SELECT member_id, alarm FROM kv_alarm ORDER BY member_id, alarm`
	qAlarmInsert = `INSERT IGNORE INTO kv_alarm (member_id, alarm) VALUES (?, ?)`
	qAlarmDelete = `DELETE FROM kv_alarm WHERE member_id = ? AND alarm = ?`

	// qSize measures kvsql's tables (kv_*) from InnoDB's table statistics:
	// allocated is data, indexes and the free space of each table's
	// tablespace (data_free, which can exceed the data itself), in use is
	// data and indexes. InnoDB refreshes data_length and index_length
	// when it recalculates a table's statistics (after about a tenth of
	// its rows changed, and at OPTIMIZE or ANALYZE TABLE).
	qSize = `SELECT COALESCE(SUM(data_length + index_length + data_free), 0), COALESCE(SUM(data_length + index_length), 0)
		FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'kv\\_%'`
	// qSizeFiles measures kvsql's tables from their tablespace files
	// (MariaDB's innodb_sys_tablespaces, readable with the PROCESS
	// privilege): allocated is each file's size, in use is that minus the
	// tablespace's free extents (data_free, which InnoDB reads from the
	// tablespace header when asked, not from statistics). Both follow the
	// data at once: after a load, and after purge frees deleted rows.
	qSizeFiles = `SELECT COALESCE(SUM(s.file_size), 0), COALESCE(SUM(GREATEST(s.file_size - t.data_free, 0)), 0)
		FROM information_schema.tables t
		JOIN information_schema.innodb_sys_tablespaces s ON s.name = CONCAT(t.table_schema, '/', t.table_name)
		WHERE t.table_schema = DATABASE() AND t.table_name LIKE 'kv\\_%'`

	// qOptimize rebuilds kvsql's growing tables, which gives their free
	// space back to the file system (InnoDB recreates the table, online,
	// and analyzes it).
	qOptimize = `OPTIMIZE TABLE kv_log, kv_current, kv_lease`

	// qTryLead takes the leader lock if it is free, unless a leader move
	// to another instance (the second argument is this one) is in
	// progress; IF evaluates GET_LOCK only when no such move is.
	qTryLead = `SELECT IF(EXISTS (SELECT 1 FROM kv_leader_move WHERE target <> ? AND until_ms > ` + nowMS + `), 0, GET_LOCK(?, 0))`
	// qMoveDone ends a leader move once its target holds the lock.
	qMoveDone = `DELETE FROM kv_leader_move WHERE target = ?`
	// qMoveLeader records a leader move to a target for some milliseconds.
	qMoveLeader = `INSERT INTO kv_leader_move (id, target, until_ms) VALUES (1, ?, ` + nowMS + ` + ?)
		ON DUPLICATE KEY UPDATE target = VALUES(target), until_ms = VALUES(until_ms)`

	qHeartbeat = `INSERT INTO kv_member (id, name, client_urls, heartbeat_ms, leader) VALUES (?, ?, ?, ` + nowMS + `, ?)
		ON DUPLICATE KEY UPDATE name = VALUES(name), client_urls = VALUES(client_urls), heartbeat_ms = VALUES(heartbeat_ms), leader = VALUES(leader)`
	// qUnmarkLeaders clears the leader mark of every other instance: the
	// caller holds the leader lock, so any other mark is stale.
	qUnmarkLeaders = `UPDATE kv_member SET leader = FALSE WHERE leader AND id <> ?`
	qMembers       = `SELECT id, name, client_urls, leader FROM kv_member WHERE heartbeat_ms > ` + nowMS + ` - ? ORDER BY id`
	qForgetMember  = `DELETE FROM kv_member WHERE id = ?`

	// Auth state (see auth.go). qAuthLock is the auth write lock.
	qAuthMeta     = `SELECT enabled, revision FROM auth_meta WHERE id = 1`
	qAuthRevision = `SELECT revision FROM auth_meta WHERE id = 1`
	qAuthLock     = `SELECT enabled, revision FROM auth_meta WHERE id = 1 FOR UPDATE`
	qAuthUsers    = `SELECT data FROM auth_user ORDER BY name`
	qAuthRoles    = `SELECT data FROM auth_role ORDER BY name`
	qAuthSetMeta  = `UPDATE auth_meta SET enabled = ?, revision = ? WHERE id = 1`
	qAuthPutUser  = `INSERT INTO auth_user (name, data) VALUES (?, ?) ON DUPLICATE KEY UPDATE data = VALUES(data)`
	qAuthDelUser  = `DELETE FROM auth_user WHERE name = ?`
	qAuthPutRole  = `INSERT INTO auth_role (name, data) VALUES (?, ?) ON DUPLICATE KEY UPDATE data = VALUES(data)`
	qAuthDelRole  = `DELETE FROM auth_role WHERE name = ?`
	// Simple tokens; expiry_ms is on the database clock.
	qTokenDropFor = `DELETE FROM auth_token WHERE name = ?`
	qTokenDropAll = `DELETE FROM auth_token`
	qTokenAdd     = `INSERT INTO auth_token (token, name, expiry_ms) VALUES (?, ?, ` + nowMS + ` + ?)`
	qTokenUser    = `SELECT name FROM auth_token WHERE token = ? AND expiry_ms > ` + nowMS
	// qTokenTouchHead takes (ttl ms, token...), closed by qPlaceholderTail.
	qTokenTouchHead = `UPDATE auth_token SET expiry_ms = ` + nowMS + ` + ? WHERE token IN (`
	qTokenPurge     = `DELETE FROM auth_token WHERE expiry_ms <= ` + nowMS
	qSecretSet      = `UPDATE auth_meta SET secret = ? WHERE id = 1 AND secret IS NULL`
	qSecret         = `SELECT secret FROM auth_meta WHERE id = 1`

	// Named locks: one elects the instance doing lease expiry, one
	// serialises schema migrations of instances starting together.
	leaderLock  = "kvsql_leader"
	migrateLock = "kvsql_migrate"
	qGetLock    = `SELECT GET_LOCK(?, ?)`
	// qSessionWaitTimeout ends the leader lock's session when it has been
	// idle for the session timeout (its instance froze or lost its network).
	qSessionWaitTimeout = `SET SESSION wait_timeout = ?`
	qReleaseLck         = `SELECT RELEASE_LOCK(?)`
)

// qGetLatestMany returns qGetLatest for n keys, (keysOnly, key...): one row
// per live key, or a single row with NULL columns if none is.
func qGetLatestMany(n int) string {
	return `SELECT m.rev, c.k, c.create_rev, c.mod_rev, c.version, c.lease, IF(?, '', ` + curValue + `)
		FROM kv_meta m LEFT JOIN kv_current c ON c.k IN (` + repeatGroup("?", n) + `) WHERE m.id = 1`
}

// getManySizes are the key counts qGetLatestMany is prepared for; a batch
// of keys is padded (with its last key) to the next one.
var getManySizes = []int{2, 4, 8, 16, 32, backends.MaxGetBatch}

// statements lists the fixed statements, prepared once at open.
var statements = append([]string{
	qRevisions, qSetRevision, qSetCompact, qTimeline, qGetLatest,
	qCurrentSingle, qCurrentRange, qCurrentFromKey, qCountCurSingle, qCountCurRange, qCountCurFromKey,
	qLogSingle, qLogRange, qLogFromKey, qCountLogSngl, qCountLogRange, qCountLogFrom,
	qChanges, qChangesUpToCurrent, qHistory,
	qCleanedTo, qSetCleanedTo, qStepEnd, qDeleteSuperseded, qDeleteTombstones,
	qLeaseInsert, qLeaseGet, qLeaseRenew, qLeaseTTL, qLeaseDelete, qLeaseKeys, qLeases, qLeaseExpired, qLeaseRows,
	qAlarms, qAuthMeta, qTokenUser,
}, getManyStatements()...)

func getManyStatements() []string {
	qs := make([]string, len(getManySizes))
	for i, n := range getManySizes {
		qs[i] = qGetLatestMany(n)
	}
	return qs
}

// rangeStatements picks the range and count statements by key-range shape.
var rangeStatements = &backends.RangeStatements{
	Current:      [3]string{qCurrentSingle, qCurrentRange, qCurrentFromKey},
	Log:          [3]string{qLogSingle, qLogRange, qLogFromKey},
	CountCurrent: [3]string{qCountCurSingle, qCountCurRange, qCountCurFromKey},
	CountLog:     [3]string{qCountLogSngl, qCountLogRange, qCountLogFrom},
	RevTwice:     true,
}
