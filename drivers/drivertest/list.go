package drivertest

import (
	"sort"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// lister returns d as a drivers.Lister or skips the test.
func lister(t *testing.T, d drivers.Driver) drivers.Lister {
	t.Helper()
	l, ok := d.(drivers.Lister)
	if !ok {
		t.Skipf("%T does not implement drivers.Lister", d)
	}
	return l
}

// wantList fails the test unless ListVolumes returns exactly want, in any order, and every
// listed volume is what Stat reports.
func wantList(t *testing.T, d drivers.Driver, l drivers.Lister, want ...basalt.VolumeSpec) {
	t.Helper()
	got, err := l.ListVolumes(t.Context())
	if err != nil {
		t.Fatalf("ListVolumes() error = %v, want nil", err)
	}
	byID := func(s []basalt.VolumeSpec) {
		sort.Slice(s, func(i, j int) bool { return s[i].ID < s[j].ID })
	}
	got, want = append([]basalt.VolumeSpec(nil), got...), append([]basalt.VolumeSpec(nil), want...)
	byID(got)
	byID(want)
	if len(got) != len(want) {
		t.Errorf("ListVolumes() = %+v, want %+v", got, want)
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("ListVolumes() = %+v, want %+v", got, want)
			return
		}
		wantSpec(t, d, got[i])
	}
}

// testListVolumes: ListVolumes lists what the backend holds as Stat sees it: created volumes
// and clones with their sizes after an extend, never snapshots, and no deleted volume.
func testListVolumes(t *testing.T, d drivers.Driver) {
	l := lister(t, d)
	wantList(t, d, l)
	pools := poolNames(t, d)
	a := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: pools[0]}
	b := basalt.VolumeSpec{ID: volumeID(2), SizeGB: 2, Pool: pools[len(pools)-1]}
	c := basalt.VolumeSpec{ID: volumeID(3), SizeGB: 1, Pool: pools[0]}
	for _, v := range []basalt.VolumeSpec{a, b, c} {
		create(t, d, v)
	}
	wantList(t, d, l, a, b, c)
	if err := d.DeleteVolume(t.Context(), c.ID); err != nil {
		t.Fatalf("DeleteVolume(%q) = %v, want nil", c.ID, err)
	}
	want := []basalt.VolumeSpec{a, b}
	if x, ok := d.(drivers.Extender); ok {
		if err := x.ExtendVolume(t.Context(), a.ID, 3); err != nil {
			t.Fatalf("ExtendVolume(%q, 3) = %v, want nil", a.ID, err)
		}
		want[0].SizeGB = 3
	}
	if s, ok := d.(drivers.Snapshotter); ok {
		snap(t, s, b.ID, snapshotID(1)) // a snapshot is not a volume
	}
	if cl, ok := d.(drivers.Cloner); ok {
		clone := basalt.VolumeSpec{ID: volumeID(4), SizeGB: b.SizeGB, Pool: b.Pool}
		if err := cl.CloneVolume(t.Context(), clone, b.ID); err != nil {
			t.Fatalf("CloneVolume(%+v, %q) = %v, want nil", clone, b.ID, err)
		}
		want = append(want, clone)
	}
	wantList(t, d, l, want...)
}
