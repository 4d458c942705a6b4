// Package crash kills the process at a named point when a fault test asks for it, so that a
// test can crash a process exactly between two steps, as kill -9 or a power cut would, and
// check that nothing is lost and nothing is stuck.
//
// BASALT_CRASH_AT lists the points, separated by commas; "name" crashes the first time the
// point is reached, "name:n" the n-th time. Unset (always, outside tests), Point costs one
// atomic load.
package crash

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

var (
	armed  atomic.Bool
	mu     sync.Mutex
	points map[string]int // name -> hits left before the crash
)

func init() { Arm(os.Getenv("BASALT_CRASH_AT")) }

// Arm sets the points from spec (BASALT_CRASH_AT's syntax); "" disarms every point.
func Arm(spec string) {
	mu.Lock()
	defer mu.Unlock()
	points = map[string]int{}
	for _, p := range strings.Split(spec, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(p), ":")
		if name == "" {
			continue
		}
		count := 1
		if ok {
			if c, err := strconv.Atoi(n); err == nil && c > 0 {
				count = c
			}
		}
		points[name] = count
	}
	armed.Store(len(points) > 0)
}

// kill ends the process; a variable so that the package's own test can observe it.
var kill = func(name string) {
	fmt.Fprintf(os.Stderr, "crash point %s reached: killing the process (BASALT_CRASH_AT)\n", name)
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Kill()
	select {} // SIGKILL cannot be caught; wait for it
}

// Point kills the process, with no cleanup at all, when name is armed and reached for the
// time it names.
func Point(name string) {
	if !armed.Load() {
		return
	}
	mu.Lock()
	left, ok := points[name]
	if ok {
		left--
		points[name] = left
	}
	mu.Unlock()
	if ok && left == 0 {
		kill(name)
	}
}
