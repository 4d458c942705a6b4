package placement

import (
	"context"
	"sort"
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

	mu   sync.RWMutex // readers: PlaceSet, Rank and their Decisions and Rankings; writer: Consume and swaps
	snap *poolSnap

	// What is known of the backends, kept up to date by incremental reads (store.BackendsChanged)
	// and read whole every fullEvery; guarded by loadMu, which serializes loads.
	loadMu    sync.Mutex
	backends  map[string]*store.FeedBackend
	cursor    time.Time // store time from which the next incremental read looks
	lastFull  time.Time // monotonic
	fullEvery time.Duration
	version   int64 // services version of the backends' disabled flags
	fulls     atomic.Int64

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
		maxStale: 2 * refresh, fullEvery: 30 * time.Second}
}

// read calls fn with the prepared set and its pools, under the cache's read lock: fn may rank
// on the set and use the Decisions, Rankings and pools it gets until it returns, and must not
// keep them.
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
		if err := c.load(ctx, now); err != nil {
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
	if err := c.load(ctx, time.Now()); err != nil {
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

// feedMargin is how far back an incremental read looks before the previous one began: wider
// than the clock skew between the hosts that write heartbeats and reports.
const feedMargin = 2 * time.Second

// load brings the backends up to date from Redis (incrementally: the heartbeats and reports
// written since the last load; whole on the first load, after an administrative change and
// every fullEvery), prepares the pools of those up and enabled, with the ledger's figures, and
// makes them the current set.
//
// A placement that needs a set read after asked (its own time.Now(); zero for the background
// read) waits for the load under way, if one runs, and does not load again when a load that
// began after asked has made its set current meanwhile: when the set goes stale under a burst,
// the placements waiting for it share one read of Redis instead of reading it one after the
// other (each decoding again every report written in the last feedMargin).
func (c *poolCache) load(ctx context.Context, asked time.Time) error {
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	if !asked.IsZero() {
		c.mu.RLock()
		snap := c.snap
		c.mu.RUnlock()
		if snap != nil && !snap.at.Before(asked) {
			return nil
		}
	}
	at := time.Now()
	c.reads.Add(1)
	version, err := c.st.ServicesVersion(ctx) // before the pools: a change after it is seen next time
	if err != nil {
		return err
	}
	storeNow := c.st.Now()
	if c.backends == nil || version != c.version || at.Sub(c.lastFull) > c.fullEvery {
		all, err := c.st.Backends(ctx, c.backends)
		if err != nil {
			return err
		}
		c.backends, c.version, c.lastFull, c.cursor = all, version, at, storeNow.Add(-feedMargin)
		c.fulls.Add(1)
	} else {
		changed, err := c.st.BackendsChanged(ctx, c.cursor, c.backends)
		if err != nil {
			return err
		}
		for host, ch := range changed {
			b := c.backends[host]
			if b == nil {
				b = &store.FeedBackend{} // a new backend: it was never disabled
				c.backends[host] = b
			}
			if ch.Beat.After(b.Beat) {
				b.Beat = ch.Beat
			}
			if ch.Report != "" && ch.Report != b.Report {
				b.Report, b.Pools = ch.Report, ch.Pools
			}
		}
		c.cursor = storeNow.Add(-feedMargin)
	}
	var pools []basalt.Pool
	validUntil := storeNow.Add(c.downTime)
	for _, b := range c.backends {
		if b.Disabled || storeNow.Sub(b.Beat) > c.downTime || len(b.Pools) == 0 {
			continue
		}
		pools = append(pools, b.Pools...)
		if until := b.Beat.Add(c.downTime); until.Before(validUntil) {
			validUntil = until
		}
	}
	// In the order store.Pools gives (by service), so that ties rank as they do there.
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	pools, err = c.st.WithLedger(ctx, pools)
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
		_ = c.load(ctx, time.Time{}) // a failure leaves the set as it is; the next placement tries again
	}()
}

// close waits for a background load in flight and starts no more.
func (c *poolCache) close() {
	c.bg.Lock()
	c.closed = true
	c.bg.Unlock()
	c.wg.Wait()
}
