// Package local runs the whole of Basalt in one process: the API, the scheduler function, the
// results function and one agent per host of a topology (by default the example topology of
// DESIGN.md: hosts block1, block2 in zone az1, and network, with four backends that all report
// volume_backend_name lvmbackend). It uses REDIS_URL when given, else an embedded
// Redis-compatible server (miniredis) whose data is lost on exit.
package local

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/functions/process"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
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
	// DataDir holds the file drivers' volumes (default ./data).
	DataDir string
	// Topology lists the agents; nil means DefaultTopology.
	Topology []agents.Config
	// Driver, when set, replaces every backend's driver ("fake" for benchmarks).
	Driver string
	// Out receives the start banner (default os.Stdout).
	Out io.Writer
	// Ready is called with the API's address once everything runs.
	Ready func(addr string)
}

// Run runs the stack until ctx ends.
func Run(ctx context.Context, o Options, logger *slog.Logger) error {
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
	redisNote := "Redis: " + o.Process.RedisURL
	if o.Process.RedisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("start the embedded Redis: %w", err)
		}
		defer m.Close()
		o.Process.RedisURL = "redis://" + m.Addr() + "/0"
		redisNote = "Redis: embedded Redis-compatible server (miniredis) at " + m.Addr() +
			"; nothing is kept when basalt local stops. Set REDIS_URL to use a real Redis."
	}
	opts, err := o.Process.RedisOptions()
	if err != nil {
		return err
	}
	// Leftover state of an earlier run (on a real Redis) would point at these directories.
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
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
	for _, a := range ags {
		g.Go(func() error { return a.Run(gctx) })
	}
	g.Go(func() error { return process.RunScheduler(gctx, o.Process, opts, "local", logger) })
	g.Go(func() error {
		return process.RunAPI(gctx, o.Process, opts, logger, func(addr string) {
			go func() {
				backends := 0
				for _, a := range ags {
					backends += len(a.Backends())
				}
				waitForPools(gctx, opts, backends)
				fmt.Fprintf(o.Out, "Basalt local stack is up.\n  API:   http://%s/v3\n  %s\n  Data:  %s\n"+
					"Try:\n  curl -s -H 'X-Auth-Token: demo:demo' -H 'Content-Type: application/json' \\\n"+
					"    -d '{\"volume\": {\"size\": 1, \"name\": \"first\"}}' http://%s/v3/volumes\n",
					addr, redisNote, o.DataDir, addr)
				if o.Ready != nil {
					o.Ready(addr)
				}
			}()
		})
	})
	return g.Wait()
}

// waitForPools waits (up to ten seconds) until n backends report pools the scheduler can use.
func waitForPools(ctx context.Context, opts *redis.Options, n int) {
	rdb := redis.NewClient(opts)
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
