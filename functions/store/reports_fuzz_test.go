package store_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
)

// FuzzPoolsFromReport decodes a capability report as an agent writes it (any JSON) and turns
// it into pools, then places a volume on them with the default filters and weighers. Nothing
// may panic; pool names are unique and of the report's backend; the report is left unchanged,
// also when the pools' capability maps are changed afterwards (they are copies).
func FuzzPoolsFromReport(f *testing.F) {
	for _, s := range []string{
		`{"backend":"h@lvm","zone":"nova","timestamp":"2026-01-01T00:00:00Z",
		  "capabilities":{"volume_backend_name":"lvm","vendor_name":"Open Source","driver_version":"3.0.0","storage_protocol":"iSCSI"},
		  "pools":[{"pool_name":"p1","total_capacity_gb":100,"free_capacity_gb":40.5,"provisioned_capacity_gb":60,
		            "thin_provisioning_support":true,"max_over_subscription_ratio":"auto","reserved_percentage":5}]}`,
		`{"backend":"h@b","capabilities":{"total_capacity_gb":"infinite","free_capacity_gb":"unknown"},"pools":null}`,
		`{"backend":"h@b","capabilities":{"volume_backend_name":"vb"},"pools":[]}`,
		`{"backend":"h@b","pools":[{"pool_name":"a","storage_protocol":"nvmeof"},{"pool_name":"a","x":2},{"pool_name":7},{}]}`,
		`{"backend":"h@b","capabilities":{"storage_protocol":["FC",1,null]},"pools":[{"pool_name":"p","free_capacity_gb":-1e308,"total_capacity_gb":1e308}]}`,
		`{"backend":"","pools":[{"pool_name":"#","max_over_subscription_ratio":"x","reserved_percentage":"101"}]}`,
	} {
		f.Add([]byte(s))
	}
	sch, err := scheduler.New(scheduler.Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep events.CapabilityReport
		if json.Unmarshal(data, &rep) != nil {
			return
		}
		before, err := json.Marshal(rep)
		if err != nil {
			return // a value JSON cannot hold again; agents cannot send it either
		}
		pools := store.PoolsFromReport(rep)
		if rep.Pools == nil && rep.Capabilities != nil {
			if len(pools) != 1 {
				t.Fatalf("a report without pools gave %d pools", len(pools))
			}
		} else if len(pools) > len(rep.Pools) {
			t.Fatalf("%d pools reported, %d returned", len(rep.Pools), len(pools))
		}
		seen := map[string]bool{}
		for _, p := range pools {
			if seen[p.Name] || p.Backend != rep.Backend || p.Zone != rep.Zone || p.Capabilities == nil {
				t.Fatalf("pool %+v (backend %q, zone %q, seen %v)", p, rep.Backend, rep.Zone, seen[p.Name])
			}
			seen[p.Name] = true
		}
		for _, size := range []int{0, 1, 1 << 20} {
			for _, typ := range []*basalt.VolumeType{nil, {ExtraSpecs: map[string]string{
				"provisioning:type": "thin", "capabilities:storage_protocol": "<in> iSCSI", "multiattach": "<is> True"}}} {
				d := sch.Place(&scheduler.Request{ID: "v", SizeGB: size, Zone: rep.Zone, Type: typ}, pools)
				if len(d.Ranked)+d.NumRejected() != len(pools) {
					t.Fatalf("%d pools, %d ranked and %d rejected", len(pools), len(d.Ranked), d.NumRejected())
				}
				_ = d.Explain()
			}
		}
		for _, p := range pools {
			for k := range p.Capabilities {
				p.Capabilities[k] = "changed"
			}
			p.Capabilities["fuzz:added"] = 1
		}
		after, _ := json.Marshal(rep)
		if !bytes.Equal(before, after) {
			t.Fatalf("PoolsFromReport or its pools changed the report:\n%s\n%s", before, after)
		}
	})
}
