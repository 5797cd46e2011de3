//go:build tools

// Package tools pins kine for bench/run.sh (the PostgreSQL and MySQL
// comparisons): `go build -o DIR/kine github.com/k3s-io/kine`.
package tools

import _ "github.com/k3s-io/kine"
