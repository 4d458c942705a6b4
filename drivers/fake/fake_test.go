package fake_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/drivers/drivertest"
	"github.com/basalt-storage/basalt/drivers/fake"
)

func newDriver(t *testing.T, cfg fake.Config) *fake.Driver {
	t.Helper()
	d, err := fake.New(cfg, nil)
	if err != nil {
		t.Fatalf("New(%+v) = %v, want nil", cfg, err)
	}
	return d
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) drivers.Driver { return newDriver(t, fake.Config{}) })
}

func TestConformanceTwoPools(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) drivers.Driver {
		return newDriver(t, fake.Config{Pools: []string{"gold", "silver"}, BackendName: "fake"})
	})
}

func TestThickCapacity(t *testing.T) {
	d := newDriver(t, fake.Config{Pools: []string{"a", "b"}, TotalCapacityGB: 10})
	ctx := t.Context()
	create := func(spec basalt.VolumeSpec, want string) {
		t.Helper()
		if err := d.CreateVolume(ctx, spec); basalt.ErrorCode(err) != want {
			t.Errorf("CreateVolume(%+v) = %v, want code %q", spec, err, want)
		}
	}
	create(basalt.VolumeSpec{ID: "v1", SizeGB: 6, Pool: "a"}, "")
	create(basalt.VolumeSpec{ID: "v2", SizeGB: 5, Pool: "a"}, basalt.EOVERLIMIT)
	create(basalt.VolumeSpec{ID: "v2", SizeGB: 4, Pool: "a"}, "")
	create(basalt.VolumeSpec{ID: "v3", SizeGB: 10, Pool: "b"}, "") // pools are independent
	if err := d.ExtendVolume(ctx, "v1", 7); basalt.ErrorCode(err) != basalt.EOVERLIMIT {
		t.Errorf("ExtendVolume(%q, 7) in a full pool = %v, want code %q", "v1", err, basalt.EOVERLIMIT)
	}
	s, err := d.Capabilities(ctx)
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	want := map[string][3]float64{"a": {10, 0, 10}, "b": {10, 0, 10}} // total, free, provisioned
	for _, p := range s.Pools {
		name, _ := p["pool_name"].(string)
		var got [3]float64
		for i, k := range []string{"total_capacity_gb", "free_capacity_gb", "provisioned_capacity_gb"} {
			got[i], _ = p.Number(k)
		}
		if got != want[name] || p["thin_provisioning_support"] != false || p["thick_provisioning_support"] != true {
			t.Errorf("Capabilities() pool %q = %v, want total, free, provisioned %v, thick only", name, p, want[name])
		}
	}
	if err := d.DeleteVolume(ctx, "v2"); err != nil {
		t.Fatalf("DeleteVolume(%q) = %v, want nil", "v2", err)
	}
	if err := d.ExtendVolume(ctx, "v1", 7); err != nil {
		t.Errorf("ExtendVolume(%q, 7) with 4 GiB free = %v, want nil", "v1", err)
	}
}

func TestLatency(t *testing.T) {
	const latency = 50 * time.Millisecond
	d := newDriver(t, fake.Config{Latency: latency})
	spec := basalt.VolumeSpec{ID: "v1", SizeGB: 1, Pool: "pool"}
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"CreateVolume", func(ctx context.Context) error { return d.CreateVolume(ctx, spec) }},
		{"ExtendVolume", func(ctx context.Context) error { return d.ExtendVolume(ctx, spec.ID, 2) }},
		{"CreateSnapshot", func(ctx context.Context) error { return d.CreateSnapshot(ctx, spec.ID, "s1") }},
		{"CloneVolume", func(ctx context.Context) error {
			return d.CloneVolume(ctx, basalt.VolumeSpec{ID: "v2", SizeGB: 2, Pool: "pool"}, spec.ID)
		}},
		{"CreateVolumeFromSnapshot", func(ctx context.Context) error {
			return d.CreateVolumeFromSnapshot(ctx, basalt.VolumeSpec{ID: "v3", SizeGB: 2, Pool: "pool"}, "s1")
		}},
		{"RevertToSnapshot", func(ctx context.Context) error { return d.RevertToSnapshot(ctx, spec.ID, "s1") }},
		{"DeleteSnapshot", func(ctx context.Context) error { return d.DeleteSnapshot(ctx, "s1") }},
		{"DeleteVolume", func(ctx context.Context) error { return d.DeleteVolume(ctx, spec.ID) }},
	}
	for _, c := range calls {
		start := time.Now()
		if err := c.call(t.Context()); err != nil {
			t.Fatalf("%s = %v, want nil", c.name, err)
		}
		if took := time.Since(start); took < latency {
			t.Errorf("%s took %v, want >= latency %v", c.name, took, latency)
		}
	}
	// Reads do not wait.
	start := time.Now()
	if _, err := d.Capabilities(t.Context()); err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	if _, err := d.Stat(t.Context(), spec.ID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Fatalf("Stat(%q) after delete = %v, want code %q", spec.ID, err, basalt.ENOTFOUND)
	}
	if _, err := d.StatSnapshot(t.Context(), "s1"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Fatalf("StatSnapshot(%q) after delete = %v, want code %q", "s1", err, basalt.ENOTFOUND)
	}
	dev, err := d.OpenVolume(t.Context(), "v2")
	if err != nil {
		t.Fatalf("OpenVolume(%q) = %v, want nil", "v2", err)
	}
	if _, err := dev.WriteAt([]byte("x"), 0); err != nil {
		t.Fatalf("WriteAt = %v, want nil", err)
	}
	dev.Close()
	if took := time.Since(start); took >= latency {
		t.Errorf("Capabilities, Stat, StatSnapshot, OpenVolume and WriteAt took %v, want less than latency %v", took, latency)
	}
}

func TestLatencyCancelled(t *testing.T) {
	d := newDriver(t, fake.Config{Latency: time.Hour})
	spec := basalt.VolumeSpec{ID: "v1", SizeGB: 1, Pool: "pool"}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := d.CreateVolume(ctx, spec)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CreateVolume(%+v) with a 20ms deadline = %v, want %v", spec, err, context.DeadlineExceeded)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("CreateVolume(%+v) with a 20ms deadline took %v, want it to stop at the deadline", spec, took)
	}
	if _, err := d.Stat(t.Context(), spec.ID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("Stat(%q) after a cancelled create = %v, want code %q", spec.ID, err, basalt.ENOTFOUND)
	}

	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if err := d.DeleteVolume(ctx, spec.ID); !errors.Is(err, context.Canceled) {
		t.Errorf("DeleteVolume(%q) with a cancelled context = %v, want %v", spec.ID, err, context.Canceled)
	}
}

func TestInjectedFailure(t *testing.T) {
	boom := basalt.Errorf(basalt.EUNAVAILABLE, "array offline")
	var calls []string // Fail is called from this goroutine only here
	d := newDriver(t, fake.Config{Fail: func(op, id string) error {
		calls = append(calls, op+" "+id)
		if id == "bad" {
			return boom
		}
		return nil
	}})
	ctx := t.Context()
	bad := basalt.VolumeSpec{ID: "bad", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolume(ctx, bad); !errors.Is(err, boom) {
		t.Errorf("CreateVolume(%+v) = %v, want the injected %v", bad, err, boom)
	}
	if _, err := d.Stat(ctx, bad.ID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("Stat(%q) after a failed create = %v, want code %q", bad.ID, err, basalt.ENOTFOUND)
	}
	s, err := d.Capabilities(ctx)
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	if p := s.Pools[0]; p["total_volumes"] != 0 || p["provisioned_capacity_gb"] != 0.0 {
		t.Errorf("Capabilities() after a failed create = %v volumes, %v GiB; want none", p["total_volumes"], p["provisioned_capacity_gb"])
	}
	good := basalt.VolumeSpec{ID: "good", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolume(ctx, good); err != nil {
		t.Errorf("CreateVolume(%+v) = %v, want nil", good, err)
	}
	if err := d.ExtendVolume(ctx, "good", 2); err != nil {
		t.Errorf("ExtendVolume(%q, 2) = %v, want nil", "good", err)
	}
	if err := d.DeleteVolume(ctx, "bad"); !errors.Is(err, boom) {
		t.Errorf("DeleteVolume(%q) = %v, want the injected %v", "bad", err, boom)
	}
	want := []string{"create bad", "create good", "extend good", "delete bad"}
	if len(calls) != len(want) {
		t.Fatalf("Fail was called with %q, want %q", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("Fail call %d = %q, want %q", i, calls[i], want[i])
		}
	}
}

func TestFailOn(t *testing.T) {
	d := newDriver(t, fake.Config{Fail: fake.FailOn(fake.OpDelete, nil, "v1")})
	ctx := t.Context()
	for _, id := range []string{"v1", "v2"} {
		spec := basalt.VolumeSpec{ID: id, SizeGB: 1, Pool: "pool"}
		if err := d.CreateVolume(ctx, spec); err != nil {
			t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
		}
	}
	if err := d.DeleteVolume(ctx, "v1"); !errors.Is(err, fake.ErrInjected) {
		t.Errorf("DeleteVolume(%q) = %v, want %v", "v1", err, fake.ErrInjected)
	}
	if _, err := d.Stat(ctx, "v1"); err != nil {
		t.Errorf("Stat(%q) after a failed delete = %v, want nil", "v1", err)
	}
	if err := d.DeleteVolume(ctx, "v2"); err != nil {
		t.Errorf("DeleteVolume(%q) = %v, want nil", "v2", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  fake.Config
		ok   bool
	}{
		{"defaults", fake.Config{}, true},
		{"full", fake.Config{Pools: []string{"a", "b"}, TotalCapacityGB: 5, BackendName: "f", Latency: time.Second}, true},
		{"duplicate pool", fake.Config{Pools: []string{"a", "a"}}, false},
		{"empty pool", fake.Config{Pools: []string{""}}, false},
		{"pool with #", fake.Config{Pools: []string{"a#b"}}, false},
		{"negative capacity", fake.Config{TotalCapacityGB: -1}, false},
		{"negative latency", fake.Config{Latency: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fake.New(tt.cfg, nil)
			if tt.ok && err != nil {
				t.Errorf("New(%+v) = %v, want nil", tt.cfg, err)
			}
			if !tt.ok && basalt.ErrorCode(err) != basalt.EINVALID {
				t.Errorf("New(%+v) = %v, want code %q", tt.cfg, err, basalt.EINVALID)
			}
		})
	}
}

// TestStatsReportedRaw: with Config.Stats the driver reports that map as it is (every call a
// fresh copy), whatever it says, and its pools become the driver's pools.
func TestStatsReportedRaw(t *testing.T) {
	stats := map[string]any{
		"vendor_name": nil, "storage_protocol": "iscsi", "online_extend_support": false,
		"pools": []any{
			map[string]any{"pool_name": "a", "total_capacity_gb": "infinite", "free_capacity_gb": "unknown"},
			map[string]any{"pool_name": "b", "total_capacity_gb": "100", "multiattach": nil},
		},
	}
	d := newDriver(t, fake.Config{Stats: stats})
	s, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantBackend := basalt.Capabilities{"vendor_name": nil, "storage_protocol": "iscsi", "online_extend_support": false}
	wantPools := []basalt.Capabilities{
		{"pool_name": "a", "total_capacity_gb": "infinite", "free_capacity_gb": "unknown"},
		{"pool_name": "b", "total_capacity_gb": "100", "multiattach": nil},
	}
	if !reflect.DeepEqual(s.Backend, wantBackend) || !reflect.DeepEqual(s.Pools, wantPools) {
		t.Errorf("Capabilities() = %v, %v; want %v, %v", s.Backend, s.Pools, wantBackend, wantPools)
	}
	s.Pools[0]["pool_name"] = "changed"
	if again, _ := d.Capabilities(t.Context()); again.Pools[0]["pool_name"] != "a" {
		t.Errorf("a caller's change to a report shows in the next one: %v", again.Pools[0])
	}
	if err := d.CreateVolume(t.Context(), basalt.VolumeSpec{ID: "v", SizeGB: 1, Pool: "b"}); err != nil {
		t.Errorf("CreateVolume in the reported pool b = %v, want nil", err)
	}

	// No "pools": a driver that reports none (nil, not empty).
	d = newDriver(t, fake.Config{Stats: map[string]any{"total_capacity_gb": 10}})
	if s, _ := d.Capabilities(t.Context()); s.Pools != nil || s.Backend["total_capacity_gb"] != 10.0 {
		t.Errorf("Capabilities() without pools = %v, %#v; want the backend's keys and nil pools", s.Backend, s.Pools)
	}
	for _, bad := range []map[string]any{{"pools": "x"}, {"pools": []any{1}}, {"x": func() {}}} {
		if _, err := fake.New(fake.Config{Stats: bad}, nil); basalt.ErrorCode(err) != basalt.EINVALID {
			t.Errorf("New(Stats %v) = %v, want code %q", bad, err, basalt.EINVALID)
		}
	}
}
