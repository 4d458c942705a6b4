package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt"
)

// randomPools returns n pools with odd and ordinary reports: numeric, infinite, unknown, null
// and unreadable capacities, thin and thick, ratios "auto" and below 1, several zones, nested
// capabilities, values drawn from a few so that many pools tie, magnitudes up to where the
// early exit gives up (near-ties at 1e14, values beyond 2^50), backends reported down (which
// the scheduler does not read) and the odd duplicate name. Only wild sets hold the extreme
// magnitudes, which send every request on them to the full ranking.
func randomPools(rng *rand.Rand, n int, wild bool) []basalt.Pool {
	pick := func(vs ...any) any { return vs[rng.IntN(len(vs))] }
	pools := make([]basalt.Pool, n)
	for i := range pools {
		backend := fmt.Sprintf("h%d@b%d", i/3, rng.IntN(3))
		var total, freeGB, prov any
		x := rng.IntN(20)
		switch {
		case !wild && (x == 2 || x == 3):
			x = 4
		case wild && x >= 15:
			x = 2
		}
		switch x {
		case 0:
			total, freeGB = pick("infinite", "unknown", 1000.0), pick("infinite", "unknown")
		case 1:
			total, freeGB = pick(nil, "lots", 100.0), pick(nil, "x", 10.0)
		case 2: // values that normalize to the same weight: the rounding check must catch them
			switch rng.IntN(3) {
			case 0: // near-ties far from 0
				total = 1e14 + float64(rng.IntN(3))*0.01
				freeGB = total
				prov = float64(rng.IntN(3)) * 0.01
			case 1: // a minimum far below 0 (thick: free decides)
				total, freeGB = 1e15, -1e15
			default: // small values 0.01 apart, which such a minimum merges
				total, freeGB = 10.0, 1+float64(rng.IntN(3))*0.01
			}
		case 3: // beyond what the early exit vouches for: huge (with a thin ratio), infinite, NaN
			total, freeGB = pick(2e15, 1e300, 1e21, math.Inf(1), math.MaxFloat64), pick(1e15, 1e21)
			prov = pick(nil, nil, math.Inf(1))
		default:
			total = pick(0.0, 10.0, 100.0, 100.0, 1000.0, 1000.0, 5000.0, 1e6)
			t, _ := total.(float64)
			freeGB = math.Floor(t * float64(rng.IntN(5)) / 4)
			if rng.IntN(4) == 0 {
				prov = math.Floor(t * float64(rng.IntN(9)) / 4)
			}
		}
		c := basalt.Capabilities{
			"total_capacity_gb": total, "free_capacity_gb": freeGB,
			"reserved_percentage":       pick(0.0, 0.0, 5.0, 10.0, nil),
			"thin_provisioning_support": pick(true, true, false, "False", ""),
			"volume_backend_name":       pick("lvm", "lvm", "ceph"),
			"allocated_capacity_gb":     pick(0.0, 10.0, 10.0, 250.0, "x"),
			"total_volumes":             pick(0.0, 3.0, 3.0, 50.0),
			"nested":                    map[string]any{"tier": pick("gold", "silver")},
			"backend_state":             pick("up", "up", "down"),
		}
		if prov != nil {
			c["provisioned_capacity_gb"] = prov
		}
		if r := pick(nil, nil, 1.0, 2.5, 20.0, "auto", "0", 0.5); r != nil {
			c["max_over_subscription_ratio"] = r
		}
		if rng.IntN(6) == 0 {
			c[keyOnlineExt] = false
		}
		if wild && rng.IntN(20) == 0 {
			c["allocated_capacity_gb"] = 1e16
		}
		name := backend + "#pool"
		if rng.IntN(40) != 0 { // else probably a duplicate of another pool's name
			name = fmt.Sprintf("%s#p%d", backend, i)
		}
		pools[i] = basalt.Pool{Name: name, Backend: backend, Zone: pick("nova", "nova", "az1", "az2", "").(string), Capabilities: c}
	}
	return pools
}

// randomRequest returns a create or extend of any size, thin or thick, with or without zones,
// extra specs and attempted pools or backends.
func randomRequest(rng *rand.Rand, pools []basalt.Pool) *Request {
	if rng.IntN(30) == 0 {
		return nil
	}
	r := &Request{ID: fmt.Sprint(rng.Uint32()), SizeGB: []int{0, 1, 1, 10, 10, 100, 500, 5000, 1e6, 1e7}[rng.IntN(10)],
		Zone: []string{"", "", "nova", "az1"}[rng.IntN(4)]}
	specs := map[string]string{}
	if rng.IntN(2) == 0 {
		specs["provisioning:type"] = []string{"thick", "thin"}[rng.IntN(2)]
	}
	if rng.IntN(3) == 0 {
		specs["volume_backend_name"] = []string{"lvm", "ceph"}[rng.IntN(2)]
	}
	if rng.IntN(4) == 0 {
		specs["capabilities:nested:tier"] = "<in> go"
	}
	if rng.IntN(6) == 0 {
		specs["RESKEY:availability_zones"] = "az1,az2"
	}
	if len(specs) > 0 || rng.IntN(2) == 0 {
		r.Type = &basalt.VolumeType{ExtraSpecs: specs}
	}
	if rng.IntN(4) == 0 {
		r.Operation, r.Attached = OpExtendVolume, rng.IntN(2) == 0
	}
	for range rng.IntN(3) {
		if len(pools) > 0 {
			p := pools[rng.IntN(len(pools))]
			r.Attempted = append(r.Attempted, []string{p.Name, p.Backend}[rng.IntN(2)])
		}
	}
	return r
}

// rankConfigs are the configurations the property test ranks with, grouped by what a set is
// prepared for (the over-subscription settings), so that one set serves several schedulers and
// keeps several orders up to date at once.
var rankConfigs = [][]Config{
	{
		{}, // Cinder's default: CapacityWeigher alone, multiplier 1
		{Multipliers: map[string]float64{"CapacityWeigher": -1}},
		{Multipliers: map[string]float64{"CapacityWeigher": 2.5}, Filters: []string{"IgnoreAttemptedHostsFilter", "CapacityFilter", "AvailabilityZoneFilter"}},
		{Multipliers: map[string]float64{"CapacityWeigher": 0}},
		{Multipliers: map[string]float64{"CapacityWeigher": -1e-300}}, // too small to vouch for: full
		{Filters: []string{}, Multipliers: map[string]float64{"CapacityWeigher": -3}},
		{Filters: []string{}},
		{Weighers: []string{}},
		{Weighers: []string{"AllocatedCapacityWeigher"}},
		{Weighers: []string{"VolumeNumberWeigher"}, Multipliers: map[string]float64{"VolumeNumberWeigher": 1}},
		{Weighers: []string{"ChanceWeigher"}},
		{Weighers: []string{"CapacityWeigher", "AllocatedCapacityWeigher"}},
	},
	{
		{AutoOverSubscription: true},
		{AutoOverSubscription: true, Multipliers: map[string]float64{"CapacityWeigher": -1}},
	},
	{
		{MaxOverSubscriptionRatio: 3, Filters: append(DefaultFilters(), "IgnoreAttemptedHostsFilter")},
	},
}

// rankStats counts what the property test exercised.
type rankStats struct {
	walked, full, switched, early, decisions int
}

// checkRanking ranks r on set with s both ways and reports how Rank's candidates differ from
// PlaceSet's: the same pools and limits, in the same order, as far as it is walked (at random,
// with random bounds on each step), and the same Decision behind it.
func checkRanking(rng *rand.Rand, s *Scheduler, r *Request, set *PoolSet, st *rankStats) string {
	d := s.PlaceSet(r, set)
	k := s.Rank(r, set)
	wasFull := k.Full()
	stop := len(d.Ranked) + 1
	if rng.IntN(3) > 0 {
		stop = rng.IntN(min(len(d.Ranked), 20) + 2)
	}
	var got []Candidate
	for len(got) < stop {
		limit := 0
		if rng.IntN(3) == 0 {
			limit = k.Visited() + 1 + rng.IntN(8)
		}
		c, ok := k.Next(limit)
		if !ok {
			if k.Done() {
				break
			}
			if limit == 0 || k.Visited() < min(limit, set.Len()) {
				return fmt.Sprintf("Next(%d) stopped at %d, not done", limit, k.Visited())
			}
			continue
		}
		got = append(got, c)
	}
	if len(got) > len(d.Ranked) || len(got) < min(stop, len(d.Ranked)) {
		return fmt.Sprintf("Rank yielded %d candidates (asked for %d), PlaceSet ranked %d", len(got), stop, len(d.Ranked))
	}
	if k.Done() && len(got) != len(d.Ranked) {
		return fmt.Sprintf("Done() after %d of %d candidates", len(got), len(d.Ranked))
	}
	for i, c := range got {
		w := d.Ranked[i]
		if c.Pool != w.Pool || math.Float64bits(c.Limit) != math.Float64bits(w.Limit) {
			return fmt.Sprintf("rank %d: Rank pool %d %s limit %v, PlaceSet pool %d %s limit %v\nPlaceSet:\n%s", i+1,
				indexOf(set, c.Pool), c.Pool.Name, c.Limit, indexOf(set, w.Pool), w.Pool.Name, w.Limit, d.Explain())
		}
		if !math.IsNaN(c.Weight) && math.Float64bits(c.Weight) != math.Float64bits(w.Weight) {
			return fmt.Sprintf("rank %d: weight %v, PlaceSet %v", i+1, c.Weight, w.Weight)
		}
	}
	if lines := strings.Count(k.Explain(), "\n"); lines != len(got) {
		return fmt.Sprintf("Explain() has %d lines for %d candidates", lines, len(got))
	}
	for i, line := range strings.SplitAfter(k.Explain(), "\n")[:len(got)] {
		if !strings.HasPrefix(line, got[i].Pool.Name+": rank "+fmt.Sprint(i+1)+",") {
			return fmt.Sprintf("Explain() line %d = %q, want %s", i+1, line, got[i].Pool.Name)
		}
	}
	switch {
	case wasFull:
		st.full++
	case k.Full():
		st.switched++
	default:
		st.walked++
		if k.Visited() < set.Len() {
			st.early++
		}
		if k.Visited() > set.Len() {
			return fmt.Sprintf("Visited() = %d of %d pools", k.Visited(), set.Len())
		}
	}
	if rng.IntN(4) == 0 || len(got) == 0 {
		st.decisions++
		if g, w := k.Decision().Explain(), d.Explain(); g != w {
			return "Decision().Explain(): " + firstDiff(g, w)
		}
		if k.Decision().NumRejected() != d.NumRejected() || len(k.Decision().Ranked) != len(d.Ranked) {
			return "Decision() differs from PlaceSet's"
		}
	}
	return ""
}

// indexOf returns p's index in set's pools, or -1.
func indexOf(set *PoolSet, p *basalt.Pool) int {
	for i := range set.pools {
		if &set.pools[i] == p {
			return i
		}
	}
	return -1
}

// checkOrders verifies every order a set has built: sorted as radixSort sorts, each pool once
// with its current key, the counters right.
func checkOrders(set *PoolSet) string {
	for slot := range set.orders {
		o := set.orders[slot].Load()
		if o == nil {
			continue
		}
		sp := specOf(slot)
		if len(o.e) != set.Len() {
			return fmt.Sprintf("order %+v: %d entries, %d pools", sp, len(o.e), set.Len())
		}
		seen := make([]bool, set.Len())
		unsafe, tail := 0, 0
		for p, e := range o.e {
			if p > 0 && cmpEntry(o.e[p-1], e) >= 0 {
				return fmt.Sprintf("order %+v: entries %d and %d out of order: %v %v", sp, p-1, p, o.e[p-1], e)
			}
			k, bad := set.orderKey(sp, int(e.j))
			if seen[e.j] || math.Float64bits(k) != math.Float64bits(e.w) {
				return fmt.Sprintf("order %+v: pool %d at %d with key %v, now %v (seen %v)", sp, e.j, p, e.w, k, seen[e.j])
			}
			seen[e.j] = true
			if bad {
				unsafe++
			}
			if math.IsInf(k, -1) {
				tail++
			}
		}
		if unsafe != o.unsafe || tail != o.tail {
			return fmt.Sprintf("order %+v: unsafe %d tail %d, counted %d %d", sp, o.unsafe, o.tail, unsafe, tail)
		}
	}
	return ""
}

// TestRankMatchesPlaceSet is the early exit's property test: on random pool sets and random
// requests, Rank yields exactly PlaceSet's candidates, in its order, however far it is walked;
// also after placements consume from the set (moving pools in the orders it keeps), and on
// sets swapped in for new reports (pools gone down or disabled, new ones, changed reports)
// while decisions on the old set are still made.
func TestRankMatchesPlaceSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var st rankStats
	rounds := 60
	if testing.Short() {
		rounds = 15
	}
	for round := range rounds {
		for gi, group := range rankConfigs {
			var scheds []*Scheduler
			var need prep
			for _, cfg := range group {
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				scheds = append(scheds, s)
				need |= s.need
			}
			n := []int{0, 1, 2, 5, 20, 60, 150, 400}[rng.IntN(8)]
			wild := rng.IntN(4) == 0
			pools := randomPools(rng, n, wild)
			set := prepare(pools, scheds[0].ratio, need, 1)
			old := set
			for step := range 30 {
				s := scheds[rng.IntN(len(scheds))]
				r := randomRequest(rng, pools)
				if msg := checkRanking(rng, s, r, set, &st); msg != "" {
					t.Fatalf("round %d, group %d, step %d, %d pools, config %+v, request %+v: %s", round, gi, step, n, s.names, r, msg)
				}
				if old != set {
					if msg := checkRanking(rng, s, randomRequest(rng, old.pools), old, &st); msg != "" {
						t.Fatalf("round %d, step %d, on the previous set: %s", round, step, msg)
					}
				}
				switch x := rng.IntN(10); {
				case x < 5 && n > 0: // a placement consumes, often from the first candidate
					name := pools[rng.IntN(n)].Name
					if d := s.PlaceSet(r, set); len(d.Ranked) > 0 && rng.IntN(2) == 0 {
						name = d.Ranked[0].Pool.Name
					}
					set.Consume(name, []float64{1, 10, 100, 250, 0.5, 1e6}[rng.IntN(6)])
					if set.Consume("no such pool", 1) {
						t.Fatal("Consume(unknown pool) = true")
					}
				case x == 5: // new reports: a fresh set, some backends gone, some new
					next := slices.Clone(pools)
					next = slices.DeleteFunc(next, func(basalt.Pool) bool { return rng.IntN(5) == 0 })
					next = append(next, randomPools(rng, rng.IntN(20), wild)...)
					old, pools = set, next
					set = prepare(pools, scheds[0].ratio, need, 1)
					n = len(pools)
				}
				if msg := checkOrders(set); msg != "" {
					t.Fatalf("round %d, step %d: %s", round, step, msg)
				}
			}
		}
	}
	t.Logf("%+v", st)
	if st.walked == 0 || st.early == 0 || st.switched == 0 || st.full == 0 {
		t.Errorf("the test did not exercise every path: %+v", st)
	}
}

// TestRankOrderFollowsConsume: after a placement consumes from the best pool, the next request
// walks the order as it is now, not as the set was prepared.
func TestRankOrderFollowsConsume(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name string, free float64) basalt.Pool {
		return basalt.Pool{Name: "h@b#" + name, Backend: "h@b", Zone: "nova", Capabilities: basalt.Capabilities{
			"total_capacity_gb": 1000.0, "free_capacity_gb": free, "provisioned_capacity_gb": 1000 - free,
			"reserved_percentage": 0.0}}
	}
	pools := []basalt.Pool{pool("a", 100), pool("b", 90), pool("c", 80)}
	for i := range 100 {
		pools = append(pools, pool(fmt.Sprint("full", i), 0))
	}
	set := s.Prepare(pools)
	thick := &Request{SizeGB: 20, Type: thickType()}
	first := func() string {
		t.Helper()
		k := s.Rank(thick, set)
		c, ok := k.Next(0)
		if !ok || k.Full() {
			t.Fatalf("Rank: ok %v, full %v", ok, k.Full())
		}
		if want := s.PlaceSet(thick, set).Ranked[0].Pool.Name; c.Pool.Name != want {
			t.Fatalf("Rank's best %s, PlaceSet's %s", c.Pool.Name, want)
		}
		if k.Visited() != 1 {
			t.Errorf("Rank visited %d pools for the best, want 1", k.Visited())
		}
		return c.Pool.Name
	}
	var got []string
	for range 5 {
		name := first()
		got = append(got, name)
		set.Consume(name, 20) // a: 100 -> 80, b: 90 -> 70, ...
	}
	if want := []string{"h@b#a", "h@b#b", "h@b#a", "h@b#c", "h@b#b"}; !slices.Equal(got, want) {
		t.Errorf("placements %v, want %v", got, want)
	}
}

// TestRankEdges: nil requests and sets, a set prepared for other settings, no weighers.
func TestRankEdges(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	k := s.Rank(nil, nil)
	if _, ok := k.Next(0); ok || !k.Done() || k.Visited() != 0 || !k.Full() || len(k.Decision().Ranked) != 0 {
		t.Errorf("Rank(nil, nil) yields something")
	}
	pools := benchPools(50)
	auto, err := New(Config{AutoOverSubscription: true})
	if err != nil {
		t.Fatal(err)
	}
	if k := auto.Rank(benchRequest(), s.Prepare(pools)); !k.Full() {
		t.Error("Rank on a set prepared for another ratio walks it")
	}
	k = s.Rank(benchRequest(), s.Prepare(pools))
	if c, ok := k.Next(0); !ok || k.Full() || !math.IsNaN(c.Weight) {
		t.Errorf("Rank(default) = %v %v, full %v; want a walk, weight NaN", c, ok, k.Full())
	}
	if line := k.Explain(); !strings.Contains(line, "rank 1, CapacityWeigher raw ") || !strings.Contains(line, " GiB\n") {
		t.Errorf("Explain() = %q", line)
	}
}

// TestRankRoundingTies: different raw values that normalize to the same weight rank in pool
// order in the full ranking (and in Cinder's), not in the order of their raw values; the walk
// sees that they are too close to tell and ranks in full.
func TestRankRoundingTies(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	thick := func(name string, total, free float64) basalt.Pool {
		return basalt.Pool{Name: name, Zone: "nova", Capabilities: caps(keyTotal, total, keyFree, free)}
	}
	// 1e15 + 1.01 rounds to 1e15 + 1: a and b both weigh 1.
	pools := []basalt.Pool{thick("a", 10, 1), thick("b", 10, 1.01), thick("low", 1e15, -1e15)}
	set := s.Prepare(pools)
	r := &Request{SizeGB: 0, Type: thickType()}
	d := s.PlaceSet(r, set)
	if got := ranking(d); len(got) != 3 || got[0] != (ranked{"a", 1}) || got[1] != (ranked{"b", 1}) {
		t.Fatalf("PlaceSet ranked %v, want a and b tied at 1, in pool order", got)
	}
	k := s.Rank(r, set)
	for i, want := range d.Ranked {
		c, ok := k.Next(0)
		if !ok || c.Pool != want.Pool {
			t.Fatalf("Rank's candidate %d = %v (ok %v), PlaceSet's %s", i+1, c.Pool, ok, want.Pool.Name)
		}
	}
	if !k.Full() {
		t.Error("Rank walked values it cannot tell apart")
	}
}

// TestRankUnsafeValues: with a negative multiplier, infinite pools weigh the most negative
// unless the finite candidates are all equal and so large that max + 10000 rounds back to max:
// then every weight is 0 and pool order decides. The early exit does not vouch for raw values
// that large (nor for infinite or NaN ones from the arithmetic) and ranks in full.
func TestRankUnsafeValues(t *testing.T) {
	s, err := New(Config{Multipliers: map[string]float64{"CapacityWeigher": -1}})
	if err != nil {
		t.Fatal(err)
	}
	pools := []basalt.Pool{free("inf", math.Inf(1)), free("big1", 1e21), free("big2", 1e21)}
	for i := range pools[1:] {
		pools[i+1].Capabilities[keyTotal] = 1e21
	}
	set := s.Prepare(pools)
	r := &Request{SizeGB: 1, Type: thickType()}
	d := s.PlaceSet(r, set)
	if got := ranking(d); len(got) != 3 || got[0] != (ranked{"inf", 0}) {
		t.Fatalf("PlaceSet ranked %v, want every weight 0, in pool order", got)
	}
	k := s.Rank(r, set)
	for i, want := range d.Ranked {
		if c, ok := k.Next(0); !ok || c.Pool != want.Pool {
			t.Fatalf("Rank's candidate %d = %v (ok %v), PlaceSet's %s", i+1, c.Pool, ok, want.Pool.Name)
		}
	}
	if !k.Full() {
		t.Error("Rank walked raw values beyond 2^50")
	}
}

// TestRankConcurrent ranks thin and thick requests on one fresh set from many goroutines, which
// build the set's orders and columns concurrently; run with -race.
func TestRankConcurrent(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	pools := benchPools(500)
	reqs := []*Request{benchRequest(), {ID: "thick", SizeGB: 10, Type: thickType()}, {ID: "any", SizeGB: 1}}
	want := make([][]*basalt.Pool, len(reqs))
	for i, r := range reqs {
		for _, c := range s.Place(r, pools).Ranked[:10] {
			want[i] = append(want[i], c.Pool)
		}
	}
	set := s.Prepare(pools)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := range 20 {
				i := (g + n) % len(reqs)
				k := s.Rank(reqs[i], set)
				for j, w := range want[i] {
					if c, ok := k.Next(0); !ok || c.Pool != w {
						t.Errorf("request %d, candidate %d: %v, want %s", i, j+1, c.Pool, w.Name)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
