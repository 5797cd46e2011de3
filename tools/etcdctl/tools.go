//go:build tools

// Package tools pins the etcdctl version the integration tests drive.
// Build it with: cd tools/etcdctl && go build -o DIR/etcdctl go.etcd.io/etcd/etcdctl/v3
package tools

import _ "go.etcd.io/etcd/etcdctl/v3"
