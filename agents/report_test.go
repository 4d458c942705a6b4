package agents

import (
	"reflect"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers/fake"
	"github.com/basalt-storage/basalt/drivers/file"
)

// TestCapabilityReportRaw: the report keeps the driver's keys where the driver put them (no
// backend-level key merged into the pools, no key invented), adding only the agent's own facts
// and what Cinder's volume manager adds.
func TestCapabilityReportRaw(t *testing.T) {
	d, err := file.New(file.Config{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: "h@b", driver: d, cfg: BackendConfig{Name: "b", Driver: "file", VolumeBackendName: "vb",
		TargetProtocol: TargetISCSI, ExtraCapabilities: map[string]any{"tier": "gold"}}}
	rep, err := capabilityReport(b, stats)
	if err != nil {
		t.Fatal(err)
	}
	wantTop := basalt.Capabilities{"volume_backend_name": "vb", "vendor_name": file.VendorName,
		"driver_version": file.DriverVersion, "storage_protocol": "iSCSI", "filter_function": nil, "goodness_function": nil}
	if !reflect.DeepEqual(rep.Capabilities, wantTop) {
		t.Errorf("backend-level keys = %v, want %v", rep.Capabilities, wantTop)
	}
	if len(rep.Pools) != 1 {
		t.Fatalf("pools = %v, want 1", rep.Pools)
	}
	p := rep.Pools[0]
	for k, want := range map[string]any{"multiattach": true, "cacheable": true, "tier": "gold",
		"location_info": "file:h@b:pool", "online_extend_support": false, "total_volumes": 0.0} {
		if p[k] != want {
			t.Errorf("pool %s = %#v, want %#v (JSON types)", k, p[k], want)
		}
	}
	for _, k := range []string{"volume_backend_name", "vendor_name", "storage_protocol", "allocated_capacity_gb", "filter_function"} {
		if v, ok := p[k]; ok {
			t.Errorf("pool carries %s = %v; only the reader gives pools backend-level keys", k, v)
		}
	}

	// A driver that reports no pools keeps none; what goes to every pool goes to the backend.
	f, err := fake.New(fake.Config{Stats: map[string]any{"storage_protocol": "RBD", "total_capacity_gb": "infinite"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stats, _ = f.Capabilities(t.Context())
	b = &backend{name: "h@f", driver: f, cfg: BackendConfig{Name: "f", Driver: "fake", VolumeBackendName: "legacy",
		ExtraCapabilities: map[string]any{"tier": "silver"}}}
	if rep, err = capabilityReport(b, stats); err != nil {
		t.Fatal(err)
	}
	wantTop = basalt.Capabilities{"volume_backend_name": "legacy", "storage_protocol": "RBD", "total_capacity_gb": "infinite",
		"tier": "silver", "filter_function": nil, "goodness_function": nil}
	if rep.Pools != nil || !reflect.DeepEqual(rep.Capabilities, wantTop) {
		t.Errorf("report without pools = %v, pools %#v; want %v, nil", rep.Capabilities, rep.Pools, wantTop)
	}
}
