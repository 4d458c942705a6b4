package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// scaleRow is one burst of creates with a number of reported pools.
type scaleRow struct {
	pools     int // reported pools, the stack's own included
	accepted  int
	available int
	elapsed   time.Duration // first POST to the last volume available
	p50, p99  time.Duration
}

// reportFullPools makes n synthetic backends heartbeat and report one pool each, with no free
// space: every placement filters them all (CapacityFilter), so the creates still land on the
// stack's own backends while the scheduler ranks n more pools, as it would in a large cloud.
func reportFullPools(ctx context.Context, redisURL string, n int) error {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	pres := events.NewPresence(rdb, nil)
	for i := 0; i < n; i++ {
		backend := fmt.Sprintf("full%d@backend", i)
		if err := pres.Heartbeat(ctx, basalt.BinaryVolume, backend, "nova", 0); err != nil {
			return err
		}
		err := pres.Report(ctx, events.CapabilityReport{Backend: backend, Zone: "nova",
			Capabilities: basalt.Capabilities{"volume_backend_name": "full", "vendor_name": "Basalt",
				"driver_version": "1.0.0", "storage_protocol": "iSCSI"},
			Pools: []basalt.Capabilities{{"pool_name": "pool", "total_capacity_gb": 1000.0, "free_capacity_gb": 0.0,
				"provisioned_capacity_gb": 1000.0, "reserved_percentage": 0.0, "max_over_subscription_ratio": 1.0,
				"thin_provisioning_support": false, "thick_provisioning_support": true}}})
		if err != nil {
			return err
		}
	}
	return nil
}

// createsAtScale runs a burst of creates for each count of extra reported pools, each burst in a
// project of its own, and prints how creates/s change with the pools the scheduler ranks.
func (e *stackEnv) createsAtScale(ctx context.Context, addr string, out, progress io.Writer) error {
	cfg := e.cfg
	var rows []scaleRow
	reported := 0
	for _, extra := range append([]int{0}, cfg.scalePools...) {
		if extra > reported {
			fmt.Fprintf(progress, "scale: reporting %d full pools\n", extra-reported)
			if err := reportFullPools(ctx, e.redisURL, extra); err != nil {
				return err
			}
			reported = extra
		}
		c := e.client(addr, fmt.Sprintf("bench:scale%d", extra))
		burst := createBurst(ctx, c, "scale", cfg.volumes, cfg.concurrency)
		if _, err := waitSettled(ctx, c, cfg.settle); err != nil {
			return err
		}
		vols, err := listAll(ctx, c)
		if err != nil {
			return err
		}
		row := scaleRow{pools: extra + len(e.backends), accepted: burst.accepted}
		var last time.Time
		var lat []time.Duration
		for _, v := range vols {
			if v.Status == "available" {
				row.available++
				lat = append(lat, v.UpdatedAt.Sub(v.CreatedAt.Time))
				if v.UpdatedAt.After(last) {
					last = v.UpdatedAt.Time
				}
			}
		}
		row.elapsed = last.Sub(burst.start)
		s := summarize(lat)
		row.p50, row.p99 = s.p50, s.p99
		fmt.Fprintf(progress, "scale: %d pools: %d available in %s\n", row.pools, row.available, dur(row.elapsed))
		rows = append(rows, row)
	}
	fmt.Fprintf(out, "## 2b. End-to-end creates as the pools grow\n\n")
	fmt.Fprintf(out, "The burst of table 2 again (%s volumes, %d in flight), each in a project of its own, after "+
		"more backends heartbeat and report one pool each through Redis as agents do. Those pools are full, so "+
		"every placement ranks them all and filters them out (CapacityFilter) and the volumes still land on the "+
		"stack's own backends: the rows differ only by the pools the scheduler reads and ranks.\n\n",
		count(cfg.volumes), cfg.concurrency)
	fmt.Fprintf(out, "| pools reported | creates/s to available | create→available p50 | p99 | available | target |\n")
	fmt.Fprintf(out, "|---:|---:|---:|---:|---:|---|\n")
	var base float64
	for i, r := range rows {
		perSec := float64(r.available) / r.elapsed.Seconds()
		target := "—"
		if i == 0 {
			base = perSec
		} else if r.pools >= 10000 {
			target = verdict("within 20 % of the first row", perSec >= 0.8*base)
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %d of %d | %s |\n", count(r.pools), rate(r.available, r.elapsed),
			dur(r.p50), dur(r.p99), r.available, r.accepted, target)
	}
	fmt.Fprintln(out)
	return nil
}
