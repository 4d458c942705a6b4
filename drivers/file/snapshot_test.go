package file_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers/file"
	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// createVolume creates a volume in the default pool or fails the test, and returns its path.
func createVolume(t testing.TB, d *file.Driver, id string, gb int) string {
	t.Helper()
	spec := basalt.VolumeSpec{ID: id, SizeGB: gb, Pool: "pool"}
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	p, err := d.Path(id)
	if err != nil {
		t.Fatalf("Path(%q) = %v, want nil", id, err)
	}
	return p
}

// allocated returns the bytes the file at p occupies on disk.
func allocated(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestSnapshotFiles(t *testing.T) {
	d := newDriver(t)
	ctx := t.Context()
	p := createVolume(t, d, "vol1", 2)
	dir := filepath.Dir(p)
	if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "snapshot-snap1"))
	if err != nil || fi.Size() != 2<<30 {
		t.Errorf("Stat(snapshot-snap1) = %v, %v; want a file of 2 GiB", fi, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "snapshot-snap1.json"))
	if err != nil {
		t.Fatalf("ReadFile(snapshot-snap1.json) = %v, want the sidecar", err)
	}
	var sidecar map[string]any
	if err := json.Unmarshal(b, &sidecar); err != nil || len(sidecar) != 1 || sidecar["volume_id"] != "vol1" {
		t.Errorf("sidecar snapshot-snap1.json = %s (%v), want {\"volume_id\":\"vol1\"}", b, err)
	}
	if err := d.DeleteSnapshot(ctx, "snap1"); err != nil {
		t.Fatalf("DeleteSnapshot(snap1) = %v, want nil", err)
	}
	for _, name := range []string{"snapshot-snap1", "snapshot-snap1.json"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat(%s) after DeleteSnapshot = %v, want not exist", name, err)
		}
	}
}

// TestSnapshotCapacity checks that snapshots count as provisioned capacity but not as volumes.
func TestSnapshotCapacity(t *testing.T) {
	d := newDriver(t)
	ctx := t.Context()
	createVolume(t, d, "vol1", 2)
	createVolume(t, d, "vol2", 3)
	for _, s := range [][2]string{{"vol1", "s1"}, {"vol1", "s2"}, {"vol2", "s3"}} {
		if err := d.CreateSnapshot(ctx, s[0], s[1]); err != nil {
			t.Fatalf("CreateSnapshot(%q, %q) = %v, want nil", s[0], s[1], err)
		}
	}
	s, err := d.Capabilities(ctx)
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	p := s.Pools[0]
	if p["total_volumes"] != 2 || p["provisioned_capacity_gb"] != float64(2+3+2+2+3) {
		t.Errorf("Capabilities() = %v volumes, %v GiB provisioned; want 2 volumes, 12 GiB (volumes and snapshots)", p["total_volumes"], p["provisioned_capacity_gb"])
	}
	if _, ok := p["reflink"].(bool); !ok {
		t.Errorf("Capabilities() = %v, want a boolean \"reflink\"", p)
	}
}

func TestSnapshotOfAnotherVolumeConflicts(t *testing.T) {
	d := newDriver(t)
	ctx := t.Context()
	createVolume(t, d, "vol1", 1)
	createVolume(t, d, "vol2", 1)
	if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
	}
	if err := d.CreateSnapshot(ctx, "vol2", "snap1"); basalt.ErrorCode(err) != basalt.ECONFLICT {
		t.Errorf("CreateSnapshot(vol2, snap1) of vol1's snapshot = %v, want code %q", err, basalt.ECONFLICT)
	}
	// The snapshot still belongs to vol1.
	if err := d.RevertToSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Errorf("RevertToSnapshot(vol1, snap1) = %v, want nil", err)
	}
}

// TestDeleteVolumeKeepsSnapshots checks that a volume's snapshots outlive it.
func TestDeleteVolumeKeepsSnapshots(t *testing.T) {
	d := newDriver(t)
	ctx := t.Context()
	p := createVolume(t, d, "vol1", 1)
	data := []byte("kept after the volume is gone")
	writeAt(t, p, data, 5*mib)
	if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
	}
	if err := d.DeleteVolume(ctx, "vol1"); err != nil {
		t.Fatalf("DeleteVolume(vol1) with a snapshot = %v, want nil", err)
	}
	if gb, err := d.StatSnapshot(ctx, "snap1"); err != nil || gb != 1 {
		t.Errorf("StatSnapshot(snap1) after its volume's delete = %d, %v; want 1, nil", gb, err)
	}
	// A redelivered create of the snapshot succeeds.
	if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Errorf("CreateSnapshot(vol1, snap1) again after the volume's delete = %v, want nil", err)
	}
	spec := basalt.VolumeSpec{ID: "vol2", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolumeFromSnapshot(ctx, spec, "snap1"); err != nil {
		t.Fatalf("CreateVolumeFromSnapshot(%+v, snap1) = %v, want nil", spec, err)
	}
	p2, _ := d.Path("vol2")
	if got := readAt(t, p2, len(data), 5*mib); !bytes.Equal(got, data) {
		t.Errorf("volume from the snapshot reads %q at %d, want %q", got, 5*mib, data)
	}
}

// TestCopyIsSparse checks the sparse copy of a 1 TiB volume: only data is read and copied, holes
// stay holes, and written zeros are not copied. Reading the holes would take many minutes.
func TestCopyIsSparse(t *testing.T) {
	d := newDriverIn(t, t.TempDir(), file.Config{DisableReflink: true})
	ctx := t.Context()
	spec := basalt.VolumeSpec{ID: "vol1", SizeGB: 1024, Pool: "pool"}
	if err := d.CreateVolume(ctx, spec); basalt.ErrorCode(err) == basalt.EOVERLIMIT {
		t.Skipf("CreateVolume(%+v) = %v: the filesystem of the test directory cannot hold a 1 TiB file", spec, err)
	} else if err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	p, _ := d.Path(spec.ID)
	one := bytes.Repeat([]byte{0xa5}, mib)
	writeAt(t, p, one, 0)
	writeAt(t, p, one, 5<<30)
	// 3 MiB at 8 GiB whose middle MiB is written zeros: allocated, but not worth copying.
	writeAt(t, p, append(append(append([]byte(nil), one...), make([]byte, mib)...), one...), 8<<30)
	writeAt(t, p, one[:4096], 1<<40-4096)
	before := file.BytesCopied(d)
	start := time.Now()
	if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("CreateSnapshot of a 1 TiB volume holding 4 MiB took %v; a sparse copy skips the holes", took)
	}
	if got, want := file.BytesCopied(d)-before, int64(4*mib+4096); got != want {
		t.Errorf("CreateSnapshot of a volume holding %d bytes of data and 1 MiB of written zeros copied %d bytes, want %d", want, got, want)
	}
	sp := filepath.Join(filepath.Dir(p), "snapshot-snap1")
	if got := allocated(t, sp); got > 4*mib+256*1024 {
		t.Errorf("snapshot of a 1 TiB volume with 4 MiB of data allocates %d bytes, want about %d", got, 4*mib)
	}
	if got := readAt(t, sp, 4096, 1<<40-4096); !bytes.Equal(got, one[:4096]) {
		t.Errorf("snapshot's last 4 KiB = %x..., want %x...", got[:8], one[:8])
	}
	f, err := os.Open(sp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Data where it was written, holes elsewhere, including where zeros were written.
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_HOLE, mib},
		{mib, unix.SEEK_DATA, 5 << 30},
		{8<<30 + mib, unix.SEEK_DATA, 8<<30 + 2*mib},
	} {
		if got, err := f.Seek(c.off, c.whence); err != nil || got != c.want {
			t.Errorf("Seek(%d, %d) on the snapshot = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
}

// TestCreateSnapshotCancelled checks that a cancelled snapshot, clone or revert leaves nothing.
func TestCreateSnapshotCancelled(t *testing.T) {
	d := newDriver(t)
	createVolume(t, d, "vol1", 1)
	if err := d.CreateSnapshot(t.Context(), "vol1", "snap1"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.CreateSnapshot(ctx, "vol1", "snap2"); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateSnapshot(vol1, snap2) with a cancelled context = %v, want %v", err, context.Canceled)
	}
	if _, err := d.StatSnapshot(t.Context(), "snap2"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("StatSnapshot(snap2) after a cancelled create = %v, want code %q", err, basalt.ENOTFOUND)
	}
	spec := basalt.VolumeSpec{ID: "vol2", SizeGB: 1, Pool: "pool"}
	if err := d.CloneVolume(ctx, spec, "vol1"); !errors.Is(err, context.Canceled) {
		t.Errorf("CloneVolume(%+v, vol1) with a cancelled context = %v, want %v", spec, err, context.Canceled)
	}
	if err := d.RevertToSnapshot(ctx, "vol1", "snap1"); !errors.Is(err, context.Canceled) {
		t.Errorf("RevertToSnapshot(vol1, snap1) with a cancelled context = %v, want %v", err, context.Canceled)
	}
	wantVolumes(t, d, 1, 2) // vol1 and snap1
}

// TestNewRemovesOrphanSidecars simulates a crash between writing a snapshot's sidecar and
// renaming its file into place.
func TestNewRemovesOrphanSidecars(t *testing.T) {
	dir := t.TempDir()
	d, err := file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	p := createVolume(t, d, "vol1", 1)
	if err := d.CreateSnapshot(t.Context(), "vol1", "kept"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, kept) = %v, want nil", err)
	}
	d.Close()
	orphan := filepath.Join(dir, "snapshot-lost.json")
	if err := os.WriteFile(orphan, []byte(`{"volume_id":"vol1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err = file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	defer d.Close()
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat(%s) after New = %v, want not exist", orphan, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "snapshot-kept.json")); err != nil {
		t.Errorf("Stat(snapshot-kept.json) after New = %v, want the sidecar of an existing snapshot kept", err)
	}
	if err := d.RevertToSnapshot(t.Context(), "vol1", "kept"); err != nil {
		t.Errorf("RevertToSnapshot(vol1, kept) after New = %v, want nil", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("Stat(%s) = %v", p, err)
	}
}

// TestRevertReplacesFile checks that a revert swaps the volume's file: a device opened before
// keeps the old bytes, one opened after sees the snapshot's.
func TestRevertReplacesFile(t *testing.T) {
	d := newDriver(t)
	ctx := t.Context()
	p := createVolume(t, d, "vol1", 1)
	old, cur := []byte("snapshot bytes"), []byte("current bytes!")
	writeAt(t, p, old, 0)
	if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
	}
	writeAt(t, p, cur, 0)
	before, err := d.OpenVolume(ctx, "vol1")
	if err != nil {
		t.Fatalf("OpenVolume(vol1) = %v, want nil", err)
	}
	defer before.Close()
	if err := d.RevertToSnapshot(ctx, "vol1", "snap1"); err != nil {
		t.Fatalf("RevertToSnapshot(vol1, snap1) = %v, want nil", err)
	}
	got := make([]byte, len(cur))
	if _, err := before.ReadAt(got, 0); err != nil || !bytes.Equal(got, cur) {
		t.Errorf("device opened before the revert reads %q, %v; want %q", got, err, cur)
	}
	if got := readAt(t, p, len(old), 0); !bytes.Equal(got, old) {
		t.Errorf("volume after the revert reads %q, want %q", got, old)
	}
}

func readAt(t *testing.T, p string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("ReadAt(%d bytes, %d) of %s = %v", n, off, p, err)
	}
	return b
}

// wantVolumes fails the test unless d reports vols volumes and gb GiB provisioned.
func wantVolumes(t *testing.T, d *file.Driver, vols int, gb float64) {
	t.Helper()
	s, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	if p := s.Pools[0]; p["total_volumes"] != vols || p["provisioned_capacity_gb"] != gb {
		t.Errorf("Capabilities() = %v volumes, %v GiB provisioned; want %d, %v", p["total_volumes"], p["provisioned_capacity_gb"], vols, gb)
	}
}
