//go:build !linux

package dbnet

import "syscall"

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist; the
// keepalive probes still notice a dead idle connection.
func setUserTimeout(string, string, syscall.RawConn) error { return nil }
