//go:build linux

package file_test

import (
	"fmt"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers/file"
	"golang.org/x/sys/unix"
)

// BenchmarkSnapshotClone measures CreateSnapshot and CloneVolume of volumes of 1, 10 and 100 GiB
// that hold 256 MiB (16 runs of 16 MiB spread over the volume), as sparse copies ("copy") and,
// where the filesystem supports it, as reflinks ("reflink"). It runs on the filesystem of the
// test's temporary directory and, when mountLoop can make them, on btrfs and xfs loop mounts.
// Besides ns/op it reports copied-B/op, the bytes a copy wrote. The source's data is in the page
// cache, and every copy is synced before it is renamed into place.
func BenchmarkSnapshotClone(b *testing.B) {
	b.Run("tempdir-"+fsName(b, b.TempDir()), func(b *testing.B) { benchSnapshotClone(b, b.TempDir()) })
	for _, fs := range reflinkFilesystems {
		b.Run(fs.fstype, func(b *testing.B) {
			benchSnapshotClone(b, mountLoop(b, fs.fstype, fs.pkg, fs.mkfs, 8<<30))
		})
	}
}

func benchSnapshotClone(b *testing.B, root string) {
	for _, mode := range []string{"copy", "reflink"} {
		b.Run(mode, func(b *testing.B) {
			d := newDriverIn(b, root, file.Config{DisableReflink: mode == "copy"})
			if s, err := d.Capabilities(b.Context()); err != nil {
				b.Fatalf("Capabilities() = %v, want nil", err)
			} else if reflink := s.Pools[0]["reflink"] == true; reflink != (mode == "reflink") {
				b.Skipf("the filesystem of %s cannot reflink", root)
			}
			for _, gb := range []int{1, 10, 100} {
				b.Run(fmt.Sprintf("%dGiB", gb), func(b *testing.B) {
					createVolume(b, d, "src", gb)
					defer d.DeleteVolume(b.Context(), "src")
					const runs, run = 16, 16 << 20
					for i := range int64(runs) {
						writePattern(b, d, "src", i*int64(gb)<<30/runs, run)
					}
					b.Run("snapshot", func(b *testing.B) {
						benchCopy(b, d, func() error { return d.CreateSnapshot(b.Context(), "src", "snap") },
							func() error { return d.DeleteSnapshot(b.Context(), "snap") })
					})
					b.Run("clone", func(b *testing.B) {
						spec := basalt.VolumeSpec{ID: "clone", SizeGB: gb, Pool: "pool"}
						benchCopy(b, d, func() error { return d.CloneVolume(b.Context(), spec, "src") },
							func() error { return d.DeleteVolume(b.Context(), "clone") })
					})
				})
			}
		})
	}
}

// benchCopy times make and, untimed, undo after each, and reports the bytes d copied per op.
func benchCopy(b *testing.B, d *file.Driver, make, undo func() error) {
	copied, n := file.BytesCopied(d), 0
	for b.Loop() {
		if err := make(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := undo(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n++
	}
	b.ReportMetric(float64(file.BytesCopied(d)-copied)/float64(n), "copied-B/op")
}

// fsName returns the type of the filesystem holding dir.
func fsName(tb testing.TB, dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		tb.Fatalf("statfs(%s) = %v", dir, err)
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	}
	return fmt.Sprintf("fs%x", st.Type)
}
