package placement_test

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/store"
)

// manyPools is a world whose backends report more pools than a placement's record explains in
// full, so that placements rank with the early exit. Each backend reports one thick pool of
// total GiB with free GiB free, in its zone; the pool cache is refreshed only when a placement
// finds no candidate left, so that reservations made behind its back are not seen before.
func manyPools(t *testing.T, backends map[string][3]any) *world {
	t.Helper()
	rdb := redistest.Start(t).Client()
	st := store.New(rdb, nil)
	logger := slog.New(slog.DiscardHandler)
	pub := &sent{}
	f, err := placement.New(placement.Config{PoolRefresh: time.Hour}, st, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	w := &world{st: st, plane: control.New(control.Config{}, st, pub, logger), place: f, pub: pub,
		ctx: control.WithCaller(t.Context(), control.Caller{UserID: "u1", ProjectID: "p1", RequestID: "req-1"})}
	pr := events.NewPresence(rdb, nil)
	for backend, b := range backends {
		zone := b[2].(string)
		if err := pr.Heartbeat(w.ctx, basalt.BinaryVolume, backend, zone, 0); err != nil {
			t.Fatal(err)
		}
		if err := pr.Report(w.ctx, events.CapabilityReport{Backend: backend, Zone: zone, Pools: []basalt.Capabilities{{
			"pool_name": "pool", "total_capacity_gb": b[0], "free_capacity_gb": b[1], "reserved_percentage": 0.0,
			"thin_provisioning_support": false, "thick_provisioning_support": true,
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// placeOne creates a volume of size GiB in zone nova and places it, returning it and the
// decision recorded for it.
func (w *world) placeOne(t *testing.T, size int) (*basalt.Volume, string) {
	t.Helper()
	v, err := w.plane.CreateVolume(w.ctx, control.VolumeCreate{Size: size, AvailabilityZone: "nova"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.place.Place(w.ctx, w.command(t, v.OpID)); err != nil {
		t.Fatal(err)
	}
	d, err := w.st.Decision(w.ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	return w.volume(t, v.ID), d
}

// TestCreateOverManyPoolsStopsEarly: over many pools a create is placed where the full ranking
// places it, on the best pool, and its record names the best candidates the ranking found and
// how many pools it looked at, not weights or counts it did not compute. A create that fits
// nowhere still fails naming every pool, as the full ranking explains it.
func TestCreateOverManyPoolsStopsEarly(t *testing.T) {
	backends := map[string][3]any{"a@x": {500.0, 500.0, "nova"}, "b@x": {500.0, 490.0, "nova"}}
	for i := range 80 {
		backends[fmt.Sprintf("full%02d@x", i)] = [3]any{1000.0, 0.0, "nova"}
	}
	w := manyPools(t, backends)
	var hosts []string
	for i := range 3 {
		v, record := w.placeOne(t, 10)
		hosts = append(hosts, v.Host)
		if !strings.HasPrefix(record, "placed on "+v.Host+"; best candidates:\n") ||
			!strings.Contains(record, "rank 2, CapacityWeigher raw ") ||
			!strings.Contains(record, " of 82 pools looked at (basalt scheduler explain shows them all)") {
			t.Errorf("create %d: record %q", i, record)
		}
	}
	// a 500 free, b 490: a, then a (490 each: pool order), then b.
	if want := []string{"a@x#pool", "a@x#pool", "b@x#pool"}; strings.Join(hosts, " ") != strings.Join(want, " ") {
		t.Errorf("placed on %v, want %v", hosts, want)
	}

	v, _ := w.placeOne(t, 600)
	got := w.volume(t, v.ID)
	if got.Status != basalt.StatusError || !strings.Contains(got.StatusReason, "full79@x#pool: CapacityFilter: 0 GiB virtual free < 600 GiB requested") ||
		strings.Count(got.StatusReason, "CapacityFilter") != 82 {
		t.Errorf("a create that fits nowhere: %s %q", got.Status, got.StatusReason)
	}
}

// TestCreateOverManyPoolsLooksFurther: when the candidates a placement copied out were all
// taken behind its back, it ranks again past them and looks further, on the set it has,
// before reading the pools afresh: here the fourth candidate, 70 pools further down the
// order, takes the volume, and the record lists the three taken first, as the ranking does.
func TestCreateOverManyPoolsLooksFurther(t *testing.T) {
	backends := map[string][3]any{
		"a@x": {1000.0, 1000.0, "nova"}, "b@x": {1000.0, 999.0, "nova"}, "c@x": {1000.0, 998.0, "nova"},
		"d@x": {1000.0, 500.0, "nova"},
	}
	for i := range 70 { // more room than d, in another zone: between c and d in the order
		backends[fmt.Sprintf("other%02d@x", i)] = [3]any{1000.0, 900.0, "elsewhere"}
	}
	w := manyPools(t, backends)
	if v, _ := w.placeOne(t, 1); v.Host != "a@x#pool" {
		t.Fatalf("first create on %s, want a@x#pool", v.Host)
	}
	// Other replicas fill a, b and c; this one's set does not know.
	for _, pool := range []string{"a@x#pool", "b@x#pool", "c@x#pool"} {
		if ok, err := w.st.Reserve(w.ctx, "elsewhere-"+pool, pool, 995, math.Inf(1)); !ok || err != nil {
			t.Fatalf("fill %s: %v %v", pool, ok, err)
		}
	}
	v, record := w.placeOne(t, 10)
	if v.Host != "d@x#pool" {
		t.Fatalf("placed on %q, want d@x#pool", v.Host)
	}
	lines := strings.Split(record, "\n")
	if len(lines) < 5 || !strings.HasPrefix(lines[1], "a@x#pool: rank 1,") || !strings.HasPrefix(lines[3], "c@x#pool: rank 3,") ||
		!strings.HasPrefix(lines[4], "d@x#pool: rank 4,") {
		t.Errorf("record %q: want a, b, c (taken) then d, from the set the placement had", record)
	}
}
