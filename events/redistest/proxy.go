package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy between Basalt's processes and a redis-server that injects the
// failures production Redis has, deterministically: a reply lost after its command ran, a
// delay, a frozen connection. It reads the commands clients send (RESP arrays), so a fault can
// name the command it hits.
type Proxy struct {
	Addr     string
	upstream string
	ln       net.Listener
	t        testing.TB

	mu     sync.Mutex
	rules  []*rule
	frozen chan struct{} // closed while traffic flows; open while frozen
	delay  time.Duration
	conns  map[*proxyConn]bool
	closed bool
	wg     sync.WaitGroup
}

// A Command is what a client sent: its arguments and, for an EXEC, the commands queued since
// MULTI (the transaction it runs).
type Command struct {
	Args []string
	Tx   [][]string
}

// Name is the command's name in upper case.
func (c Command) Name() string {
	if len(c.Args) == 0 {
		return ""
	}
	return strings.ToUpper(c.Args[0])
}

// Mentions reports whether any argument of the command, or of its transaction, contains s.
func (c Command) Mentions(s string) bool {
	for _, a := range c.Args {
		if strings.Contains(a, s) {
			return true
		}
	}
	for _, q := range c.Tx {
		for _, a := range q {
			if strings.Contains(a, s) {
				return true
			}
		}
	}
	return false
}

type rule struct {
	match func(Command) bool
	left  int
	hits  int
}

// StartProxy starts a proxy to the redis-server at upstream (host:port) on a free loopback
// port and stops it when the test ends.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), upstream: upstream, ln: ln, t: t,
		frozen: make(chan struct{}), conns: map[*proxyConn]bool{}}
	close(p.frozen)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL returns the redis:// URL of the proxy.
func (p *Proxy) URL() string { return fmt.Sprintf("redis://%s/0", p.Addr) }

// LoseReplies makes the next n commands that match lose their reply: the command reaches
// Redis and runs, then the connection breaks before its reply (and any reply after it)
// reaches the client, as when a network path or a failover drops it. Commands the client
// pipelined after it never reach Redis. It returns a function that reports how many replies
// were lost so far.
func (p *Proxy) LoseReplies(n int, match func(Command) bool) (lost func() int) {
	r := &rule{match: match, left: n}
	p.mu.Lock()
	p.rules = append(p.rules, r)
	p.mu.Unlock()
	return func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return r.hits
	}
}

// Delay holds every command for d before it goes to Redis (0 ends the delay).
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Freeze stops all traffic in both directions, on open connections and new ones, as a hung
// network path does; Thaw lets it flow again.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.frozen:
		p.frozen = make(chan struct{})
	default:
	}
}

// Thaw ends a Freeze.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.frozen:
	default:
		close(p.frozen)
	}
}

// Close stops the proxy and breaks every connection. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	p.Thaw()
	p.wg.Wait()
}

// flowing waits until traffic may flow; it returns false when the proxy closed.
func (p *Proxy) flowing() bool {
	p.mu.Lock()
	ch := p.frozen
	p.mu.Unlock()
	<-ch
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

// hit returns whether cmd loses its reply, counting it against the first rule that matches.
func (p *Proxy) hit(cmd Command) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		if r.left > 0 && r.match(cmd) {
			r.left--
			r.hits++
			return true
		}
	}
	return false
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.flowing() {
			c.Close()
			return
		}
		s, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{p: p, client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			pc.close()
			return
		}
		p.conns[pc] = true
		p.mu.Unlock()
		p.wg.Add(2)
		go pc.requests()
		go pc.replies()
	}
}

// proxyConn is one client connection and its connection to Redis.
type proxyConn struct {
	p      *Proxy
	client net.Conn
	server net.Conn
	mu     sync.Mutex
	doomed bool // a reply was lost: nothing more reaches the client
	once   sync.Once
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		c.client.Close()
		c.server.Close()
	})
}

func (c *proxyConn) end() {
	c.close()
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
}

// requests forwards the client's commands one by one, applying the faults.
func (c *proxyConn) requests() {
	defer c.p.wg.Done()
	defer c.end()
	rd := bufio.NewReader(c.client)
	var tx [][]string
	inMulti := false
	for {
		args, raw, err := readCommand(rd)
		if err != nil {
			return
		}
		if !c.p.flowing() {
			return
		}
		c.p.mu.Lock()
		d := c.p.delay
		c.p.mu.Unlock()
		if d > 0 {
			time.Sleep(d)
		}
		cmd := Command{Args: args}
		switch cmd.Name() {
		case "MULTI":
			inMulti, tx = true, nil
		case "EXEC", "DISCARD":
			cmd.Tx, inMulti, tx = tx, false, nil
		default:
			if inMulti {
				tx = append(tx, args)
			}
		}
		lose := c.p.hit(cmd)
		if lose {
			c.mu.Lock()
			c.doomed = true
			c.mu.Unlock()
		}
		if _, err := c.server.Write(raw); err != nil {
			return
		}
		if lose {
			// Let Redis run it, then break the connection: the reply is never delivered.
			time.Sleep(100 * time.Millisecond)
			return
		}
	}
}

// replies forwards Redis's replies to the client until a reply is lost.
func (c *proxyConn) replies() {
	defer c.p.wg.Done()
	defer c.end()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.server.Read(buf)
		if n > 0 {
			if !c.p.flowing() {
				return
			}
			c.mu.Lock()
			doomed := c.doomed
			c.mu.Unlock()
			if doomed {
				return
			}
			if _, werr := c.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readCommand reads one command in RESP (an array of bulk strings) or inline form and
// returns its arguments and its bytes as sent.
func readCommand(rd *bufio.Reader) (args []string, raw []byte, err error) {
	var b bytes.Buffer
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	b.WriteString(line)
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), b.Bytes(), nil // inline command
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return nil, nil, fmt.Errorf("bad array header %q", line)
	}
	for i := 0; i < n; i++ {
		h, err := rd.ReadString('\n')
		if err != nil {
			return nil, nil, err
		}
		b.WriteString(h)
		h = strings.TrimRight(h, "\r\n")
		if !strings.HasPrefix(h, "$") {
			return nil, nil, fmt.Errorf("bad bulk header %q", h)
		}
		size, err := strconv.Atoi(h[1:])
		if err != nil || size < 0 {
			return nil, nil, fmt.Errorf("bad bulk header %q", h)
		}
		data := make([]byte, size+2)
		if _, err := io.ReadFull(rd, data); err != nil {
			return nil, nil, err
		}
		b.Write(data)
		args = append(args, string(data[:size]))
	}
	return args, b.Bytes(), nil
}
