package scheduler

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt"
)

func TestAvailabilityZoneFilter(t *testing.T) {
	zoned := func(zones string) *basalt.VolumeType {
		return &basalt.VolumeType{ExtraSpecs: map[string]string{"RESKEY:availability_zones": zones}}
	}
	tests := []struct {
		name   string
		pool   string
		zone   string
		typ    *basalt.VolumeType
		want   bool
		reason string
	}{
		{name: "no zone asked", pool: "az1", want: true},
		{name: "volume zone matches", pool: "az1", zone: "az1", want: true},
		{name: "volume zone differs", pool: "nova", zone: "az1", reason: `zone "nova" != requested zone "az1"`},
		{name: "type zones contain the pool's", pool: "az2", typ: zoned("az1, az2"), want: true},
		{name: "type zones replace the volume's", pool: "az2", zone: "az1", typ: zoned("az2"), want: true},
		{name: "type zones exclude the pool's", pool: "az1", zone: "az1", typ: zoned("az2,az3"), reason: `zone "az1" not in type zones [az2 az3]`},
		{name: "blank type zones are dropped", pool: "nova", zone: "nova", typ: zoned(" , "), want: true},
		{name: "type without zones", pool: "nova", typ: &basalt.VolumeType{}, want: true},
	}
	for _, tt := range tests {
		r := &Request{Zone: tt.zone, Type: tt.typ}
		p := &basalt.Pool{Name: "h@b#p", Zone: tt.pool}
		if got, reason := (AvailabilityZoneFilter{}).Fits(r, p); got != tt.want || reason != tt.reason {
			t.Errorf("%s: Fits(zone %q, pool zone %q) = %v, %q; want %v, %q", tt.name, tt.zone, tt.pool, got, reason, tt.want, tt.reason)
		}
	}
}

func TestIgnoreAttemptedHostsFilter(t *testing.T) {
	p := &basalt.Pool{Name: "block2@lvmdriver-b21#pool", Backend: "block2@lvmdriver-b21"}
	tests := []struct {
		attempted []string
		want      bool
	}{
		{nil, true},
		{[]string{"block1@lvmdriver-b1#pool"}, true},
		{[]string{"block1@lvmdriver-b1#pool", "block2@lvmdriver-b21#pool"}, false},
		{[]string{"block2@lvmdriver-b21"}, false},       // a backend: all its pools
		{[]string{"block2@lvmdriver-b21#other"}, true},  // another pool of the backend
		{[]string{"block2@lvmdriver-b2"}, true},         // no prefix matching
		{[]string{"block2"}, true},                      // a host is not a backend
		{[]string{"block2@lvmdriver-b21#pool#x"}, true}, // exact names only
	}
	for _, tt := range tests {
		if got, reason := (IgnoreAttemptedHostsFilter{}).Fits(&Request{Attempted: tt.attempted}, p); got != tt.want {
			t.Errorf("Fits(attempted %v) = %v (%s), want %v", tt.attempted, got, reason, tt.want)
		}
	}
	s, err := New(Config{Filters: []string{"RetryFilter"}})
	if err != nil {
		t.Fatalf("New(RetryFilter) = %v", err)
	}
	d := s.Place(&Request{Attempted: []string{p.Backend}}, []basalt.Pool{*p})
	want := []Rejection{{Pool: p.Name, Filter: "IgnoreAttemptedHostsFilter", Reason: "block2@lvmdriver-b21 already attempted"}}
	if !slices.Equal(d.Rejected, want) {
		t.Errorf("Place(attempted).Rejected = %v, want %v", d.Rejected, want)
	}
}

// free returns a pool with the given name and thick free capacity (infinite for math.Inf).
func free(name string, gb float64) basalt.Pool {
	var f any = gb
	if math.IsInf(gb, 1) {
		f = "infinite"
	}
	return basalt.Pool{Name: name, Zone: "nova", Capabilities: caps(keyTotal, 10000.0, keyFree, f)}
}

type ranked struct {
	pool   string
	weight float64
}

func ranking(d *Decision) []ranked {
	var out []ranked
	for _, c := range d.Ranked {
		out = append(out, ranked{c.Pool.Name, c.Weight})
	}
	return out
}

func TestWeighing(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name     string
		weighers []string
		mult     map[string]float64
		pools    []basalt.Pool
		want     []ranked
	}{
		{"normalized to [0,1]", nil, nil,
			[]basalt.Pool{free("a", 10), free("b", 30), free("c", 20)},
			[]ranked{{"b", 1}, {"c", 0.5}, {"a", 0}}},
		{"multiplied", nil, map[string]float64{"CapacityWeigher": 2.5},
			[]basalt.Pool{free("a", 10), free("b", 30), free("c", 20)},
			[]ranked{{"b", 2.5}, {"c", 1.25}, {"a", 0}}},
		{"negative multiplier stacks", nil, map[string]float64{"CapacityWeigher": -1},
			[]basalt.Pool{free("a", 10), free("b", 30), free("c", 20)},
			[]ranked{{"a", 0}, {"c", -0.5}, {"b", -1}}},
		{"all equal normalize to 0, ties keep input order", nil, nil,
			[]basalt.Pool{free("a", 10), free("b", 10), free("c", 10)},
			[]ranked{{"a", 0}, {"b", 0}, {"c", 0}}},
		{"ties keep input order among others", nil, nil,
			[]basalt.Pool{free("a", 10), free("b", 30), free("c", 30), free("d", 20), free("e", 30)},
			[]ranked{{"b", 1}, {"c", 1}, {"e", 1}, {"d", 0.5}, {"a", 0}}},
		{"infinite pools weigh -1 with a positive multiplier", nil, nil,
			[]basalt.Pool{free("a", 10), free("inf", inf), free("b", 30)},
			[]ranked{{"b", 1}, {"a", 11.0 / 31}, {"inf", 0}}},
		{"infinite pools, negative multiplier: max + 100*(max-min)", nil, map[string]float64{"CapacityWeigher": -1},
			[]basalt.Pool{free("inf", inf), free("a", 10), free("b", 30)},
			[]ranked{{"a", 0}, {"b", -20.0 / 2020}, {"inf", -1}}},
		{"infinite pools, negative multiplier, equal finite: max + 10000", nil, map[string]float64{"CapacityWeigher": -1},
			[]basalt.Pool{free("inf", inf), free("a", 10), free("b", 10)},
			[]ranked{{"a", 0}, {"b", 0}, {"inf", -1}}},
		{"all infinite, negative multiplier (Cinder raises): all 0", nil, map[string]float64{"CapacityWeigher": -1},
			[]basalt.Pool{free("x", inf), free("y", inf)},
			[]ranked{{"x", 0}, {"y", 0}}},
		{"all infinite, zero multiplier (Cinder raises): all 0", nil, map[string]float64{"CapacityWeigher": 0},
			[]basalt.Pool{free("x", inf), free("y", inf)},
			[]ranked{{"x", 0}, {"y", 0}}},
		{"allocated: least wins by default", []string{"AllocatedCapacityWeigher"}, nil,
			[]basalt.Pool{
				{Name: "a", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyAllocated, 50.0)},
				{Name: "b", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyAllocated, 10.0)},
				{Name: "c", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0)},
			},
			[]ranked{{"c", 0}, {"b", -0.2}, {"a", -1}}},
		{"volume number: fewest wins by default", []string{"VolumeNumberWeigher"}, nil,
			[]basalt.Pool{
				{Name: "a", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyVolumes, 5.0)},
				{Name: "b", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyVolumes, 1.0)},
				{Name: "c", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyVolumes, 3.0)},
			},
			[]ranked{{"b", 0}, {"c", -0.5}, {"a", -1}}},
		{"weighers sum", []string{"CapacityWeigher", "AllocatedCapacityWeigher"}, nil,
			[]basalt.Pool{
				{Name: "a", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyAllocated, 0.0)},
				{Name: "b", Capabilities: caps(keyTotal, 100.0, keyFree, 50.0, keyAllocated, 0.0)},
				{Name: "c", Capabilities: caps(keyTotal, 100.0, keyFree, 100.0, keyAllocated, 25.0)}, // 75 free
			},
			[]ranked{{"a", 1}, {"b", 0}, {"c", -0.5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Weighers: tt.weighers, Multipliers: tt.mult})
			if err != nil {
				t.Fatal(err)
			}
			d := s.Place(&Request{ID: "v", SizeGB: 1, Type: thickType()}, tt.pools)
			if got := ranking(d); !slices.Equal(got, tt.want) {
				t.Errorf("Place().Ranked = %v, want %v\n%s", got, tt.want, d.Explain())
			}
			for _, c := range d.Ranked {
				sum := 0.0
				for _, name := range s.names {
					sum += c.Weights[name]
				}
				if len(c.Weights) != len(s.names) || sum != c.Weight {
					t.Errorf("Place(): %s Weights %v do not sum to Weight %v", c.Pool.Name, c.Weights, c.Weight)
				}
			}
		})
	}
}

func TestChanceWeigher(t *testing.T) {
	s, err := New(Config{Weighers: []string{"ChanceWeigher"}})
	if err != nil {
		t.Fatal(err)
	}
	var pools []basalt.Pool
	for i := range 5 {
		pools = append(pools, free(fmt.Sprintf("h%d@b#p", i), 100))
	}
	orders := map[string]bool{}
	for i := range 50 {
		r := &Request{ID: fmt.Sprintf("vol-%d", i), SizeGB: 1}
		first := fmt.Sprint(ranking(s.Place(r, pools)))
		if again := fmt.Sprint(ranking(s.Place(r, pools))); again != first {
			t.Fatalf("Place(%s) ranked %s, then %s", r.ID, first, again)
		}
		// The raw weight of a pool depends only on the request and the pool.
		reversed := slices.Clone(pools)
		slices.Reverse(reversed)
		for _, p := range pools {
			if a, b := (ChanceWeigher{}).Weigh(r, &p), (ChanceWeigher{}).Weigh(r, &reversed[0]); p.Name == reversed[0].Name && a != b {
				t.Errorf("Weigh(%s, %s) = %v, then %v", r.ID, p.Name, a, b)
			}
			if w := (ChanceWeigher{}).Weigh(r, &p); w < 0 || w >= 1 {
				t.Errorf("Weigh(%s, %s) = %v, want [0,1)", r.ID, p.Name, w)
			}
		}
		orders[first] = true
	}
	if len(orders) < 20 {
		t.Errorf("Place() over 50 request ids gave %d distinct rankings of 5 pools; want a spread", len(orders))
	}
}

// TestPlaceTopology places on the example topology of DESIGN.md.
func TestPlaceTopology(t *testing.T) {
	pools := []basalt.Pool{
		{Name: "block1@lvmdriver-b1#lvmbackend", Backend: "block1@lvmdriver-b1", Zone: "nova",
			Capabilities: caps("volume_backend_name", "lvmbackend", keyTotal, 100.0, keyFree, 90.0, keyThin, true, keyProvisioned, 10.0)},
		{Name: "block2@lvmdriver-b21#lvmbackend", Backend: "block2@lvmdriver-b21", Zone: "az1",
			Capabilities: caps("volume_backend_name", "lvmbackend", keyTotal, 10.0, keyFree, 100.0, keyProvisioned, 6.655)},
		{Name: "block2@lvmdriver-b22#lvmbackend", Backend: "block2@lvmdriver-b22", Zone: "az1",
			Capabilities: caps("volume_backend_name", "lvmbackend", keyTotal, 50.0, keyFree, 40.0, keyThin, true, keyRatio, 2.0, keyProvisioned, 20.0)},
		{Name: "network@lvmdriver-network#lvmbackend", Backend: "network@lvmdriver-network", Zone: "az1",
			Capabilities: caps("volume_backend_name", "other", keyTotal, 1000.0, keyFree, 1000.0)},
		{Name: "block2@lvmdriver-b23#lvmbackend", Backend: "block2@lvmdriver-b23", Zone: "az1",
			Capabilities: caps("volume_backend_name", "lvmbackend", keyTotal, 50.0, keyFree, 50.0)},
	}
	s, err := New(Config{Filters: append(DefaultFilters(), "IgnoreAttemptedHostsFilter")})
	if err != nil {
		t.Fatal(err)
	}
	r := &Request{
		ID: "vol-1", SizeGB: 5, Zone: "az1", Attempted: []string{"block2@lvmdriver-b23"},
		Type: &basalt.VolumeType{ExtraSpecs: map[string]string{"volume_backend_name": "lvmbackend"}},
	}
	d := s.Place(r, pools)
	want := strings.Join([]string{
		"block2@lvmdriver-b22#lvmbackend: rank 1, weight 0 (CapacityWeigher 0), limit 100 GiB",
		`block1@lvmdriver-b1#lvmbackend: AvailabilityZoneFilter: zone "nova" != requested zone "az1"`,
		"block2@lvmdriver-b21#lvmbackend: CapacityFilter: 3.34 GiB virtual free < 5 GiB requested",
		`network@lvmdriver-network#lvmbackend: CapabilitiesFilter: volume_backend_name "other" does not match "lvmbackend"`,
		"block2@lvmdriver-b23#lvmbackend: IgnoreAttemptedHostsFilter: block2@lvmdriver-b23 already attempted",
	}, "\n") + "\n"
	if got := d.Explain(); got != want {
		t.Errorf("Place().Explain() =\n%s\nwant\n%s", got, want)
	}
	if b := d.Best(); b == nil || b.Pool != &pools[2] {
		t.Errorf("Place().Best() = %v, want the pool at index 2", b)
	}

	r.Zone, r.Attempted = "", nil
	d = s.Place(r, pools)
	want = strings.Join([]string{
		"block1@lvmdriver-b1#lvmbackend: rank 1, weight 1 (CapacityWeigher 1), limit 2000 GiB",
		"block2@lvmdriver-b22#lvmbackend: rank 2, weight 0.0154639 (CapacityWeigher 0.0154639), limit 100 GiB",
		"block2@lvmdriver-b23#lvmbackend: rank 3, weight 0 (CapacityWeigher 0), limit 50 GiB",
	}, "\n")
	if got := d.Explain(); !strings.HasPrefix(got, want) {
		t.Errorf("Place().Explain() =\n%s\nwant it to start with\n%s", got, want)
	}
	if got := (&Decision{}).Best(); got != nil {
		t.Errorf("empty Decision.Best() = %v, want nil", got)
	}
}

func TestExplainRejected(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	pools := []basalt.Pool{{Name: "block2@lvmdriver-b21#pool", Zone: "az1",
		Capabilities: caps(keyTotal, 10.0, keyFree, 100.0, keyProvisioned, 6.655)}}
	d := s.Place(&Request{SizeGB: 5}, pools)
	want := "block2@lvmdriver-b21#pool: CapacityFilter: 3.34 GiB virtual free < 5 GiB requested\n"
	if got := d.Explain(); got != want {
		t.Errorf("Place().Explain() = %q, want %q", got, want)
	}
	if len(d.Ranked) != 0 || d.Best() != nil {
		t.Errorf("Place().Ranked = %v, want none", d.Ranked)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		errs []string // substrings of the error; none: no error
	}{
		{name: "defaults", cfg: Config{}},
		{name: "all built-ins", cfg: Config{
			Filters:  []string{"AvailabilityZoneFilter", "CapacityFilter", "CapabilitiesFilter", "IgnoreAttemptedHostsFilter"},
			Weighers: []string{"CapacityWeigher", "AllocatedCapacityWeigher", "VolumeNumberWeigher", "ChanceWeigher"}}},
		{name: "none", cfg: Config{Filters: []string{}, Weighers: []string{}}},
		{name: "unknown filter", cfg: Config{Filters: []string{"CapacityFilter", "DriverFilter"}},
			errs: []string{`unknown scheduler filter "DriverFilter"`}},
		{name: "unknown weigher", cfg: Config{Weighers: []string{"GoodnessWeigher"}},
			errs: []string{`unknown scheduler weigher "GoodnessWeigher"`}},
		{name: "every problem", cfg: Config{Filters: []string{"Nope", "CapacityFilter", "CapacityFilter"}, MaxOverSubscriptionRatio: -1,
			Multipliers: map[string]float64{"Typo": 1, "ChanceWeigher": math.NaN()}},
			errs: []string{`"Nope"`, `"CapacityFilter" listed twice`, `"Typo"`, "ChanceWeigher is NaN", "ratio -1"}},
		{name: "alias twice", cfg: Config{Filters: []string{"RetryFilter", "IgnoreAttemptedHostsFilter"}},
			errs: []string{`"IgnoreAttemptedHostsFilter" listed twice`}},
	}
	for _, tt := range tests {
		s, err := New(tt.cfg)
		if len(tt.errs) == 0 {
			if err != nil || s == nil {
				t.Errorf("%s: New(%+v) = %v, %v; want a scheduler", tt.name, tt.cfg, s, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: New(%+v) = nil error, want %q", tt.name, tt.cfg, tt.errs)
			continue
		}
		for _, e := range tt.errs {
			if !strings.Contains(err.Error(), e) {
				t.Errorf("%s: New(%+v) = %q, want it to mention %q", tt.name, tt.cfg, err, e)
			}
		}
	}
}

func TestNewDefaults(t *testing.T) {
	mult := map[string]float64{"ChanceWeigher": 3}
	cfg := Config{Weighers: []string{"CapacityWeigher", "AllocatedCapacityWeigher", "VolumeNumberWeigher", "ChanceWeigher"}, Multipliers: mult}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{1, -1, -1, 3}; !slices.Equal(s.mult, want) {
		t.Errorf("New(%v) multipliers = %v, want %v", cfg.Weighers, s.mult, want)
	}
	if len(mult) != 1 {
		t.Errorf("New() changed the caller's Multipliers: %v", mult)
	}
	s, err = New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range s.filters {
		names = append(names, f.Name())
	}
	if !slices.Equal(names, DefaultFilters()) || !slices.Equal(s.names, DefaultWeighers()) || s.ratio.ratio != 20 {
		t.Errorf("New(Config{}) = filters %v, weighers %v, ratio %v", names, s.names, s.ratio)
	}
}

func TestOmitWeights(t *testing.T) {
	s, err := New(Config{OmitWeights: true, Weighers: []string{"CapacityWeigher", "AllocatedCapacityWeigher"}})
	if err != nil {
		t.Fatal(err)
	}
	d := s.Place(&Request{SizeGB: 1, Type: thickType()}, []basalt.Pool{free("a", 10), free("b", 30)})
	want := []ranked{{"b", 1}, {"a", 0}}
	if got := ranking(d); !slices.Equal(got, want) || d.Ranked[0].Weights != nil {
		t.Errorf("Place() with OmitWeights = %v, Weights %v; want %v, nil", got, d.Ranked[0].Weights, want)
	}
	if got, want := d.Explain(), "b: rank 1, weight 1, limit 30 GiB\na: rank 2, weight 0, limit 10 GiB\n"; got != want {
		t.Errorf("Explain() with OmitWeights = %q, want %q", got, want)
	}
}

func TestPlaceEdges(t *testing.T) {
	s, err := New(Config{Filters: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Place(nil, nil); len(d.Ranked)+len(d.Rejected) != 0 || d.Explain() != "" {
		t.Errorf("Place(nil, nil) = %+v", d)
	}
	pools := []basalt.Pool{{Name: "a"}, {Name: "b", Capabilities: caps(keyFree, nil, keyTotal, []any{})}}
	if d := s.Place(nil, pools); len(d.Ranked) != 2 {
		t.Errorf("Place(nil, reports without capacity) = %s", d.Explain())
	}
}

// TestPlaceConcurrent runs Place from many goroutines on one Scheduler and one pool slice;
// run with -race.
func TestPlaceConcurrent(t *testing.T) {
	s, err := New(Config{Weighers: []string{"CapacityWeigher", "ChanceWeigher"}})
	if err != nil {
		t.Fatal(err)
	}
	pools := benchPools(200)
	r := benchRequest()
	want := s.Place(r, pools).Explain()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if got := s.Place(r, pools).Explain(); got != want {
					t.Errorf("Place() concurrently = %s, want %s", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestPlaceParallel checks that splitting the work over goroutines changes nothing: the
// same Decision as on one goroutine, for several worker counts (odd ones merge unevenly).
func TestPlaceParallel(t *testing.T) {
	pools := benchPools(3000)
	for i := range pools { // ties and rejections of every kind
		switch i % 7 {
		case 0:
			pools[i].Capabilities = pools[0].Capabilities
		case 3:
			pools[i].Zone = "az9"
		}
	}
	r := benchRequest()
	for _, cfg := range []Config{{}, {Weighers: []string{"CapacityWeigher", "AllocatedCapacityWeigher", "ChanceWeigher"}}} {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.chunk = 1 << 30
		want := s.Place(r, pools)
		for _, workers := range []int{2, 3, 5, 8} {
			s.chunk, s.workers = 16, workers
			got := s.Place(r, pools)
			if g, w := got.Explain(), want.Explain(); g != w {
				t.Errorf("Place() with %d workers differs from one:\n%s", workers, firstDiff(g, w))
			}
		}
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d: %q\nwant    %q", i, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(al), len(bl))
}
