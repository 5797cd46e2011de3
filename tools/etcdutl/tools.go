//go:build tools

// Package tools pins the etcdutl version the snapshot tests drive
// (`etcdutl snapshot status` and `etcdutl snapshot restore` on files that
// kvsql's Maintenance.Snapshot writes). Build it with:
// cd tools/etcdutl && go build -o DIR/etcdutl go.etcd.io/etcd/etcdutl/v3
package tools

import _ "go.etcd.io/etcd/etcdutl/v3"
