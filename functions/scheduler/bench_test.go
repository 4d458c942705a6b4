package scheduler

import (
	"fmt"
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
