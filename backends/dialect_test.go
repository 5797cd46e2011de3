package backends

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewKeyRange(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key, end string
		want     KeyRange
		single   bool
	}{
		{"a", "", KeyRange{Key: []byte("a")}, true},
		{"a", "\x00", KeyRange{Key: []byte("a"), FromKey: true}, false},
		{"\x00", "\x00", KeyRange{Key: []byte("\x00"), FromKey: true}, false},
		{"a", "b", KeyRange{Key: []byte("a"), End: []byte("b")}, false},
		{"b", "a", KeyRange{Key: []byte("b"), End: []byte("a")}, false},
	}
	for _, c := range cases {
		var end []byte
		if c.end != "" {
			end = []byte(c.end)
		}
		got := NewKeyRange([]byte(c.key), end)
		if !bytes.Equal(got.Key, c.want.Key) || !bytes.Equal(got.End, c.want.End) || got.FromKey != c.want.FromKey {
			t.Errorf("NewKeyRange(%q, %q) = %+v, want %+v", c.key, c.end, got, c.want)
		}
		if got.Single() != c.single {
			t.Errorf("NewKeyRange(%q, %q).Single() = %v", c.key, c.end, got.Single())
		}
	}
}

// TestPendingMigrations: a migration is pending whenever its version was
// never applied, even below one that was (branches land out of order).
func TestPendingMigrations(t *testing.T) {
	t.Parallel()
	ms := []Migration{{Version: 1}, {Version: 3}, {Version: 4}, {Version: 6}}
	got, err := Pending(ms, map[int]bool{1: true, 6: true})
	if err != nil || len(got) != 2 || got[0].Version != 3 || got[1].Version != 4 {
		t.Fatalf("Pending = %v, %v; want versions 3 and 4", got, err)
	}
	// A database a newer kvsql migrated is refused, with what to do.
	if got, err := Pending(ms, map[int]bool{1: true, 6: true, 9: true}); err == nil || !strings.Contains(err.Error(), "[9]") ||
		!strings.Contains(err.Error(), "newer kvsql") {
		t.Fatalf("Pending with unknown version 9 = %v, %v; want an error naming it", got, err)
	}
}
