// Package local runs the whole of Basalt in one process: the API, the scheduler function, the
// results function and one agent per host of a topology (by default the example topology of
// DESIGN.md: hosts block1, block2 in zone az1, and network, with four backends that all report
// volume_backend_name lvmbackend). It uses REDIS_URL when given. Without it, it starts a Redis
// of its own that keeps its state under the data directory, next to the volumes, so a restarted
// stack lists the volumes its files hold: a redis-server child process with an append-only file
// when redis-server is on the PATH, else an embedded Redis-compatible server (miniredis) saved
// to a snapshot file (see Store).
package local

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/process"
	"github.com/basalt-storage/basalt/functions/store"
	"golang.org/x/sync/errgroup"
)

//go:embed topology.json
var defaultTopology []byte

// DefaultTopology returns the example topology's agent configurations.
func DefaultTopology() ([]agents.Config, error) {
	var t []agents.Config
	if err := json.Unmarshal(defaultTopology, &t); err != nil {
		return nil, fmt.Errorf("embedded topology: %w", err)
	}
	return t, nil
}

// Options configures the local stack.
type Options struct {
	Process process.Config
	// DataDir holds the file drivers' volumes (default ./data) and, in DataDir/redis, the state
	// of the Redis that Run starts when Process.RedisURL is empty.
	DataDir string
	// Store is the Redis that Run starts when Process.RedisURL is empty (default StoreAuto).
	Store Store
	// Topology lists the agents; nil means DefaultTopology.
	Topology []agents.Config
	// Driver, when set, replaces every backend's driver ("fake" for benchmarks).
	Driver string
	// Out receives the start banner (default os.Stdout).
	Out io.Writer
	// Ready is called with the API's address once everything runs.
	Ready func(addr string)
}

// Run runs the stack until ctx ends. When it started a Redis of its own, it stops it last, after
// every function, and returns an error if its state could not be saved.
func Run(ctx context.Context, o Options, logger *slog.Logger) (err error) {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.DataDir == "" {
		o.DataDir = "data"
	}
	if o.Topology == nil {
		t, err := DefaultTopology()
		if err != nil {
			return err
		}
		o.Topology = t
	}
	// The records of an earlier run point at the volumes in these directories.
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return err
	}
	authNote := "Auth:  noauth, as BASALT_AUTH says"
	if o.Process.Auth == "" {
		// The local stack is for one person's machine: no authentication unless asked.
		o.Process.Auth = "noauth"
		authNote = "Auth:  noauth (no authentication: X-Auth-Token user:project; the user admin is an administrator; BASALT_AUTH overrides)"
	}
	if o.Process.AuditLog == "" {
		// The audit log beside the data, not in the console's log.
		o.Process.AuditLog = filepath.Join(o.DataDir, "audit.log")
	}
	redisNote := "Redis: " + o.Process.RedisURL
	dataNote := "volumes; their records are in the Redis of REDIS_URL"
	var own server
	if o.Process.RedisURL == "" {
		own, err = openStore(ctx, o.Store, o.DataDir, logger)
		if err != nil {
			return err
		}
		// Deferred first, so it runs last: after the agents, the bus and every function stopped.
		defer func() { err = errors.Join(err, own.Close()) }()
		o.Process.RedisURL = own.URL()
		redisNote = "Redis: " + own.Note()
		dataNote = "volumes and Redis state, kept across restarts; to start fresh, stop basalt local and rm -rf " + o.DataDir
		if o.Store == StoreMemory {
			dataNote = "volumes"
		}
	}
	opts, err := o.Process.RedisOptions()
	if err != nil {
		return err
	}
	bus, err := o.Process.Bus(opts, logger)
	if err != nil {
		return err
	}
	defer bus.Close()
	var ags []*agents.Agent
	defer func() {
		for _, a := range ags {
			a.Close()
		}
	}()
	for _, cfg := range o.Topology {
		if cfg.DataDir == "" {
			cfg.DataDir, _ = filepath.Abs(o.DataDir)
		}
		if cfg.ReportInterval == 0 {
			cfg.ReportInterval = agents.Duration(o.Process.ReportInterval)
		}
		if cfg.OperationLease == 0 {
			cfg.OperationLease = agents.Duration(o.Process.OperationLease)
		}
		if o.Driver != "" {
			for i := range cfg.Backends {
				cfg.Backends[i].Driver = o.Driver
				cfg.Backends[i].Options = nil
			}
		}
		a, err := agents.New(cfg, bus, opts, logger)
		if err != nil {
			return fmt.Errorf("agent %s: %w", cfg.Host, err)
		}
		ags = append(ags, a)
	}

	g, gctx := errgroup.WithContext(ctx)
	if own != nil {
		g.Go(func() error { return own.Run(gctx) })
	}
	for _, a := range ags {
		g.Go(func() error { return a.Run(gctx) })
	}
	g.Go(func() error { return process.RunScheduler(gctx, o.Process, opts, "local", logger) })
	listening := make(chan string, 1)
	g.Go(func() error {
		return process.RunAPI(gctx, o.Process, opts, logger, func(addr string) { listening <- addr })
	})
	// The banner and Ready wait for the pools in a goroutine of the group, so a stack that
	// stops meanwhile neither waits for it nor announces itself once stopped.
	g.Go(func() error {
		var addr string
		select {
		case addr = <-listening:
		case <-gctx.Done():
			return nil
		}
		backends := 0
		for _, a := range ags {
			backends += len(a.Backends())
		}
		waitForPools(gctx, opts, backends)
		if gctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(o.Out, "Basalt local stack is up.\n  API:   http://%s/v3\n  %s\n  %s\n  Data:  %s (%s)\n"+
			"Try:\n  curl -s -H 'X-Auth-Token: demo:demo' -H 'Content-Type: application/json' \\\n"+
			"    -d '{\"volume\": {\"size\": 1, \"name\": \"first\"}}' http://%s/v3/volumes\n",
			addr, authNote, redisNote, o.DataDir, dataNote, addr)
		if o.Ready != nil {
			o.Ready(addr)
		}
		return nil
	})
	return g.Wait()
}

// waitForPools waits (up to ten seconds) until n backends report pools the scheduler can use.
func waitForPools(ctx context.Context, opts *events.RedisOptions, n int) {
	rdb := events.NewRedisClient(opts)
	defer rdb.Close()
	st := store.New(rdb, nil)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(10 * time.Second)
	for {
		pools, _ := st.Pools(ctx, st.Now(), time.Minute)
		seen := map[string]bool{}
		for _, p := range pools {
			seen[p.Backend] = true
		}
		if len(seen) >= n {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-t.C:
		}
	}
}
