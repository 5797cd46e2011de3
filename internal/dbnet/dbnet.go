// Package dbnet dials database connections that notice a dead peer: a
// database host that crashed, or a network that drops packets, leaves a
// TCP connection open on this side for many minutes (the kernel retries
// unacknowledged data for about 15 minutes and never probes an idle
// connection by default). kvsql's connections send keepalive probes after a
// few idle seconds and give up on data unacknowledged for UserTimeout, so
// that their queries fail and the pools, the watch tailer and the notify
// sources reconnect instead of hanging.
package dbnet

import (
	"context"
	"net"
	"time"
)

const (
	// ConnectTimeout bounds establishing a TCP connection.
	ConnectTimeout = 5 * time.Second
	// Keepalive probes start after KeepaliveIdle without traffic and are
	// repeated every KeepaliveInterval; KeepaliveCount unanswered ones
	// close the connection (about 11 s in all).
	KeepaliveIdle     = 5 * time.Second
	KeepaliveInterval = 2 * time.Second
	KeepaliveCount    = 3
	// UserTimeout is how long sent data may stay unacknowledged before the
	// kernel closes the connection (TCP_USER_TIMEOUT, Linux).
	UserTimeout = 15 * time.Second
)

var dialer = &net.Dialer{
	Timeout: ConnectTimeout,
	KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     KeepaliveIdle,
		Interval: KeepaliveInterval,
		Count:    KeepaliveCount,
	},
	Control: setUserTimeout,
}

// Dial connects like net.Dialer.DialContext with the settings above. Its
// signature fits pgconn.Config.DialFunc, mysql.Config.DialFunc and
// go-mysql's replication dialer.
func Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialer.DialContext(ctx, network, addr)
}
