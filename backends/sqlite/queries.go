package sqlite

import "github.com/kvsql/kvsql/backends"

// Every statement the SQLite dialect runs. ?NNN binds the NNN-th argument.
// Range statements take (keysOnly, key[, end][, rev], limit); a limit of -1
// means no limit. Keys are BLOBs, which SQLite compares bytewise.
const (
	qRevisions   = `SELECT rev, compact_rev FROM kv_meta WHERE id = 1`
	qSetRevision = `UPDATE kv_meta SET rev = ?1 WHERE id = 1`
	qSetCompact  = `UPDATE kv_meta SET compact_rev = ?1 WHERE id = 1`
	qTimeline    = `SELECT timeline FROM kv_meta WHERE id = 1`
	// qFence moves the current and compact revisions to ?1 and raises the
	// timeline (backends.Engine's fence).
	qFence = `UPDATE kv_meta SET rev = ?1, compact_rev = ?1, timeline = timeline + 1 WHERE id = 1 RETURNING timeline`

	// qGetLatest reads the revision and one key in one statement: one
	// snapshot (backends.LatestGetter).
	qGetLatest = `SELECT m.rev, c.create_rev, c.mod_rev, c.version, c.lease, CASE WHEN ?2 THEN x'' ELSE ` + curValue + ` END
		FROM kv_meta m LEFT JOIN kv_current c ON c.key = ?1 WHERE m.id = 1`

	// curValue is the value of kv_current row c: kv_current names the
	// kv_log row that holds it (schema/009), one primary-key lookup, made
	// only for the rows a read returns.
	curValue         = `(SELECT v.value FROM kv_log v WHERE v.rev = c.mod_rev AND v.sub = c.mod_sub)`
	curCols          = `c.key, c.create_rev, c.mod_rev, c.version, c.lease, CASE WHEN ?1 THEN x'' ELSE ` + curValue + ` END`
	qCurrentSingle   = `SELECT ` + curCols + ` FROM kv_current c WHERE c.key = ?2 LIMIT ?3`
	qCurrentRange    = `SELECT ` + curCols + ` FROM kv_current c WHERE c.key >= ?2 AND c.key < ?3 ORDER BY c.key LIMIT ?4`
	qCurrentFromKey  = `SELECT ` + curCols + ` FROM kv_current c WHERE c.key >= ?2 ORDER BY c.key LIMIT ?3`
	qCountCurSingle  = `SELECT COUNT(*) FROM kv_current WHERE key = ?1`
	qCountCurRange   = `SELECT COUNT(*) FROM kv_current WHERE key >= ?1 AND key < ?2`
	qCountCurFromKey = `SELECT COUNT(*) FROM kv_current WHERE key >= ?1`

	// A key's state at rev is its newest kv_log row at or below rev, if
	// that row is not a tombstone.
	logCols        = `l.key, l.create_rev, l.rev, l.version, l.lease, CASE WHEN ?1 THEN x'' ELSE l.value END`
	qLogSingle     = `SELECT ` + logCols + ` FROM kv_log l WHERE l.key = ?2 AND l.rev <= ?3 AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?3) LIMIT ?4`
	qLogRange      = `SELECT ` + logCols + ` FROM kv_log l WHERE l.key >= ?2 AND l.key < ?3 AND l.rev <= ?4 AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?4) ORDER BY l.key LIMIT ?5`
	qLogFromKey    = `SELECT ` + logCols + ` FROM kv_log l WHERE l.key >= ?2 AND l.rev <= ?3 AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?3) ORDER BY l.key LIMIT ?4`
	qCountLogSngl  = `SELECT COUNT(*) FROM kv_log l WHERE l.key = ?1 AND l.rev <= ?2 AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?2)`
	qCountLogRange = `SELECT COUNT(*) FROM kv_log l WHERE l.key >= ?1 AND l.key < ?2 AND l.rev <= ?3 AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?3)`
	qCountLogFrom  = `SELECT COUNT(*) FROM kv_log l WHERE l.key >= ?1 AND l.rev <= ?2 AND l.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv_log n WHERE n.key = l.key AND (n.rev, n.sub) > (l.rev, l.sub) AND n.rev <= ?2)`

	qInsertLog = `INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)`
	qUpsertCurrent = `INSERT INTO kv_current (key, create_rev, mod_rev, mod_sub, version, lease)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6)
		ON CONFLICT (key) DO UPDATE SET create_rev = excluded.create_rev, mod_rev = excluded.mod_rev,
			mod_sub = excluded.mod_sub, version = excluded.version, lease = excluded.lease`
	qDeleteCurrent = `DELETE FROM kv_current WHERE key = ?1`

	qChanges = `SELECT l.rev, l.key, l.deleted, l.create_rev, l.version, l.lease, l.value,
			p.create_rev, p.rev, p.version, p.lease, p.value
		FROM kv_log l LEFT JOIN kv_log p ON l.prev_rev <> 0 AND p.key = l.key AND p.rev = l.prev_rev AND p.deleted = 0
		WHERE l.rev > ?1 AND l.rev <= ?2 ORDER BY l.rev, l.sub`

	// qHistory pages through kv_log in (rev, sub) order after (?1, ?2).
	qHistory = `SELECT rev, sub, key, deleted, create_rev, prev_rev, version, lease, value FROM kv_log
		WHERE rev >= ?1 AND (rev > ?1 OR sub > ?2) ORDER BY rev, sub LIMIT ?3`

	// Compaction's cleanup (backends.CompactTx). qDeleteSuperseded takes
	// (compact, from, to): for each row n of the step, the older rows of
	// its key below compact go, found through kv_log_key_rev.
	qCleanedTo        = `SELECT cleaned_rev FROM kv_compact WHERE id = 1`
	qSetCleanedTo     = `UPDATE kv_compact SET cleaned_rev = ?1 WHERE id = 1`
	qStepEnd          = `SELECT rev FROM kv_log WHERE rev >= ?1 AND rev <= ?2 ORDER BY rev, sub LIMIT 1 OFFSET ?3`
	qDeleteSuperseded = `DELETE FROM kv_log WHERE rowid IN (SELECT o.rowid FROM kv_log n JOIN kv_log o
			ON o.key = n.key AND o.rev <= n.rev AND (o.rev < n.rev OR o.sub < n.sub)
		WHERE n.rev >= ?2 AND n.rev < ?3 AND n.rev <= ?1 AND o.rev < ?1)`
	qDeleteTombstones = `DELETE FROM kv_log WHERE rev >= ?2 AND rev < ?3 AND rev < ?1 AND deleted = 1`

	qLeaseInsert = `INSERT INTO kv_lease (id, ttl, expiry_ms) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING`
	qLeaseGet    = `SELECT ttl, expiry_ms FROM kv_lease WHERE id = ?1`
	// An expired lease is not renewed: it is about to be revoked (etcd does the same).
	qLeaseRenew   = `UPDATE kv_lease SET expiry_ms = ?2 + ttl * 1000 WHERE id = ?1 AND expiry_ms > ?2 RETURNING ttl`
	qLeaseExtend  = `UPDATE kv_lease SET expiry_ms = ?1 + ttl * 1000`
	qLeaseDelete  = `DELETE FROM kv_lease WHERE id = ?1`
	qLeaseKeys    = `SELECT c.key, c.create_rev, c.mod_rev, c.version, c.lease, ` + curValue + ` FROM kv_current c WHERE c.lease = ?1 ORDER BY c.key`
	qLeases       = `SELECT id FROM kv_lease ORDER BY id`
	qLeaseExpired = `SELECT id FROM kv_lease WHERE expiry_ms <= ?1 ORDER BY expiry_ms LIMIT ?2`
	qLeaseRows    = `SELECT id, ttl, expiry_ms - ?3 FROM kv_lease WHERE id > ?1 ORDER BY id LIMIT ?2`

	qAlarms      = `SELECT member_id, alarm FROM kv_alarm ORDER BY member_id, alarm`
	qAlarmInsert = `INSERT INTO kv_alarm (member_id, alarm) VALUES (?1, ?2) ON CONFLICT DO NOTHING`
	qAlarmDelete = `DELETE FROM kv_alarm WHERE member_id = ?1 AND alarm = ?2`

	// Auth state (see auth.go); expiry_ms is Unix milliseconds.
	qAuthMeta     = `SELECT enabled, revision FROM auth_meta WHERE id = 1`
	qAuthUsers    = `SELECT data FROM auth_user ORDER BY name`
	qAuthRoles    = `SELECT data FROM auth_role ORDER BY name`
	qAuthSetMeta  = `UPDATE auth_meta SET enabled = ?1, revision = ?2 WHERE id = 1`
	qAuthPutUser  = `INSERT INTO auth_user (name, data) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET data = excluded.data`
	qAuthDelUser  = `DELETE FROM auth_user WHERE name = ?1`
	qAuthPutRole  = `INSERT INTO auth_role (name, data) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET data = excluded.data`
	qAuthDelRole  = `DELETE FROM auth_role WHERE name = ?1`
	qTokenDropFor = `DELETE FROM auth_token WHERE name = ?1`
	qTokenDropAll = `DELETE FROM auth_token`
	qTokenAdd     = `INSERT INTO auth_token (token, name, expiry_ms) VALUES (?1, ?2, ?3)`
	qTokenUser    = `SELECT name FROM auth_token WHERE token = ?1 AND expiry_ms > ?2`
	qTokenTouch   = `UPDATE auth_token SET expiry_ms = ?2 WHERE token = ?1`
	qTokenPurge   = `DELETE FROM auth_token WHERE expiry_ms <= ?1`
	qSecretSet    = `UPDATE auth_meta SET secret = ?1 WHERE id = 1 AND secret IS NULL`
	qSecret       = `SELECT secret FROM auth_meta WHERE id = 1`

	qPageCount = `PRAGMA page_count`
	qPageSize  = `PRAGMA page_size`
	qFreePages = `PRAGMA freelist_count`
)

// statements lists every statement a transaction runs, to prepare them once.
var statements = []string{
	qRevisions, qSetRevision, qSetCompact, qTimeline, qFence, qGetLatest,
	qCurrentSingle, qCurrentRange, qCurrentFromKey, qCountCurSingle, qCountCurRange, qCountCurFromKey,
	qLogSingle, qLogRange, qLogFromKey, qCountLogSngl, qCountLogRange, qCountLogFrom,
	qInsertLog, qUpsertCurrent, qDeleteCurrent, qChanges, qHistory,
	qCleanedTo, qSetCleanedTo, qStepEnd, qDeleteSuperseded, qDeleteTombstones,
	qLeaseInsert, qLeaseGet, qLeaseRenew, qLeaseExtend, qLeaseDelete, qLeaseKeys, qLeases, qLeaseExpired, qLeaseRows,
	qAlarms, qAlarmInsert, qAlarmDelete,
	qAuthMeta, qTokenUser,
}

// rangeStatements picks the range and count statements by key-range shape.
var rangeStatements = &backends.RangeStatements{
	Current:      [3]string{qCurrentSingle, qCurrentRange, qCurrentFromKey},
	Log:          [3]string{qLogSingle, qLogRange, qLogFromKey},
	CountCurrent: [3]string{qCountCurSingle, qCountCurRange, qCountCurFromKey},
	CountLog:     [3]string{qCountLogSngl, qCountLogRange, qCountLogFrom},
}
