//go:build tools

// Package tools pins go.etcd.io/etcd/v3/tools/benchmark (etcd's own load
// generator). Build it with
//
//	go build -o DIR/benchmark go.etcd.io/etcd/v3/tools/benchmark
//
// from this directory; bench/run.sh does.
package tools

import _ "go.etcd.io/etcd/v3/tools/benchmark"
