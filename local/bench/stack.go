package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/basalt-storage/basalt/functions/process"
	"github.com/basalt-storage/basalt/local"
	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server process of our own on a free loopback port, without
// persistence.
type redisServer struct {
	addr    string
	dir     string
	version string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
}

// startRedis starts redis-server in dir and waits (up to ten seconds) until it answers. It
// returns exec.ErrNotFound (wrapped) when redis-server is not installed.
func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	version := "redis-server"
	if out, err := exec.CommandContext(ctx, path, "--version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
		if i := strings.Index(version, " sha="); i > 0 {
			version = version[:i]
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, version: version, done: make(chan struct{})}
	s.cmd = exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return nil, fmt.Errorf("redis-server on %s exited: %s", s.addr, log)
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer in 10s: %w", s.addr, err)
		case <-t.C:
		}
	}
}

// stop kills the server and waits for it to exit. It is idempotent.
func (s *redisServer) stop() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// cpu returns the CPU time (user + system) the server has used, from /proc.
func (s *redisServer) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which ends with the last ')'): state is field 3, utime 14,
	// stime 15, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// selfCPU returns the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stack is a running local stack.
type stack struct {
	addr     string
	backends []string // host@backend
	cancel   context.CancelFunc
	done     chan error
}

// stackConfig is what the benchmark changes in the local stack.
type stackConfig struct {
	redisURL   string // "" = the embedded miniredis
	consumers  int
	capacityGB float64
	dataDir    string
}

// startStack runs local.Run (API, scheduler, results, the example topology's agents) with every
// backend on the fake driver of capacityGB per pool, and waits (up to 30 seconds) until it is
// up. The API listens on 127.0.0.1 at a free port.
func startStack(ctx context.Context, c stackConfig, logger *slog.Logger) (*stack, process.Config, error) {
	pc, err := process.FromEnv() // defaults filled; BASALT_* variables apply
	if err != nil {
		return nil, pc, err
	}
	pc.RedisURL, pc.Listen = c.redisURL, "127.0.0.1:0"
	if c.consumers > 0 {
		pc.Consumers = c.consumers
	}
	// The benchmark project creates thousands of volumes: no quota gets in the way.
	if pc.QuotaDefaults == nil {
		pc.QuotaDefaults = map[string]int{}
	}
	for _, res := range []string{"volumes", "gigabytes", "snapshots"} {
		if _, set := pc.QuotaDefaults[res]; !set {
			pc.QuotaDefaults[res] = -1
		}
	}
	topo, err := local.DefaultTopology()
	if err != nil {
		return nil, pc, err
	}
	opts, err := json.Marshal(map[string]any{"total_capacity_gb": c.capacityGB})
	if err != nil {
		return nil, pc, err
	}
	sctx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	s := &stack{cancel: cancel, done: make(chan error, 1)}
	for i := range topo {
		for j := range topo[i].Backends {
			// Driver "fake" in local.Options would drop the options, and with them the capacity.
			topo[i].Backends[j].Driver, topo[i].Backends[j].Options = "fake", opts
			s.backends = append(s.backends, topo[i].Host+"@"+topo[i].Backends[j].Name)
		}
	}
	go func() {
		s.done <- local.Run(sctx, local.Options{Process: pc, DataDir: c.dataDir, Topology: topo, Out: io.Discard, Store: local.StoreMemory,
			Ready: func(addr string) { ready <- addr }}, logger)
	}()
	select {
	case s.addr = <-ready:
		return s, pc, nil
	case err := <-s.done:
		cancel()
		return nil, pc, fmt.Errorf("local stack: %w", err)
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, pc, errors.New("local stack: not up after 30s")
	case <-ctx.Done():
		s.stop()
		return nil, pc, ctx.Err()
	}
}

// stop stops the stack and waits (up to 45 seconds) for it to return.
func (s *stack) stop() error {
	s.cancel()
	select {
	case err := <-s.done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-time.After(45 * time.Second):
		return errors.New("local stack did not stop within 45s")
	}
}

// machineCPU returns the busy and total CPU time of all CPUs since boot, from /proc/stat.
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	var ticks [10]int64
	for i := 1; i < len(f) && i <= len(ticks); i++ {
		ticks[i-1], _ = strconv.ParseInt(f[i], 10, 64)
	}
	// user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
	// counted in user and nice.
	var all int64
	for _, t := range ticks[:8] {
		all += t
	}
	idle := ticks[3] + ticks[4]
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(all-idle) * tick, time.Duration(all) * tick
}
