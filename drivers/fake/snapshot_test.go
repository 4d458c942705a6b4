package fake_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers/fake"
)

// TestInjectedFailureSnapshots checks that Fail sees every new mutating call with its op and id,
// and that a failed call changes nothing.
func TestInjectedFailureSnapshots(t *testing.T) {
	boom := basalt.Errorf(basalt.EUNAVAILABLE, "array offline")
	var calls []string // Fail is called from this goroutine only here
	fail := false
	d := newDriver(t, fake.Config{Fail: func(op, id string) error {
		calls = append(calls, op+" "+id)
		if fail {
			return boom
		}
		return nil
	}})
	ctx := t.Context()
	spec := basalt.VolumeSpec{ID: "v1", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolume(ctx, spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s1"); err != nil {
		t.Fatalf("CreateSnapshot(v1, s1) = %v, want nil", err)
	}
	dev, err := d.OpenVolume(ctx, "v1")
	if err != nil {
		t.Fatalf("OpenVolume(v1) = %v, want nil", err)
	}
	defer dev.Close()
	data := []byte("written after the snapshot")
	if _, err := dev.WriteAt(data, 0); err != nil {
		t.Fatalf("WriteAt = %v, want nil", err)
	}

	fail = true
	calls = nil
	to := basalt.VolumeSpec{ID: "v2", SizeGB: 1, Pool: "pool"}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"CreateSnapshot(v1, s2)", d.CreateSnapshot(ctx, "v1", "s2")},
		{"DeleteSnapshot(s1)", d.DeleteSnapshot(ctx, "s1")},
		{"CloneVolume(v2, v1)", d.CloneVolume(ctx, to, "v1")},
		{"CreateVolumeFromSnapshot(v2, s1)", d.CreateVolumeFromSnapshot(ctx, to, "s1")},
		{"RevertToSnapshot(v1, s1)", d.RevertToSnapshot(ctx, "v1", "s1")},
	} {
		if !errors.Is(c.err, boom) {
			t.Errorf("%s = %v, want the injected %v", c.name, c.err, boom)
		}
	}
	want := []string{"snapshot s2", "delete_snapshot s1", "clone v2", "clone v2", "revert v1"}
	if !slices.Equal(calls, want) {
		t.Errorf("Fail was called with %q, want %q", calls, want)
	}
	if _, err := d.StatSnapshot(ctx, "s2"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("StatSnapshot(s2) after a failed create = %v, want code %q", err, basalt.ENOTFOUND)
	}
	if gb, err := d.StatSnapshot(ctx, "s1"); err != nil || gb != 1 {
		t.Errorf("StatSnapshot(s1) after a failed delete = %d, %v; want 1, nil", gb, err)
	}
	if _, err := d.Stat(ctx, "v2"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("Stat(v2) after failed clones = %v, want code %q", err, basalt.ENOTFOUND)
	}
	got := make([]byte, len(data))
	if _, err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Errorf("volume after a failed revert reads %q, %v; want %q", got, err, data)
	}
	if !t.Failed() {
		fail = false
		if err := d.RevertToSnapshot(ctx, "v1", "s1"); err != nil {
			t.Fatalf("RevertToSnapshot(v1, s1) = %v, want nil", err)
		}
		if _, err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, len(data))) {
			t.Errorf("open device after a revert reads %q, %v; want zeros (the device follows the volume)", got, err)
		}
	}
}

func TestFailOnSnapshot(t *testing.T) {
	d := newDriver(t, fake.Config{Fail: fake.FailOn(fake.OpSnapshot, nil, "s1")})
	ctx := t.Context()
	spec := basalt.VolumeSpec{ID: "v1", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolume(ctx, spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s1"); !errors.Is(err, fake.ErrInjected) {
		t.Errorf("CreateSnapshot(v1, s1) = %v, want %v", err, fake.ErrInjected)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s2"); err != nil {
		t.Errorf("CreateSnapshot(v1, s2) = %v, want nil", err)
	}
}

// TestSnapshotCapacity checks that snapshots are provisioned thick: they take their size from
// the pool, count as provisioned capacity and not as volumes.
func TestSnapshotCapacity(t *testing.T) {
	d := newDriver(t, fake.Config{TotalCapacityGB: 10})
	ctx := t.Context()
	spec := basalt.VolumeSpec{ID: "v1", SizeGB: 4, Pool: "pool"}
	if err := d.CreateVolume(ctx, spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s1"); err != nil {
		t.Fatalf("CreateSnapshot(v1, s1) = %v, want nil", err)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s2"); basalt.ErrorCode(err) != basalt.EOVERLIMIT {
		t.Errorf("CreateSnapshot(v1, s2) of 4 GiB with 2 GiB free = %v, want code %q", err, basalt.EOVERLIMIT)
	}
	clone := basalt.VolumeSpec{ID: "v2", SizeGB: 4, Pool: "pool"}
	if err := d.CreateVolumeFromSnapshot(ctx, clone, "s1"); basalt.ErrorCode(err) != basalt.EOVERLIMIT {
		t.Errorf("CreateVolumeFromSnapshot(%+v, s1) with 2 GiB free = %v, want code %q", clone, err, basalt.EOVERLIMIT)
	}
	s, err := d.Capabilities(ctx)
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	if p := s.Pools[0]; p["total_volumes"] != 1 || p["provisioned_capacity_gb"] != 8.0 || p["free_capacity_gb"] != 2.0 {
		t.Errorf("Capabilities() = %v volumes, %v GiB provisioned, %v GiB free; want 1, 8, 2", p["total_volumes"], p["provisioned_capacity_gb"], p["free_capacity_gb"])
	}
	if err := d.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatalf("DeleteSnapshot(s1) = %v, want nil", err)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s2"); err != nil {
		t.Errorf("CreateSnapshot(v1, s2) with 6 GiB free = %v, want nil", err)
	}
}

func TestSnapshotOfAnotherVolumeConflicts(t *testing.T) {
	d := newDriver(t, fake.Config{})
	ctx := t.Context()
	for _, id := range []string{"v1", "v2"} {
		spec := basalt.VolumeSpec{ID: id, SizeGB: 1, Pool: "pool"}
		if err := d.CreateVolume(ctx, spec); err != nil {
			t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
		}
	}
	if err := d.CreateSnapshot(ctx, "v1", "s1"); err != nil {
		t.Fatalf("CreateSnapshot(v1, s1) = %v, want nil", err)
	}
	if err := d.CreateSnapshot(ctx, "v2", "s1"); basalt.ErrorCode(err) != basalt.ECONFLICT {
		t.Errorf("CreateSnapshot(v2, s1) of v1's snapshot = %v, want code %q", err, basalt.ECONFLICT)
	}
}

// TestDeleteVolumeKeepsSnapshots checks that a volume's snapshots outlive it, and that devices
// of a deleted volume fail.
func TestDeleteVolumeKeepsSnapshots(t *testing.T) {
	d := newDriver(t, fake.Config{})
	ctx := t.Context()
	spec := basalt.VolumeSpec{ID: "v1", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolume(ctx, spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	dev, err := d.OpenVolume(ctx, "v1")
	if err != nil {
		t.Fatalf("OpenVolume(v1) = %v, want nil", err)
	}
	data := []byte("kept after the volume is gone")
	if _, err := dev.WriteAt(data, 5<<20); err != nil {
		t.Fatalf("WriteAt = %v, want nil", err)
	}
	if err := d.CreateSnapshot(ctx, "v1", "s1"); err != nil {
		t.Fatalf("CreateSnapshot(v1, s1) = %v, want nil", err)
	}
	if err := d.DeleteVolume(ctx, "v1"); err != nil {
		t.Fatalf("DeleteVolume(v1) with a snapshot = %v, want nil", err)
	}
	if _, err := dev.ReadAt(make([]byte, 1), 0); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("ReadAt on a device of a deleted volume = %v, want code %q", err, basalt.ENOTFOUND)
	}
	if gb, err := d.StatSnapshot(ctx, "s1"); err != nil || gb != 1 {
		t.Errorf("StatSnapshot(s1) after its volume's delete = %d, %v; want 1, nil", gb, err)
	}
	to := basalt.VolumeSpec{ID: "v2", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolumeFromSnapshot(ctx, to, "s1"); err != nil {
		t.Fatalf("CreateVolumeFromSnapshot(%+v, s1) = %v, want nil", to, err)
	}
	dev, err = d.OpenVolume(ctx, "v2")
	if err != nil {
		t.Fatalf("OpenVolume(v2) = %v, want nil", err)
	}
	got := make([]byte, len(data))
	if _, err := dev.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("volume from the snapshot reads %q, %v; want %q", got, err, data)
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if _, err := dev.ReadAt(got, 0); err == nil {
		t.Errorf("ReadAt after Close = nil, want an error")
	}
}
