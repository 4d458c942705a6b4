package scheduler

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt"
)

// samePlacement reports how got (from PlaceSet) differs from want (from Place), or "".
func samePlacement(got, want *Decision) string {
	if g, w := got.Explain(), want.Explain(); g != w {
		return "Explain: " + firstDiff(g, w)
	}
	if !slices.Equal(got.Rejections(), want.Rejected) || got.NumRejected() != len(want.Rejected) {
		return fmt.Sprintf("Rejections() = %d, NumRejected() = %d; Place rejected %d", len(got.Rejections()), got.NumRejected(), len(want.Rejected))
	}
	if got.Rejected != nil {
		return "PlaceSet filled Rejected"
	}
	if len(got.Ranked) != len(want.Ranked) {
		return fmt.Sprintf("%d ranked, Place %d", len(got.Ranked), len(want.Ranked))
	}
	for i := range got.Ranked {
		g, w := got.Ranked[i], want.Ranked[i]
		if g.Pool != w.Pool || math.Float64bits(g.Weight) != math.Float64bits(w.Weight) ||
			math.Float64bits(g.Limit) != math.Float64bits(w.Limit) || g.Weights != nil {
			return fmt.Sprintf("rank %d: %v %v %v, Place %v %v %v", i+1, g.Pool.Name, g.Weight, g.Limit, w.Pool.Name, w.Weight, w.Limit)
		}
		if gw := got.CandidateWeights(i); !maps.Equal(gw, w.Weights) || (gw == nil) != (w.Weights == nil) {
			return fmt.Sprintf("rank %d: CandidateWeights() = %v, Place %v", i+1, gw, w.Weights)
		}
	}
	return ""
}

// TestPlaceSet checks that PlaceSet on a prepared set decides as Place on the same pools, for
// every built-in, several requests on one set, and odd reports.
func TestPlaceSet(t *testing.T) {
	pools := benchPools(600)
	for i := range pools {
		switch i % 11 {
		case 1:
			pools[i].Zone = "az2"
		case 2:
			pools[i].Capabilities = caps(keyTotal, "infinite", keyFree, "unknown", "volume_backend_name", "lvmbackend")
		case 3:
			pools[i].Capabilities = caps(keyTotal, "lots", keyFree, nil, keyReserved, []any{})
		case 4:
			pools[i].Capabilities = nil
		case 5:
			c := maps.Clone(pools[i].Capabilities)
			c[keyOnlineExt] = false
			c["nested"] = map[string]any{"tier": "gold"}
			pools[i].Capabilities = c
		}
	}
	reqs := []*Request{
		nil,
		benchRequest(),
		{ID: "b", SizeGB: 500, Zone: "az2", Type: thickType()},
		{ID: "c", SizeGB: 50, Operation: OpExtendVolume, Attached: true, Attempted: []string{pools[0].Backend, pools[7].Name},
			Type: &basalt.VolumeType{ExtraSpecs: map[string]string{"capabilities:nested:tier": "<in> go", "RESKEY:availability_zones": "nova,az2"}}},
		{ID: "d", Type: &basalt.VolumeType{ExtraSpecs: map[string]string{"capabilities": "<in> nested", "total_volumes": "<= 200"}}},
	}
	cfgs := []Config{
		{},
		{OmitWeights: true, Filters: append(DefaultFilters(), "IgnoreAttemptedHostsFilter")},
		{Weighers: []string{"CapacityWeigher", "AllocatedCapacityWeigher", "VolumeNumberWeigher", "ChanceWeigher"}, AutoOverSubscription: true},
		{Filters: []string{}, Weighers: []string{}},
	}
	for ci, cfg := range cfgs {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		set := s.Prepare(pools)
		for ri, r := range reqs {
			if diff := samePlacement(s.PlaceSet(r, set), s.Place(r, pools)); diff != "" {
				t.Errorf("config %d, request %d: PlaceSet differs from Place: %s", ci, ri, diff)
			}
		}
		// A set prepared by a Scheduler configured otherwise is prepared again.
		other, err := New(Config{MaxOverSubscriptionRatio: 2})
		if err != nil {
			t.Fatal(err)
		}
		if diff := samePlacement(other.PlaceSet(reqs[1], set), other.Place(reqs[1], pools)); diff != "" {
			t.Errorf("config %d: PlaceSet with another Scheduler's set: %s", ci, diff)
		}
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if set := s.Prepare(pools); set.Len() != len(pools) || &set.Pools()[0] != &pools[0] {
		t.Errorf("Prepare() = %d pools, want %d, the same slice", set.Len(), len(pools))
	}
}

func TestPlaceSetEdges(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	d := s.PlaceSet(nil, nil)
	if len(d.Ranked) != 0 || d.Rejections() != nil || d.NumRejected() != 0 || d.Explain() != "" {
		t.Errorf("PlaceSet(nil, nil) = %+v", d)
	}
	// Reasons formatted after the request changed are the request's as placed.
	pools0 := benchPools(40)
	r := &Request{SizeGB: 1, Zone: "nova", Attempted: []string{pools0[1].Name}}
	pools0[2].Zone = "az1"
	want := s.Place(r, pools0).Explain()
	d = s.PlaceSet(r, s.Prepare(pools0))
	r.Zone, r.Attempted[0], r.SizeGB = "az1", pools0[3].Name, 100
	if got := d.Explain(); got != want {
		t.Errorf("PlaceSet().Explain() after the request changed: %s", firstDiff(got, want))
	}
	// More distinct capabilities than a set keeps columns for.
	pools := []basalt.Pool{{Name: "a", Capabilities: caps(keyTotal, 10.0, keyFree, 10.0, "k7", "v")}}
	set := s.Prepare(pools)
	for i := range maxColumns + 10 {
		r := &Request{SizeGB: 1, Type: &basalt.VolumeType{ExtraSpecs: map[string]string{fmt.Sprintf("k%d", i): "v"}}}
		if got, want := len(s.PlaceSet(r, set).Ranked), len(s.Place(r, pools).Ranked); got != want || got != b2i(i == 7) {
			t.Fatalf("spec k%d: PlaceSet ranked %d, Place %d", i, got, want)
		}
	}
	if n := len(*set.cols.Load()); n != maxColumns {
		t.Errorf("set keeps %d columns, want %d", n, maxColumns)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPlaceSetConcurrent places requests of several types on one set from many goroutines,
// building its columns concurrently; run with -race.
func TestPlaceSetConcurrent(t *testing.T) {
	s, err := New(Config{Weighers: []string{"CapacityWeigher", "ChanceWeigher"}})
	if err != nil {
		t.Fatal(err)
	}
	pools := benchPools(300)
	reqs := make([]*Request, 6)
	want := make([]string, len(reqs))
	for i := range reqs { // types sharing some capability columns, each with candidates
		reqs[i] = benchRequest()
		reqs[i].ID = fmt.Sprint(i)
		reqs[i].Type = &basalt.VolumeType{ExtraSpecs: map[string]string{
			"volume_backend_name": []string{"lvmbackend", "cephbackend"}[i%2],
			[]string{"capabilities:thin_provisioning_support", "QoS_support", "sparse_copy_volume"}[i%3]: []string{"<is> True", "<is> False", "<is> True"}[i%3],
		}}
		d := s.Place(reqs[i], pools)
		if len(d.Ranked) == 0 || len(d.Rejected) == 0 {
			t.Fatalf("request %d: %d ranked, %d rejected; want some of each", i, len(d.Ranked), len(d.Rejected))
		}
		want[i] = d.Explain()
	}
	set := s.Prepare(pools)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := range 12 {
				i := (g + n) % len(reqs)
				d := s.PlaceSet(reqs[i], set)
				var explained [2]string
				var both sync.WaitGroup
				for k := range explained { // Rejections formatted once, by either
					both.Go(func() { explained[k] = d.Explain() })
				}
				both.Wait()
				if explained[0] != want[i] || explained[1] != want[i] {
					t.Errorf("PlaceSet(request %d) concurrently: %s", i, firstDiff(explained[0], want[i]))
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestRadixSort checks that radixSort orders as the comparison sort by byRank does: by
// descending weight, ties (-0 and +0 among them) in index order.
func TestRadixSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	values := []float64{0, math.Copysign(0, -1), 1, -1, 0.5, math.Inf(1), math.Inf(-1), 1e-310, -1e-310, math.MaxFloat64}
	for _, n := range []int{radixMin + 1, 200, 3000} {
		for trial := range 20 {
			a := make([]rank, n)
			for j := range a {
				var w float64
				switch trial % 3 {
				case 0:
					w = values[rng.IntN(len(values))]
				case 1:
					w = rng.Float64()
				default:
					w = float64(rng.IntN(5)) - 2 + rng.NormFloat64()*1e-9*float64(rng.IntN(2))
				}
				a[j] = rank{w, int32(j)}
			}
			want := slices.Clone(a)
			slices.SortFunc(want, byRank)
			got := radixSort(slices.Clone(a), make([]rank, n))
			for j := range got {
				if got[j].j != want[j].j {
					t.Fatalf("n %d, trial %d: radixSort()[%d] = %v, want %v", n, trial, j, got[j], want[j])
				}
			}
		}
	}
}
