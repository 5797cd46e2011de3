package integration

import (
	"context"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOperatorLogs: what an operator reads in kvsql's log, on PostgreSQL
// stopped and started under it:
//   - a request slower than --warning-apply-duration is logged as etcd's
//     "apply request took too long", with the request summarised (key,
//     value size) and never its value;
//   - the first leader is logged once;
//   - while the database is down, each class of database error is logged
//     once (not once per failed request), and the change stream's loss
//     and its reconnection once each; kvsql_notify_reconnects_total counts it.
func TestOperatorLogs(t *testing.T) {
	t.Parallel()
	pg, err := newPGServer()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(pg.destroy)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	metrics := procFreeAddr(t)
	p := startKVSQLProc(t, "--endpoint="+freshPostgresURLOn(t, pg), "--warning-apply-duration=1ns",
		"--listen-metrics-urls=http://"+metrics)
	c := p.client(t)
	const secret = "the-secret-value-never-logged"
	if _, err := c.Put(ctx, "slow/key", secret); err != nil {
		t.Fatal(err)
	}
	logs, ok := p.log.waitFor(10*time.Second, p.exited, func(s string) bool {
		return strings.Contains(s, `msg="apply request took too long"`) && strings.Contains(s, `put:<key:\"slow/key\" value_size:29>`)
	})
	if !ok {
		t.Fatalf("no slow-request line with the put summarised:\n%s", logs)
	}
	if strings.Contains(logs, secret) {
		t.Errorf("a value reached the log:\n%s", logs)
	}
	// The leader line also says Run is past its start-up reads.
	logs, _ = p.log.waitFor(20*time.Second, p.exited, func(s string) bool { return strings.Contains(s, `msg="leader changed"`) })
	if n := strings.Count(logs, `msg="leader changed"`); n != 1 {
		t.Errorf("%d leader-change lines, want 1:\n%s", n, logs)
	}

	pg.stop(syscall.SIGINT)
	for range 20 {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Put(pctx, "down/key", "v")
		pcancel()
		if err == nil {
			t.Fatal("a put succeeded with the database stopped")
		}
	}
	mustStart(t, pg.start)
	logs, ok = p.log.waitFor(60*time.Second, p.exited, func(s string) bool {
		return strings.Contains(s, `msg="database change stream reconnected"`)
	})
	if !ok {
		t.Fatalf("no change stream reconnection logged:\n%s", logs)
	}
	for _, line := range []string{`msg="database change stream lost; reconnecting"`, `msg="reading changes failed; retrying"`, `msg="member heartbeat failed; will retry"`} {
		if n := strings.Count(logs, line); n > 1 {
			t.Errorf("%d lines %s in one outage, want at most 1:\n%s", n, line, logs)
		}
	}
	if n := strings.Count(logs, `msg="database change stream lost; reconnecting"`); n != 1 {
		t.Errorf("%d change-stream-lost lines, want 1:\n%s", n, logs)
	}
	classes := map[string]int{}
	for _, m := range regexp.MustCompile(`msg="database error" class="?([^"=]+?)"? err=`).FindAllStringSubmatch(logs, -1) {
		classes[m[1]]++
	}
	if len(classes) == 0 {
		t.Errorf("no database error logged while the database was down:\n%s", logs)
	}
	for class, n := range classes {
		if n != 1 {
			t.Errorf("database error class %q logged %d times, want once:\n%s", class, n, logs)
		}
	}
	t.Logf("database error classes logged: %v", classes)
	pollUntil(t, 30*time.Second, "kvsql_notify_reconnects_total counts the reconnection", func() bool {
		v, _ := sample(scrapeMetrics(t, metrics), "kvsql_notify_reconnects_total", nil)
		return v >= 1
	})
	pollUntil(t, 30*time.Second, "writes work again", func() bool {
		_, err := c.Put(ctx, "up/key", "v")
		return err == nil
	})
}
