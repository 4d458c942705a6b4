package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pollInterval is how often the manager looks again while it waits for a process to appear,
// answer or go away.
const pollInterval = 10 * time.Millisecond

// proc is one process as /proc shows it.
type proc struct {
	pid  int
	argv []string
}

// name returns the base name of the process's program, "" when argv is empty (a zombie or a
// kernel thread).
func (p proc) name() string {
	if len(p.argv) == 0 {
		return ""
	}
	return filepath.Base(p.argv[0])
}

// arg returns the argument that follows flag in p's argv, or "".
func (p proc) arg(flag string) string {
	i := slices.Index(p.argv, flag)
	if i < 0 || i+1 >= len(p.argv) {
		return ""
	}
	return p.argv[i+1]
}

// listProcs returns the live processes whose program is named name. Zombies (state Z, whose
// cmdline is empty) and processes that exit while /proc is read are left out, so a pid that
// was reused by another program, or that names a dead process nobody has reaped yet, never
// counts as the process it once was.
func listProcs(name string) ([]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := readProc(pid)
		if ok && p.name() == name {
			out = append(out, p)
		}
	}
	return out, nil
}

// readProc reads process pid; ok is false when it is gone or a zombie.
func readProc(pid int) (p proc, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return proc{}, false
	}
	if zombie(pid) {
		return proc{}, false
	}
	b = bytes.TrimSuffix(b, []byte{0})
	return proc{pid: pid, argv: strings.Split(string(b), "\x00")}, true
}

// zombie reports whether pid is a zombie or gone: it has exited but is not yet reaped, which
// for the daemons here (reparented to init) may last a while.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	s := b[i+2]
	return s == 'Z' || s == 'X'
}

// alive reports whether pid is a live (non-zombie) process.
func alive(pid int) bool {
	_, ok := readProc(pid)
	return ok
}

// pids returns the pids of ps.
func pids(ps []proc) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.pid
	}
	return out
}

// terminate sends sig to every pid, waits up to grace for all of them to exit, then kills the
// survivors with SIGKILL and waits again. It returns an error only when a process outlives
// SIGKILL for the grace period, or ctx ends first.
func terminate(ctx context.Context, ps []int, sig syscall.Signal, grace time.Duration) error {
	if len(ps) == 0 {
		return nil
	}
	for _, pid := range ps {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal %d: %w", pid, err)
		}
	}
	if sig != syscall.SIGKILL {
		if err := waitGone(ctx, ps, grace); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return err
		}
		for _, pid := range ps {
			if alive(pid) {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					return fmt.Errorf("kill %d: %w", pid, err)
				}
			}
		}
	}
	return waitGone(ctx, ps, grace)
}

// waitGone waits until no pid of ps is a live process, for at most d.
func waitGone(ctx context.Context, ps []int, d time.Duration) error {
	return poll(ctx, d, func() (bool, error) {
		return !slices.ContainsFunc(ps, alive), nil
	}, func() error {
		return fmt.Errorf("processes %v still alive after %v", slices.DeleteFunc(slices.Clone(ps), func(p int) bool { return !alive(p) }), d)
	})
}

// poll calls check every pollInterval until it returns true or an error, for at most d. When d
// passes first, it returns timeout(); when ctx ends first, ctx's error.
func poll(ctx context.Context, d time.Duration, check func() (bool, error), timeout func() error) error {
	if ok, err := check(); ok || err != nil {
		return err
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if ok, err := check(); ok || err != nil {
				return err
			}
			return timeout()
		case <-tick.C:
			if ok, err := check(); ok || err != nil {
				return err
			}
		}
	}
}

// readPIDFile returns the pid written in path, or 0 when the file is missing, empty or not
// yet complete.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, nil
	}
	return pid, nil
}

// tail returns the last n bytes of the file at path, trimmed, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		if _, err := f.Seek(st.Size()-n, 0); err != nil {
			return ""
		}
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	return strings.TrimSpace(string(b[:k]))
}
