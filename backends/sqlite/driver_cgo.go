//go:build sqlite_cgo

package sqlite

import (
	"errors"

	"github.com/mattn/go-sqlite3" // registers the "sqlite3" database/sql driver
)

// driverName is github.com/mattn/go-sqlite3: the SQLite C library through
// cgo. Selected by -tags sqlite_cgo; it needs CGO_ENABLED=1 and a C compiler,
// and the binary links libc dynamically (see docs/benchmarks.md for when it
// is worth it). The default is the pure-Go driver in driver_modernc.go.
const driverName = "sqlite3"

// dsn opens path in WAL mode with every commit synced (synchronous=FULL).
// txlock is "immediate" for the writer (BEGIN IMMEDIATE takes the write lock
// up front) and "deferred" for readers. Same settings as driver_modernc.go,
// spelled in go-sqlite3's parameter names.
func dsn(path, txlock string) string {
	return "file:" + path + "?_journal_mode=WAL&_synchronous=FULL" +
		"&_busy_timeout=10000&_foreign_keys=0&_txlock=" + txlock
}

// errCode returns the SQLite result code of a driver error (the extended
// code, whose low byte is the primary code), if err is one.
func errCode(err error) (int, bool) {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return int(se.ExtendedCode), true
	}
	return 0, false
}

// plainDSN opens path as it is (no journal mode or sync change), for
// reading another program's database.
func plainDSN(path string) string { return "file:" + path + "?_busy_timeout=10000" }
