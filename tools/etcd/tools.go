//go:build tools

// Package tools pins the etcd 3.6 server binary (its main package is the root
// of module go.etcd.io/etcd/server/v3) and etcdctl 3.6. Build them with
//
//	go build -o DIR/etcd go.etcd.io/etcd/server/v3
//	go build -o DIR/etcdctl go.etcd.io/etcd/etcdctl/v3
//
// from this directory; bench/run.sh does.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
