package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
)

// benchPools returns n pools with the capabilities an LVM or Ceph backend reports, spread
// over hosts of four backends each: most pass the benchmark request, some are full, some
// are not thin-capable or belong to another backend name.
func benchPools(n int) []basalt.Pool {
	pools := make([]basalt.Pool, n)
	seed := uint64(1)
	rnd := func(m int) int { // a small LCG: deterministic pools
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % m
	}
	for i := range pools {
		backend := fmt.Sprintf("block%d@lvmdriver-%d", i/4, i%4)
		total := float64(1000 + rnd(100000))
		free := float64(rnd(int(total)))
		alloc := float64(rnd(3 * int(total)))
		name := "lvmbackend"
		if rnd(10) == 0 {
			name = "cephbackend"
		}
		c := basalt.Capabilities{
			"pool_name":                   "pool",
			"volume_backend_name":         name,
			"vendor_name":                 "Open Source",
			"driver_version":              "3.0.0",
			"storage_protocol":            []any{"iSCSI", "iscsi"},
			"total_capacity_gb":           total,
			"free_capacity_gb":            free,
			"allocated_capacity_gb":       alloc,
			"provisioned_capacity_gb":     alloc + float64(rnd(1000)),
			"reserved_percentage":         float64(rnd(3) * 5),
			"max_over_subscription_ratio": "20.0",
			"thin_provisioning_support":   rnd(5) != 0,
			"thick_provisioning_support":  false,
			"QoS_support":                 false,
			"multiattach":                 true,
			"online_extend_support":       true,
			"backend_state":               "up",
			"total_volumes":               float64(rnd(500)),
			"location_info":               "LVMVolumeDriver:" + backend + ":stack-volumes:thin:0",
			"cacheable":                   true,
			"sparse_copy_volume":          true,
			"filter_function":             nil,
			"goodness_function":           nil,
		}
		if rnd(10) == 0 { // full
			c["free_capacity_gb"] = 0.0
			c["provisioned_capacity_gb"] = 30 * total
		}
		pools[i] = basalt.Pool{Name: backend + "#pool", Backend: backend, Zone: "nova", Capabilities: c}
	}
	return pools
}

// benchRequest is a 100 GiB volume of a type with two extra specs.
func benchRequest() *Request {
	return &Request{
		ID: "6a7e1c2e-2f4b-4f0e-9d55-0c1b2b8f3a10", SizeGB: 100, Zone: "nova",
		Type: &basalt.VolumeType{Name: "thin-lvm", ExtraSpecs: map[string]string{
			"volume_backend_name":                    "lvmbackend",
			"capabilities:thin_provisioning_support": "<is> True",
		}},
	}
}

// BenchmarkPlace places one request on 10 to 10000 pools with the default filters and
// weighers, then the same without the per-candidate Weights maps.
func BenchmarkPlace(b *testing.B) {
	r := benchRequest()
	for _, omit := range []bool{false, true} {
		s, err := New(Config{OmitWeights: omit})
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range []int{10, 100, 1000, 10000} {
			pools := benchPools(n)
			d := s.Place(r, pools)
			name := fmt.Sprintf("pools=%d", n)
			if omit {
				name = fmt.Sprintf("omit-weights/pools=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					s.Place(r, pools)
				}
				b.ReportMetric(float64(len(d.Ranked)), "candidates")
			})
		}
	}
}

// BenchmarkPlaceSet places the same request as BenchmarkPlace on pools prepared once
// (Prepare outside the loop), then the same without the weights PlaceSet keeps.
func BenchmarkPlaceSet(b *testing.B) {
	r := benchRequest()
	for _, omit := range []bool{false, true} {
		s, err := New(Config{OmitWeights: omit})
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range []int{10, 100, 1000, 10000} {
			set := s.Prepare(benchPools(n))
			d := s.PlaceSet(r, set)
			name := fmt.Sprintf("pools=%d", n)
			if omit {
				name = fmt.Sprintf("omit-weights/pools=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					s.PlaceSet(r, set)
				}
				b.ReportMetric(float64(len(d.Ranked)), "candidates")
			})
		}
	}
}

// BenchmarkPrepare prepares 1000 and 10000 pools for the default configuration.
func BenchmarkPrepare(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1000, 10000} {
		pools := benchPools(n)
		b.Run(fmt.Sprintf("pools=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Prepare(pools)
			}
		})
	}
}

// benchFullPools returns the pools of table 2b in docs/benchmarks.md: four pools with room,
// as the stack's fake backends report them, and n more backends of one full pool each, which
// every placement filters out.
func benchFullPools(n int) []basalt.Pool {
	pools := make([]basalt.Pool, 0, n+4)
	for i := range 4 {
		backend := fmt.Sprintf("stack@fake-%d", i)
		pools = append(pools, basalt.Pool{Name: backend + "#pool", Backend: backend, Zone: "nova", Capabilities: basalt.Capabilities{
			"pool_name": "pool", "volume_backend_name": "fake", "total_capacity_gb": 1e6, "free_capacity_gb": 1e6 - float64(i),
			"allocated_capacity_gb": float64(i), "provisioned_capacity_gb": float64(i), "reserved_percentage": 0.0,
			"thin_provisioning_support": true, "max_over_subscription_ratio": 1.0}})
	}
	for i := range n {
		backend := fmt.Sprintf("full%d@backend", i)
		pools = append(pools, basalt.Pool{Name: backend + "#pool", Backend: backend, Zone: "nova", Capabilities: basalt.Capabilities{
			"pool_name": "pool", "volume_backend_name": "full", "vendor_name": "Basalt", "driver_version": "1.0.0",
			"storage_protocol": []any{"iSCSI", "iscsi"}, "total_capacity_gb": 1000.0, "free_capacity_gb": 0.0,
			"provisioned_capacity_gb": 1000.0, "reserved_percentage": 0.0, "max_over_subscription_ratio": 1.0,
			"thin_provisioning_support": false, "thick_provisioning_support": true}})
	}
	// In name order, as the scheduler function's pool cache keeps them.
	slices.SortFunc(pools, func(a, b basalt.Pool) int { return strings.Compare(a.Name, b.Name) })
	return pools
}

// benchRoomyPools is benchPools with room on every pool (the full tenth given room again).
func benchRoomyPools(n int) []basalt.Pool {
	pools := benchPools(n)
	for i := range pools {
		c := pools[i].Capabilities
		if c["free_capacity_gb"] == 0.0 {
			c["free_capacity_gb"] = c["total_capacity_gb"]
			c["provisioned_capacity_gb"] = c["allocated_capacity_gb"]
		}
	}
	return pools
}

// takeLikePlacement takes candidates from k as the scheduler function does: the first, then
// up to 16 within the 64 pools after it.
func takeLikePlacement(k *Ranking) int {
	n, limit := 0, 0
	for n < 16 {
		if _, ok := k.Next(limit); !ok {
			break
		}
		if n == 0 {
			limit = k.Visited() + 64
		}
		n++
	}
	return n
}

// BenchmarkRank places one request with the default filters and weigher on 1,000 and 10,000
// pools prepared once, both ways: PlaceSet (the full ranking) and Rank, which walks the set's
// pools in CapacityWeigher's order and stops early, taking the first candidate or what the
// scheduler function takes. "full" is table 2b's pools (four with room, the rest full: the
// request is thin, 1 GiB, no type); "room" is BenchmarkPlaceSet's pools and request with room
// on every pool (about 70 % candidates). consume+rank is what a placement adds to the set as
// well: Consume of 1 GiB on the best pool (moving it in the order), then Rank's first.
func BenchmarkRank(b *testing.B) {
	s, err := New(Config{OmitWeights: true})
	if err != nil {
		b.Fatal(err)
	}
	shapes := []struct {
		name  string
		pools func(int) []basalt.Pool
		r     *Request
	}{
		{"full", benchFullPools, &Request{ID: "v", SizeGB: 1, Zone: "nova"}},
		{"room", benchRoomyPools, benchRequest()},
	}
	for _, sh := range shapes {
		for _, n := range []int{1000, 10000} {
			set := s.Prepare(sh.pools(n))
			d := s.PlaceSet(sh.r, set)
			k := s.Rank(sh.r, set)
			if c, ok := k.Next(0); !ok || k.Full() || c.Pool != d.Ranked[0].Pool {
				b.Fatalf("%s/%d: Rank's first %v, full %v; PlaceSet's %v", sh.name, n, c.Pool, k.Full(), d.Ranked[0].Pool)
			}
			name := fmt.Sprintf("%s/pools=%d/", sh.name, n)
			b.Run(name+"PlaceSet", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					s.PlaceSet(sh.r, set)
				}
				b.ReportMetric(float64(len(d.Ranked)), "candidates")
			})
			b.Run(name+"Rank-first", func(b *testing.B) {
				b.ReportAllocs()
				var visited int
				for b.Loop() {
					k := s.Rank(sh.r, set)
					k.Next(0)
					visited = k.Visited()
				}
				b.ReportMetric(float64(visited), "visited")
			})
			b.Run(name+"Rank-placement", func(b *testing.B) {
				b.ReportAllocs()
				var visited, took int
				for b.Loop() {
					k := s.Rank(sh.r, set)
					took = takeLikePlacement(k)
					visited = k.Visited()
				}
				b.ReportMetric(float64(visited), "visited")
				b.ReportMetric(float64(took), "candidates")
			})
			b.Run(name+"consume+rank", func(b *testing.B) {
				b.ReportAllocs()
				set := s.Prepare(sh.pools(n))
				for b.Loop() {
					k := s.Rank(sh.r, set)
					c, _ := k.Next(0)
					set.Consume(c.Pool.Name, 1)
				}
			})
		}
	}
}

// BenchmarkOrder builds CapacityWeigher's order of 1,000 and 10,000 prepared pools: what the
// first Rank on each new set pays (the scheduler function prepares one a second).
func BenchmarkOrder(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1000, 10000} {
		set := s.Prepare(benchPools(n))
		b.Run(fmt.Sprintf("pools=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.dropOrders()
				set.order(orderSpec{kind: kindCapacity, thin: true, sign: 1})
			}
		})
	}
}
