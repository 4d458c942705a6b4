package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
)

// TestFeedDecodesOnlyChangedReports: a reader that passes what it knows gets its pools back
// for the reports that did not change (no decode: thousands of unchanged reports cost a
// scheduler nothing), and freshly decoded pools for those that did.
func TestFeedDecodesOnlyChangedReports(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	st := store.New(rdb, nil)
	pres := events.NewPresence(rdb, nil)
	report := func(backend string, free float64) {
		t.Helper()
		if err := pres.Heartbeat(ctx, basalt.BinaryVolume, backend, "nova", 0); err != nil {
			t.Fatal(err)
		}
		if err := pres.Report(ctx, events.CapabilityReport{Backend: backend, Zone: "nova",
			Capabilities: basalt.Capabilities{"volume_backend_name": "b"},
			Pools:        []basalt.Capabilities{{"pool_name": "p", "total_capacity_gb": 100.0, "free_capacity_gb": free}}}); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Now().Add(-time.Minute)
	report("h1@b", 50)
	report("h2@b", 60)
	first, err := st.Backends(ctx, nil)
	if err != nil || len(first["h1@b"].Pools) != 1 || len(first["h2@b"].Pools) != 1 {
		t.Fatalf("Backends = %v, %v; want both backends with their pool", first, err)
	}
	// What the reader knows, marked so that a reuse shows.
	marker := []basalt.Pool{{Name: "known"}}
	known := map[string]*store.FeedBackend{
		"h1@b": {Report: first["h1@b"].Report, Pools: marker},
		"h2@b": {Report: first["h2@b"].Report, Pools: marker},
	}
	report("h2@b", 10) // h2 changes; h1 reports the same again
	report("h1@b", 50)
	changed, err := st.BackendsChanged(ctx, since, known)
	if err != nil {
		t.Fatal(err)
	}
	if got := changed["h1@b"].Pools; len(got) != 1 || got[0].Name != "known" || got[0].UpdatedAt.IsZero() {
		t.Errorf("h1's report, the same again: pools %v, want the known ones back at the new report's time", got)
	}
	if got := changed["h2@b"].Pools; len(got) != 1 || got[0].Name != "h2@b#p" || got[0].Capabilities["free_capacity_gb"] != 10.0 {
		t.Errorf("h2's changed report: pools %v, want h2@b#p decoded with 10 GB free", got)
	}
	full, err := st.Backends(ctx, known)
	if err != nil || full["h1@b"].Pools[0].Name != "known" || full["h2@b"].Pools[0].Name != "h2@b#p" {
		t.Errorf("Backends with what is known = %v, %v; want h1's known pools and h2's decoded", full, err)
	}
}
