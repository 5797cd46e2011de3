package kvserver

import (
	"log/slog"
	"testing"

	"github.com/kvsql/kvsql/backends"
)

// TestForwarderPicksLeader: a follower forwards to the instance marked as
// leader, and writes directly when it leads itself, when nobody is marked,
// when the leader advertises this instance's own URL, or when the URL
// cannot be dialled.
func TestForwarderPicksLeader(t *testing.T) {
	const me, other = 1, 2
	f := &forwarder{self: me, selfURL: map[string]bool{"http://127.0.0.1:2379": true}, log: slog.New(slog.DiscardHandler)}
	defer f.close()
	members := func(leader uint64, url string) []backends.Member {
		return []backends.Member{
			{ID: me, Name: "me", ClientURLs: []string{"http://127.0.0.1:2379"}, Leader: leader == me},
			{ID: other, Name: "other", ClientURLs: []string{url}, Leader: leader == other},
		}
	}
	for _, tc := range []struct {
		name    string
		ms      []backends.Member
		leading bool
		want    string // the leader URL forwarded to; "" for none
	}{
		{"other leads", members(other, "http://127.0.0.1:1"), false, "http://127.0.0.1:1"},
		{"same leader again", members(other, "http://127.0.0.1:1"), false, "http://127.0.0.1:1"},
		{"leader moved to another URL", members(other, "https://127.0.0.1:2"), false, "https://127.0.0.1:2"},
		{"this instance leads", members(other, "http://127.0.0.1:1"), true, ""},
		{"marked as leader in the table", members(me, "http://127.0.0.1:1"), false, ""},
		{"nobody marked", members(0, "http://127.0.0.1:1"), false, ""},
		{"leader advertises this instance's URL", members(other, "http://127.0.0.1:2379"), false, ""},
		{"unusable URL", members(other, "unix:///tmp/kvsql.sock"), false, ""},
	} {
		f.update(tc.ms, tc.leading)
		got := ""
		if f.peer != nil {
			got = f.peer.url
		}
		if got != tc.want {
			t.Errorf("%s: forwarding to %q, want %q", tc.name, got, tc.want)
		}
	}
}
