package placement

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
)

// cacheWorld is a pool cache over a real redis-server where backends b1 and b2 of host h
// heartbeat and report one 100 GB pool each, on a settable store clock.
type cacheWorld struct {
	st    *store.Store
	pres  *events.Presence
	cache *poolCache
	mu    sync.Mutex
	now   time.Time
}

func (w *cacheWorld) clock() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.now }
func (w *cacheWorld) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

func newCacheWorld(t *testing.T, refresh time.Duration) *cacheWorld {
	t.Helper()
	rdb := redistest.Start(t).Client()
	w := &cacheWorld{now: time.Now()}
	w.st = store.New(rdb, w.clock)
	w.pres = events.NewPresence(rdb, w.clock)
	sched, err := scheduler.New(scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	w.cache = newPoolCache(w.st, sched, time.Minute, refresh)
	t.Cleanup(w.cache.close)
	for _, b := range []string{"h@b1", "h@b2"} {
		w.beat(t, b)
		w.report(t, b, 100)
	}
	return w
}

func (w *cacheWorld) beat(t *testing.T, backend string) {
	t.Helper()
	if err := w.pres.Heartbeat(context.Background(), basalt.BinaryVolume, backend, "nova", 0); err != nil {
		t.Fatal(err)
	}
}

func (w *cacheWorld) report(t *testing.T, backend string, free float64) {
	t.Helper()
	err := w.pres.Report(context.Background(), events.CapabilityReport{Backend: backend, Zone: "nova",
		Pools: []basalt.Capabilities{{"pool_name": "pool", "total_capacity_gb": 100.0, "free_capacity_gb": free,
			"reserved_percentage": 0.0}}})
	if err != nil {
		t.Fatal(err)
	}
}

// names returns the pools the cache ranks on now.
func (w *cacheWorld) names(t *testing.T) []string {
	t.Helper()
	var out []string
	if err := w.cache.read(context.Background(), func(_ *scheduler.PoolSet, pools []basalt.Pool) error {
		for _, p := range pools {
			out = append(out, p.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPoolCacheReadsRedisOncePerRefresh: placements rank on the prepared set without reading the
// pools again until it is older than the refresh interval; an administrator's disable counts at
// the next placement, and so does a backend whose heartbeat is older than the down time.
func TestPoolCacheReadsRedisOncePerRefresh(t *testing.T) {
	w := newCacheWorld(t, time.Hour)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if got := w.names(t); len(got) != 2 {
			t.Fatalf("pools = %v, want both backends' pools", got)
		}
	}
	if n := w.cache.reads.Load(); n != 1 {
		t.Fatalf("100 placements read the pools %d times, want once", n)
	}

	reason := "maintenance"
	if err := w.st.SetServiceDisabled(ctx, basalt.BinaryVolume, "h@b1", true, &reason); err != nil {
		t.Fatal(err)
	}
	if got := w.names(t); len(got) != 1 || got[0] != "h@b2#pool" {
		t.Fatalf("pools after disabling h@b1 = %v, want only h@b2#pool", got)
	}

	// h@b2 keeps heartbeating, the re-enabled h@b1 does not: past the down time it is gone.
	if err := w.st.SetServiceDisabled(ctx, basalt.BinaryVolume, "h@b1", false, nil); err != nil {
		t.Fatal(err)
	}
	if got := w.names(t); len(got) != 2 {
		t.Fatalf("pools after enabling h@b1 = %v, want both", got)
	}
	w.advance(45 * time.Second)
	w.beat(t, "h@b2")
	w.advance(30 * time.Second)
	if got := w.names(t); len(got) != 1 || got[0] != "h@b2#pool" {
		t.Fatalf("pools once h@b1's heartbeat is 75 s old = %v, want only h@b2#pool", got)
	}
	if n := w.cache.reads.Load(); n != 4 {
		t.Errorf("reads = %d, want 4 (first, disable, enable, a backend down)", n)
	}
	if n := w.cache.fulls.Load(); n != 3 {
		t.Errorf("whole reads = %d, want 3 (first, disable, enable): a backend going down is an incremental read", n)
	}
}

// TestPoolCacheRefreshesInTheBackground: once the set is older than the refresh interval, the
// next placement still ranks at once on the set it has, while a new report is read in the
// background for the placements after it.
func TestPoolCacheRefreshesInTheBackground(t *testing.T) {
	w := newCacheWorld(t, time.Second)
	free := func() float64 {
		var f float64
		_ = w.cache.read(context.Background(), func(_ *scheduler.PoolSet, pools []basalt.Pool) error {
			for _, p := range pools {
				if p.Name == "h@b1#pool" {
					f, _ = p.Capabilities["free_capacity_gb"].(float64)
				}
			}
			return nil
		})
		return f
	}
	if f := free(); f != 100 {
		t.Fatalf("free = %v, want 100", f)
	}
	w.report(t, "h@b1", 60)
	time.Sleep(1100 * time.Millisecond) // older than the refresh interval, younger than twice it
	if f := free(); f != 100 {
		t.Fatalf("free right after the interval = %v, want the set it had (100) while it reads again", f)
	}
	deadline := time.Now().Add(5 * time.Second)
	for free() != 60 {
		if time.Now().After(deadline) {
			t.Fatal("the new report never reached the set")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A backend that starts heartbeating and reporting joins the set, read incrementally.
	w.beat(t, "g@b3")
	w.report(t, "g@b3", 10)
	deadline = time.Now().Add(5 * time.Second)
	for len(w.names(t)) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the new backend never joined: %v", w.names(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := w.cache.fulls.Load(); n != 1 {
		t.Errorf("whole reads = %d, want 1: reports and new backends are read incrementally", n)
	}
}

// TestPoolCacheStalePlacementsShareOneRead: placements that find the set stale at the same
// time (here after an administrative change) wait for one read of the pools and all rank on
// it, instead of reading Redis one after the other.
func TestPoolCacheStalePlacementsShareOneRead(t *testing.T) {
	w := newCacheWorld(t, time.Hour)
	w.names(t)
	reason := "maintenance"
	if err := w.st.SetServiceDisabled(context.Background(), basalt.BinaryVolume, "h@b1", true, &reason); err != nil {
		t.Fatal(err)
	}
	w.cache.loadMu.Lock() // a read under way
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got := w.names(t); len(got) != 1 || got[0] != "h@b2#pool" {
				t.Errorf("pools after disabling h@b1 = %v, want only h@b2#pool", got)
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // all eight wait for it
	w.cache.loadMu.Unlock()
	wg.Wait()
	if n := w.cache.reads.Load(); n != 2 {
		t.Errorf("reads = %d, want 2: the first, and one for the eight placements after the change", n)
	}
}
