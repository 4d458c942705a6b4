package store_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
)

// reportCases are raw driver reports and what Cinder's own code made of them
// (testdata/cinder_reports.py): each pool's capabilities as its scheduler holds them, and its
// decision for each request.
type reportCases struct {
	Cinder string `json:"cinder"`
	Cases  []struct {
		Name     string `json:"name"`
		Backends []struct {
			Host              string         `json:"host"`
			Backend           string         `json:"backend"`
			Zone              string         `json:"zone"`
			VolumeBackendName string         `json:"volume_backend_name"`
			ExtraCapabilities map[string]any `json:"extra_capabilities"`
			Stats             map[string]any `json:"stats"`
		} `json:"backends"`
		Pools    map[string]basalt.Capabilities `json:"pools"`
		Requests []struct {
			Size     int               `json:"size"`
			Specs    map[string]string `json:"specs"`
			Zone     string            `json:"zone"`
			Extend   bool              `json:"extend"`
			Attached bool              `json:"attached"`
			// Want is Cinder's ranking, [pool, weight] best first; where Cinder raises (the
			// whole request fails), its ranking of the pools that do not raise on their own.
			Want    *[][2]any `json:"want"`
			Raises  string    `json:"raises"`
			Raising []string  `json:"raising"`
		} `json:"requests"`
	} `json:"cases"`
}

func loadReportCases(t *testing.T) *reportCases {
	t.Helper()
	f, err := os.Open("testdata/cinder_reports.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var c reportCases
	if err := json.NewDecoder(z).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if len(c.Cases) == 0 {
		t.Fatal("no cases")
	}
	return &c
}

// TestCinderReportsThroughAgents drives drivers' raw reports the way production does: a real
// agent per backend, with the fake driver reporting the raw stats, writes its report into Redis;
// store.Pools reads every report back; the scheduler ranks. The pools must hold what Cinder's
// scheduler holds for the same reports, and the decisions must be Cinder's: the same pools in
// the same order with the same weights, or no pool. Where Cinder raises (and fails the whole
// request), Basalt follows docs/scheduler.md's deviations: the pools Cinder does not raise on
// must be ranked as Cinder ranks them without the others.
func TestCinderReportsThroughAgents(t *testing.T) {
	cases := loadReportCases(t)
	rs := redistest.Start(t)
	rdb := rs.Client()
	st := store.New(rdb, nil)
	sched, err := scheduler.New(scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, c := range cases.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			cfgs := make([]agents.Config, len(c.Backends))
			for i, b := range c.Backends {
				opts, err := json.Marshal(map[string]any{"stats": b.Stats})
				if err != nil {
					t.Fatal(err)
				}
				cfgs[i] = agents.Config{Host: b.Host, Zone: b.Zone, DataDir: t.TempDir(),
					Backends: []agents.BackendConfig{{Name: b.Backend, Driver: "fake", VolumeBackendName: b.VolumeBackendName,
						ExtraCapabilities: b.ExtraCapabilities, Options: opts}}}
			}
			runAgentsUntilReported(t, rs, cfgs)

			pools, err := st.Pools(ctx, time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			checkPools(t, pools, c.Pools)

			for i, rq := range c.Requests {
				r := &scheduler.Request{ID: fmt.Sprint(i), SizeGB: rq.Size, Zone: rq.Zone,
					Type: &basalt.VolumeType{ExtraSpecs: rq.Specs}, Attached: rq.Attached}
				if rq.Extend {
					r.Operation = scheduler.OpExtendVolume
				}
				d := sched.Place(r, pools)
				what := fmt.Sprintf("request %d (size %d, specs %v, zone %q, extend %v, attached %v)",
					i, rq.Size, rq.Specs, rq.Zone, rq.Extend, rq.Attached)
				if rq.Want == nil {
					continue // Cinder raises even without the pools that raise alone: nothing to compare
				}
				var got, want []string
				rankedRaising := false
				for _, cand := range d.Ranked {
					if slices.Contains(rq.Raising, cand.Pool.Name) {
						rankedRaising = true
						continue
					}
					got = append(got, fmt.Sprintf("%s %v", cand.Pool.Name, cand.Weight))
				}
				for _, w := range *rq.Want {
					want = append(want, fmt.Sprintf("%s %v", w[0], w[1].(float64)))
				}
				if rankedRaising {
					// Basalt ranks a pool Cinder raises on (a deviation): the weights of the
					// others are normalized with it, so only their order can be compared.
					got, want = names(got), names(want)
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					raise := ""
					if rq.Raises != "" {
						raise = fmt.Sprintf(" (Cinder raises %s on %v; compared without them)", rq.Raises, rq.Raising)
					}
					t.Errorf("%s ranked\n%s\nCinder%s\n%s\n%s", what, strings.Join(got, "\n"), raise,
						strings.Join(want, "\n"), d.Explain())
				}
			}
		})
	}
}

func names(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i], _, _ = strings.Cut(l, " ")
	}
	return out
}

// checkPools compares the pools store.Pools built from the agents' reports with the pools
// Cinder's scheduler built from the same reports. Cinder's allocated_capacity_gb (0: no volumes)
// is the empty ledger's; where Cinder's pool has no provisioned_capacity_gb (it then counts
// allocated_capacity_gb), store.Pools reports the ledger's figure.
func checkPools(t *testing.T, got []basalt.Pool, want map[string]basalt.Capabilities) {
	t.Helper()
	var gotNames []string
	for _, p := range got {
		gotNames = append(gotNames, p.Name)
		w, ok := want[p.Name]
		if !ok {
			continue
		}
		norm := normalize(t, p.Capabilities)
		if _, ok := w["provisioned_capacity_gb"]; !ok && norm["provisioned_capacity_gb"] == norm["allocated_capacity_gb"] {
			delete(norm, "provisioned_capacity_gb")
		}
		if !reflect.DeepEqual(norm, w) {
			var diff []string
			for _, k := range slices.Sorted(maps.Keys(mergeKeys(norm, w))) {
				gv, gok := norm[k]
				wv, wok := w[k]
				if gok != wok || !reflect.DeepEqual(gv, wv) {
					diff = append(diff, fmt.Sprintf("  %s: Basalt %s, Cinder %s", k, showValue(gv, gok), showValue(wv, wok)))
				}
			}
			t.Errorf("pool %s capabilities differ from Cinder's:\n%s", p.Name, strings.Join(diff, "\n"))
		}
	}
	slices.Sort(gotNames)
	wantNames := slices.Sorted(maps.Keys(want))
	if !slices.Equal(gotNames, wantNames) {
		t.Errorf("pools %v, Cinder %v", gotNames, wantNames)
	}
}

func normalize(t *testing.T, c basalt.Capabilities) basalt.Capabilities {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var out basalt.Capabilities
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mergeKeys(a, b basalt.Capabilities) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

func showValue(v any, ok bool) string {
	if !ok {
		return "missing"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// runAgentsUntilReported runs a real agent for each configuration until every backend has
// heartbeated and reported its capabilities, then stops them all.
func runAgentsUntilReported(t *testing.T, rs *redistest.Server, cfgs []agents.Config) {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	bus, err := events.NewBus(events.BusConfig{Redis: events.Single(rs.Options())}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var names []string
	done := make(chan error, len(cfgs))
	var running []*agents.Agent
	defer func() {
		cancel()
		for range running {
			if err := <-done; err != nil {
				t.Errorf("agent Run = %v", err)
			}
		}
		for _, a := range running {
			a.Close()
		}
	}()
	for _, cfg := range cfgs {
		cfg.ReportInterval = agents.Duration(50 * time.Millisecond)
		a, err := agents.New(cfg, bus, events.Single(rs.Options()), logger)
		if err != nil {
			t.Fatalf("agents.New(%+v) = %v", cfg, err)
		}
		for _, b := range cfg.Backends {
			name := cfg.Host + "@" + b.Name
			names = append(names, name)
		}
		running = append(running, a)
		go func() { done <- a.Run(ctx) }()
	}
	// Until a reader sees every backend's heartbeat and report, as placement reads them.
	st := store.New(rs.Client(), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen, err := st.Backends(ctx, nil)
		n := 0
		for _, name := range names {
			if b := seen[name]; b != nil && b.Report != "" && !b.Beat.IsZero() {
				n++
			}
		}
		if err == nil && n == len(names) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agents did not report within 10s: %d of %d backends (%v)", n, len(names), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPoolsFromReport covers what the Cinder fixtures cannot: pools without a usable name,
// reports written before the backend-level keys were reported apart, and the report's maps
// left alone.
func TestPoolsFromReport(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rep := events.CapabilityReport{Backend: "h@b", Zone: "az1", Timestamp: at,
		Capabilities: basalt.Capabilities{"volume_backend_name": "vb", "storage_protocol": "iscsi", "online_extend_support": false},
		Pools: []basalt.Capabilities{{"pool_name": "a", "x": 1.0}, {"total_capacity_gb": 1.0}, {"pool_name": ""},
			{"pool_name": 7.0}, {"pool_name": "b", "storage_protocol": "FC"}, {"pool_name": "a", "x": 2.0}}}
	before := normalize(t, basalt.Capabilities{"r": rep})
	pools := store.PoolsFromReport(rep)
	want := []basalt.Pool{
		{Name: "h@b#a", Backend: "h@b", Zone: "az1", UpdatedAt: at, Capabilities: basalt.Capabilities{"pool_name": "a", "x": 2.0,
			"volume_backend_name": "vb", "vendor_name": nil, "driver_version": nil, "storage_protocol": []any{"iSCSI", "iscsi"}}},
		{Name: "h@b#b", Backend: "h@b", Zone: "az1", UpdatedAt: at, Capabilities: basalt.Capabilities{"pool_name": "b",
			"volume_backend_name": "vb", "vendor_name": nil, "driver_version": nil, "storage_protocol": []any{"FC", "fibre_channel", "fc"}}},
	}
	if !reflect.DeepEqual(pools, want) {
		t.Errorf("PoolsFromReport() = %+v\nwant %+v", pools, want)
	}
	if after := normalize(t, basalt.Capabilities{"r": rep}); !reflect.DeepEqual(before, after) {
		t.Errorf("PoolsFromReport changed the report: %v", after)
	}

	// A report of the old shape: the pools carry the backend's keys; the protocol is expanded.
	old := events.CapabilityReport{Backend: "h@b", Pools: []basalt.Capabilities{{"pool_name": "p", "storage_protocol": "nvmeof",
		"volume_backend_name": "vb", "online_extend_support": true}}}
	got := store.PoolsFromReport(old)[0].Capabilities
	if !reflect.DeepEqual(got["storage_protocol"], []any{"NVMe-oF", "NVMeOF", "nvmeof"}) || got["volume_backend_name"] != "vb" ||
		got["online_extend_support"] != true {
		t.Errorf("PoolsFromReport(old shape) = %v", got)
	}

	// No pools reported: the backend is one pool, named after volume_backend_name or _pool0.
	legacy := events.CapabilityReport{Backend: "h@b", Capabilities: basalt.Capabilities{"total_capacity_gb": 5.0}}
	if got := store.PoolsFromReport(legacy); len(got) != 1 || got[0].Name != "h@b#_pool0" || got[0].Capabilities["total_capacity_gb"] != 5.0 {
		t.Errorf("PoolsFromReport(no pools) = %+v", got)
	}
	legacy.Pools = []basalt.Capabilities{}
	if got := store.PoolsFromReport(legacy); len(got) != 0 {
		t.Errorf("PoolsFromReport(empty pools) = %+v, want none", got)
	}
}
