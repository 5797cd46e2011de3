// Package etcdtest starts the reference etcd the Kubernetes tests compare
// kvsql with: a single member in-process, configured as k8s.io/apiserver's
// own tests configure it.
package etcdtest

import (
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/apiserver/pkg/storage/etcd3/testserver"
)

// Start starts etcd for one test, stops it at cleanup and returns its client
// URL. progressNotify, if set, is its watch progress notification interval.
func Start(t *testing.T, progressNotify time.Duration) string {
	t.Helper()
	cfg := testserver.NewTestConfig(t)
	if progressNotify > 0 {
		cfg.WatchProgressNotifyInterval = progressNotify
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		t.Fatal("etcd did not become ready")
	}
	return cfg.AdvertiseClientUrls[0].String()
}
