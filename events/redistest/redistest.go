// Package redistest starts real redis-server processes on free loopback ports for tests.
// Each server is the test's own, so fault tests can stop, restart and persist it.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	Dir  string
	Port int
	cmd  *exec.Cmd
	t    testing.TB
	args []string // more redis-server arguments (StartWithACL's --aclfile); none for Start
}

// Start starts a redis-server with append-only persistence in a temporary directory and stops
// it when the test ends. It skips the test when redis-server is not installed and BASALT_REQUIRE_REDIS
// is unset; with it set (as in CI), a missing server fails the test.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BASALT_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found: %v", err)
		}
		t.Skip("redis-server not installed; set BASALT_REQUIRE_REDIS=1 to make this a failure")
	}
	s := &Server{Dir: t.TempDir(), t: t}
	s.Port = freePort(t)
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Restart starts the server again (after Stop or Kill) on the same port and data directory.
func (s *Server) Restart() {
	s.t.Helper()
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--dir", s.Dir, "--appendonly", "yes", "--save", "", "--logfile", filepath.Join(s.Dir, "redis.log")}
	s.cmd = exec.Command("redis-server", append(args, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Ping(context.Background()).Err(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer: %s", s.Addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server and waits for it. It is idempotent.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Freeze suspends the server (SIGSTOP): it keeps its port and connections, and the kernel still
// accepts new ones, but it answers nothing, as a hung Redis does. Thaw resumes it; Stop works
// on a frozen server too.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatalf("redis-server on %s is not running", s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal redis-server: %v", err)
	}
}

// URL returns the redis:// URL of the server.
func (s *Server) URL() string { return fmt.Sprintf("redis://%s/0", s.Addr) }

// Options returns client options for the server.
func (s *Server) Options() *redis.Options { return &redis.Options{Addr: s.Addr} }

// Client returns a client closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(s.Options())
	s.t.Cleanup(func() { c.Close() })
	return c
}
