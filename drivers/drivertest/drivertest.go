// Package drivertest is the conformance suite that every Basalt storage driver passes. A driver's
// own tests call Run with a constructor; the suite checks the contract written on drivers.Driver
// and, where the driver implements them, drivers.Extender, Snapshotter, Cloner, Reverter,
// Accessor and Lister, with one subtest per behaviour. A subtest that needs an interface the
// driver lacks is skipped. Drivers that implement Accessor have their bytes checked: the data
// subtests write patterns into 1 GiB volumes, copy them every way the driver can, and read back
// every written byte of every copy, and samples of the unwritten ones. They need about 30 GiB of
// capacity in the first pool (thick drivers count snapshots too).
package drivertest

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// InvalidIDs returns volume ids every driver must reject with EINVALID without creating anything:
// path tricks, separators, the empty string, NUL and ids longer than 64 characters. Valid ids
// are 1 to 64 ASCII letters, digits, '-' and '_'.
func InvalidIDs() []string {
	return []string{
		"",
		".",
		"..",
		"../x",
		"../../etc/passwd",
		"a/b",
		"/x",
		"x/..",
		"a\x00b",
		"\x00",
		strings.Repeat("a", 65),
	}
}

// Run runs the conformance suite against the drivers newDriver makes. newDriver is called once per
// subtest and must return a driver on an empty backend (no volumes) that is cleaned up with
// t.Cleanup. Subtests run sequentially; the driver must be safe for concurrent use, which the
// concurrency subtests exercise (run the suite with -race).
func Run(t *testing.T, newDriver func(t *testing.T) drivers.Driver) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, d drivers.Driver)
	}{
		{"CapabilitiesSane", testCapabilitiesSane},
		{"CapabilitiesCountVolumes", testCapabilitiesCountVolumes},
		{"CreateThenStat", testCreateThenStat},
		{"CreateIdempotentSameSize", testCreateIdempotentSameSize},
		{"CreateConflictingSize", testCreateConflictingSize},
		{"CreateConflictingPool", testCreateConflictingPool},
		{"CreateMaxLengthID", testCreateMaxLengthID},
		{"DeleteIdempotent", testDeleteIdempotent},
		{"DeleteThenRecreate", testDeleteThenRecreate},
		{"StatMissing", testStatMissing},
		{"InvalidIDs", testInvalidIDs},
		{"InvalidSize", testInvalidSize},
		{"CreateTooLarge", testCreateTooLarge},
		{"UnknownPool", testUnknownPool},
		{"ConcurrentDistinctIDs", testConcurrentDistinctIDs},
		{"ConcurrentSameID", testConcurrentSameID},
		{"ExtendGrows", testExtendGrows},
		{"ExtendSameSize", testExtendSameSize},
		{"ExtendShrink", testExtendShrink},
		{"ExtendMissing", testExtendMissing},
		{"ExtendInvalidID", testExtendInvalidID},
		{"SnapshotData", testSnapshotData},
		{"SnapshotIdempotent", testSnapshotIdempotent},
		{"SnapshotMissingVolume", testSnapshotMissingVolume},
		{"DeleteSnapshotIdempotent", testDeleteSnapshotIdempotent},
		{"StatSnapshot", testStatSnapshot},
		{"CreateFromMissingSnapshot", testCreateFromMissingSnapshot},
		{"CloneMissingSource", testCloneMissingSource},
		{"CloneIdempotent", testCloneIdempotent},
		{"CloneSmaller", testCloneSmaller},
		{"RevertSizeMismatch", testRevertSizeMismatch},
		{"RevertOtherVolumesSnapshot", testRevertOtherVolumesSnapshot},
		{"RevertMissing", testRevertMissing},
		{"SnapshotInvalidIDs", testSnapshotInvalidIDs},
		{"DeviceBounds", testDeviceBounds},
		{"ConcurrentSnapshotClone", testConcurrentSnapshotClone},
		{"ListVolumes", testListVolumes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDriver(t)
			if d == nil {
				t.Fatal("newDriver returned nil")
			}
			tt.fn(t, d)
		})
	}
}

// volumeID returns a distinct, valid, UUID-shaped volume id for n.
func volumeID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

// caps returns d's capabilities or fails the test.
func caps(t *testing.T, d drivers.Driver) basalt.BackendStats {
	t.Helper()
	s, err := d.Capabilities(t.Context())
	if err != nil {
		t.Fatalf("Capabilities() error = %v, want nil", err)
	}
	if len(s.Pools) == 0 {
		t.Fatalf("Capabilities() reports no pools, want at least one")
	}
	return s
}

// poolStats returns the report of the named pool or fails the test.
func poolStats(t *testing.T, d drivers.Driver, name string) basalt.Capabilities {
	t.Helper()
	for _, p := range caps(t, d).Pools {
		if p["pool_name"] == name {
			return p
		}
	}
	t.Fatalf("Capabilities() has no pool %q", name)
	return nil
}

// poolNames returns the names of d's pools, in report order.
func poolNames(t *testing.T, d drivers.Driver) []string {
	t.Helper()
	var names []string
	for _, p := range caps(t, d).Pools {
		name, ok := p["pool_name"].(string)
		if !ok {
			t.Fatalf("Capabilities() reports a pool without a string pool_name: %v", p)
		}
		names = append(names, name)
	}
	return names
}

// firstPool returns the name of d's first pool.
func firstPool(t *testing.T, d drivers.Driver) string {
	t.Helper()
	return poolNames(t, d)[0]
}

// create creates a volume and fails the test on error.
func create(t *testing.T, d drivers.Driver, spec basalt.VolumeSpec) {
	t.Helper()
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Fatalf("CreateVolume(%+v) = %v, want nil", spec, err)
	}
}

// wantCode fails the test unless err carries the basalt error code want.
func wantCode(t *testing.T, call string, err error, want string) {
	t.Helper()
	if got := basalt.ErrorCode(err); got != want {
		t.Errorf("%s = %v (code %q), want code %q", call, err, got, want)
	}
}

// wantSpec fails the test unless Stat(id) returns want.
func wantSpec(t *testing.T, d drivers.Driver, want basalt.VolumeSpec) {
	t.Helper()
	got, err := d.Stat(t.Context(), want.ID)
	if err != nil {
		t.Errorf("Stat(%q) error = %v, want nil", want.ID, err)
		return
	}
	if got != want {
		t.Errorf("Stat(%q) = %+v, want %+v", want.ID, got, want)
	}
}

// wantMissing fails the test unless Stat(id) returns ENOTFOUND.
func wantMissing(t *testing.T, d drivers.Driver, id string) {
	t.Helper()
	spec, err := d.Stat(t.Context(), id)
	if code := basalt.ErrorCode(err); code != basalt.ENOTFOUND {
		t.Errorf("Stat(%q) = %+v, %v (code %q), want code %q", id, spec, err, code, basalt.ENOTFOUND)
	}
}

// wantUsage fails the test unless the pool reports exactly vols volumes of gb GiB in total.
func wantUsage(t *testing.T, d drivers.Driver, pool string, vols int, gb float64) {
	t.Helper()
	p := poolStats(t, d, pool)
	if n, _ := p.Number("total_volumes"); n != float64(vols) {
		t.Errorf("Capabilities() pool %q total_volumes = %v, want %d", pool, p["total_volumes"], vols)
	}
	if n, _ := p.Number("provisioned_capacity_gb"); n != gb {
		t.Errorf("Capabilities() pool %q provisioned_capacity_gb = %v, want %v", pool, p["provisioned_capacity_gb"], gb)
	}
}

// extender returns d as a drivers.Extender or skips the test.
func extender(t *testing.T, d drivers.Driver) drivers.Extender {
	t.Helper()
	x, ok := d.(drivers.Extender)
	if !ok {
		t.Skipf("%T does not implement drivers.Extender", d)
	}
	return x
}

// testCapabilitiesSane checks the report a conforming driver sends: the backend-level keys
// Cinder's scheduler gives every pool, and the capacity keys of every pool as numbers (a
// Basalt driver knows its capacity: no "infinite" or "unknown"), all of it JSON.
func testCapabilitiesSane(t *testing.T, d drivers.Driver) {
	s := caps(t, d)
	if _, err := json.Marshal(s); err != nil {
		t.Errorf("Capabilities() is not JSON: %v", err)
	}
	for _, k := range []string{"vendor_name", "driver_version", "storage_protocol"} {
		if v, _ := s.Backend[k].(string); v == "" {
			t.Errorf("Capabilities() backend-level %s = %#v, want a non-empty string", k, s.Backend[k])
		}
	}
	if _, ok := s.Backend["pools"]; ok {
		t.Errorf("Capabilities() backend-level keys hold \"pools\"; pools go in BackendStats.Pools")
	}
	seen := map[string]bool{}
	for _, p := range s.Pools {
		name, _ := p["pool_name"].(string)
		if name == "" {
			t.Errorf("Capabilities() reports a pool without a non-empty string pool_name: %v", p)
		}
		if seen[name] {
			t.Errorf("Capabilities() reports pool %q twice", name)
		}
		seen[name] = true
		num := func(key string) float64 {
			f, ok := p.Number(key)
			if !ok {
				t.Errorf("Capabilities() pool %q %s = %#v, want a number", name, key, p[key])
			}
			return f
		}
		total, free := num("total_capacity_gb"), num("free_capacity_gb")
		if !(total > 0) {
			t.Errorf("Capabilities() pool %q total_capacity_gb = %v, want > 0", name, total)
		}
		if !(free >= 0 && free <= total) {
			t.Errorf("Capabilities() pool %q free_capacity_gb = %v, want within [0, total %v]", name, free, total)
		}
		if prov, vols := num("provisioned_capacity_gb"), num("total_volumes"); prov != 0 || vols != 0 {
			t.Errorf("Capabilities() pool %q of an empty backend reports provisioned_capacity_gb = %v, total_volumes = %v, want 0, 0",
				name, prov, vols)
		}
		if r := num("reserved_percentage"); !(r >= 0 && r <= 100) {
			t.Errorf("Capabilities() pool %q reserved_percentage = %v, want within [0, 100]", name, r)
		}
		if r := num("max_over_subscription_ratio"); !(r >= 1) {
			t.Errorf("Capabilities() pool %q max_over_subscription_ratio = %v, want >= 1", name, r)
		}
		thin, okThin := p["thin_provisioning_support"].(bool)
		thick, okThick := p["thick_provisioning_support"].(bool)
		if !okThin || !okThick {
			t.Errorf("Capabilities() pool %q thin/thick_provisioning_support = %#v/%#v, want booleans",
				name, p["thin_provisioning_support"], p["thick_provisioning_support"])
		} else if !thin && !thick {
			t.Errorf("Capabilities() pool %q supports neither thin nor thick provisioning", name)
		}
		if _, ok := p["allocated_capacity_gb"]; ok {
			t.Errorf("Capabilities() pool %q reports allocated_capacity_gb; the scheduler's ledger supplies it", name)
		}
	}
}

func testCapabilitiesCountVolumes(t *testing.T, d drivers.Driver) {
	pool := firstPool(t, d)
	create(t, d, basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: pool})
	create(t, d, basalt.VolumeSpec{ID: volumeID(2), SizeGB: 2, Pool: pool})
	wantUsage(t, d, pool, 2, 3)
	p := poolStats(t, d, pool)
	total, _ := p.Number("total_capacity_gb")
	if free, _ := p.Number("free_capacity_gb"); !(free >= 0 && free <= total) {
		t.Errorf("Capabilities() pool %q free_capacity_gb = %v, want within [0, total %v]",
			pool, p["free_capacity_gb"], p["total_capacity_gb"])
	}
	if err := d.DeleteVolume(t.Context(), volumeID(1)); err != nil {
		t.Fatalf("DeleteVolume(%q) = %v, want nil", volumeID(1), err)
	}
	wantUsage(t, d, pool, 1, 2)
}

func testCreateThenStat(t *testing.T, d drivers.Driver) {
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 3, Pool: firstPool(t, d)}
	create(t, d, spec)
	wantSpec(t, d, spec)
}

func testCreateIdempotentSameSize(t *testing.T, d drivers.Driver) {
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 2, Pool: firstPool(t, d)}
	create(t, d, spec)
	if err := d.CreateVolume(t.Context(), spec); err != nil {
		t.Errorf("CreateVolume(%+v) again = %v, want nil", spec, err)
	}
	wantSpec(t, d, spec)
	wantUsage(t, d, spec.Pool, 1, 2)
}

func testCreateConflictingSize(t *testing.T, d drivers.Driver) {
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	bigger := spec
	bigger.SizeGB = 2
	err := d.CreateVolume(t.Context(), bigger)
	wantCode(t, fmt.Sprintf("CreateVolume(%+v) over a volume of 1 GiB", bigger), err, basalt.ECONFLICT)
	wantSpec(t, d, spec)
	wantUsage(t, d, spec.Pool, 1, 1)
}

func testCreateConflictingPool(t *testing.T, d drivers.Driver) {
	pools := poolNames(t, d)
	if len(pools) < 2 {
		t.Skipf("driver reports %d pool, need 2", len(pools))
	}
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: pools[0]}
	create(t, d, spec)
	other := spec
	other.Pool = pools[1]
	err := d.CreateVolume(t.Context(), other)
	wantCode(t, fmt.Sprintf("CreateVolume(%+v) over a volume in pool %q", other, spec.Pool), err, basalt.ECONFLICT)
	wantSpec(t, d, spec)
	wantUsage(t, d, other.Pool, 0, 0)
}

func testCreateMaxLengthID(t *testing.T, d drivers.Driver) {
	spec := basalt.VolumeSpec{ID: strings.Repeat("a", 64), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	wantSpec(t, d, spec)
}

func testDeleteIdempotent(t *testing.T, d drivers.Driver) {
	pool := firstPool(t, d)
	if err := d.DeleteVolume(t.Context(), volumeID(9)); err != nil {
		t.Errorf("DeleteVolume(%q) of a volume never created = %v, want nil", volumeID(9), err)
	}
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: pool}
	create(t, d, spec)
	for i := range 2 {
		if err := d.DeleteVolume(t.Context(), spec.ID); err != nil {
			t.Errorf("DeleteVolume(%q) #%d = %v, want nil", spec.ID, i+1, err)
		}
	}
	wantMissing(t, d, spec.ID)
	wantUsage(t, d, pool, 0, 0)
}

func testDeleteThenRecreate(t *testing.T, d drivers.Driver) {
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	if err := d.DeleteVolume(t.Context(), spec.ID); err != nil {
		t.Fatalf("DeleteVolume(%q) = %v, want nil", spec.ID, err)
	}
	spec.SizeGB = 2
	create(t, d, spec)
	wantSpec(t, d, spec)
}

func testStatMissing(t *testing.T, d drivers.Driver) {
	wantMissing(t, d, volumeID(1))
}

func testInvalidIDs(t *testing.T, d drivers.Driver) {
	ctx := t.Context()
	pool := firstPool(t, d)
	for _, id := range InvalidIDs() {
		spec := basalt.VolumeSpec{ID: id, SizeGB: 1, Pool: pool}
		wantCode(t, fmt.Sprintf("CreateVolume(%#v)", spec), d.CreateVolume(ctx, spec), basalt.EINVALID)
		_, err := d.Stat(ctx, id)
		wantCode(t, fmt.Sprintf("Stat(%+q)", id), err, basalt.EINVALID)
		wantCode(t, fmt.Sprintf("DeleteVolume(%+q)", id), d.DeleteVolume(ctx, id), basalt.EINVALID)
	}
	wantUsage(t, d, pool, 0, 0)
}

func testInvalidSize(t *testing.T, d drivers.Driver) {
	pool := firstPool(t, d)
	for i, size := range []int{0, -1, math.MinInt} {
		spec := basalt.VolumeSpec{ID: volumeID(i), SizeGB: size, Pool: pool}
		wantCode(t, fmt.Sprintf("CreateVolume(%+v)", spec), d.CreateVolume(t.Context(), spec), basalt.EINVALID)
		wantMissing(t, d, spec.ID)
	}
	wantUsage(t, d, pool, 0, 0)
}

// testCreateTooLarge asks for more than any pool holds, thin or thick.
func testCreateTooLarge(t *testing.T, d drivers.Driver) {
	pool := firstPool(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: math.MaxInt, Pool: pool}
	wantCode(t, fmt.Sprintf("CreateVolume(%+v)", spec), d.CreateVolume(t.Context(), spec), basalt.EOVERLIMIT)
	wantMissing(t, d, spec.ID)
	wantUsage(t, d, pool, 0, 0)
}

func testUnknownPool(t *testing.T, d drivers.Driver) {
	pool := firstPool(t, d)
	for i, name := range []string{"no-such-pool", pool + "x", ""} {
		spec := basalt.VolumeSpec{ID: volumeID(i), SizeGB: 1, Pool: name}
		wantCode(t, fmt.Sprintf("CreateVolume(%+v)", spec), d.CreateVolume(t.Context(), spec), basalt.EINVALID)
		wantMissing(t, d, spec.ID)
	}
	wantUsage(t, d, pool, 0, 0)
}

// testConcurrentDistinctIDs creates volumes from many goroutines, deletes every other one from
// as many goroutines while others read capabilities, then checks that exactly the odd ones remain.
func testConcurrentDistinctIDs(t *testing.T, d drivers.Driver) {
	const n = 32
	ctx := t.Context()
	pool := firstPool(t, d)
	run := func(f func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = f(i) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	}
	run(func(i int) error {
		spec := basalt.VolumeSpec{ID: volumeID(i), SizeGB: 1, Pool: pool}
		if err := d.CreateVolume(ctx, spec); err != nil {
			return fmt.Errorf("CreateVolume(%+v) = %v, want nil", spec, err)
		}
		if got, err := d.Stat(ctx, spec.ID); err != nil || got != spec {
			return fmt.Errorf("Stat(%q) = %+v, %v, want %+v, nil", spec.ID, got, err, spec)
		}
		return nil
	})
	wantUsage(t, d, pool, n, n)
	run(func(i int) error {
		if i%2 == 1 {
			if _, err := d.Capabilities(ctx); err != nil {
				return fmt.Errorf("Capabilities() = %v, want nil", err)
			}
			return nil
		}
		if err := d.DeleteVolume(ctx, volumeID(i)); err != nil {
			return fmt.Errorf("DeleteVolume(%q) = %v, want nil", volumeID(i), err)
		}
		return nil
	})
	for i := range n {
		if i%2 == 0 {
			wantMissing(t, d, volumeID(i))
		} else {
			wantSpec(t, d, basalt.VolumeSpec{ID: volumeID(i), SizeGB: 1, Pool: pool})
		}
	}
	wantUsage(t, d, pool, n/2, n/2)
}

// testConcurrentSameID races creates of one id with different sizes, several rounds with all
// goroutines released at once: in each, exactly one size wins, every create of that size
// succeeds, every other create is ECONFLICT, and one volume exists.
func testConcurrentSameID(t *testing.T, d drivers.Driver) {
	const rounds, n = 8, 16
	ctx := t.Context()
	pool := firstPool(t, d)
	for r := range rounds {
		id := volumeID(r)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = d.CreateVolume(ctx, basalt.VolumeSpec{ID: id, SizeGB: 1 + i%2, Pool: pool})
			})
		}
		close(start)
		wg.Wait()
		got, err := d.Stat(ctx, id)
		if err != nil {
			t.Fatalf("Stat(%q) after concurrent creates = %v, want nil", id, err)
		}
		for i, err := range errs {
			spec := basalt.VolumeSpec{ID: id, SizeGB: 1 + i%2, Pool: pool}
			want := basalt.ECONFLICT
			if spec.SizeGB == got.SizeGB {
				want = ""
			}
			wantCode(t, fmt.Sprintf("CreateVolume(%+v) racing with sizes 1 and 2 (winner %d GiB)", spec, got.SizeGB), err, want)
		}
		if err := d.DeleteVolume(ctx, id); err != nil {
			t.Fatalf("DeleteVolume(%q) = %v, want nil", id, err)
		}
	}
	wantUsage(t, d, pool, 0, 0)
}

func testExtendGrows(t *testing.T, d drivers.Driver) {
	x := extender(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 1, Pool: firstPool(t, d)}
	create(t, d, spec)
	if err := x.ExtendVolume(t.Context(), spec.ID, 3); err != nil {
		t.Fatalf("ExtendVolume(%q, 3) = %v, want nil", spec.ID, err)
	}
	spec.SizeGB = 3
	wantSpec(t, d, spec)
	wantUsage(t, d, spec.Pool, 1, 3)
}

func testExtendSameSize(t *testing.T, d drivers.Driver) {
	x := extender(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 2, Pool: firstPool(t, d)}
	create(t, d, spec)
	if err := x.ExtendVolume(t.Context(), spec.ID, 2); err != nil {
		t.Errorf("ExtendVolume(%q, 2) of a 2 GiB volume = %v, want nil", spec.ID, err)
	}
	wantSpec(t, d, spec)
}

func testExtendShrink(t *testing.T, d drivers.Driver) {
	x := extender(t, d)
	spec := basalt.VolumeSpec{ID: volumeID(1), SizeGB: 2, Pool: firstPool(t, d)}
	create(t, d, spec)
	for _, size := range []int{1, 0, -1} {
		err := x.ExtendVolume(t.Context(), spec.ID, size)
		wantCode(t, fmt.Sprintf("ExtendVolume(%q, %d) of a 2 GiB volume", spec.ID, size), err, basalt.EINVALID)
	}
	wantSpec(t, d, spec)
}

func testExtendMissing(t *testing.T, d drivers.Driver) {
	x := extender(t, d)
	err := x.ExtendVolume(t.Context(), volumeID(1), 2)
	wantCode(t, fmt.Sprintf("ExtendVolume(%q, 2) of a missing volume", volumeID(1)), err, basalt.ENOTFOUND)
	wantMissing(t, d, volumeID(1))
}

func testExtendInvalidID(t *testing.T, d drivers.Driver) {
	x := extender(t, d)
	for _, id := range InvalidIDs() {
		wantCode(t, fmt.Sprintf("ExtendVolume(%+q, 2)", id), x.ExtendVolume(t.Context(), id, 2), basalt.EINVALID)
	}
}
