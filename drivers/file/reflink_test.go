//go:build linux

package file_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/drivers/drivertest"
	"github.com/basalt-storage/basalt/drivers/file"
	"golang.org/x/sys/unix"
)

// reflinkFilesystems are the filesystems whose reflink the tests exercise, with the package that
// provides their mkfs and its options.
var reflinkFilesystems = []struct {
	fstype, pkg string
	mkfs        []string
}{
	{"btrfs", "btrfs-progs", []string{"-q", "-f"}},
	{"xfs", "xfsprogs", []string{"-q", "-f", "-m", "reflink=1"}},
}

// mountLoop makes a filesystem of type fstype in a sparse image of size bytes, attaches the
// image to a loop device, mounts it and returns the mount point. Cleanups unmount it and detach
// the device, even when the test fails. When it cannot (not root, -short, a tool missing, or a
// sandbox without loop devices or mounts), it skips the test saying exactly what was missing.
func mountLoop(tb testing.TB, fstype, pkg string, mkfsArgs []string, size int64) string {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("-short: not making a %s filesystem on a loop device", fstype)
	}
	if uid := os.Geteuid(); uid != 0 {
		tb.Skipf("mounting %s on a loop device needs root; running as uid %d", fstype, uid)
	}
	mkfs := "mkfs." + fstype
	for _, tool := range []struct{ name, pkg string }{{mkfs, pkg}, {"losetup", "util-linux"}, {"mount", "mount"}, {"umount", "mount"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			tb.Skipf("%s not found in PATH (package %s): %v", tool.name, tool.pkg, err)
		}
	}
	dir := tb.TempDir()
	img := filepath.Join(dir, fstype+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command(mkfs, append(mkfsArgs, img)...).CombinedOutput(); err != nil {
		tb.Skipf("%s %s: %v: %s", mkfs, strings.Join(append(mkfsArgs, img), " "), err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		tb.Skipf("losetup --find --show %s: %v: %s (no usable loop device)", img, err, stderr(err))
	}
	dev := strings.TrimSpace(string(out))
	tb.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			tb.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", fstype, dev, mnt).CombinedOutput(); err != nil {
		tb.Skipf("mount -t %s %s %s: %v: %s", fstype, dev, mnt, err, out)
	}
	tb.Cleanup(func() {
		out, err := exec.Command("umount", mnt).CombinedOutput()
		if err == nil {
			return
		}
		tb.Errorf("umount %s: %v: %s", mnt, err, out)
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			tb.Errorf("umount -l %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// usedBytes syncs the filesystem holding dir and returns the bytes it uses.
func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatalf("syncfs(%s) = %v", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		t.Fatalf("statfs(%s) = %v", dir, err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// wantReflink fails the test unless d reports reflink as want.
func wantReflink(t *testing.T, d *file.Driver, want bool) {
	t.Helper()
	s, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	if got := s.Pools[0]["reflink"]; got != want {
		t.Fatalf("Capabilities() reflink = %v, want %v", got, want)
	}
}

// writePattern writes n bytes of a non-zero pattern at off through d's Accessor, in 4 MiB
// writes, and syncs the volume's file.
func writePattern(t testing.TB, d *file.Driver, id string, off, n int64) {
	t.Helper()
	dev, err := d.OpenVolume(t.Context(), id)
	if err != nil {
		t.Fatalf("OpenVolume(%q) = %v, want nil", id, err)
	}
	defer dev.Close()
	buf := make([]byte, 4*mib)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12 + 1)
	}
	for done := int64(0); done < n; done += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n-done)]
		if _, err := dev.WriteAt(b, off+done); err != nil {
			t.Fatalf("WriteAt(%d bytes, %d) = %v, want nil", len(b), off+done, err)
		}
	}
	p, _ := d.Path(id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestReflinkSnapshot snapshots a 10 GiB volume holding 1 GiB on btrfs and xfs: the snapshot
// must share the extents, so it takes well under a second and almost no space.
func TestReflinkSnapshot(t *testing.T) {
	for _, fs := range reflinkFilesystems {
		t.Run(fs.fstype, func(t *testing.T) {
			mnt := mountLoop(t, fs.fstype, fs.pkg, fs.mkfs, 4<<30)
			d := newDriverIn(t, mnt, file.Config{})
			wantReflink(t, d, true)
			ctx := t.Context()
			createVolume(t, d, "vol1", 10)

			before := usedBytes(t, mnt)
			writePattern(t, d, "vol1", 3<<30, 1<<30)
			written := usedBytes(t, mnt) - before
			if written < 1<<30 {
				// Shows the measure below can see a copy.
				t.Fatalf("writing 1 GiB grew the used space of %s by %d bytes, want at least 1 GiB", fs.fstype, written)
			}

			before = usedBytes(t, mnt)
			copied := file.BytesCopied(d)
			start := time.Now()
			if err := d.CreateSnapshot(ctx, "vol1", "snap1"); err != nil {
				t.Fatalf("CreateSnapshot(vol1, snap1) = %v, want nil", err)
			}
			took := time.Since(start)
			grew := usedBytes(t, mnt) - before
			t.Logf("%s: snapshot of a 10 GiB volume holding 1 GiB took %v, used space grew by %d bytes", fs.fstype, took, grew)
			if took >= time.Second {
				t.Errorf("CreateSnapshot on %s took %v, want under a second (reflink)", fs.fstype, took)
			}
			if grew > 32*mib {
				t.Errorf("CreateSnapshot on %s grew the used space by %d bytes, want far less than the 1 GiB written (reflink)", fs.fstype, grew)
			}
			if n := file.BytesCopied(d) - copied; n != 0 {
				t.Errorf("CreateSnapshot on %s copied %d bytes, want 0 (reflink)", fs.fstype, n)
			}

			// The shared extents are copied on write: the snapshot keeps its bytes.
			p, _ := d.Path("vol1")
			want := readAt(t, p, mib, 3<<30)
			writeAt(t, p, bytes.Repeat([]byte{0xee}, mib), 3<<30)
			spec := basalt.VolumeSpec{ID: "vol2", SizeGB: 10, Pool: "pool"}
			if err := d.CreateVolumeFromSnapshot(ctx, spec, "snap1"); err != nil {
				t.Fatalf("CreateVolumeFromSnapshot(%+v, snap1) = %v, want nil", spec, err)
			}
			p2, _ := d.Path("vol2")
			if got := readAt(t, p2, mib, 3<<30); !bytes.Equal(got, want) {
				t.Errorf("volume from the snapshot reads %x... at 3 GiB, want %x... as before the overwrite", got[:8], want[:8])
			}
		})
	}
}

// TestConformanceReflink runs the conformance suite on btrfs and xfs, where snapshots and
// clones are reflinks.
func TestConformanceReflink(t *testing.T) {
	for _, fs := range reflinkFilesystems {
		t.Run(fs.fstype, func(t *testing.T) {
			mnt := mountLoop(t, fs.fstype, fs.pkg, fs.mkfs, 2<<30)
			drivertest.Run(t, func(t *testing.T) drivers.Driver {
				d := newDriverIn(t, mnt, file.Config{})
				wantReflink(t, d, true)
				return d
			})
		})
	}
}
