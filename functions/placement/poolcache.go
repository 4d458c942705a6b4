package placement

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
)

// poolCache keeps the pools of the up, enabled backends that report, prepared for placement
// (a scheduler.PoolSet), so that a placement reads no report from Redis: it ranks the prepared
// set, reserves on Redis's ledger (the single source of truth, so no replica can over-commit a
// pool whatever its cache holds), and then counts the volume in its own set as Cinder's host
// manager does (PoolSet.Consume), so that consecutive placements spread.
//
// The set is read again from Redis (reports, heartbeats, administrative state and the ledger,
// which carries every replica's reservations) once it is older than refresh: in the background
// while placements keep coming (they use the set they have meanwhile), in the foreground when
// it is older than twice that (the first placement after a quiet spell, or background reads
// that keep failing). So a report, a backend going down or being disabled, and other replicas'
// reservations reach the ranking within about refresh, and a quiet scheduler never ranks on
// an old set.
type poolCache struct {
	st       *store.Store
	sched    *scheduler.Scheduler
	downTime time.Duration
	refresh  time.Duration
	maxStale time.Duration

	mu   sync.RWMutex // readers: PlaceSet and its Decision; writer: Consume and swaps
	snap *poolSnap

	reading atomic.Bool    // a background read is in flight
	bg      sync.Mutex     // orders starting a background read with close
	wg      sync.WaitGroup // the background read; close waits for it
	closed  bool           // guarded by bg
	reads   atomic.Int64   // reads of the pools from Redis, for tests
}

// poolSnap is one read of the pools, prepared.
type poolSnap struct {
	set        *scheduler.PoolSet
	pools      []basalt.Pool
	at         time.Time // when it was read (monotonic)
	validUntil time.Time // store time at which one of its backends goes down without a heartbeat
	version    int64     // store.ServicesVersion when it was read
}

func newPoolCache(st *store.Store, sched *scheduler.Scheduler, downTime, refresh time.Duration) *poolCache {
	if refresh <= 0 {
		refresh = time.Second
	}
	return &poolCache{st: st, sched: sched, downTime: downTime, refresh: refresh,
		maxStale: 2 * refresh}
}

// read calls fn with the prepared set and its pools, under the cache's read lock: fn may rank
// on the set and use the Decisions and pools it gets until it returns, and must not keep them.
func (c *poolCache) read(ctx context.Context, fn func(set *scheduler.PoolSet, pools []basalt.Pool) error) error {
	// One small read per placement: an administrator's enable or disable counts at once.
	version, err := c.st.ServicesVersion(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	c.mu.RLock()
	snap := c.snap
	c.mu.RUnlock()
	switch {
	case snap == nil || snap.version != version || now.Sub(snap.at) > c.maxStale || c.st.Now().After(snap.validUntil):
		// No set, an administrative change, a quiet spell, or a backend of the set that is
		// down by now: read before placing.
		if err := c.load(ctx); err != nil {
			return err
		}
	case now.Sub(snap.at) > c.refresh:
		c.loadInBackground()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return fn(c.snap.set, c.snap.pools)
}

// readFresh is read on a set read from Redis now.
func (c *poolCache) readFresh(ctx context.Context, fn func(set *scheduler.PoolSet, pools []basalt.Pool) error) error {
	if err := c.load(ctx); err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return fn(c.snap.set, c.snap.pools)
}

// consume counts a volume of sizeGB placed on pool in the current set.
func (c *poolCache) consume(pool string, sizeGB int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil {
		c.snap.set.Consume(pool, float64(sizeGB))
	}
}

// load reads the pools from Redis, prepares them and makes them the current set.
func (c *poolCache) load(ctx context.Context) error {
	at := time.Now()
	c.reads.Add(1)
	version, err := c.st.ServicesVersion(ctx) // before the pools: a change after it is seen next time
	if err != nil {
		return err
	}
	pools, validUntil, err := c.st.PoolSnapshot(ctx, c.st.Now(), c.downTime)
	if err != nil {
		return err
	}
	set := c.sched.Prepare(pools)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap == nil || c.snap.at.Before(at) {
		c.snap = &poolSnap{set: set, pools: pools, at: at, validUntil: validUntil, version: version}
	}
	return nil
}

// loadInBackground starts a load unless one runs or the cache is closed.
func (c *poolCache) loadInBackground() {
	c.bg.Lock()
	defer c.bg.Unlock()
	if c.closed || !c.reading.CompareAndSwap(false, true) {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.reading.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), c.refresh*5)
		defer cancel()
		_ = c.load(ctx) // a failure leaves the set as it is; the next placement tries again
	}()
}

// close waits for a background load in flight and starts no more.
func (c *poolCache) close() {
	c.bg.Lock()
	c.closed = true
	c.bg.Unlock()
	c.wg.Wait()
}
