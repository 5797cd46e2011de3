package integration

import (
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards 127.0.0.1 connections to a target address, and can cut
// the network in the two ways a database can become unreachable: block
// (packets are dropped: connections stay open on both sides and nothing
// gets through, like a partition or a firewall) and refuse (connections
// are reset and new ones refused, like a stopped server). It can also point
// new connections at another target (a DNS or virtual-IP failover).
type tcpProxy struct {
	t  testing.TB
	ln net.Listener

	mu      sync.Mutex // guards the fields below
	target  string
	blocked bool
	refuse  bool
	// unblocked is closed and replaced when the block is lifted.
	unblocked chan struct{}
	conns     map[net.Conn]bool
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, unblocked: make(chan struct{}), conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.closeAll()
	})
	return p
}

// Addr is the address clients connect to.
func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse {
			p.mu.Unlock()
			_ = c.(*net.TCPConn).SetLinger(0) // a reset, as from a closed port
			_ = c.Close()
			continue
		}
		target := p.target
		p.conns[c] = true
		p.mu.Unlock()
		go p.handle(c, target)
	}
}

func (p *tcpProxy) handle(c net.Conn, target string) {
	// A blocked network does not answer a connection attempt either.
	p.waitUnblocked()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	go p.pipe(up, c)
	p.pipe(c, up)
}

// pipe copies src to dst until either closes, holding data while blocked.
func (p *tcpProxy) pipe(src, dst net.Conn) {
	defer p.drop(src)
	defer p.drop(dst)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.waitUnblocked()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: both sides go
		}
	}
}

func (p *tcpProxy) waitUnblocked() {
	for {
		p.mu.Lock()
		blocked, ch := p.blocked, p.unblocked
		p.mu.Unlock()
		if !blocked {
			return
		}
		<-ch
	}
}

func (p *tcpProxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *tcpProxy) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]bool{}
	p.mu.Unlock()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// block drops everything from now on, on open connections and new ones,
// until unblock.
func (p *tcpProxy) block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
}

func (p *tcpProxy) unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked {
		p.blocked = false
		close(p.unblocked)
		p.unblocked = make(chan struct{})
	}
}

// refuseAll resets every open connection and refuses new ones until
// accept.
func (p *tcpProxy) refuseAll() {
	p.mu.Lock()
	p.refuse = true
	p.mu.Unlock()
	p.closeAll()
}

func (p *tcpProxy) accept() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = false
}

// retarget sends new connections to target and resets the open ones, as a
// failover of a DNS name or a virtual IP does.
func (p *tcpProxy) retarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
	p.closeAll()
}

// hostPortRE finds the host:port of a MySQL endpoint's tcp(...) address.
var hostPortRE = regexp.MustCompile(`tcp\(([^)]+)\)`)

// endpointAddr returns the database address in a postgres:// or mysql://
// endpoint.
func endpointAddr(t testing.TB, ep string) string {
	t.Helper()
	if strings.HasPrefix(ep, "mysql://") {
		m := hostPortRE.FindStringSubmatch(ep)
		if m == nil {
			t.Fatalf("no tcp(host:port) in %s", ep)
		}
		return m[1]
	}
	u, err := url.Parse(ep)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// withAddr returns ep with its database address replaced by addr.
func withAddr(t testing.TB, ep, addr string) string {
	t.Helper()
	return strings.Replace(ep, endpointAddr(t, ep), addr, 1)
}

// viaProxy returns ep reached through a new proxy, and the proxy.
func viaProxy(t testing.TB, ep string) (string, *tcpProxy) {
	t.Helper()
	p := newTCPProxy(t, endpointAddr(t, ep))
	return withAddr(t, ep, p.Addr()), p
}
