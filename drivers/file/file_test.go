package file_test

import (
	"bytes"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/drivers/drivertest"
	"github.com/basalt-storage/basalt/drivers/file"
)

const gib = 1 << 30

// newDriver returns a driver on a directory nested in its own temporary root, and checks when
// the test ends that nothing was created in the root outside the volume directory.
func newDriver(t *testing.T) *file.Driver {
	t.Helper()
	return newDriverIn(t, t.TempDir(), file.Config{})
}

// newDriverIn returns a driver configured as cfg on a directory nested in root, and checks when
// the test ends that nothing was created in root outside the volume directory, that no
// temporary file is left in it, and removes it.
func newDriverIn(t testing.TB, root string, cfg file.Config) *file.Driver {
	t.Helper()
	dir, err := os.MkdirTemp(root, "a")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(dir, "b", "volumes")
	cfg.BackendName = "file-test"
	d, err := file.New(cfg, nil)
	if err != nil {
		t.Fatalf("New(Dir: %s) = %v, want nil", cfg.Dir, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
		checkConfined(t, dir, cfg.Dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("RemoveAll(%s) = %v", dir, err)
		}
	})
	return d
}

// checkConfined fails the test if root holds anything but the path down to dir and dir's files.
func checkConfined(t testing.TB, root, dir string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(p, dir); filepath.IsLocal(rel) || p == dir {
			return nil // an ancestor of dir, or dir itself
		}
		if filepath.Dir(p) == dir && e.Type().IsRegular() {
			if strings.HasPrefix(e.Name(), file.TempPrefix) {
				t.Errorf("driver left the temporary file %s", p)
			}
			return nil
		}
		t.Errorf("driver left %s outside its directory %s", p, dir)
		return nil
	})
	if err != nil {
		t.Errorf("WalkDir(%s) = %v", root, err)
	}
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) drivers.Driver { return newDriver(t) })
}

func TestCreateIsSparse(t *testing.T) {
	d := newDriver(t)
	spec := basalt.VolumeSpec{ID: "vol1", SizeGB: 10, Pool: "pool"}
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	p, err := d.Path(spec.ID)
	if err != nil {
		t.Fatalf("Path(%q) = %v, want nil", spec.ID, err)
	}
	if want := filepath.Join(filepath.Dir(p), "volume-vol1"); p != want {
		t.Errorf("Path(%q) = %q, want %q", spec.ID, p, want)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 10*gib {
		t.Errorf("size of %s = %d, want %d", p, fi.Size(), 10*gib)
	}
	// st_blocks counts 512-byte units actually allocated; a sparse file has (almost) none.
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Errorf("%s allocates %d bytes for a 10 GiB volume, want a sparse file (<= 1 MiB)", p, blocks*512)
	}
}

func TestExtendKeepsData(t *testing.T) {
	d := newDriver(t)
	spec := basalt.VolumeSpec{ID: "vol1", SizeGB: 1, Pool: "pool"}
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	p, err := d.Path(spec.ID)
	if err != nil {
		t.Fatalf("Path(%q) = %v, want nil", spec.ID, err)
	}
	data := []byte("basalt keeps your bytes")
	offsets := []int64{0, gib - int64(len(data))} // first and last bytes of the volume
	for _, off := range offsets {
		writeAt(t, p, data, off)
	}
	if err := d.ExtendVolume(t.Context(), spec.ID, 3); err != nil {
		t.Fatalf("ExtendVolume(%q, 3) = %v, want nil", spec.ID, err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range offsets {
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatalf("ReadAt(%d) after extend = %v", off, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("ReadAt(%d) after extend = %q, want %q", off, got, data)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 3*gib {
		t.Errorf("size of %s after ExtendVolume(%q, 3) = %d, want %d", p, spec.ID, fi.Size(), 3*gib)
	}
	// The grown part reads as zeros.
	tail := make([]byte, 16)
	if _, err := f.ReadAt(tail, 2*gib); err != nil {
		t.Fatalf("ReadAt(%d) after extend = %v", 2*gib, err)
	}
	if !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Errorf("ReadAt(%d) after extend = %x, want zeros", 2*gib, tail)
	}
}

func writeAt(t *testing.T, p string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatalf("WriteAt(%d) = %v", off, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPath(t *testing.T) {
	d := newDriver(t)
	if _, err := d.Path("vol1"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("Path(%q) of a missing volume = %v, want code %q", "vol1", err, basalt.ENOTFOUND)
	}
	for _, id := range drivertest.InvalidIDs() {
		if p, err := d.Path(id); basalt.ErrorCode(err) != basalt.EINVALID {
			t.Errorf("Path(%+q) = %q, %v, want code %q", id, p, err, basalt.EINVALID)
		}
	}
}

func TestCapabilities(t *testing.T) {
	dir := t.TempDir()
	d, err := file.New(file.Config{Dir: dir, Pool: "fast", BackendName: "files", ReservedPercentage: 5}, nil)
	if err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	t.Cleanup(func() { d.Close() })
	// Files that are not volumes are not counted.
	for _, name := range []string{"notes.txt", "volume-", "volume-a.b"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not a volume"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	spec := basalt.VolumeSpec{ID: "v", SizeGB: 4, Pool: "fast"}
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
	s, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	wantBackend := basalt.Capabilities{"volume_backend_name": "files", "vendor_name": "Basalt", "driver_version": "1.0.0", "storage_protocol": "file"}
	if !reflect.DeepEqual(s.Backend, wantBackend) {
		t.Errorf("Capabilities() backend-level keys = %v; want %v", s.Backend, wantBackend)
	}
	if len(s.Pools) != 1 {
		t.Fatalf("Capabilities() has %d pools, want 1", len(s.Pools))
	}
	p := s.Pools[0]
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	total := float64(st.Blocks*uint64(st.Bsize)) / gib
	if p["pool_name"] != "fast" || p["total_volumes"] != 1 || p["provisioned_capacity_gb"] != 4.0 ||
		p["thin_provisioning_support"] != true || p["thick_provisioning_support"] != false ||
		p["reserved_percentage"] != 5 || p["max_over_subscription_ratio"] != 20.0 ||
		p["online_extend_support"] != false {
		t.Errorf("Capabilities() pool = %v, want fast, 1 volume, 4 GiB provisioned, thin only, reserved 5, ratio 20, no online extend", p)
	}
	if diff := p["total_capacity_gb"].(float64) - total; diff < -0.005 || diff > 0.005 {
		t.Errorf("Capabilities() total_capacity_gb = %v, want %v rounded to 2 decimals", p["total_capacity_gb"], total)
	}
	if r := p["free_capacity_gb"].(float64) * 100; math.Abs(r-math.Round(r)) > 1e-6 {
		t.Errorf("Capabilities() free_capacity_gb = %v, want 2 decimals", p["free_capacity_gb"])
	}
}

func TestNewCleansTempFiles(t *testing.T) {
	dir := t.TempDir()
	d, err := file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	// A crash mid-create leaves a temporary file beside the volumes; simulate it.
	leftover := filepath.Join(dir, file.TempPrefix+"vol1-12345")
	if err := os.WriteFile(leftover, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(leftover, gib); err != nil {
		t.Fatal(err)
	}
	wantNoVolumes(t, d)
	if _, err := d.Stat(t.Context(), "vol1"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("Stat(%q) with only a temporary file = %v, want code %q", "vol1", err, basalt.ENOTFOUND)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	d, err = file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("Stat(%s) after New = %v, want not exist", leftover, err)
	}
	wantNoVolumes(t, d)
	// The id of the interrupted create is usable.
	spec := basalt.VolumeSpec{ID: "vol1", SizeGB: 2, Pool: "pool"}
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Errorf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
}

func wantNoVolumes(t *testing.T, d *file.Driver) {
	t.Helper()
	s, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatalf("Capabilities() = %v, want nil", err)
	}
	if p := s.Pools[0]; p["total_volumes"] != 0 || p["provisioned_capacity_gb"] != 0.0 {
		t.Errorf("Capabilities() = %v volumes, %v GiB provisioned; want none", p["total_volumes"], p["provisioned_capacity_gb"])
	}
}

func TestNewLocksDir(t *testing.T) {
	dir := t.TempDir()
	d, err := file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	if _, err := file.New(file.Config{Dir: dir}, nil); basalt.ErrorCode(err) != basalt.EUNAVAILABLE {
		t.Errorf("second New() on %s = %v, want code %q", dir, err, basalt.EUNAVAILABLE)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	d, err = file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New() after Close = %v, want nil", err)
	}
	d.Close()
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  file.Config
		ok   bool
	}{
		{"defaults", file.Config{Dir: dir}, true},
		{"full", file.Config{Dir: dir, Pool: "p1", BackendName: "b", ReservedPercentage: 100, MaxOverSubscriptionRatio: 1}, true},
		{"no dir", file.Config{}, false},
		{"pool with #", file.Config{Dir: dir, Pool: "a#b"}, false},
		{"pool with @", file.Config{Dir: dir, Pool: "a@b"}, false},
		{"negative reserved", file.Config{Dir: dir, ReservedPercentage: -1}, false},
		{"reserved over 100", file.Config{Dir: dir, ReservedPercentage: 101}, false},
		{"ratio below 1", file.Config{Dir: dir, MaxOverSubscriptionRatio: 0.5}, false},
		{"negative ratio", file.Config{Dir: dir, MaxOverSubscriptionRatio: -2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := file.New(tt.cfg, nil)
			if err == nil {
				d.Close()
			}
			if tt.ok && err != nil {
				t.Errorf("New(%+v) = %v, want nil", tt.cfg, err)
			}
			if !tt.ok && basalt.ErrorCode(err) != basalt.EINVALID {
				t.Errorf("New(%+v) = %v, want code %q", tt.cfg, err, basalt.EINVALID)
			}
		})
	}
}
