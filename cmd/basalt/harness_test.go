package main

// The end-to-end harness: tests here build the real basalt binary once and run its processes
// (api, scheduler, agents) against a real redis-server on a free loopback port.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events/redistest"
)

var basaltBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "basalt-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	basaltBin = filepath.Join(dir, "basalt")
	build := exec.Command("go", "build", "-race", "-o", basaltBin, ".")
	if os.Getenv("BASALT_E2E_NORACE") != "" {
		build = exec.Command("go", "build", "-o", basaltBin, ".")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build basalt:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running basalt process.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	cmd  *exec.Cmd
	log  string
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(basaltBin, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	f.Close()
}

// kill stops the process with the given signal and waits for it.
func (p *proc) kill(sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

// stack is a running Basalt: redis-server, one api, schedulers and agents.
type stack struct {
	t      *testing.T
	dir    string
	redis  *redistest.Server  // nil on a Redis Cluster
	proxy  *redistest.Proxy   // between every process and redis-server, when the stack has one
	rcl    *redistest.Cluster // the Redis Cluster, when the stack runs on one
	env    []string
	base   string // http://127.0.0.1:port
	procs  []*proc
	agents map[string]*proc
}

// stackOptions tunes a stack; zero values pick fast test intervals.
type stackOptions struct {
	schedulers int
	env        []string
	// proxy puts a fault-injecting TCP proxy between every process and redis-server.
	proxy bool
	// cluster runs the stack on a Redis Cluster of three masters, each with a replica.
	cluster bool
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newStack starts redis-server, the API and the schedulers. Agents start with addAgent.
func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	if o.schedulers == 0 {
		o.schedulers = 1
	}
	s := &stack{t: t, dir: t.TempDir(), agents: map[string]*proc{}}
	var redisURL string
	if o.cluster {
		s.rcl = redistest.StartCluster(t, 3, 1)
		redisURL = s.rcl.URL()
	} else {
		s.redis = redistest.Start(t)
		redisURL = s.redis.URL()
	}
	if o.proxy {
		s.proxy = redistest.StartProxy(t, s.redis.Addr)
		redisURL = s.proxy.URL()
	}
	port := freePort(t)
	s.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.env = append([]string{
		"REDIS_URL=" + redisURL,
		fmt.Sprintf("BASALT_LISTEN=127.0.0.1:%d", port),
		"BASALT_AUTH=noauth",
		"BASALT_REPORT_INTERVAL=200ms",
		"BASALT_SERVICE_DOWN_TIME=1500ms",
		"BASALT_RECONCILE_INTERVAL=500ms",
		"BASALT_CLAIM_TIMEOUT=2s",
		// Agents renew every second; a dead agent's operations end a few seconds after it.
		"BASALT_OPERATION_LEASE=3s",
		"BASALT_LOG_LEVEL=info",
		// Tests create many volumes per project; quota tests set their own limits.
		"BASALT_QUOTA_VOLUMES=-1", "BASALT_QUOTA_GIGABYTES=-1", "BASALT_QUOTA_SNAPSHOTS=-1",
	}, o.env...)
	t.Cleanup(func() {
		for _, p := range s.procs {
			p.kill(syscall.SIGTERM)
		}
		if t.Failed() {
			for _, p := range s.procs {
				b, _ := os.ReadFile(p.log)
				lines := strings.Split(string(b), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				t.Logf("--- %s log (tail) ---\n%s", p.name, strings.Join(lines, "\n"))
			}
		}
	})
	s.run("api", "api")
	for i := 0; i < o.schedulers; i++ {
		s.run(fmt.Sprintf("scheduler-%d", i), "scheduler", "--host", fmt.Sprintf("sched%d", i))
	}
	s.waitHTTP()
	return s
}

func (s *stack) run(name string, args ...string) *proc {
	p := &proc{t: s.t, name: name, args: args, env: s.env, log: filepath.Join(s.dir, name+".log")}
	p.start()
	s.procs = append(s.procs, p)
	return p
}

func (s *stack) waitHTTP() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(s.base + "/"); err == nil {
			res.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("api did not listen on %s", s.base)
}

// addAgent writes cfg to a file and starts an agent for it; it waits until the agent's
// backends report pools.
func (s *stack) addAgent(cfg agents.Config) *proc {
	s.t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(s.dir, "data")
	}
	if cfg.CapabilityInterval == 0 {
		cfg.CapabilityInterval = agents.Duration(300 * time.Millisecond)
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(s.dir, cfg.Host+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	p := s.run("agent-"+cfg.Host, "agent", "--config", path)
	s.agents[cfg.Host] = p
	for _, bk := range cfg.Backends {
		s.waitPool(cfg.Host + "@" + bk.Name)
	}
	return p
}

// waitPool waits until get_pools lists a pool of backend.
func (s *stack) waitPool(backend string) {
	s.t.Helper()
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/scheduler-stats/get_pools", "")
		return strings.Contains(r.raw, `"`+backend+`#`), r.raw
	}, "backend "+backend+" reports pools")
}

func (s *stack) eventually(d time.Duration, cond func() (bool, string), what string) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("timed out after %v waiting until %s; last: %s", d, what, last)
}

type response struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

func (s *stack) do(token, method, path, body string, hdr ...string) response {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, raw: string(raw), header: res.Header}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// createVolume creates a volume and returns its id.
func (s *stack) createVolume(token, body string) string {
	s.t.Helper()
	r := s.do(token, "POST", "/v3/volumes", body)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("create volume %s = %d %s", body, r.status, r.raw)
	}
	return r.body["volume"].(map[string]any)["id"].(string)
}

// volume returns the volume as an admin sees it.
func (s *stack) volume(id string) map[string]any {
	s.t.Helper()
	r := s.do("admin:admin", "GET", "/v3/volumes/"+id, "")
	if r.status != 200 {
		s.t.Fatalf("show volume %s = %d %s", id, r.status, r.raw)
	}
	return r.body["volume"].(map[string]any)
}

// waitStatus waits until volume id leaves every transitional status and returns it.
func (s *stack) waitFinal(id string, d time.Duration) map[string]any {
	s.t.Helper()
	var v map[string]any
	s.eventually(d, func() (bool, string) {
		v = s.volume(id)
		st := v["status"].(string)
		return st != "creating" && st != "deleting" && st != "extending" && st != "reverting", st
	}, "volume "+id+" reaches a final status")
	return v
}

// fileBackend is a backend of the file driver.
func fileBackend(name string) agents.BackendConfig {
	return agents.BackendConfig{Name: name, Driver: "file", VolumeBackendName: "lvmbackend"}
}
