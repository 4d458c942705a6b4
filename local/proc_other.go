//go:build !linux

package local

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// setPdeathsig does nothing: only Linux has a parent-death signal. A redis-server that outlives
// its basalt local is stopped by the next one on the same directory (stopLeftover).
func setPdeathsig(*syscall.SysProcAttr) {}

// isRedisServerIn reports whether pid is a live redis-server. Without /proc its directory is not
// checked: the pid comes from dir's pidfile, and a reused pid that is a redis-server again is
// unlikely.
func isRedisServerIn(pid int, dir string) bool {
	if processGone(pid) {
		return false
	}
	out, err := exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output()
	return err == nil && strings.Contains(string(out), "redis-server")
}

// processGone reports whether pid has exited.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
