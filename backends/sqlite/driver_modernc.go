//go:build !sqlite_cgo

package sqlite

import (
	"errors"

	"modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// driverName is modernc.org/sqlite: SQLite translated to Go, so kvsql builds
// with CGO_ENABLED=0 into a static binary. This is the default; build with
// -tags sqlite_cgo for the C library instead (driver_cgo.go).
const driverName = "sqlite"

// dsn opens path in WAL mode with every commit synced (synchronous=FULL).
// txlock is "immediate" for the writer (BEGIN IMMEDIATE takes the write lock
// up front) and "deferred" for readers.
func dsn(path, txlock string) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(OFF)&_txlock=" + txlock
}

// errCode returns the SQLite result code of a driver error (primary code in
// the low byte, as extended codes carry it), if err is one.
func errCode(err error) (int, bool) {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code(), true
	}
	return 0, false
}

// plainDSN opens path as it is (no journal mode or sync change), for
// reading another program's database.
func plainDSN(path string) string { return "file:" + path + "?_pragma=busy_timeout(10000)" }
