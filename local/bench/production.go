package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// The production-placement phase: pools are reported through a real redis-server the way
// agents report them (a heartbeat and a capability report per backend), and the scheduler
// function places create commands whose volume and operation records are in Redis, as the
// scheduler process does on each message: read the operation and the volume, rank on its
// prepared pool set (kept current from Redis in the background), reserve on the ledger, write
// the placement and the hand-off in one transaction, record the decision and send the command
// (here to a publisher that drops it: the bus is the creates phase's business).

// prodRow is the outcome of one pool count.
type prodRow struct {
	pools   int
	calls   int
	elapsed time.Duration
	lat     summary
	placed  int // decisions that found a pool
	reads   int // commands Redis ran during the timed calls
}

// nopPub drops what the scheduler function publishes.
type nopPub struct{}

func (nopPub) PublishContext(context.Context, string, string, string, any) error { return nil }

// ownRedis starts a redis-server of the phase's own in a temporary directory and returns it with
// a client; stop stops both and removes the directory.
func ownRedis(ctx context.Context, name string, poolSize int) (rs *redisServer, rdb *redis.Client, stop func(), err error) {
	dir, err := os.MkdirTemp("", "basalt-bench-"+name+"-")
	if err != nil {
		return nil, nil, nil, err
	}
	rs, err = startRedis(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	rdb = redis.NewClient(&redis.Options{Addr: rs.addr, PoolSize: poolSize})
	return rs, rdb, func() { rdb.Close(); rs.stop(); os.RemoveAll(dir) }, nil
}

func benchProductionPlacement(ctx context.Context, counts []int, maxCalls int, maxTime time.Duration,
	progress io.Writer) ([]prodRow, string, error) {
	rs, rdb, stop, err := ownRedis(ctx, "placement", 0)
	if err != nil {
		return nil, "", err
	}
	defer stop()
	var rows []prodRow
	for _, n := range counts {
		if ctx.Err() != nil {
			return rows, rs.version, ctx.Err()
		}
		row, err := placeThroughRedis(ctx, rdb, n, maxCalls, maxTime)
		if err != nil {
			return rows, rs.version, fmt.Errorf("%d pools: %w", n, err)
		}
		fmt.Fprintf(progress, "production placement: %d pools: %d calls, median %s, p99 %s\n",
			n, row.calls, dur(row.lat.p50), dur(row.lat.p99))
		rows = append(rows, row)
	}
	return rows, rs.version, nil
}

// placeThroughRedis reports n synthetic pools into an empty Redis and times Place.
func placeThroughRedis(ctx context.Context, rdb *redis.Client, n, maxCalls int, maxTime time.Duration) (prodRow, error) {
	row := prodRow{pools: n}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return row, err
	}
	pres := events.NewPresence(rdb, nil)
	for _, p := range syntheticPools(n) {
		if err := pres.Heartbeat(ctx, basalt.BinaryVolume, p.Backend, p.Zone, 0); err != nil {
			return row, err
		}
		if err := pres.Report(ctx, events.CapabilityReport{Backend: p.Backend, Zone: p.Zone,
			Pools: []basalt.Capabilities{p.Capabilities}}); err != nil {
			return row, err
		}
	}
	st := store.New(rdb, nil)
	if err := st.CreateType(ctx, benchType); err != nil {
		return row, err
	}
	f, err := placement.New(placement.Config{Scheduler: scheduler.Config{
		Filters: append(scheduler.DefaultFilters(), "IgnoreAttemptedHostsFilter")}},
		st, nopPub{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return row, err
	}
	defer f.Close()
	reqs := placementRequests(256, "")
	place := func(i int) (time.Duration, error) {
		cmd, err := newCreateCommand(ctx, st, reqs[i%len(reqs)])
		if err != nil {
			return 0, err
		}
		t := time.Now()
		if err := f.Place(ctx, cmd); err != nil {
			return 0, err
		}
		return time.Since(t), nil
	}
	// Warm-up: the first placement reads and prepares the pools.
	for i := 0; i < 20; i++ {
		if _, err := place(i); err != nil {
			return row, err
		}
	}
	runtime.GC()
	before := commandsProcessed(ctx, rdb)
	lat := make([]time.Duration, 0, maxCalls)
	start := time.Now()
	for len(lat) < maxCalls && time.Since(start) < maxTime && ctx.Err() == nil {
		d, err := place(len(lat))
		if err != nil {
			return row, err
		}
		lat = append(lat, d)
	}
	row.calls, row.elapsed, row.lat = len(lat), time.Since(start), summarize(lat)
	row.reads = commandsProcessed(ctx, rdb) - before
	vols, err := st.Volumes(ctx, "bench")
	if err != nil {
		return row, err
	}
	for _, v := range vols {
		if v.Host != "" {
			row.placed++
		}
	}
	return row, nil
}

// newCreateCommand writes a creating volume of r's size and type with its pending operation, as
// the API does, and returns the create command the scheduler function gets for it.
func newCreateCommand(ctx context.Context, st *store.Store, r *scheduler.Request) (events.Command, error) {
	now := time.Now().UTC()
	v := &basalt.Volume{ID: events.NewID("bench"), ProjectID: "bench", Size: r.SizeGB, Status: basalt.StatusCreating,
		AttachStatus: basalt.AttachDetached, VolumeTypeID: benchType.ID, VolumeTypeName: benchType.Name, CreatedAt: now}
	op := &basalt.Operation{ID: events.NewPrefixedID("op-", "bench"), Kind: events.KindCreateVolume, VolumeID: v.ID,
		ProjectID: v.ProjectID, State: basalt.OpPending, Owner: "scheduler", Deadline: now.Add(time.Hour),
		CreatedAt: now, UpdatedAt: now}
	v.OpID = op.ID
	if err := st.CreateVolume(ctx, v, op); err != nil {
		return events.Command{}, err
	}
	return events.Command{OpID: op.ID, Kind: events.KindCreateVolume, VolumeID: v.ID, ProjectID: v.ProjectID,
		Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size}}, nil
}

func numCPU() int { return runtime.NumCPU() }

// commandsProcessed returns Redis's total_commands_processed.
func commandsProcessed(ctx context.Context, rdb *redis.Client) int {
	info, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		return 0
	}
	var n int
	for _, line := range strings.Split(strings.ReplaceAll(info, "\r", ""), "\n") {
		if _, err := fmt.Sscanf(line, "total_commands_processed:%d", &n); err == nil {
			return n
		}
	}
	return 0
}

func printProductionPlacement(w io.Writer, rows []prodRow, version string) {
	fmt.Fprintf(w, "## 1b. Placement as production does it\n\n")
	fmt.Fprintf(w, "The scheduler function's `Place` on create commands, against a real %s: each backend "+
		"heartbeats and reports its pool through `events.Presence` as agents do, each volume and its operation are "+
		"in Redis before the call, and the call reads them, ranks on the function's prepared pool set (read from "+
		"Redis again in the background every `BASALT_POOL_REFRESH`), reserves on the ledger, writes the placement "+
		"and the hand-off command in one transaction and records the decision. Only the bus is left out (the "+
		"command goes to a publisher that drops it). One goroutine, same pools and requests as table 1. Redis "+
		"commands per placement include the writing of each volume's record before the call.\n\n", version)
	fmt.Fprintf(w, "| pools | median | p99 | placements/s | target | placed | Redis commands per placement |\n"+
		"|---:|---:|---:|---:|---|---:|---:|\n")
	for _, r := range rows {
		target := "—"
		if r.pools == 10000 {
			target = verdict("< 2 ms", r.lat.p50 < 2*time.Millisecond)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d of %d | %.1f |\n", count(r.pools), dur(r.lat.p50), dur(r.lat.p99),
			rate(r.calls, r.elapsed), target, r.placed, r.calls+20, float64(r.reads)/float64(max(r.calls, 1)))
	}
	fmt.Fprintln(w)
}
