package drivertest

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// snapshotID returns a distinct, valid, UUID-shaped snapshot id for n, unlike any volumeID.
func snapshotID(n int) string { return fmt.Sprintf("00000000-0000-4000-9000-%012d", n) }

// snapshotter returns d as a drivers.Snapshotter or skips the test.
func snapshotter(t *testing.T, d drivers.Driver) drivers.Snapshotter {
	t.Helper()
	s, ok := d.(drivers.Snapshotter)
	if !ok {
		t.Skipf("%T does not implement drivers.Snapshotter", d)
	}
	return s
}

// cloner returns d as a drivers.Cloner or skips the test.
func cloner(t *testing.T, d drivers.Driver) drivers.Cloner {
	t.Helper()
	c, ok := d.(drivers.Cloner)
	if !ok {
		t.Skipf("%T does not implement drivers.Cloner", d)
	}
	return c
}

// reverter returns d as a drivers.Reverter or skips the test.
func reverter(t *testing.T, d drivers.Driver) drivers.Reverter {
	t.Helper()
	r, ok := d.(drivers.Reverter)
	if !ok {
		t.Skipf("%T does not implement drivers.Reverter", d)
	}
	return r
}

// snap creates snapshot sid of volume vid and fails the test on error.
func snap(t *testing.T, s drivers.Snapshotter, vid, sid string) {
	t.Helper()
	if err := s.CreateSnapshot(t.Context(), vid, sid); err != nil {
		t.Fatalf("CreateSnapshot(%q, %q) = %v, want nil", vid, sid, err)
	}
}

// wantSnapshotSize fails the test unless StatSnapshot(id) returns gb.
func wantSnapshotSize(t *testing.T, s drivers.Snapshotter, id string, gb int) {
	t.Helper()
	if got, err := s.StatSnapshot(t.Context(), id); err != nil || got != gb {
		t.Errorf("StatSnapshot(%q) = %d, %v; want %d, nil", id, got, err, gb)
	}
}

// wantVolumeCount fails the test unless the pool reports vols volumes (snapshots are not
// volumes) and at least gb GiB provisioned (drivers may count snapshots too).
func wantVolumeCount(t *testing.T, d drivers.Driver, pool string, vols int, gb float64) {
	t.Helper()
	p := poolStats(t, d, pool)
	if n, _ := p.Number("total_volumes"); n != float64(vols) {
		t.Errorf("Capabilities() pool %q total_volumes = %v, want %d (snapshots are not volumes)", pool, p["total_volumes"], vols)
	}
	if n, _ := p.Number("provisioned_capacity_gb"); !(n >= gb) {
		t.Errorf("Capabilities() pool %q provisioned_capacity_gb = %v, want at least the volumes' %v", pool, p["provisioned_capacity_gb"], gb)
	}
}

// testSnapshotData follows bytes through every data operation: it writes a pattern at the start,
// across a MiB boundary, in the middle and at the end of a 1 GiB volume, snapshots it,
// overwrites most of it and writes a new range, then checks every byte of a volume made from
// the snapshot, one made from it at 2 GiB, a clone of the overwritten volume at 2 GiB, the
// first extended and written past its old end, and the source reverted (twice) to the snapshot;
// finally that writes to any of them change none of the others nor the snapshot.
func testSnapshotData(t *testing.T, d drivers.Driver) {
	s, c, r, a := snapshotter(t, d), cloner(t, d), reverter(t, d), accessor(t, d)
	ctx := t.Context()
	pool := firstPool(t, d)
	src, fromSnap, fromSnap2, clone, again := volumeID(1), volumeID(2), volumeID(3), volumeID(4), volumeID(5)
	sid := snapshotID(1)

	create(t, d, basalt.VolumeSpec{ID: src, SizeGB: 1, Pool: pool})
	wantImage(t, d, a, src, "new volume", image{sizeGB: 1})
	first := []write{
		{off: 0, n: mib, gen: 1},                     // the first MiB
		{off: 300*mib - 2048, n: 4096, gen: 1},       // across a MiB boundary
		{off: 512*mib + 3*4096, n: 4096, gen: 1},     // a block in the middle
		{off: gib - mib, n: mib, gen: 1},             // the last MiB
		{off: 800*mib + 100, n: 300, gen: 1},         // unaligned
		{off: 900 * mib, n: 2 * mib, gen: 1},         // two MiB
		{off: 900*mib + 512*1024, n: 1024, gen: 255}, // overwritten before the snapshot
	}
	taken := writeImage(t, a, src, image{sizeGB: 1}, first...)
	wantImage(t, d, a, src, "written volume", taken)

	snap(t, s, src, sid)
	wantSnapshotSize(t, s, sid, 1)
	current := writeImage(t, a, src, taken,
		write{off: 0, n: mib, gen: 2},
		write{off: 300*mib - 2048, n: 4096, gen: 2},
		write{off: 512*mib + 3*4096 + 2048, n: 2048, gen: 2}, // half of the middle block
		write{off: gib - mib, n: mib, gen: 2},
		write{off: 700 * mib, n: 64 * 1024, gen: 2}, // written only after the snapshot
	)
	wantImage(t, d, a, src, "volume overwritten after the snapshot", current)

	from := func(id string, gb int) {
		t.Helper()
		spec := basalt.VolumeSpec{ID: id, SizeGB: gb, Pool: pool}
		if err := c.CreateVolumeFromSnapshot(ctx, spec, sid); err != nil {
			t.Fatalf("CreateVolumeFromSnapshot(%+v, %q) = %v, want nil", spec, sid, err)
		}
	}
	from(fromSnap, 1)
	wantImage(t, d, a, fromSnap, "volume from the snapshot", taken)
	from(fromSnap2, 2)
	wantImage(t, d, a, fromSnap2, "volume of 2 GiB from the snapshot of 1 GiB", taken.resized(2))

	spec := basalt.VolumeSpec{ID: clone, SizeGB: 2, Pool: pool}
	if err := c.CloneVolume(ctx, spec, src); err != nil {
		t.Fatalf("CloneVolume(%+v, %q) = %v, want nil", spec, src, err)
	}
	cloned := current.resized(2)
	wantImage(t, d, a, clone, "clone of 2 GiB of the overwritten volume", cloned)

	extended := taken
	if x, ok := d.(drivers.Extender); ok {
		if err := x.ExtendVolume(ctx, fromSnap, 2); err != nil {
			t.Fatalf("ExtendVolume(%q, 2) = %v, want nil", fromSnap, err)
		}
		extended = writeImage(t, a, fromSnap, taken.resized(2), write{off: gib + 5*mib, n: 8192, gen: 3})
		wantImage(t, d, a, fromSnap, "volume from the snapshot, extended to 2 GiB and written past 1 GiB", extended)
	}

	for i := range 2 {
		if err := r.RevertToSnapshot(ctx, src, sid); err != nil {
			t.Fatalf("RevertToSnapshot(%q, %q) #%d = %v, want nil", src, sid, i+1, err)
		}
		wantImage(t, d, a, src, fmt.Sprintf("volume reverted to its snapshot (#%d)", i+1), taken)
	}

	// Every copy is independent: write to each and check the others and the snapshot.
	reverted := writeImage(t, a, src, taken, write{off: 0, n: 4096, gen: 4}, write{off: gib - 4096, n: 4096, gen: 4})
	extended = writeImage(t, a, fromSnap, extended, write{off: mib, n: 4096, gen: 5})
	cloned = writeImage(t, a, clone, cloned, write{off: gib - mib, n: mib, gen: 6})
	fromSnap2Img := writeImage(t, a, fromSnap2, taken.resized(2), write{off: 300*mib - 2048, n: 4096, gen: 7})
	from(again, 1)
	wantImage(t, d, a, again, "volume from the snapshot after writes to every copy", taken)
	wantImage(t, d, a, src, "reverted volume, written", reverted)
	wantImage(t, d, a, fromSnap, "volume from the snapshot, written", extended)
	wantImage(t, d, a, clone, "clone, written", cloned)
	wantImage(t, d, a, fromSnap2, "volume of 2 GiB from the snapshot, written", fromSnap2Img)
	wantVolumeCount(t, d, pool, 5, float64(1+extended.sizeGB+2+2+1))
}

func testSnapshotIdempotent(t *testing.T, d drivers.Driver) {
	s := snapshotter(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 2, Pool: firstPool(t, d)}
	create(t, d, spec)
	for i := range 2 {
		if err := s.CreateSnapshot(t.Context(), spec.ID, snapshotID(1)); err != nil {
			t.Errorf("CreateSnapshot(%q, %q) #%d = %v, want nil", spec.ID, snapshotID(1), i+1, err)
		}
	}
	wantSnapshotSize(t, s, snapshotID(1), 2)
	wantSpec(t, d, spec)
	wantVolumeCount(t, d, spec.Pool, 1, 2)
}

func testSnapshotMissingVolume(t *testing.T, d drivers.Driver) {
	s := snapshotter(t, d)
	err := s.CreateSnapshot(t.Context(), volumeID(1), snapshotID(1))
	wantCode(t, fmt.Sprintf("CreateSnapshot(%q, %q) of a missing volume", volumeID(1), snapshotID(1)), err, basalt.ENOTFOUND)
	_, err = s.StatSnapshot(t.Context(), snapshotID(1))
	wantCode(t, fmt.Sprintf("StatSnapshot(%q) after a failed create", snapshotID(1)), err, basalt.ENOTFOUND)
	wantUsage(t, d, firstPool(t, d), 0, 0)
}

func testDeleteSnapshotIdempotent(t *testing.T, d drivers.Driver) {
	s := snapshotter(t, d)
	ctx := t.Context()
	if err := s.DeleteSnapshot(ctx, snapshotID(9)); err != nil {
		t.Errorf("DeleteSnapshot(%q) of a snapshot never created = %v, want nil", snapshotID(9), err)
	}
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	snap(t, s, spec.ID, snapshotID(1))
	for i := range 2 {
		if err := s.DeleteSnapshot(ctx, snapshotID(1)); err != nil {
			t.Errorf("DeleteSnapshot(%q) #%d = %v, want nil", snapshotID(1), i+1, err)
		}
	}
	_, err := s.StatSnapshot(ctx, snapshotID(1))
	wantCode(t, fmt.Sprintf("StatSnapshot(%q) after delete", snapshotID(1)), err, basalt.ENOTFOUND)
	if c, ok := d.(drivers.Cloner); ok {
		v := basalt.VolumeSpec{ID: volumeID(2), SizeGB: 1, Pool: spec.Pool}
		err := c.CreateVolumeFromSnapshot(ctx, v, snapshotID(1))
		wantCode(t, fmt.Sprintf("CreateVolumeFromSnapshot(%+v, %q) of a deleted snapshot", v, snapshotID(1)), err, basalt.ENOTFOUND)
		wantMissing(t, d, v.ID)
	}
	wantSpec(t, d, spec)
	wantUsage(t, d, spec.Pool, 1, 1) // no snapshot left to count
	// The id is free again.
	snap(t, s, spec.ID, snapshotID(1))
	wantSnapshotSize(t, s, snapshotID(1), 1)
}

// testStatSnapshot checks that a snapshot keeps the size its volume had when it was taken.
func testStatSnapshot(t *testing.T, d drivers.Driver) {
	s := snapshotter(t, d)
	_, err := s.StatSnapshot(t.Context(), snapshotID(1))
	wantCode(t, fmt.Sprintf("StatSnapshot(%q) of a snapshot never created", snapshotID(1)), err, basalt.ENOTFOUND)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	snap(t, s, spec.ID, snapshotID(1))
	wantSnapshotSize(t, s, snapshotID(1), 1)
	x, ok := d.(drivers.Extender)
	if !ok {
		return
	}
	if err := x.ExtendVolume(t.Context(), spec.ID, 3); err != nil {
		t.Fatalf("ExtendVolume(%q, 3) = %v, want nil", spec.ID, err)
	}
	snap(t, s, spec.ID, snapshotID(2))
	wantSnapshotSize(t, s, snapshotID(1), 1)
	wantSnapshotSize(t, s, snapshotID(2), 3)
}

func testCreateFromMissingSnapshot(t *testing.T, d drivers.Driver) {
	c := cloner(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	err := c.CreateVolumeFromSnapshot(t.Context(), spec, snapshotID(1))
	wantCode(t, fmt.Sprintf("CreateVolumeFromSnapshot(%+v, %q) of a missing snapshot", spec, snapshotID(1)), err, basalt.ENOTFOUND)
	wantMissing(t, d, spec.ID)
	wantUsage(t, d, spec.Pool, 0, 0)
}

func testCloneMissingSource(t *testing.T, d drivers.Driver) {
	c := cloner(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	err := c.CloneVolume(t.Context(), spec, volumeID(2))
	wantCode(t, fmt.Sprintf("CloneVolume(%+v, %q) of a missing volume", spec, volumeID(2)), err, basalt.ENOTFOUND)
	wantMissing(t, d, spec.ID)
	wantUsage(t, d, spec.Pool, 0, 0)
}

// testCloneIdempotent repeats clones, also after their sources are gone, and clones over a
// volume of another size.
func testCloneIdempotent(t *testing.T, d drivers.Driver) {
	c := cloner(t, d)
	ctx := t.Context()
	pool := firstPool(t, d)
	src := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: pool}
	create(t, d, src)
	clone := basalt.VolumeSpec{ID: volumeID(2), SizeGB: 2, Pool: pool}
	for i := range 2 {
		if err := c.CloneVolume(ctx, clone, src.ID); err != nil {
			t.Errorf("CloneVolume(%+v, %q) #%d = %v, want nil", clone, src.ID, i+1, err)
		}
	}
	wantSpec(t, d, clone)
	other := clone
	other.SizeGB = 3
	err := c.CloneVolume(ctx, other, src.ID)
	wantCode(t, fmt.Sprintf("CloneVolume(%+v, %q) over a volume of 2 GiB", other, src.ID), err, basalt.ECONFLICT)
	wantSpec(t, d, clone)

	if s, ok := d.(drivers.Snapshotter); ok {
		snap(t, s, src.ID, snapshotID(1))
		fromSnap := basalt.VolumeSpec{ID: volumeID(3), SizeGB: 1, Pool: pool}
		for i := range 2 {
			if err := c.CreateVolumeFromSnapshot(ctx, fromSnap, snapshotID(1)); err != nil {
				t.Errorf("CreateVolumeFromSnapshot(%+v, %q) #%d = %v, want nil", fromSnap, snapshotID(1), i+1, err)
			}
		}
		wantSpec(t, d, fromSnap)
		if err := s.DeleteSnapshot(ctx, snapshotID(1)); err != nil {
			t.Fatalf("DeleteSnapshot(%q) = %v, want nil", snapshotID(1), err)
		}
		if err := c.CreateVolumeFromSnapshot(ctx, fromSnap, snapshotID(1)); err != nil {
			t.Errorf("CreateVolumeFromSnapshot(%+v, %q) again after the snapshot's delete = %v, want nil", fromSnap, snapshotID(1), err)
		}
	}
	if err := d.DeleteVolume(ctx, src.ID); err != nil {
		t.Fatalf("DeleteVolume(%q) = %v, want nil", src.ID, err)
	}
	if err := c.CloneVolume(ctx, clone, src.ID); err != nil {
		t.Errorf("CloneVolume(%+v, %q) again after the source's delete = %v, want nil", clone, src.ID, err)
	}
	wantSpec(t, d, clone)
}

func testCloneSmaller(t *testing.T, d drivers.Driver) {
	c := cloner(t, d)
	ctx := t.Context()
	pool := firstPool(t, d)
	src := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 2, Pool: pool}
	create(t, d, src)
	small := basalt.VolumeSpec{ID: volumeID(2), SizeGB: 1, Pool: pool}
	err := c.CloneVolume(ctx, small, src.ID)
	wantCode(t, fmt.Sprintf("CloneVolume(%+v, %q) of a 2 GiB volume", small, src.ID), err, basalt.EINVALID)
	wantMissing(t, d, small.ID)
	if s, ok := d.(drivers.Snapshotter); ok {
		snap(t, s, src.ID, snapshotID(1))
		err := c.CreateVolumeFromSnapshot(ctx, small, snapshotID(1))
		wantCode(t, fmt.Sprintf("CreateVolumeFromSnapshot(%+v, %q) of a 2 GiB snapshot", small, snapshotID(1)), err, basalt.EINVALID)
		wantMissing(t, d, small.ID)
	}
	for _, size := range []int{0, -1} {
		bad := basalt.VolumeSpec{ID: volumeID(3), SizeGB: size, Pool: pool}
		wantCode(t, fmt.Sprintf("CloneVolume(%+v, %q)", bad, src.ID), c.CloneVolume(ctx, bad, src.ID), basalt.EINVALID)
		wantMissing(t, d, bad.ID)
	}
	wantVolumeCount(t, d, pool, 1, 2)
}

// testRevertSizeMismatch reverts a volume extended since its snapshot.
func testRevertSizeMismatch(t *testing.T, d drivers.Driver) {
	s, r, x := snapshotter(t, d), reverter(t, d), extender(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	a, hasData := d.(drivers.Accessor)
	m := image{sizeGB: 1}
	if hasData {
		m = writeImage(t, a, spec.ID, m, write{off: 0, n: 4096, gen: 1})
	}
	snap(t, s, spec.ID, snapshotID(1))
	if err := x.ExtendVolume(t.Context(), spec.ID, 2); err != nil {
		t.Fatalf("ExtendVolume(%q, 2) = %v, want nil", spec.ID, err)
	}
	m = m.resized(2)
	if hasData {
		m = writeImage(t, a, spec.ID, m, write{off: 0, n: 4096, gen: 2})
	}
	err := r.RevertToSnapshot(t.Context(), spec.ID, snapshotID(1))
	wantCode(t, fmt.Sprintf("RevertToSnapshot(%q, %q) of a 2 GiB volume to a 1 GiB snapshot", spec.ID, snapshotID(1)), err, basalt.EINVALID)
	spec.SizeGB = 2
	wantSpec(t, d, spec)
	if hasData {
		wantImage(t, d, a, spec.ID, "volume after a failed revert", m)
	}
}

// testRevertOtherVolumesSnapshot reverts a volume to a snapshot of another volume of its size.
func testRevertOtherVolumesSnapshot(t *testing.T, d drivers.Driver) {
	s, r := snapshotter(t, d), reverter(t, d)
	pool := firstPool(t, d)
	mine, other := volumeID(1), volumeID(2)
	create(t, d, basalt.VolumeSpec{ID: mine, SizeGB: 1, Pool: pool})
	create(t, d, basalt.VolumeSpec{ID: other, SizeGB: 1, Pool: pool})
	a, hasData := d.(drivers.Accessor)
	m := image{sizeGB: 1}
	if hasData {
		m = writeImage(t, a, mine, m, write{off: 0, n: 4096, gen: 1})
		writeImage(t, a, other, image{sizeGB: 1}, write{off: 0, n: 4096, gen: 2})
	}
	snap(t, s, other, snapshotID(1))
	err := r.RevertToSnapshot(t.Context(), mine, snapshotID(1))
	wantCode(t, fmt.Sprintf("RevertToSnapshot(%q, %q) with a snapshot of volume %q", mine, snapshotID(1), other), err, basalt.EINVALID)
	if hasData {
		wantImage(t, d, a, mine, "volume after a refused revert", m)
	}
}

func testRevertMissing(t *testing.T, d drivers.Driver) {
	s, r := snapshotter(t, d), reverter(t, d)
	ctx := t.Context()
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	err := r.RevertToSnapshot(ctx, spec.ID, snapshotID(1))
	wantCode(t, fmt.Sprintf("RevertToSnapshot(%q, %q) to a missing snapshot", spec.ID, snapshotID(1)), err, basalt.ENOTFOUND)
	snap(t, s, spec.ID, snapshotID(1))
	err = r.RevertToSnapshot(ctx, volumeID(2), snapshotID(1))
	wantCode(t, fmt.Sprintf("RevertToSnapshot(%q, %q) of a missing volume", volumeID(2), snapshotID(1)), err, basalt.ENOTFOUND)
	wantMissing(t, d, volumeID(2))
}

// testSnapshotInvalidIDs passes every invalid id, as volume or snapshot, to every call of the
// optional interfaces the driver implements.
func testSnapshotInvalidIDs(t *testing.T, d drivers.Driver) {
	ctx := t.Context()
	pool := firstPool(t, d)
	good := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: pool}
	create(t, d, good)
	s, isSnap := d.(drivers.Snapshotter)
	c, isClone := d.(drivers.Cloner)
	r, isRevert := d.(drivers.Reverter)
	a, isAccess := d.(drivers.Accessor)
	if !isSnap && !isClone && !isRevert && !isAccess {
		t.Skipf("%T implements none of drivers.Snapshotter, Cloner, Reverter, Accessor", d)
	}
	if isSnap {
		snap(t, s, good.ID, snapshotID(1))
	}
	for _, id := range InvalidIDs() {
		bad := basalt.VolumeSpec{ID: id, SizeGB: 1, Pool: pool}
		if isSnap {
			wantCode(t, fmt.Sprintf("CreateSnapshot(%+q, %q)", id, snapshotID(2)), s.CreateSnapshot(ctx, id, snapshotID(2)), basalt.EINVALID)
			wantCode(t, fmt.Sprintf("CreateSnapshot(%q, %+q)", good.ID, id), s.CreateSnapshot(ctx, good.ID, id), basalt.EINVALID)
			wantCode(t, fmt.Sprintf("DeleteSnapshot(%+q)", id), s.DeleteSnapshot(ctx, id), basalt.EINVALID)
			_, err := s.StatSnapshot(ctx, id)
			wantCode(t, fmt.Sprintf("StatSnapshot(%+q)", id), err, basalt.EINVALID)
		}
		if isClone {
			wantCode(t, fmt.Sprintf("CloneVolume(%#v, %q)", bad, good.ID), c.CloneVolume(ctx, bad, good.ID), basalt.EINVALID)
			to := basalt.VolumeSpec{ID: volumeID(2), SizeGB: 1, Pool: pool}
			wantCode(t, fmt.Sprintf("CloneVolume(%+v, %+q)", to, id), c.CloneVolume(ctx, to, id), basalt.EINVALID)
			wantCode(t, fmt.Sprintf("CreateVolumeFromSnapshot(%#v, %q)", bad, snapshotID(1)), c.CreateVolumeFromSnapshot(ctx, bad, snapshotID(1)), basalt.EINVALID)
			wantCode(t, fmt.Sprintf("CreateVolumeFromSnapshot(%+v, %+q)", to, id), c.CreateVolumeFromSnapshot(ctx, to, id), basalt.EINVALID)
			wantMissing(t, d, to.ID)
		}
		if isRevert {
			wantCode(t, fmt.Sprintf("RevertToSnapshot(%+q, %q)", id, snapshotID(1)), r.RevertToSnapshot(ctx, id, snapshotID(1)), basalt.EINVALID)
			wantCode(t, fmt.Sprintf("RevertToSnapshot(%q, %+q)", good.ID, id), r.RevertToSnapshot(ctx, good.ID, id), basalt.EINVALID)
		}
		if isAccess {
			dev, err := a.OpenVolume(ctx, id)
			wantCode(t, fmt.Sprintf("OpenVolume(%+q)", id), err, basalt.EINVALID)
			if err == nil {
				dev.Close()
			}
		}
	}
	if isSnap {
		_, err := s.StatSnapshot(ctx, snapshotID(2))
		wantCode(t, fmt.Sprintf("StatSnapshot(%q) after creates with invalid ids", snapshotID(2)), err, basalt.ENOTFOUND)
	}
	wantSpec(t, d, good)
	wantVolumeCount(t, d, pool, 1, 1)
}

// testDeviceBounds checks reads and writes at and past the end of a volume.
func testDeviceBounds(t *testing.T, d drivers.Driver) {
	a := accessor(t, d)
	ctx := t.Context()
	_, err := a.OpenVolume(ctx, volumeID(1))
	wantCode(t, fmt.Sprintf("OpenVolume(%q) of a missing volume", volumeID(1)), err, basalt.ENOTFOUND)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	dev, err := a.OpenVolume(ctx, spec.ID)
	if err != nil {
		t.Fatalf("OpenVolume(%q) = %v, want nil", spec.ID, err)
	}
	defer dev.Close() // closed again below, where the error is checked
	p := make([]byte, 4096)
	fillPattern(p, 0, 1)
	for _, off := range []int64{gib - 2048, gib, gib + 4096, -1} {
		if n, err := dev.WriteAt(p, off); err == nil {
			t.Errorf("WriteAt(%d bytes, %d) on a volume of %d bytes = %d, nil; want an error", len(p), off, int64(gib), n)
		}
	}
	wantSpec(t, d, spec)
	tail := make([]byte, 2048)
	if n, err := dev.ReadAt(tail, gib-2048); n != len(tail) || (err != nil && !errors.Is(err, io.EOF)) {
		t.Errorf("ReadAt(%d bytes, %d) = %d, %v; want %d, nil", len(tail), gib-2048, n, err, len(tail))
	} else if i := firstDiff(tail, make([]byte, len(tail))); i >= 0 {
		t.Errorf("ReadAt(%d bytes, %d) after refused writes reads %#02x at offset %d, want 0", len(tail), gib-2048, tail[i], gib-2048+i)
	}
	if n, err := dev.WriteAt(p, gib-4096); n != len(p) || err != nil {
		t.Errorf("WriteAt(%d bytes, %d) on a volume of %d bytes = %d, %v; want %d, nil", len(p), gib-4096, int64(gib), n, err, len(p))
	}
	got := make([]byte, 8192)
	n, err := dev.ReadAt(got, gib-4096)
	if n != 4096 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt(%d bytes, %d) on a volume of %d bytes = %d, %v; want 4096, io.EOF", len(got), gib-4096, int64(gib), n, err)
	}
	if i := firstDiff(got[:4096], p); i >= 0 {
		t.Errorf("ReadAt(%d bytes, %d) reads %#02x at offset %d, want %#02x as written", len(got), gib-4096, got[i], gib-4096+i, p[i])
	}
	if err := dev.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	wantSpec(t, d, spec)
}

// testConcurrentSnapshotClone snapshots one volume, clones it and creates volumes from the
// snapshots from many goroutines at once while others read capabilities, then checks the data.
func testConcurrentSnapshotClone(t *testing.T, d drivers.Driver) {
	const n = 8
	s, c := snapshotter(t, d), cloner(t, d)
	ctx := t.Context()
	pool := firstPool(t, d)
	src := volumeID(0)
	create(t, d, basalt.VolumeSpec{ID: src, SizeGB: 1, Pool: pool})
	a, hasData := d.(drivers.Accessor)
	m := image{sizeGB: 1}
	if hasData {
		m = writeImage(t, a, src, m, write{off: 0, n: 64 * 1024, gen: 1}, write{off: 600 * mib, n: 4096, gen: 1})
	}
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		wg.Go(func() {
			sid := snapshotID(i)
			if err := s.CreateSnapshot(ctx, src, sid); err != nil {
				errs[i] = fmt.Errorf("CreateSnapshot(%q, %q) = %v, want nil", src, sid, err)
				return
			}
			v := basalt.VolumeSpec{ID: volumeID(1 + i), SizeGB: 1, Pool: pool}
			if err := c.CreateVolumeFromSnapshot(ctx, v, sid); err != nil {
				errs[i] = fmt.Errorf("CreateVolumeFromSnapshot(%+v, %q) = %v, want nil", v, sid, err)
			}
		})
		wg.Go(func() {
			v := basalt.VolumeSpec{ID: volumeID(1 + n + i), SizeGB: 1 + i%2, Pool: pool}
			if err := c.CloneVolume(ctx, v, src); err != nil {
				errs[n+i] = fmt.Errorf("CloneVolume(%+v, %q) = %v, want nil", v, src, err)
				return
			}
			if _, err := d.Capabilities(ctx); err != nil {
				errs[n+i] = fmt.Errorf("Capabilities() = %v, want nil", err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	for i := range n {
		if hasData {
			wantImage(t, d, a, volumeID(1+i), "volume from a snapshot taken concurrently with others", m)
			wantImage(t, d, a, volumeID(1+n+i), "clone made concurrently with others", m.resized(1+i%2))
		}
	}
	wantVolumeCount(t, d, pool, 1+2*n, 1+2*n+n/2)
}
