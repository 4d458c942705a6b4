package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
)

// placementTargets are the latency targets of one decision (median), by pool count.
var placementTargets = map[int]time.Duration{1000: 200 * time.Microsecond, 10000: 2 * time.Millisecond}

// benchType is the volume type of every placement request: two extra specs that
// CapabilitiesFilter checks.
var benchType = &basalt.VolumeType{ID: "5c1e6d4a-6a53-4c8e-9d0f-3b0a8e2f1c77", Name: "thin-lvm",
	ExtraSpecs: map[string]string{
		"volume_backend_name":                    "lvmbackend",
		"capabilities:thin_provisioning_support": "<is> True",
	}}

// syntheticPools returns n pools shaped like the reports of the file and fake drivers, on
// hosts of four backends each, hosts spread round-robin over zones az1, az2 and az3. Three
// backends in four are file-like (thin, max_over_subscription_ratio 20, reserved 0, 5 or 10
// per cent), the fourth fake-like (thick, ratio 1); one pool in ten reports another
// volume_backend_name and one in twenty is full. The reports go through JSON and
// store.PoolsFromReport, as they do on their way from an agent to the scheduler. The pools are
// the same for the same n.
func syntheticPools(n int) []basalt.Pool {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	zones := []string{"az1", "az2", "az3"}
	now := time.Now().UTC()
	pools := make([]basalt.Pool, n)
	for i := range pools {
		backend := fmt.Sprintf("block%d@backend%d", i/4, i%4)
		total := float64(1000 + rng.IntN(99000))
		var ps basalt.Capabilities
		protocol := "file"
		var free, prov float64
		if i%4 == 3 {
			protocol = "fake"
			prov = math.Floor(total * rng.Float64())
			free = total - prov
			ps = basalt.Capabilities{"reserved_percentage": 0, "max_over_subscription_ratio": 1,
				"thin_provisioning_support": false, "thick_provisioning_support": true}
		} else {
			free = math.Round(total*rng.Float64()*100) / 100
			prov = math.Floor((total - free) * (1 + 2*rng.Float64()))
			ps = basalt.Capabilities{"reserved_percentage": 5 * rng.IntN(3), "max_over_subscription_ratio": 20,
				"thin_provisioning_support": true, "thick_provisioning_support": false}
		}
		if rng.IntN(20) == 0 { // full
			free, prov = 0, 20*total
		}
		ps["pool_name"] = "pool"
		ps["total_capacity_gb"], ps["free_capacity_gb"], ps["provisioned_capacity_gb"] = total, free, prov
		ps["total_volumes"] = int(prov / 40)
		ps["multiattach"], ps["QoS_support"], ps["online_extend_support"] = false, false, true
		ps["backend_state"] = "up"
		ps["location_info"] = protocol + ":" + backend + ":pool"
		name := "lvmbackend"
		if rng.IntN(10) == 0 {
			name = "cephbackend"
		}
		rep := events.CapabilityReport{Backend: backend, Zone: zones[(i/4)%3], Timestamp: now,
			Capabilities: basalt.Capabilities{"volume_backend_name": name, "vendor_name": "Basalt",
				"driver_version": "1.0.0", "storage_protocol": protocol},
			Pools: []basalt.Capabilities{ps}}
		raw, err := json.Marshal(rep)
		if err != nil {
			panic(err) // only numbers, strings and booleans
		}
		var norm events.CapabilityReport
		if err := json.Unmarshal(raw, &norm); err != nil {
			panic(err)
		}
		pools[i] = store.PoolsFromReport(norm)[0]
	}
	return pools
}

// placementRequests returns n requests of 1 to 100 GiB of benchType in zone (""
// = any zone), each with its own id.
func placementRequests(n int, zone string) []*scheduler.Request {
	rng := rand.New(rand.NewPCG(2, 2))
	reqs := make([]*scheduler.Request, n)
	for i := range reqs {
		reqs[i] = &scheduler.Request{ID: fmt.Sprintf("bench-%08x-%04d", rng.Uint32(), i),
			SizeGB: 1 + rng.IntN(100), Zone: zone, Type: benchType, Operation: scheduler.OpCreateVolume}
	}
	return reqs
}

// placementRow is the outcome of one pool count.
type placementRow struct {
	pools      int
	calls      int           // PlaceSet calls timed
	elapsed    time.Duration // their wall time
	lat        summary       // PlaceSet on the prepared pools
	candidates float64       // mean ranked pools per decision
	place      summary       // Place: Prepare, PlaceSet, every reason and Weights map formatted
	prepare    summary       // Prepare alone
}

// benchPlacement times one goroutine placing requests on each pool count, three ways: PlaceSet
// on pools prepared once (the headline figure, what the targets apply to), Place on the raw
// pools (which prepares them on every call and formats every rejection reason and Weights
// map), and Prepare alone. PlaceSet gets up to maxCalls calls or maxTime, whichever ends
// first, after a short warm-up; Place and Prepare a quarter of each. Before timing, it checks
// that PlaceSet and Place explain the first request identically.
func benchPlacement(ctx context.Context, counts []int, zone string, maxCalls int, maxTime time.Duration,
	progress io.Writer) ([]placementRow, error) {
	// The configuration the scheduler process runs with by default.
	s, err := scheduler.New(scheduler.Config{Filters: append(scheduler.DefaultFilters(), "IgnoreAttemptedHostsFilter")})
	if err != nil {
		return nil, err
	}
	reqs := placementRequests(256, zone)
	var rows []placementRow
	for _, n := range counts {
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		pools := syntheticPools(n)
		set := s.Prepare(pools)
		if a, b := s.PlaceSet(reqs[0], set).Explain(), s.Place(reqs[0], pools).Explain(); a != b {
			return rows, fmt.Errorf("%d pools: PlaceSet and Place decide differently", n)
		}
		warm := time.Now()
		for i := 0; i < maxCalls/10 && time.Since(warm) < maxTime/10; i++ {
			s.PlaceSet(reqs[i%len(reqs)], set)
		}
		runtime.GC()
		lat := make([]time.Duration, 0, maxCalls)
		ranked := 0
		start := time.Now()
		for len(lat) < maxCalls && time.Since(start) < maxTime && ctx.Err() == nil {
			r := reqs[len(lat)%len(reqs)]
			t := time.Now()
			d := s.PlaceSet(r, set)
			lat = append(lat, time.Since(t))
			ranked += len(d.Ranked)
		}
		row := placementRow{pools: n, calls: len(lat), elapsed: time.Since(start), lat: summarize(lat),
			candidates: float64(ranked) / float64(max(len(lat), 1))}
		row.place = timeCalls(ctx, maxCalls/4, maxTime/4, func(i int) { s.Place(reqs[i%len(reqs)], pools) })
		row.prepare = timeCalls(ctx, maxCalls/4, maxTime/4, func(int) { s.Prepare(pools) })
		fmt.Fprintf(progress, "placement: %d pools: %d calls, median %s prepared, %s unprepared, %s to prepare\n",
			n, row.calls, dur(row.lat.p50), dur(row.place.p50), dur(row.prepare.p50))
		rows = append(rows, row)
	}
	return rows, nil
}

// timeCalls times fn(0), fn(1), ... from one goroutine: up to calls calls or d, whichever ends
// first (at least one), after a garbage collection.
func timeCalls(ctx context.Context, calls int, d time.Duration, fn func(i int)) summary {
	runtime.GC()
	lat := make([]time.Duration, 0, max(calls, 1))
	start := time.Now()
	for len(lat) == 0 || len(lat) < calls && time.Since(start) < d && ctx.Err() == nil {
		t := time.Now()
		fn(len(lat))
		lat = append(lat, time.Since(t))
	}
	return summarize(lat)
}

func printPlacement(w io.Writer, rows []placementRow, zone string, maxCalls int, maxTime time.Duration) {
	fmt.Fprintf(w, "## 1. Scheduler placement\n\n")
	fmt.Fprintf(w, "One goroutine places requests with the default filters (AvailabilityZoneFilter, "+
		"CapacityFilter, CapabilitiesFilter, IgnoreAttemptedHostsFilter) and weigher (CapacityWeigher), as the scheduler "+
		"process runs by default. The headline columns (median, p99, decisions/s, target) time "+
		"`scheduler.(*Scheduler).PlaceSet` on pools prepared once with `Prepare`, as the scheduler function does between "+
		"capability reports: up to %s calls or %s per row, after a warm-up. The last two columns time `Place` on the "+
		"unprepared pools (it prepares them on every call, then formats every rejection reason and Weights map) and "+
		"`Prepare` alone, each for up to a quarter of that. Prepare, PlaceSet and Place may each use up to GOMAXPROCS "+
		"goroutines on large pool sets.\n\n",
		count(maxCalls), maxTime)
	fmt.Fprintf(w, "| pools | median | p99 | decisions/s | target | `Place` (unprepared) median | `Prepare` median |\n"+
		"|---:|---:|---:|---:|---|---:|---:|\n")
	for _, r := range rows {
		target := "—"
		if t, ok := placementTargets[r.pools]; ok {
			target = verdict("< "+dur(t), r.lat.p50 < t)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", count(r.pools), dur(r.lat.p50), dur(r.lat.p99),
			rate(r.calls, r.elapsed), target, dur(r.place.p50), dur(r.prepare.p50))
	}
	where := "any zone"
	if zone != "" {
		where = "zone " + zone
	}
	fmt.Fprintf(w, "\nPools: hosts of four backends spread over az1, az2 and az3; three backends in four file-like "+
		"(thin, ratio 20, reserved 0/5/10 %%), one fake-like (thick); 10 %% report another volume_backend_name, 5 %% are full. "+
		"Requests: 1 to 100 GiB in %s, type with `volume_backend_name=lvmbackend` and "+
		"`capabilities:thin_provisioning_support=<is> True`.", where)
	for _, r := range rows {
		fmt.Fprintf(w, " %s pools: %.0f ranked (%.0f %%), %s calls.", count(r.pools), r.candidates,
			100*r.candidates/float64(r.pools), count(r.calls))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
}
