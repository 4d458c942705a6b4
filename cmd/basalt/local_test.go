package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLocalStackQuickstart runs what `make run` runs (its own Redis: redis-server when it is
// installed, as in CI) and follows the README: a create returns 202 and within two seconds the
// volume is available on one of the four backends of the example topology.
func TestLocalStackQuickstart(t *testing.T) {
	l := startLocal(t, t.TempDir())
	for _, want := range []string{l.base + "/v3", "Redis:", "kept across restarts", "curl", "Auth:  noauth (no authentication"} {
		if !strings.Contains(l.banner, want) {
			t.Errorf("banner %q lacks %q", l.banner, want)
		}
	}
	id := l.createVolume("demo:demo", `{"volume": {"size": 1, "name": "first"}}`)
	deadline := time.Now().Add(2 * time.Second)
	var v map[string]any
	for time.Now().Before(deadline) {
		v = l.volume(id)
		if v["status"] == "available" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	backends := []string{"block1@lvmdriver-b1#", "block2@lvmdriver-b21#", "block2@lvmdriver-b22#", "network@lvmdriver-network#"}
	host, _ := v["os-vol-host-attr:host"].(string)
	ok := false
	for _, b := range backends {
		ok = ok || strings.HasPrefix(host, b)
	}
	if v["status"] != "available" || !ok {
		t.Errorf("two seconds after create: status %v on %q, want available on one of %v", v["status"], host, backends)
	}
}

// TestLocalStackRemembers stops and starts `basalt local` on one data directory, with each of
// its own Redis: redis-server (when installed) and, with a PATH that lacks redis-server, the
// embedded one. After a SIGTERM and after a SIGKILL, the volumes are listed again, available,
// with the same ids, their files hold the bytes written before, a deleted volume stays deleted
// and has no file, and the stack goes on creating and deleting. No redis-server outlives a
// basalt local, even one killed with SIGKILL.
func TestLocalStackRemembers(t *testing.T) {
	for _, mode := range []string{"redis-server", "embedded"} {
		t.Run(mode, func(t *testing.T) {
			var env []string
			if mode == "redis-server" {
				if _, err := exec.LookPath("redis-server"); err != nil {
					if os.Getenv("BASALT_REQUIRE_REDIS") != "" {
						t.Fatalf("redis-server not found: %v", err)
					}
					t.Skip("redis-server not installed")
				}
			} else {
				env = append(env, "PATH="+pathWithout(t, "redis-server"))
			}
			data := t.TempDir()
			redisDir := filepath.Join(data, "redis")
			t.Cleanup(func() { noRedisServerIn(t, redisDir) })

			l := startLocal(t, data, env...)
			if want := map[string]string{"redis-server": "Redis: redis-server at", "embedded": "Redis: embedded"}[mode]; !strings.Contains(l.banner, want) {
				t.Errorf("banner %q does not say it runs %q", l.banner, want)
			}
			keep := l.availableVolume("demo:demo", `{"volume": {"size": 1, "name": "keep"}}`)
			gone := l.availableVolume("demo:demo", `{"volume": {"size": 1, "name": "gone"}}`)
			keepFile, goneFile := volumeFile(t, data, keep), volumeFile(t, data, gone)
			writeProbes(t, keepFile, "remembered")
			l.deleteVolume(gone)
			if _, err := os.Stat(goneFile); !os.IsNotExist(err) {
				t.Fatalf("deleted volume %s: its file %s is still there (%v)", gone, goneFile, err)
			}

			l.stop(syscall.SIGTERM)
			if mode == "embedded" {
				if _, err := os.Stat(filepath.Join(redisDir, "miniredis.snapshot")); err != nil {
					t.Errorf("embedded Redis left no snapshot: %v", err)
				}
			}
			noRedisServerIn(t, redisDir)

			l = startLocal(t, data, env...)
			l.checkRemembered("after SIGTERM", data, keep, "remembered", gone)
			fresh := l.availableVolume("demo:demo", `{"volume": {"size": 1, "name": "fresh"}}`)
			writeProbes(t, volumeFile(t, data, fresh), "fresh")
			before := redisServersIn(redisDir)
			if mode == "redis-server" && len(before) != 1 {
				t.Fatalf("redis-servers in %s: %v, want one", redisDir, before)
			}
			// The embedded Redis saves every second: what it held a second ago survives a SIGKILL.
			time.Sleep(2 * time.Second)
			l.stop(syscall.SIGKILL)
			if runtime.GOOS == "linux" {
				// The parent-death signal stops redis-server as soon as basalt local dies.
				l.eventually(30*time.Second, func() (bool, string) {
					left := redisServersIn(redisDir)
					return len(left) == 0, fmt.Sprint(left)
				}, "redis-server stops after its basalt local was killed")
			}

			l = startLocal(t, data, env...)
			l.checkRemembered("after SIGKILL", data, keep, "remembered", gone)
			l.checkRemembered("after SIGKILL", data, fresh, "fresh", "")
			if after := redisServersIn(redisDir); mode == "redis-server" && (len(after) != 1 || slices.Contains(before, after[0])) {
				t.Errorf("after a restart, redis-servers in %s: %v, want one new one (the old one was %v)", redisDir, after, before)
			}
			l.deleteVolume(keep)
			l.stop(syscall.SIGTERM)
			noRedisServerIn(t, redisDir)
		})
	}
}

// TestLocalStackStopsLeftoverRedisServer: a redis-server still running on the data directory
// (as one started by a basalt local that died where there is no parent-death signal) is found
// through its pidfile and stopped before basalt local starts its own.
func TestLocalStackStopsLeftoverRedisServer(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BASALT_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found: %v", err)
		}
		t.Skip("redis-server not installed")
	}
	data := t.TempDir()
	redisDir := filepath.Join(data, "redis")
	if err := os.MkdirAll(redisDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { noRedisServerIn(t, redisDir) })
	// Started as basalt local starts it (pidfile included), but by the test, without a
	// parent-death signal.
	left := exec.Command("redis-server", "--port", fmt.Sprint(freePort(t)), "--bind", "127.0.0.1",
		"--dir", redisDir, "--appendonly", "yes", "--save", "", "--pidfile", filepath.Join(redisDir, "redis-server.pid"),
		"--logfile", filepath.Join(redisDir, "leftover.log"))
	left.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := left.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = left.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = left.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(redisServersIn(redisDir), left.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the leftover redis-server (pid %d) does not run in %s", left.Process.Pid, redisDir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l := startLocal(t, data)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the leftover redis-server (pid %d) still runs after basalt local started", left.Process.Pid)
	}
	if b, _ := os.ReadFile(l.log); !strings.Contains(string(b), "left running") {
		t.Errorf("basalt local's log does not say it stopped a leftover redis-server:\n%s", b)
	}
	if got := redisServersIn(redisDir); len(got) != 1 || got[0] == left.Process.Pid {
		t.Errorf("redis-servers in %s: %v, want basalt local's own only", redisDir, got)
	}
	l.availableVolume("demo:demo", `{"volume": {"size": 1}}`)
}

// localStack is one `basalt local` process.
type localStack struct {
	*stack
	cmd    *exec.Cmd
	log    string
	banner string
}

// startLocal starts `basalt local --data data` with its own Redis (REDIS_URL unset) and waits
// for its banner. env is added to the process's environment.
func startLocal(t *testing.T, data string, env ...string) *localStack {
	t.Helper()
	port := freePort(t)
	l := &localStack{stack: &stack{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)},
		log: filepath.Join(t.TempDir(), "basalt-local.log")}
	l.cmd = exec.Command(basaltBin, "local", "--data", data)
	l.cmd.Env = append(os.Environ(), append([]string{"REDIS_URL=", fmt.Sprintf("BASALT_LISTEN=127.0.0.1:%d", port)}, env...)...)
	logf, err := os.Create(l.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	l.cmd.Stderr = logf
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.stop(syscall.SIGTERM)
		if t.Failed() {
			b, _ := os.ReadFile(l.log)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("--- basalt local log (tail) ---\n%s", strings.Join(lines, "\n"))
		}
	})
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "/v3/volumes") {
				banner <- b.String()
			}
		}
		close(banner)
	}()
	select {
	case text, ok := <-banner:
		if !ok {
			b, _ := os.ReadFile(l.log)
			t.Fatalf("basalt local exited before its banner:\n%s", b)
		}
		l.banner = text
	case <-time.After(60 * time.Second):
		t.Fatal("basalt local printed no banner with a first command within 60s")
	}
	return l
}

// stop sends sig to basalt local and waits (up to a minute) for it to exit; after a SIGTERM it
// must exit with status 0 (its Redis stopped and its state saved, and no race reported). It is
// idempotent.
func (l *localStack) stop(sig syscall.Signal) {
	if l.cmd == nil {
		return
	}
	_ = l.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- l.cmd.Wait() }()
	select {
	case err := <-done:
		if sig == syscall.SIGTERM && err != nil {
			l.t.Errorf("basalt local after SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		l.t.Errorf("basalt local did not exit within a minute of %v", sig)
		_ = l.cmd.Process.Kill()
		<-done
	}
	l.cmd = nil
}

// deleteVolume deletes volume id and waits until it is gone.
func (l *localStack) deleteVolume(id string) {
	l.t.Helper()
	if r := l.do("demo:demo", "DELETE", "/v3/volumes/"+id, ""); r.status != 202 {
		l.t.Fatalf("delete volume %s = %d %s", id, r.status, r.raw)
	}
	l.eventually(20*time.Second, func() (bool, string) {
		r := l.do("admin:admin", "GET", "/v3/volumes/"+id, "")
		return r.status == 404, r.raw
	}, "volume "+id+" is gone")
}

// checkRemembered checks that volume id is listed, available, and that its file holds tag's
// probes; and that volume gone, if given, is neither listed nor has a file.
func (l *localStack) checkRemembered(what, data, id, tag, gone string) {
	l.t.Helper()
	r := l.do("demo:demo", "GET", "/v3/volumes/detail", "")
	var listed []string
	for _, v := range r.body["volumes"].([]any) {
		listed = append(listed, v.(map[string]any)["id"].(string))
	}
	if !slices.Contains(listed, id) {
		l.t.Fatalf("%s: volume %s is not listed: %s", what, id, r.raw)
	}
	if gone != "" && slices.Contains(listed, gone) {
		l.t.Errorf("%s: deleted volume %s is listed again: %s", what, gone, r.raw)
	}
	if v := l.volume(id); v["status"] != "available" || v["id"] != id {
		l.t.Errorf("%s: volume %s is %v (id %v), want available", what, id, v["status"], v["id"])
	}
	checkProbes(l.t, what, volumeFile(l.t, data, id), tag)
	if gone != "" {
		if m, _ := filepath.Glob(filepath.Join(data, "*", "*", "volume-"+gone)); len(m) != 0 {
			l.t.Errorf("%s: deleted volume %s has a file again: %v", what, gone, m)
		}
	}
}

// volumeFile returns the file of volume id under data (data/host/backend/volume-id).
func volumeFile(t *testing.T, data, id string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(data, "*", "*", "volume-"+id))
	if len(m) != 1 {
		t.Fatalf("files of volume %s under %s: %v, want one", id, data, m)
	}
	return m[0]
}

// redisServersIn returns the pids of the live redis-server processes whose working directory
// (a redis-server's dir) is dir, from /proc; nil where there is no /proc.
func redisServersIn(dir string) []int {
	want, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "redis-server") {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join(p, "cwd")); err != nil || cwd != want {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(p, "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); err != nil || i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
			continue // gone, or a zombie: exited
		}
		pid, _ := strconv.Atoi(filepath.Base(p))
		pids = append(pids, pid)
	}
	return pids
}

// noRedisServerIn fails the test if a redis-server still runs in dir, and kills it.
func noRedisServerIn(t *testing.T, dir string) {
	t.Helper()
	for _, pid := range redisServersIn(dir) {
		t.Errorf("redis-server (pid %d) still runs in %s", pid, dir)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// pathWithout returns a PATH with every command of the current one except name: a directory of
// links to the others, in PATH's order.
func pathWithout(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.Name() == name || e.IsDir() {
				continue
			}
			_ = os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name())) // the first in PATH wins
		}
	}
	if _, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
		t.Fatalf("%s is still in %s", name, dir)
	}
	return dir
}

// TestSchedulerExplain asks where a request would go without creating anything.
func TestSchedulerExplain(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addTopology()
	s.do("admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"az1","extra_specs":{"RESKEY:availability_zones":"az1"}}}`)
	explain := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, basaltBin, append([]string{"scheduler", "explain"}, args...)...)
		cmd.Env = append(os.Environ(), s.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("basalt scheduler explain %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := explain("--size", "5", "--type", "az1")
	if !strings.Contains(out, "block1@lvmdriver-b1#pool: AvailabilityZoneFilter") || !strings.Contains(out, "=> block2@") {
		t.Errorf("explain for type az1:\n%s\nwant block1 rejected by AvailabilityZoneFilter and a block2 pool chosen", out)
	}
	out = explain("--size", "60000")
	if !strings.Contains(out, "CapacityFilter") || !strings.Contains(out, "=> No valid backend was found.") {
		t.Errorf("explain for 60000 GiB:\n%s\nwant every pool rejected by CapacityFilter", out)
	}
	if r := s.do("admin:admin", "GET", "/v3/volumes/detail?all_tenants=1", ""); len(r.body["volumes"].([]any)) != 0 {
		t.Errorf("explain created volumes: %s", r.raw)
	}
}
