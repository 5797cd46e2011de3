package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// BeginBatch implements backends.BatchBeginner: setting READ COMMITTED,
// START TRANSACTION, the kv_meta lock and the read of keys are one
// multi-statement query, one round trip. The statements run in order, and
// in READ COMMITTED each consistent read starts a fresh snapshot, so the
// keys are read under the lock. The transaction runs on a connection of
// the writers' pool; START TRANSACTION and COMMIT are plain statements on
// it, so that they can share a round trip with others.
func (d *dialect) BeginBatch(ctx context.Context, keys [][]byte) (backends.Tx, []*mvccpb.KeyValue, error) {
	c, err := d.wdb.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	t := &txn{conn: c, st: connStmts{c}, locked: true, inlineBytes: d.inlineBytes}
	q, args := qBeginWrite, []any(nil)
	inline, keyBytes := keys, 0
	for _, k := range keys {
		keyBytes += len(k)
	}
	if len(inline) > writeChunk || 2*keyBytes > d.inlineBytes {
		inline = nil
	}
	if len(inline) > 0 {
		q += ";\n" + qCurrentManyHead + repeatGroup("?", len(inline)) + qPlaceholderTail
		for _, k := range inline {
			args = append(args, k)
		}
	}
	kvs, err := t.begin(ctx, q, args, len(inline) > 0)
	if err != nil {
		_ = t.Rollback()
		return nil, nil, fmt.Errorf("lock kv_meta: %w", err)
	}
	if len(keys) > 0 && len(inline) == 0 {
		if kvs, err = t.Current(ctx, keys); err != nil {
			_ = t.Rollback()
			return nil, nil, err
		}
	}
	return t, kvs, nil
}

// begin runs BeginBatch's query: its result sets with columns are the
// kv_meta row, auth_meta's revision and, if withKeys, the keys' current
// rows.
func (t *txn) begin(ctx context.Context, q string, args []any, withKeys bool) ([]*mvccpb.KeyValue, error) {
	rows, err := t.conn.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var kvs []*mvccpb.KeyValue
	sets := 0
	for {
		if cols, err := rows.Columns(); err == nil && len(cols) > 0 {
			switch sets {
			case 0:
				if !rows.Next() {
					if err := rows.Err(); err != nil {
						return nil, err
					}
					return nil, sql.ErrNoRows
				}
				if err := rows.Scan(&t.lockedRev, &t.lockedCompact); err != nil {
					return nil, err
				}
				for rows.Next() {
				}
			case 1:
				if !rows.Next() {
					if err := rows.Err(); err != nil {
						return nil, err
					}
					return nil, fmt.Errorf("read auth_meta: %w", sql.ErrNoRows)
				}
				if err := rows.Scan(&t.lockedAuthRev); err != nil {
					return nil, err
				}
				for rows.Next() {
				}
			case 2:
				if kvs, err = backends.ScanKVs(rows); err != nil {
					return nil, err
				}
			}
			sets++
		}
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if want := map[bool]int{false: 2, true: 3}[withKeys]; sets != want {
		return nil, fmt.Errorf("begin write: %d result sets, want %d", sets, want)
	}
	return kvs, nil
}

// inlineBudget returns how many bytes of keys and values a write
// connection may put into the text of one query, for a server whose
// max_allowed_packet is maxPacket: the driver's escaping can double them
// and CommitBatch's query carries each key twice (kv_log and kv_current),
// so a quarter of the packet, less room for the SQL, capped at 4 MiB.
// Larger writes go through server-side prepared statements, whose large
// arguments the driver streams in pieces, so any batch the server accepts
// at all fits.
func inlineBudget(maxPacket int64) int {
	return int(max(min(maxPacket/4-64<<10, 4<<20), 0))
}

// CommitBatch implements backends.BatchCommitter: the kv_log insert, the
// kv_current deletes and upserts, the kv_meta update and COMMIT are one
// multi-statement query. MySQL stops at the first statement that fails,
// so COMMIT runs only if everything before it succeeded.
func (t *txn) CommitBatch(ctx context.Context, rows []backends.LogRow, rev int64) error {
	if t.conn == nil {
		return sql.ErrTxDone
	}
	if !t.inline(rows) {
		if err := t.Write(ctx, rows); err != nil {
			return err
		}
		rows = nil
	}
	q, args := commitStatements(rows, rev)
	if _, err := t.conn.ExecContext(ctx, q, args...); err != nil {
		return err
	}
	t.release(nil)
	if rev > 0 {
		t.lockedRev = rev
	}
	return nil
}

// inline reports whether rows fit into the text of one query (see
// inlineBudget); larger ones go through Write's prepared statements.
func (t *txn) inline(rows []backends.LogRow) bool {
	size := 0
	for _, r := range rows {
		size += len(r.Key) + len(r.Value)
	}
	return len(rows) <= writeChunk && size <= t.inlineBytes
}

// commitStatements returns the multi-statement query, and its arguments,
// that writes rows, stores rev if rev > 0 and commits.
func commitStatements(rows []backends.LogRow, rev int64) (string, []any) {
	var q strings.Builder
	var args []any
	if len(rows) > 0 {
		for _, s := range chunkStatements(rows) {
			q.WriteString(s.q)
			q.WriteString(";\n")
			args = append(args, s.args...)
		}
	}
	if rev > 0 {
		q.WriteString(qSetRevision)
		q.WriteString(";\n")
		args = append(args, rev)
	}
	q.WriteString("COMMIT")
	return q.String(), args
}

// CommitChecked implements backends.CheckedCommitter: READ COMMITTED,
// START TRANSACTION, the kv_meta lock, the check, the writes, the kv_meta
// update and COMMIT are one multi-statement query, one round trip (rows too
// large for a query's text go through Write in between). The check is a
// statement of its own after the lock, so that its consistent read starts
// once the lock is granted; it fails (a subquery of two rows) if the
// revision or the auth revision is not the expected one, and MySQL runs no
// statement after a failed one.
func (d *dialect) CommitChecked(ctx context.Context, start int64, authRev uint64, rows []backends.LogRow, rev int64) error {
	c, err := d.wdb.Conn(ctx)
	if err != nil {
		return err
	}
	t := &txn{conn: c, st: connStmts{c}, locked: true, inlineBytes: d.inlineBytes}
	fail := func(err error) error {
		_ = t.Rollback()
		var me *gomysql.MySQLError
		if errors.As(err, &me) && me.Number == errCheckFailed {
			return fmt.Errorf("%w: not at revision %d and auth revision %d", backends.ErrStale, start, authRev)
		}
		return err
	}
	head, headArgs := qBeginChecked, []any{start, int64(authRev), int64(authRev)}
	if !t.inline(rows) {
		if _, err := c.ExecContext(ctx, head, headArgs...); err != nil {
			return fail(err)
		}
		if err := t.Write(ctx, rows); err != nil {
			return fail(err)
		}
		head, headArgs, rows = "", nil, nil
	}
	q, args := commitStatements(rows, rev)
	if head != "" {
		q, args = head+";\n"+q, append(headArgs, args...)
	}
	if _, err := c.ExecContext(ctx, q, args...); err != nil {
		return fail(err)
	}
	t.release(nil)
	return nil
}

// errCheckFailed is ER_SUBQUERY_NO_1_ROW, qCheckAt's failure; no other
// statement of a write transaction has a scalar subquery.
const errCheckFailed = 1242

// writeChunk bounds the rows per statement (MySQL allows 65535 placeholders).
const writeChunk = 500

// repeatGroup returns n copies of group joined by commas.
func repeatGroup(group string, n int) string {
	return strings.TrimSuffix(strings.Repeat(group+",", n), ",")
}

// Write appends rows to kv_log and applies the newest row of each key to
// kv_current, a few multi-row statements per chunk of rows.
func (t *txn) Write(ctx context.Context, rows []backends.LogRow) error {
	for len(rows) > 0 {
		n := min(len(rows), writeChunk)
		if err := t.writeChunk(ctx, rows[:n]); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// statement is one statement with its arguments.
type statement struct {
	q    string
	args []any
}

// chunkStatements returns the statements that append rows (at most
// writeChunk) to kv_log and apply the newest row of each key to
// kv_current.
func chunkStatements(rows []backends.LogRow) []statement {
	args := make([]any, 0, len(rows)*9)
	last := make(map[string]int, len(rows))
	for i, r := range rows {
		args = append(args, r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, nonNil(r.Value))
		last[string(r.Key)] = i
	}
	out := []statement{{qInsertLogHead + repeatGroup(qInsertLogRow, len(rows)), args}}
	var dels, puts []any
	nPuts := 0
	for i, r := range rows {
		if last[string(r.Key)] != i {
			continue
		}
		if r.Deleted {
			dels = append(dels, r.Key)
		} else {
			puts = append(puts, r.Key, r.CreateRev, r.Rev, r.Sub, r.Version, r.Lease)
			nPuts++
		}
	}
	if len(dels) > 0 {
		out = append(out, statement{qDeleteCurHead + repeatGroup("?", len(dels)) + qPlaceholderTail, dels})
	}
	if nPuts > 0 {
		out = append(out, statement{qUpsertCurHead + repeatGroup(qUpsertCurRow, nPuts) + qUpsertCurTail, puts})
	}
	return out
}

func (t *txn) writeChunk(ctx context.Context, rows []backends.LogRow) error {
	size := 0
	for _, r := range rows {
		size += len(r.Key) + len(r.Value)
	}
	for _, s := range chunkStatements(rows) {
		var err error
		if t.conn != nil && 2*size > t.inlineBytes {
			err = t.execPrepared(ctx, s.q, s.args...)
		} else {
			_, err = t.st.Exec(ctx, s.q, s.args...)
		}
		if err != nil {
			return fmt.Errorf("write revisions %d..%d: %w", rows[0].Rev, rows[len(rows)-1].Rev, err)
		}
	}
	return nil
}

// execPrepared runs q on a write transaction's connection as a server-side
// prepared statement: the driver then sends large arguments in pieces
// instead of escaping them into one max_allowed_packet-bounded query.
func (t *txn) execPrepared(ctx context.Context, q string, args ...any) error {
	stmt, err := t.conn.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer stmt.Close()
	_, err = stmt.ExecContext(ctx, args...)
	return err
}

// Current implements backends.CurrentGetter.
func (t *txn) Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error) {
	var out []*mvccpb.KeyValue
	for len(keys) > 0 {
		n := min(len(keys), writeChunk)
		args := make([]any, n)
		for i, k := range keys[:n] {
			args[i] = k
		}
		kvs, err := t.queryKVs(ctx, qCurrentManyHead+repeatGroup("?", n)+qPlaceholderTail, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, kvs...)
		keys = keys[n:]
	}
	return out, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// refusedErrors are the server errors that refuse a write for what it
// writes; the statement fails, and kvsql's multi-statement writes stop
// before their COMMIT.
var refusedErrors = map[uint16]bool{
	1048: true, // ER_BAD_NULL_ERROR
	1062: true, // ER_DUP_ENTRY
	1153: true, // ER_NET_PACKET_TOO_LARGE
	1264: true, // ER_WARN_DATA_OUT_OF_RANGE
	1366: true, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
	1406: true, // ER_DATA_TOO_LONG
	1644: true, // ER_SIGNAL_EXCEPTION (a trigger's SIGNAL)
	3819: true, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
	4025: true, // ER_CONSTRAINT_FAILED (MariaDB)
}

// RefusedWrite implements backends.Dialect.
func (d *dialect) RefusedWrite(err error) bool {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return refusedErrors[me.Number]
	}
	// The driver refuses a packet over max_allowed_packet before sending it.
	return errors.Is(err, gomysql.ErrPktTooLarge)
}
