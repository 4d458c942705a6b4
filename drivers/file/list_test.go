package file_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers/file"
)

// TestListVolumesStrayFiles: a volume file put in the directory by hand (a backend object no
// record owns) is listed; files that are not volumes, or that Stat refuses, are not.
func TestListVolumesStrayFiles(t *testing.T) {
	dir := t.TempDir()
	d, err := file.New(file.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatalf("New(Dir: %s) = %v, want nil", dir, err)
	}
	t.Cleanup(func() { d.Close() })
	touch := func(name string, size int64) {
		t.Helper()
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	const stray = "0f4e1b5c-6f43-4a4e-9b8f-2f1d2bfe1c5a"
	touch("volume-"+stray, 2*gib)                                             // a volume no record owns
	touch("volume-odd", gib+1)                                                // not a whole number of GiB: Stat refuses it
	touch("volume-bad.name", gib)                                             // not a valid id
	touch("snapshot-"+stray, gib)                                             // a snapshot
	touch(".creating-x-123", gib)                                             // a create in flight
	touch("notes.txt", 10)                                                    // anything else
	if err := os.Mkdir(filepath.Join(dir, "volume-dir"), 0o755); err != nil { // not a regular file
		t.Fatal(err)
	}
	got, err := d.ListVolumes(t.Context())
	if err != nil {
		t.Fatalf("ListVolumes() = %v, want nil", err)
	}
	want := basalt.VolumeSpec{ID: stray, SizeGB: 2, Pool: "pool"}
	if len(got) != 1 || got[0] != want {
		t.Errorf("ListVolumes() = %+v, want [%+v]", got, want)
	}
}
