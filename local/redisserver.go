package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is basalt local's Redis when redis-server is installed: a child process on a
// free loopback port whose dir is DataDir/redis, with append-only persistence.
//
// It runs with appendfsync everysec. redis-server writes each change to the append-only file
// (write(2), into the kernel's page cache) before it answers, so every acknowledged write
// survives redis-server, basalt local or both being killed; what everysec gives up is at most
// the last second or so of writes on a crash of the machine itself. appendfsync always would
// close that gap at the price of an fsync on the path of every write, and Basalt makes several
// per request: tens of milliseconds per request on a slow disk, for a local stack.
//
// The child is in its own process group, so a Ctrl-C in the terminal reaches basalt local
// only, which stops its functions first and redis-server last. On Linux it gets SIGTERM (and
// stops cleanly, syncing its file) when basalt local dies, even by SIGKILL; anywhere, the next
// basalt local on the same directory finds a server left running through its pidfile and
// stops it before starting its own.
type redisServer struct {
	dir     string
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has exited; waitErr is set then
	waitErr error
	logger  *slog.Logger
}

// errPortTaken is a start that lost its port to another process between choosing and binding it.
var errPortTaken = errors.New("port taken")

func startRedisServer(ctx context.Context, bin, dir string, logger *slog.Logger) (*redisServer, error) {
	if err := stopLeftover(dir, logger); err != nil {
		return nil, err
	}
	var s *redisServer
	for attempt := 1; ; attempt++ {
		var err error
		s, err = launch(ctx, bin, dir, logger)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			return nil, err
		}
	}
	if err := s.importSnapshot(ctx); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func launch(ctx context.Context, bin, dir string, logger *slog.Logger) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, logName)
	var logStart int64
	if fi, err := os.Stat(logPath); err == nil {
		logStart = fi.Size()
	}
	s := &redisServer{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		exited: make(chan struct{}), logger: logger}
	s.cmd = exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
		"--dir", dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--pidfile", filepath.Join(dir, pidName), "--logfile", logPath, "--daemonize", "no")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setPdeathsig(s.cmd.SysProcAttr)
	started := make(chan error, 1)
	go s.own(started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	if err := s.waitReady(ctx, logPath, logStart); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	logger.Info("redis-server started", "addr", s.addr, "dir", dir, "pid", s.cmd.Process.Pid)
	return s, nil
}

// own starts the process and waits for it, on one OS thread: Linux sends the parent-death
// signal when the thread that started the child exits, and this goroutine keeps its thread
// locked until the child has exited (it never unlocks, so the thread ends with it).
func (s *redisServer) own(started chan<- error) {
	runtime.LockOSThread()
	if err := s.cmd.Start(); err != nil {
		started <- err
		return
	}
	started <- nil
	s.waitErr = s.cmd.Wait()
	close(s.exited)
}

// waitReady waits until the server answers PING (it answers LOADING while it reads its
// append-only file). A server that exits first has its log's new lines in the error.
func (s *redisServer) waitReady(ctx context.Context, logPath string, logStart int64) error {
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer c.Close()
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			tail := readFrom(logPath, logStart)
			if strings.Contains(tail, "Address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("redis-server exited at start (%v): %s", s.waitErr, strings.TrimSpace(tail))
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("redis-server on %s did not answer within 2 minutes (%v); see %s", s.addr, err, logPath)
		case <-tick.C:
		}
	}
}

// importSnapshot moves the state of an embedded Redis that ran on this directory before
// redis-server was installed into the (new) server, so installing redis-server loses nothing.
// The snapshot is renamed once imported; one that is still there means the import did not
// finish, and it runs again from an empty dataset.
func (s *redisServer) importSnapshot(ctx context.Context) error {
	path := filepath.Join(s.dir, snapshotName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	snap, err := decodeSnapshot(f)
	if err != nil {
		return fmt.Errorf("%s: %w (move it away to start without it)", path, err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.addr, ReadTimeout: time.Minute, WriteTimeout: time.Minute})
	defer c.Close()
	if err := c.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	n, err := snap.restore(ctx, c, time.Now())
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return err
	}
	s.logger.Info("redis-server: imported the embedded Redis's snapshot", "path", path, "keys", n, "taken_at", snap.TakenAt)
	return nil
}

func (s *redisServer) URL() string { return "redis://" + s.addr + "/0" }

func (s *redisServer) Note() string {
	return fmt.Sprintf("redis-server at %s (pid %d, started by basalt local), append-only file in %s, fsync every second",
		s.addr, s.cmd.Process.Pid, s.dir)
}

// Run returns nil when ctx ends, or an error as soon as the server stops on its own.
func (s *redisServer) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-s.exited:
		return fmt.Errorf("redis-server exited (%v); see %s", s.waitErr, filepath.Join(s.dir, logName))
	}
}

// Close stops the server with SIGTERM, on which redis-server syncs its append-only file and
// exits, and waits for it; a server that has not exited after a minute is killed.
func (s *redisServer) Close() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("redis-server on %s did not stop within a minute of SIGTERM and was killed", s.addr)
	}
	if s.waitErr != nil {
		return fmt.Errorf("redis-server: %w", s.waitErr)
	}
	return nil
}

// stopLeftover stops a redis-server that an earlier basalt local left running on dir: one
// killed on a system without a parent-death signal, or whose server was still shutting down.
// The caller holds dir's lock, so no live basalt local owns that server. A pidfile naming a
// process that is not a redis-server in dir is stale (the pid was reused) and is ignored.
func stopLeftover(dir string, logger *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(dir, pidName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !isRedisServerIn(pid, dir) {
		return nil
	}
	logger.Warn("stopping the redis-server an earlier basalt local left running", "pid", pid, "dir", dir)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if waitGone(pid, time.Minute) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitGone(pid, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("the redis-server (pid %d) an earlier basalt local left running on %s does not stop", pid, dir)
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !processGone(pid) {
		if time.Now().After(deadline) {
			return false
		}
		<-t.C
	}
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// readFrom returns the end of the file at path from offset, at most 4 KiB of it.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > 4096 {
		offset = fi.Size() - 4096
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return string(b)
}
