package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// The reports phase: many simulated backends heartbeat and report through a real redis-server
// as agents do, at a fixed rate, while scheduler replicas (each with its own pool set, as each
// scheduler process has) place creates. It shows what the reports cost Redis and how placements
// scale with replicas on this machine.

type reportsResult struct {
	backends    int
	rate        int           // reports (each with a heartbeat) per second asked for
	written     int           // reports written
	elapsed     time.Duration // of the reporting
	redisCPU    time.Duration // redis-server CPU while reporting
	memBefore   int64         // used_memory before the backends reported
	memAfter    int64
	replicaRows []replicaRow
}

type replicaRow struct {
	replicas int
	placed   int
	elapsed  time.Duration
	redisCPU time.Duration
}

func benchReports(ctx context.Context, backends, rate int, d time.Duration, progress io.Writer) (*reportsResult, string, error) {
	rs, rdb, stop, err := ownRedis(ctx, "reports", 64)
	if err != nil {
		return nil, "", err
	}
	defer stop()
	res := &reportsResult{backends: backends, rate: rate}
	res.memBefore = usedMemory(ctx, rdb)
	pools := syntheticPools(backends)
	pres := events.NewPresence(rdb, nil)
	report := func(i int) error {
		p := pools[i%len(pools)]
		if err := pres.Heartbeat(ctx, basalt.BinaryVolume, p.Backend, p.Zone, 0); err != nil {
			return err
		}
		return pres.Report(ctx, events.CapabilityReport{Backend: p.Backend, Zone: p.Zone,
			Pools: []basalt.Capabilities{p.Capabilities}})
	}
	// Every backend reports once, then the timed run reports at rate for d.
	if err := parallelDo(backends, 32, report); err != nil {
		return nil, "", err
	}
	fmt.Fprintf(progress, "reports: %d backends reported\n", backends)
	cpu0, _ := rs.cpu()
	start := time.Now()
	var written atomic.Int64
	tick := time.NewTicker(10 * time.Millisecond)
	perTick := max(1, rate/100)
	next := 0
	var wg sync.WaitGroup
	var firstErr atomic.Value
loop:
	for time.Since(start) < d {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		for j := 0; j < perTick; j++ {
			i := next
			next++
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := report(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				written.Add(1)
			}()
		}
	}
	tick.Stop()
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, "", err
	}
	res.elapsed = time.Since(start)
	cpu1, _ := rs.cpu()
	res.written, res.redisCPU, res.memAfter = int(written.Load()), cpu1-cpu0, usedMemory(ctx, rdb)
	fmt.Fprintf(progress, "reports: %d written in %s, redis CPU %s\n", res.written, dur(res.elapsed), dur(res.redisCPU))

	st := store.New(rdb, nil)
	if err := st.CreateType(ctx, benchType); err != nil {
		return nil, "", err
	}
	for _, n := range []int{1, 2, 4} {
		row, err := placeWithReplicas(ctx, st, rs, n, min(d, 5*time.Second))
		if err != nil {
			return nil, "", err
		}
		fmt.Fprintf(progress, "reports: %d replicas placed %d in %s\n", n, row.placed, dur(row.elapsed))
		res.replicaRows = append(res.replicaRows, row)
	}
	return res, rs.version, nil
}

// placeWithReplicas runs n scheduler functions side by side, each with its own pool set and two
// placing goroutines (a scheduler process's default consumers), placing creates for d.
func placeWithReplicas(ctx context.Context, st *store.Store, rs *redisServer, n int, d time.Duration) (replicaRow, error) {
	row := replicaRow{replicas: n}
	reqs := placementRequests(256, "")
	var placed atomic.Int64
	var firstErr atomic.Value
	cpu0, _ := rs.cpu()
	start := time.Now()
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		f, err := placement.New(placement.Config{Scheduler: scheduler.Config{
			Filters: append(scheduler.DefaultFilters(), "IgnoreAttemptedHostsFilter")}},
			st, nopPub{}, slog.New(slog.DiscardHandler))
		if err != nil {
			return row, err
		}
		defer f.Close()
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Since(start) < d && ctx.Err() == nil; i++ {
					cmd, err := newCreateCommand(ctx, st, reqs[(r*7+w*3+i)%len(reqs)])
					if err == nil {
						err = f.Place(ctx, cmd)
					}
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					placed.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return row, err
	}
	cpu1, _ := rs.cpu()
	row.placed, row.elapsed, row.redisCPU = int(placed.Load()), time.Since(start), cpu1-cpu0
	return row, nil
}

// parallelDo runs fn(0..n-1) on workers goroutines and returns the first error.
func parallelDo(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	return err
}

// usedMemory returns Redis's used_memory in bytes.
func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.ReplaceAll(info, "\r", ""), "\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func printReports(w io.Writer, r *reportsResult, version string) {
	fmt.Fprintf(w, "## 1c. Capability reports and scheduler replicas\n\n")
	fmt.Fprintf(w, "%s simulated backends (the pools of table 1) heartbeat and report through `events.Presence` into a "+
		"real %s, as agents do, at %s reports/s (each with its heartbeat: every backend every %.0f s) for %s.\n\n",
		count(r.backends), version, count(r.rate), float64(r.backends)/float64(r.rate), dur(r.elapsed))
	fmt.Fprintf(w, "| reports written | reports/s | redis-server CPU | per report | Redis memory for the backends |\n|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(w, "| %s | %s | %s (%.0f %% of a core) | %s | %.1f MiB |\n\n", count(r.written), rate(r.written, r.elapsed),
		dur(r.redisCPU), 100*r.redisCPU.Seconds()/r.elapsed.Seconds(), dur(r.redisCPU/time.Duration(max(r.written, 1))),
		float64(r.memAfter-r.memBefore)/(1<<20))
	fmt.Fprintf(w, "Then scheduler replicas, each a scheduler function with its own prepared pool set over those "+
		"%s pools and two placing goroutines (a scheduler process's default), place creates whose records are in "+
		"Redis (as in table 1b), all in this one process on this machine's %d cores:\n\n", count(r.backends), numCPU())
	fmt.Fprintf(w, "| replicas | placements/s | redis-server CPU |\n|---:|---:|---:|\n")
	for _, row := range r.replicaRows {
		fmt.Fprintf(w, "| %d | %s | %.0f %% of a core |\n", row.replicas, rate(row.placed, row.elapsed),
			100*row.redisCPU.Seconds()/row.elapsed.Seconds())
	}
	fmt.Fprintln(w)
}
