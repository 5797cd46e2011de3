package integration

// HTTP on the client URL, beside gRPC on the same port, against a real
// etcd side by side: the health, version and metrics endpoints and etcd's
// JSON gateway under /v3/, with the requests etcd's documentation shows.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// httpDo sends a request with a JSON body (if any) and returns the status
// and body.
func httpDo(t testing.TB, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// decodeJSON decodes a JSON object.
func decodeJSON(t testing.TB, what, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s: not a JSON object: %v\n%s", what, err, s)
	}
	return m
}

// gatewayVarying are the fields whose values differ between two servers
// that answer the same requests correctly: identities, raft terms, lease
// IDs and the seconds a lease has left.
var gatewayVarying = map[string]bool{
	"header.cluster_id": true, "header.member_id": true, "header.raft_term": true,
	"ID": true, "TTL": true, "result.header.cluster_id": true, "result.header.member_id": true,
	"result.header.raft_term": true,
}

// sameJSON reports every difference between got (kvsql) and want (etcd):
// the same keys at every level, and equal values except at varying paths.
func sameJSON(path string, got, want any, varying map[string]bool) []string {
	if varying[path] {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: kvsql has %v, etcd an object %v", path, got, want)}
		}
		var diffs []string
		keys := map[string]bool{}
		for k := range g {
			keys[k] = true
		}
		for k := range w {
			keys[k] = true
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			p := k
			if path != "" {
				p = path + "." + k
			}
			gv, gok := g[k]
			wv, wok := w[k]
			switch {
			case varying[p]:
			case !gok:
				diffs = append(diffs, fmt.Sprintf("%s: missing in kvsql (etcd: %v)", p, wv))
			case !wok:
				diffs = append(diffs, fmt.Sprintf("%s: only in kvsql (%v)", p, gv))
			default:
				diffs = append(diffs, sameJSON(p, gv, wv, varying)...)
			}
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: kvsql %v, etcd %v", path, got, want)}
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, sameJSON(path, g[i], w[i], varying)...)
		}
		return diffs
	}
	if !reflect.DeepEqual(got, want) {
		return []string{fmt.Sprintf("%s: kvsql %v, etcd %v", path, got, want)}
	}
	return nil
}

// gatewayStep is one request to both servers. id, if set, gives the body
// from the lease ID an earlier step returned ("%s" in body).
type gatewayStep struct {
	name, path, body string
	// shapeOnly compares only the keys (Status differs in its values).
	shapeOnly bool
}

// TestHTTPGatewayMatchesEtcd: etcd's JSON gateway requests, as etcd's
// documentation shows them (base64 keys and values), answer on kvsql's
// client URL with the same status, fields and values as on a real etcd:
// header fields, kvs, count, prev_kvs, txn responses, errors, leases and
// status.
func TestHTTPGatewayMatchesEtcd(t *testing.T) {
	t.Parallel()
	kv, et := startSQLite(t, serverOptions{}), startEtcd(t, serverOptions{})
	leaseIDs := map[string]string{}
	steps := []gatewayStep{
		{name: "put", path: "/v3/kv/put", body: `{"key": "Zm9v", "value": "YmFy"}`},
		{name: "put prev_kv", path: "/v3/kv/put", body: `{"key": "Zm9v", "value": "YmF6", "prev_kv": true}`},
		{name: "put other", path: "/v3/kv/put", body: `{"key": "Zm9vMg==", "value": "YmFyMg=="}`},
		{name: "range", path: "/v3/kv/range", body: `{"key": "Zm9v"}`},
		{name: "range prefix", path: "/v3/kv/range", body: `{"key": "Zm9v", "range_end": "Zm9w"}`},
		{name: "range count_only", path: "/v3/kv/range", body: `{"key": "Zm9v", "range_end": "Zm9w", "count_only": true}`},
		{name: "range limit", path: "/v3/kv/range", body: `{"key": "Zm9v", "range_end": "Zm9w", "limit": 1}`},
		{name: "range missing", path: "/v3/kv/range", body: `{"key": "bm9uZQ=="}`},
		{name: "txn docs", path: "/v3/kv/txn", body: `{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}`},
		{name: "txn failure", path: "/v3/kv/txn", body: `{"compare":[{"target":"VALUE","key":"Zm9v","value":"bm9wZQ=="}],"success":[{"requestPut":{"key":"Zm9v","value":"eA=="}}],"failure":[{"requestRange":{"key":"Zm9v"}}]}`},
		{name: "deleterange prev_kv", path: "/v3/kv/deleterange", body: `{"key": "Zm9vMg==", "prev_kv": true}`},
		{name: "compaction", path: "/v3/kv/compaction", body: `{"revision": "3", "physical": true}`},
		{name: "range compacted", path: "/v3/kv/range", body: `{"key": "Zm9v", "revision": "2"}`},
		{name: "range future", path: "/v3/kv/range", body: `{"key": "Zm9v", "revision": "100"}`},
		{name: "bad json", path: "/v3/kv/range", body: `{"key": 5}`},
		{name: "lease grant", path: "/v3/lease/grant", body: `{"TTL": 30, "ID": 0}`},
		{name: "put with lease", path: "/v3/kv/put", body: `{"key": "bGVhc2Vk", "value": "dg==", "lease": "%s"}`},
		{name: "lease timetolive", path: "/v3/lease/timetolive", body: `{"ID": "%s", "keys": true}`},
		{name: "lease revoke", path: "/v3/lease/revoke", body: `{"ID": "%s"}`},
		{name: "range after revoke", path: "/v3/kv/range", body: `{"key": "bGVhc2Vk"}`},
		{name: "lease timetolive revoked", path: "/v3/lease/timetolive", body: `{"ID": "%s"}`},
		{name: "status", path: "/v3/maintenance/status", body: `{}`, shapeOnly: true},
	}
	for _, st := range steps {
		answers := map[string]map[string]any{}
		codes := map[string]int{}
		for name, s := range map[string]server{"kvsql": kv, "etcd": et} {
			body := st.body
			if strings.Contains(body, "%s") {
				body = fmt.Sprintf(body, leaseIDs[name])
			}
			code, resp := httpDo(t, http.MethodPost, s.Endpoint+st.path, body)
			codes[name] = code
			answers[name] = decodeJSON(t, name+" "+st.name, resp)
			if st.name == "lease grant" {
				leaseIDs[name] = fmt.Sprint(answers[name]["ID"])
			}
		}
		if codes["kvsql"] != codes["etcd"] {
			t.Errorf("%s: status %d, etcd %d (%v / %v)", st.name, codes["kvsql"], codes["etcd"], answers["kvsql"], answers["etcd"])
			continue
		}
		varying := gatewayVarying
		if st.shapeOnly {
			// Present in both is enough. kvsql has no space quota to
			// report and no downgrade in progress: etcd's dbSizeQuota and
			// its empty downgradeInfo have no counterpart.
			varying = map[string]bool{"dbSizeQuota": true, "downgradeInfo": true}
			for k := range answers["etcd"] {
				if _, ok := answers["kvsql"][k]; ok {
					varying[k] = true
				}
			}
		}
		if diffs := sameJSON("", answers["kvsql"], answers["etcd"], varying); len(diffs) > 0 {
			t.Errorf("%s: kvsql's answer differs from etcd's:\n  %s\nkvsql: %v\netcd:  %v", st.name, strings.Join(diffs, "\n  "), answers["kvsql"], answers["etcd"])
		}
	}
	// The gateway and gRPC are one store: clientv3 on the same port sees
	// the gateway's writes.
	resp, err := newClient(t, kv).Get(context.Background(), "foo")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "bar" {
		t.Fatalf("clientv3 Get foo after the gateway's writes: %v %v", resp, err)
	}
}

// TestHTTPHealthVersion: /health, /livez, /readyz (and their per-check
// paths, ?verbose, ?exclude) and /version answer as a real etcd's do.
// (TestMetricsEndpoint scrapes /metrics on the client URL.)
func TestHTTPHealthVersion(t *testing.T) {
	t.Parallel()
	kv, et := startSQLite(t, serverOptions{}), startEtcd(t, serverOptions{})
	for _, tc := range []struct {
		method, path string
		json         bool
	}{
		{http.MethodGet, "/health", true},
		{http.MethodGet, "/health?serializable=true", true},
		{http.MethodGet, "/livez", false},
		{http.MethodGet, "/livez?verbose", false},
		{http.MethodGet, "/livez/serializable_read", false},
		{http.MethodGet, "/readyz", false},
		{http.MethodGet, "/readyz?verbose", false},
		{http.MethodGet, "/readyz?verbose&exclude=linearizable_read", false},
		{http.MethodGet, "/readyz/linearizable_read", false},
		{http.MethodGet, "/readyz/non_learner", false},
		{http.MethodPost, "/health", false},
		{http.MethodPost, "/readyz", false},
		{http.MethodGet, "/version", true},
	} {
		kcode, kbody := httpDo(t, tc.method, kv.Endpoint+tc.path, "")
		ecode, ebody := httpDo(t, tc.method, et.Endpoint+tc.path, "")
		if kcode != ecode {
			t.Errorf("%s %s: status %d, etcd %d", tc.method, tc.path, kcode, ecode)
			continue
		}
		if tc.json {
			if diffs := sameJSON("", decodeJSON(t, "kvsql "+tc.path, kbody), decodeJSON(t, "etcd "+tc.path, ebody), map[string]bool{"etcdserver": true, "etcdcluster": true, "storage": true}); len(diffs) > 0 {
				t.Errorf("%s %s: %v\nkvsql: %s\netcd:  %s", tc.method, tc.path, diffs, kbody, ebody)
			}
		} else if sortedLines(kbody) != sortedLines(ebody) {
			// etcd runs its checks in map order: compare the lines as sets.
			t.Errorf("%s %s: kvsql answers %q, etcd %q", tc.method, tc.path, kbody, ebody)
		}
	}
	_, v := httpDo(t, http.MethodGet, kv.Endpoint+"/version", "")
	if ver := decodeJSON(t, "version", v); ver["etcdserver"] == "" || !strings.HasPrefix(fmt.Sprint(ver["etcdserver"]), fmt.Sprint(ver["etcdcluster"])[:3]) {
		t.Errorf("/version: %s", v)
	}
}

// sortedLines sorts a text's lines.
func sortedLines(s string) string {
	lines := strings.Split(s, "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// watchLines reads a streaming gateway response one JSON object at a time.
type watchLines struct {
	t   testing.TB
	dec *json.Decoder
}

func (w watchLines) next() map[string]any {
	w.t.Helper()
	var m map[string]any
	if err := w.dec.Decode(&m); err != nil {
		w.t.Fatalf("watch stream: %v", err)
	}
	return m
}

// TestHTTPGatewayWatch: POST /v3/watch streams etcd's watch responses as
// chunked JSON (created, then the events of puts made through gRPC on the
// same port), the same as etcd's; a websocket on /v3/watch carries the
// same messages, as etcd's websocket proxy does.
func TestHTTPGatewayWatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string][]map[string]any{}
	for name, s := range map[string]server{"kvsql": startSQLite(t, serverOptions{}), "etcd": startEtcd(t, serverOptions{})} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint+"/v3/watch", strings.NewReader(`{"create_request": {"key": "Zm9v", "prev_kv": true}}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		lines := watchLines{t, json.NewDecoder(bufio.NewReader(resp.Body))}
		created := lines.next()
		c := newClient(t, s)
		for _, v := range []string{"bar", "baz"} {
			if _, err := c.Put(ctx, "foo", v); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Delete(ctx, "foo"); err != nil {
			t.Fatal(err)
		}
		msgs := []map[string]any{created}
		for n := 0; n < 3; {
			m := lines.next()
			msgs = append(msgs, m)
			if r, ok := m["result"].(map[string]any); ok {
				evs, _ := r["events"].([]any)
				n += len(evs)
			} else {
				t.Fatalf("%s: watch message without result: %v", name, m)
			}
		}
		got[name] = msgs
	}
	varying := map[string]bool{"result.header.cluster_id": true, "result.header.member_id": true, "result.header.raft_term": true, "result.watch_id": true}
	if len(got["kvsql"]) != len(got["etcd"]) {
		t.Fatalf("kvsql sent %d watch messages, etcd %d:\n%v\n%v", len(got["kvsql"]), len(got["etcd"]), got["kvsql"], got["etcd"])
	}
	for i := range got["etcd"] {
		if diffs := sameJSON("", got["kvsql"][i], got["etcd"][i], varying); len(diffs) > 0 {
			t.Errorf("watch message %d differs: %v\nkvsql: %v\netcd:  %v", i, diffs, got["kvsql"][i], got["etcd"][i])
		}
	}

	// The same stream over a websocket.
	kv := startSQLite(t, serverOptions{})
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(kv.Endpoint, "http")+"/v3/watch", nil)
	if err != nil {
		t.Fatalf("websocket /v3/watch: %v", err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"create_request": {"key": "Zm9v"}}`)); err != nil {
		t.Fatal(err)
	}
	readWS := func() map[string]any {
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("websocket read: %v", err)
		}
		return decodeJSON(t, "websocket message", string(b))
	}
	if m := readWS(); m["result"].(map[string]any)["created"] != true {
		t.Fatalf("websocket: first message %v, want created", m)
	}
	put, err := newClient(t, kv).Put(ctx, "foo", "ws")
	if err != nil {
		t.Fatal(err)
	}
	m := readWS()
	evs, _ := m["result"].(map[string]any)["events"].([]any)
	if len(evs) != 1 || fmt.Sprint(evs[0].(map[string]any)["kv"].(map[string]any)["mod_revision"]) != fmt.Sprint(put.Header.Revision) {
		t.Fatalf("websocket: %v, want the put at revision %d", m, put.Header.Revision)
	}
}

// TestHTTPCurl: the real curl binary against kvsql's client URL.
func TestHTTPCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl binary")
	}
	kv := startSQLite(t, serverOptions{})
	run := func(args ...string) string {
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "30"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run(kv.Endpoint + "/health"); out != `{"health":"true","reason":""}` {
		t.Errorf("curl /health: %q", out)
	}
	run("-X", "POST", kv.Endpoint+"/v3/kv/put", "-d", `{"key": "Zm9v", "value": "YmFy"}`)
	if out := run("-X", "POST", kv.Endpoint+"/v3/kv/range", "-d", `{"key": "Zm9v"}`); !strings.Contains(out, `"value":"YmFy"`) && !strings.Contains(out, `"value": "YmFy"`) {
		t.Errorf("curl /v3/kv/range: %s", out)
	}
}

// TestHTTPHealthDatabaseDown: /health answers false with 503 (and /readyz
// fails) while PostgreSQL is stopped, within the health check's bound, and
// true again once it is back, without restarting kvsql; /livez with
// serializable_read excluded keeps answering, for liveness probes that
// must not restart kvsql over its database.
func TestHTTPHealthDatabaseDown(t *testing.T) {
	t.Parallel()
	p, err := newPGServer()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(p.destroy)
	url := p.url("postgres")
	st, src := openPostgres(t, url)
	t.Cleanup(func() { _ = src.Close() })
	kv := serveKVSQL(t, st, src, serverOptions{})
	// Wait until the server runs (its watch tailer delivers), so that
	// stopping the database below does not fail its start instead.
	c := newClient(t, kv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wch := c.Watch(ctx, "ready")
	if _, err := c.Put(ctx, "ready", "1"); err != nil {
		t.Fatal(err)
	}
	if wr := <-wch; len(wr.Events) != 1 {
		t.Fatalf("watch before the outage: %+v", wr)
	}

	health := func() (int, map[string]any) {
		code, body := httpDo(t, http.MethodGet, kv.Endpoint+"/health", "")
		return code, decodeJSON(t, "/health", body)
	}
	if code, h := health(); code != http.StatusOK || h["health"] != "true" || h["reason"] != "" {
		t.Fatalf("/health with the database up: %d %v", code, h)
	}
	p.stop(syscall.SIGINT)
	code, h := health()
	if code != http.StatusServiceUnavailable || h["health"] != "false" || !strings.HasPrefix(fmt.Sprint(h["reason"]), "RANGE ERROR:") {
		t.Fatalf("/health with the database stopped: %d %v, want 503 and health false with a RANGE ERROR reason", code, h)
	}
	t.Logf("/health while down: %v", h)
	if code, body := httpDo(t, http.MethodGet, kv.Endpoint+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]serializable_read failed") {
		t.Errorf("/readyz with the database stopped: %d %q", code, body)
	}
	if code, body := httpDo(t, http.MethodGet, kv.Endpoint+"/livez?exclude=serializable_read", ""); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez?exclude=serializable_read with the database stopped: %d %q", code, body)
	}
	mustStart(t, p.start)
	deadline := time.Now().Add(time.Minute)
	for {
		code, h := health()
		if code == http.StatusOK && h["health"] == "true" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health after the database came back: %d %v", code, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Writes work again through the same kvsql.
	if _, err := c.Put(ctx, "after", "restart"); err != nil {
		t.Fatal(err)
	}
}
