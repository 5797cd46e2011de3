package postgres

import (
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSeveralHostsConnectToThePrimary: a URL with several hosts connects
// only to the one that accepts writes (libpq's target_session_attrs=
// read-write) unless the URL's target_session_attrs says otherwise, and
// the database named in errors lists every host once (pgx lists a host
// again for each sslmode it may try).
func TestSeveralHostsConnectToThePrimary(t *testing.T) {
	t.Parallel()
	readWrite := reflect.ValueOf(pgconn.ValidateConnectTargetSessionAttrsReadWrite).Pointer()
	preferStandby := reflect.ValueOf(pgconn.ValidateConnectTargetSessionAttrsPreferStandby).Pointer()
	for _, tc := range []struct {
		url   string
		hosts string
		check uintptr // the connection check wanted; 0: none
	}{
		{"postgres://kv@db1:5432/kv?sslmode=disable", "db1:5432", 0},
		{"postgres://kv@db1:5432/kv?sslmode=prefer", "db1:5432", 0},
		{"postgres://kv@db1:5432,db2:5433/kv?sslmode=disable", "db1:5432,db2:5433", readWrite},
		{"postgres://kv@db1:5432,db2:5433/kv?sslmode=prefer", "db1:5432,db2:5433", readWrite},
		{"postgres://kv@db1:5432,db2:5433/kv?sslmode=disable&target_session_attrs=read-write", "db1:5432,db2:5433", readWrite},
		{"postgres://kv@db1:5432,db2:5433/kv?sslmode=disable&target_session_attrs=prefer-standby", "db1:5432,db2:5433", preferStandby},
	} {
		c, err := pgx.ParseConfig(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if hosts := preferPrimary(c); hosts != tc.hosts {
			t.Errorf("%s: hosts %q, want %q", tc.url, hosts, tc.hosts)
		}
		var got uintptr
		if c.ValidateConnect != nil {
			got = reflect.ValueOf(c.ValidateConnect).Pointer()
		}
		if got != tc.check {
			t.Errorf("%s: connection check %#x, want %#x (read-write %#x, prefer-standby %#x)", tc.url, got, tc.check, readWrite, preferStandby)
		}
	}
}
