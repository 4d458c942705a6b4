package store_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// A clock the test moves by hand, by steps of 0, a few nanoseconds (the same microsecond) or more.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) step(r *rand.Rand) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r.IntN(4) {
	case 0:
	case 1:
		c.t = c.t.Add(time.Duration(r.IntN(999)))
	default:
		c.t = c.t.Add(time.Duration(r.IntN(5000)) * time.Microsecond)
	}
}

var (
	testStatuses = []basalt.VolumeStatus{basalt.StatusAvailable, basalt.StatusInUse, basalt.StatusError,
		basalt.StatusCreating, basalt.StatusDeleting}
	// Names that test the encoding's order: prefixes, a NUL byte, bytes above 0x7f, "".
	testNames  = []string{"a", "a\x00", "a\x00b", "ab", "b", "", "é", "\xff", "a\x01"}
	testZones  = []string{"nova", "az2", "az\x00"}
	testMDKeys = []string{"k1", "k2", "k\x00"}
	testMDVals = []string{"v1", "v2", ""}
)

func randomVolume(r *rand.Rand, id string, clock *testClock) *basalt.Volume {
	v := &basalt.Volume{ID: id, ProjectID: fmt.Sprintf("p%d", r.IntN(3)), CreatedAt: clock.now()}
	randomize(r, v)
	if r.IntN(3) == 0 {
		t := clock.now()
		v.UpdatedAt = &t
	}
	return v
}

// randomize changes every indexed field of v at random.
func randomize(r *rand.Rand, v *basalt.Volume) {
	v.Status = testStatuses[r.IntN(len(testStatuses))]
	v.Name = nil
	if r.IntN(5) > 0 {
		n := testNames[r.IntN(len(testNames))]
		v.Name = &n
	}
	v.Size = 1 + r.IntN(4)
	v.Bootable = r.IntN(3) == 0
	v.AvailabilityZone = testZones[r.IntN(len(testZones))]
	v.Metadata = map[string]string{}
	for _, k := range testMDKeys {
		if r.IntN(2) == 0 {
			v.Metadata[k] = testMDVals[r.IntN(len(testMDVals))]
		}
	}
}

// A condition as the brute force sees it, with the store's equivalent.
type cond struct {
	desc  string
	eq    store.VolumeEq
	holds func(v *basalt.Volume) bool
}

func randomCond(r *rand.Rand) cond {
	switch r.IntN(6) {
	case 0:
		s := testStatuses[r.IntN(len(testStatuses))]
		return cond{"status=" + string(s), store.EqStatus(string(s)), func(v *basalt.Volume) bool { return v.Status == s }}
	case 1:
		n := testNames[r.IntN(len(testNames))]
		if n == "\xff" {
			n = "\ufffd" // as the record holds it
		}
		return cond{fmt.Sprintf("name=%q", n), store.EqName(n), func(v *basalt.Volume) bool { return deref(v.Name) == n }}
	case 2:
		z := testZones[r.IntN(len(testZones))]
		return cond{fmt.Sprintf("az=%q", z), store.EqAvailabilityZone(z), func(v *basalt.Volume) bool { return v.AvailabilityZone == z }}
	case 3:
		n := 1 + r.IntN(4)
		return cond{fmt.Sprintf("size=%d", n), store.EqSize(n), func(v *basalt.Volume) bool { return v.Size == n }}
	case 4:
		b := r.IntN(2) == 0
		return cond{fmt.Sprintf("bootable=%v", b), store.EqBootable(b), func(v *basalt.Volume) bool { return v.Bootable == b }}
	}
	k, val := testMDKeys[r.IntN(len(testMDKeys))], testMDVals[r.IntN(len(testMDVals))]
	return cond{fmt.Sprintf("metadata %q=%q", k, val), store.EqMetadata(k, val), func(v *basalt.Volume) bool {
		have, ok := v.Metadata[k]
		return ok && have == val
	}}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func micro(t *time.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// compareBy orders a and b by key, then created_at and id (the brute force's own comparison).
func compareBy(a, b *basalt.Volume, key string) int {
	var c int
	switch key {
	case "name":
		c = strings.Compare(deref(a.Name), deref(b.Name))
	case "status":
		c = strings.Compare(string(a.Status), string(b.Status))
	case "availability_zone":
		c = strings.Compare(a.AvailabilityZone, b.AvailabilityZone)
	case "size":
		c = cmp.Compare(a.Size, b.Size)
	case "updated_at":
		c = cmp.Compare(micro(a.UpdatedAt), micro(b.UpdatedAt))
	case "id":
		return strings.Compare(a.ID, b.ID)
	}
	if c != 0 {
		return c
	}
	if c = cmp.Compare(a.CreatedAt.UnixMicro(), b.CreatedAt.UnixMicro()); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// bruteForce lists q from every record: filter, sort, marker, offset, limit.
func bruteForce(t *testing.T, st *store.Store, q store.VolumeQuery, conds []cond) (page []string, count int, markerOK bool) {
	t.Helper()
	all, err := st.Volumes(context.Background(), q.Project)
	if err != nil {
		t.Fatal(err)
	}
	var match []*basalt.Volume
	for _, v := range all {
		ok := q.Match == nil || q.Match(v)
		for _, c := range conds {
			ok = ok && c.holds(v)
		}
		if ok {
			match = append(match, v)
		}
	}
	key := cmp.Or(q.Sort, "created_at")
	slices.SortFunc(match, func(a, b *basalt.Volume) int {
		if q.Less != nil {
			if q.Less(a, b) {
				return -1
			}
			if q.Less(b, a) {
				return 1
			}
			return 0
		}
		if q.Asc {
			return compareBy(a, b, key)
		}
		return compareBy(b, a, key)
	})
	rest := match
	if q.Marker != "" {
		i := slices.IndexFunc(match, func(v *basalt.Volume) bool { return v.ID == q.Marker })
		if i < 0 {
			return nil, len(match), false
		}
		rest = match[i+1:]
	}
	rest = rest[min(q.Offset, len(rest)):]
	for _, v := range rest[:min(len(rest), q.Limit)] {
		page = append(page, v.ID)
	}
	return page, len(match), true
}

func ids(vs []*basalt.Volume) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.ID)
	}
	return out
}

// TestVolumeIndexesAgreeWithRecords writes volumes at random through every path that writes a
// volume record, and checks after each round that the indexes hold exactly what the records
// call for and that every filter and sort lists what a scan of the records does.
func TestVolumeIndexesAgreeWithRecords(t *testing.T) {
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	clock := &testClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	st := store.New(redistest.Start(t).Client(), clock.now)

	var live []string
	next := 0
	newID := func() string {
		next++
		// Ids of several lengths, so that a shorter one is a prefix of a longer one.
		return fmt.Sprintf("vol-%x", next*7919%4096)[:5+next%3] + fmt.Sprint(next)
	}
	write := func() {
		clock.step(r)
		pick := func() string { return live[r.IntN(len(live))] }
		switch op := r.IntN(10); {
		case op < 3 || len(live) < 20:
			v := randomVolume(r, newID(), clock)
			var err error
			if r.IntN(2) == 0 {
				err = st.CreateVolume(ctx, v, nil)
			} else {
				err = st.CreateVolumeIfAbsent(ctx, v, nil, func(*basalt.Volume) error { return fmt.Errorf("taken") })
			}
			if err != nil {
				t.Fatal(err)
			}
			live = append(live, v.ID)
		case op == 3: // a status change through the compare-and-set path
			if _, err := st.UpdateVolume(ctx, pick(), func(v *basalt.Volume) error {
				v.Status = testStatuses[r.IntN(len(testStatuses))]
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		case op == 4: // a rename and a metadata change
			if _, err := st.UpdateVolumeWithOp(ctx, pick(), func(v *basalt.Volume) error {
				n := testNames[r.IntN(len(testNames))]
				v.Name = &n
				v.Metadata[testMDKeys[r.IntN(len(testMDKeys))]] = testMDVals[r.IntN(len(testMDVals))]
				return nil
			}, nil); err != nil {
				t.Fatal(err)
			}
		case op == 5: // everything at once, through ChangeVolume
			if _, err := st.ChangeVolume(ctx, pick(), func(v *basalt.Volume, _ *store.VolumeChange) error {
				randomize(r, v)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		case op == 6: // a snapshot comes and goes: the volume's updated_at moves
			id := pick()
			sn := &basalt.Snapshot{ID: "snap-" + newID(), VolumeID: id, ProjectID: "p", CreatedAt: clock.now()}
			if err := st.CreateSnapshot(ctx, sn, nil, func(*basalt.Volume) error { return nil }); err != nil {
				t.Fatal(err)
			}
			clock.step(r)
			if r.IntN(2) == 0 {
				if err := st.RemoveSnapshot(ctx, sn); err != nil {
					t.Fatal(err)
				}
			} else if _, _, err := st.UpdateVolumeAndSnapshots(ctx, id, []string{sn.ID}, func(v *basalt.Volume, _ []*basalt.Snapshot) error {
				v.Size++
				v.Bootable = !v.Bootable
				return nil
			}, nil); err != nil {
				t.Fatal(err)
			}
		case op == 7: // DeleteVolume with a stale copy of the record
			i := r.IntN(len(live))
			stale, err := st.Volume(ctx, live[i])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.UpdateVolume(ctx, stale.ID, func(v *basalt.Volume) error {
				v.Status = basalt.StatusDeleting
				v.Metadata = map[string]string{"k1": "v2"}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := st.DeleteVolume(ctx, stale); err != nil {
				t.Fatal(err)
			}
			if err := st.DeleteVolume(ctx, stale); err != nil { // idempotent
				t.Fatal(err)
			}
			live = slices.Delete(live, i, i+1)
		case op == 8:
			i := r.IntN(len(live))
			if err := st.DeleteVolumeIf(ctx, live[i], func(*basalt.Volume) error { return nil }); err != nil {
				t.Fatal(err)
			}
			live = slices.Delete(live, i, i+1)
		default: // a refused change writes nothing
			_, err := st.UpdateVolume(ctx, pick(), func(v *basalt.Volume) error {
				v.Status = basalt.StatusError
				return fmt.Errorf("refused")
			})
			if err == nil {
				t.Fatal("refused update succeeded")
			}
		}
	}
	query := func(round int) {
		q := store.VolumeQuery{Limit: 1 + r.IntN(40), Asc: r.IntN(2) == 0, Count: r.IntN(3) == 0}
		if r.IntN(4) > 0 {
			q.Project = fmt.Sprintf("p%d", r.IntN(4)) // p3 has no volume
		}
		if r.IntN(6) > 0 {
			q.Sort = store.VolumeSortKeys[r.IntN(len(store.VolumeSortKeys))]
		}
		var conds []cond
		for range r.IntN(4) {
			c := randomCond(r)
			conds = append(conds, c)
			q.Eq = append(q.Eq, c.eq)
		}
		match := func(v *basalt.Volume) bool {
			for _, c := range conds {
				if !c.holds(v) {
					return false
				}
			}
			return true
		}
		residual := ""
		switch r.IntN(6) {
		case 0: // a filter no index answers
			residual = " size odd"
			q.Match = func(v *basalt.Volume) bool { return match(v) && v.Size%2 == 1 }
		case 1: // the whole order given in memory
			residual = " Less"
			q.Less = func(a, b *basalt.Volume) bool {
				if a.Size != b.Size {
					return a.Size > b.Size
				}
				if c := strings.Compare(deref(a.Name), deref(b.Name)); c != 0 {
					return c < 0
				}
				return a.ID < b.ID
			}
			fallthrough
		default:
			q.Match, q.Exact = match, true
		}
		if r.IntN(5) == 0 {
			q.Offset = r.IntN(10)
		}
		desc := fmt.Sprintf("round %d: project %q %v sort %q asc=%v limit %d offset %d%s", round,
			q.Project, func() []string {
				var d []string
				for _, c := range conds {
					d = append(d, c.desc)
				}
				return d
			}(), q.Sort, q.Asc, q.Limit, q.Offset, residual)
		// Page through the whole listing by marker.
		var pages int
		for {
			want, wantCount, _ := bruteForce(t, st, q, nil)
			got, err := st.ListVolumes(ctx, q)
			if err != nil {
				t.Fatalf("%s marker %q: %v", desc, q.Marker, err)
			}
			if !slices.Equal(ids(got.Items), want) {
				t.Fatalf("%s marker %q: listed\n%q\nwant\n%q", desc, q.Marker, ids(got.Items), want)
			}
			if q.Count && got.Count != wantCount {
				t.Fatalf("%s: count %d, want %d", desc, got.Count, wantCount)
			}
			if len(want) < q.Limit || pages > 50 {
				break
			}
			q.Marker, pages = want[len(want)-1], pages+1
		}
	}
	checkIndexes := func(when string) {
		t.Helper()
		if diffs, err := st.VerifyVolumeIndexes(ctx); err != nil || len(diffs) > 0 {
			t.Fatalf("%s: indexes disagree with the records (%v):\n%s", when, err, strings.Join(diffs[:min(len(diffs), 20)], "\n"))
		}
	}
	for round := range 12 {
		for range 40 {
			write()
		}
		checkIndexes(fmt.Sprintf("round %d", round))
		for range 25 {
			query(round)
		}
	}

	// A marker that is not on the list is not found, as before the indexes.
	all, _ := st.Volumes(ctx, "")
	v := all[0]
	other := testStatuses[(slices.Index(testStatuses, v.Status)+1)%len(testStatuses)]
	for _, q := range []store.VolumeQuery{
		{Marker: "no-such-volume"},
		{Marker: v.ID, Project: v.ProjectID + "x"},
		{Marker: v.ID, Eq: []store.VolumeEq{store.EqStatus(string(other))},
			Match: func(x *basalt.Volume) bool { return x.Status == other }},
	} {
		if _, err := st.ListVolumes(ctx, q); basalt.ErrorCode(err) != basalt.ENOTFOUND {
			t.Errorf("ListVolumes(marker %s, project %q) = %v, want ENOTFOUND", q.Marker, q.Project, err)
		}
	}
}

// TestReindexVolumes: volumes written before the indexes existed are indexed once, at the
// current version, and the backfill can run again at any time.
func TestReindexVolumes(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client()
	st := store.New(rdb, nil)
	r := rand.New(rand.NewPCG(1, 2))
	clock := &testClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	// The records and creation-time sets as the code before the indexes wrote them.
	const n = 2500
	pipe := rdb.Pipeline()
	for i := range n {
		clock.step(r)
		v := randomVolume(r, fmt.Sprintf("old-%04d", i), clock)
		b, _ := json.Marshal(v)
		z := redis.Z{Score: float64(v.CreatedAt.UnixMicro()), Member: v.ID}
		pipe.Set(ctx, events.PrefixOf(v.ID)+"vol:"+v.ID, b, 0)
		pipe.ZAdd(ctx, events.PrefixOf(v.ID)+"vols", z)
		pipe.ZAdd(ctx, events.PrefixOf(v.ProjectID)+"proj:"+v.ProjectID+":vols", z)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if diffs, _ := st.VerifyVolumeIndexes(ctx); len(diffs) == 0 {
		t.Fatal("VerifyVolumeIndexes finds nothing missing before the backfill")
	}
	// Writers keep going while the backfill runs.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("old-%04d", i*37%n)
			if _, err := st.UpdateVolume(ctx, id, func(v *basalt.Volume) error {
				v.Status = testStatuses[i%len(testStatuses)]
				return nil
			}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got, err := st.ReindexVolumes(ctx)
	close(stop)
	wg.Wait()
	if err != nil || got < n {
		t.Fatalf("ReindexVolumes = %d, %v; want %d", got, err, n)
	}
	if diffs, err := st.VerifyVolumeIndexes(ctx); err != nil || len(diffs) > 0 {
		t.Fatalf("after the backfill the indexes disagree with the records (%v):\n%s", err, strings.Join(diffs[:min(len(diffs), 20)], "\n"))
	}
	if again, err := st.ReindexVolumes(ctx); again != 0 || err != nil {
		t.Fatalf("second ReindexVolumes = %d, %v; want nothing to do", again, err)
	}
	// Forced again (the version key deleted), it changes nothing.
	rdb.Del(ctx, "basalt:{basalt}:vols:index-version")
	if again, err := st.ReindexVolumes(ctx); again != n || err != nil {
		t.Fatalf("forced ReindexVolumes = %d, %v; want %d", again, err, n)
	}
	if diffs, _ := st.VerifyVolumeIndexes(ctx); len(diffs) > 0 {
		t.Fatalf("after a second backfill: %s", strings.Join(diffs[:min(len(diffs), 20)], "\n"))
	}
	res, err := st.ListVolumes(ctx, store.VolumeQuery{Eq: []store.VolumeEq{store.EqStatus("error")},
		Match: func(v *basalt.Volume) bool { return v.Status == "error" }, Exact: true, Count: true, Limit: 5})
	want, wantCount, _ := bruteForce(t, st, store.VolumeQuery{Limit: 5,
		Match: func(v *basalt.Volume) bool { return v.Status == "error" }}, nil)
	if err != nil || !slices.Equal(ids(res.Items), want) || res.Count != wantCount {
		t.Fatalf("status=error after the backfill = %v (count %d), %v; want %v (count %d)", ids(res.Items), res.Count, err, want, wantCount)
	}
}

// TestListAcrossUnevenPartitions: an administrator's listing merges the partitions' pages, and
// stays exact when the volumes crowd into one partition (which must then be asked for more than
// its share): every page equals the same page of all the volumes sorted in memory.
func TestListAcrossUnevenPartitions(t *testing.T) {
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(), nil)
	r := rand.New(rand.NewPCG(3, 4))
	clock := &testClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	var all []*basalt.Volume
	for i := range 240 {
		clock.step(r)
		project := "hot" // most volumes in one project, so in one partition
		if i%8 == 0 {
			project = fmt.Sprintf("cold-%d", i)
		}
		v := randomVolume(r, events.NewID(project), clock)
		v.ProjectID = project
		if err := st.CreateVolume(ctx, v, nil); err != nil {
			t.Fatal(err)
		}
		all = append(all, v)
	}
	for _, c := range []struct {
		sort   string
		asc    bool
		offset int
		limit  int
	}{{"", false, 0, 100}, {"name", true, 0, 100}, {"size", false, 30, 50}, {"id", true, 150, 80}, {"updated_at", false, 0, 240}} {
		want := slices.Clone(all)
		slices.SortFunc(want, func(a, b *basalt.Volume) int {
			ka, kb := store.SortMemberForTest(c.sort, a), store.SortMemberForTest(c.sort, b)
			if c.asc {
				return strings.Compare(ka, kb)
			}
			return strings.Compare(kb, ka)
		})
		want = want[min(c.offset, len(want)):]
		want = want[:min(c.limit, len(want))]
		got, err := st.ListVolumes(ctx, store.VolumeQuery{Sort: c.sort, Asc: c.asc, Offset: c.offset, Limit: c.limit})
		if err != nil {
			t.Fatal(err)
		}
		if g, w := ids(got.Items), ids(want); !slices.Equal(g, w) {
			t.Errorf("all projects, sort %q asc=%v offset %d limit %d:\n got %d %v\nwant %d %v", c.sort, c.asc, c.offset, c.limit,
				len(g), g, len(w), w)
		}
	}
	// The unfiltered listing of the API (VolumePage: newest first), paged with markers and an
	// offset, sees every volume once, in order.
	newest := slices.Clone(all)
	slices.SortFunc(newest, func(a, b *basalt.Volume) int {
		return -strings.Compare(store.SortMemberForTest("", a), store.SortMemberForTest("", b))
	})
	for _, c := range []struct{ offset, limit int }{{0, 100}, {0, 7}, {3, 50}} {
		var got []string
		marker := ""
		for range 100 {
			page, err := st.VolumePage(ctx, "", marker, c.offset, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, ids(page)...)
			marker = page[len(page)-1].ID
		}
		var want []string
		for i, pos := 0, c.offset; pos < len(newest); i++ {
			end := min(pos+c.limit, len(newest))
			want = append(want, ids(newest[pos:end])...)
			pos = end + c.offset
		}
		if !slices.Equal(got, want) {
			t.Errorf("VolumePage of every project, offset %d limit %d, paged:\n got %d %v\nwant %d %v", c.offset, c.limit,
				len(got), got, len(want), want)
		}
	}
}

// TestStatusSortedPages pages through "status=X sorted by another key" with markers, which the
// composite status indexes answer: every page, in both directions, follows the whole listing
// sorted in memory.
func TestStatusSortedPages(t *testing.T) {
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(), nil)
	r := rand.New(rand.NewPCG(5, 6))
	clock := &testClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	var all []*basalt.Volume
	for i := range 300 {
		clock.step(r)
		v := randomVolume(r, fmt.Sprintf("v-%03d", i), clock)
		v.ProjectID = "p"
		if err := st.CreateVolume(ctx, v, nil); err != nil {
			t.Fatal(err)
		}
		all = append(all, v)
	}
	status := all[0].Status
	for _, sort := range []string{"size", "name", "id", "updated_at", "availability_zone"} {
		for _, asc := range []bool{true, false} {
			var want []string
			matching := slices.DeleteFunc(slices.Clone(all), func(v *basalt.Volume) bool { return v.Status != status })
			slices.SortFunc(matching, func(a, b *basalt.Volume) int {
				c := strings.Compare(store.SortMemberForTest(sort, a), store.SortMemberForTest(sort, b))
				if !asc {
					c = -c
				}
				return c
			})
			want = ids(matching)
			var got []string
			marker := ""
			for page := 0; page < 100; page++ {
				res, err := st.ListVolumes(ctx, store.VolumeQuery{Project: "p", Eq: []store.VolumeEq{store.EqStatus(string(status))},
					Match: func(v *basalt.Volume) bool { return v.Status == status }, Exact: true,
					Sort: sort, Asc: asc, Marker: marker, Limit: 7})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Items) == 0 {
					break
				}
				got = append(got, ids(res.Items)...)
				marker = res.Items[len(res.Items)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Errorf("status=%s sort=%s asc=%v in pages of 7:\n got %v\nwant %v", status, sort, asc, got, want)
			}
		}
	}
}
