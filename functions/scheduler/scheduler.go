// Package scheduler decides which pool takes a volume, as Cinder's FilterScheduler does:
// filters reject the pools that cannot take the request, each with a reason in numbers,
// weighers score the rest, and the scores, normalized per weigher, multiplied and summed,
// rank them. It is pure: no I/O, no clock, no shared state; the caller reads the pools'
// capabilities and reserves capacity (see Candidate.Limit). docs/scheduler.md describes the
// arithmetic and every deliberate deviation from Cinder.
package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/basalt-storage/basalt"
)

// Operations a Request may place.
const (
	OpCreateVolume = "create_volume"
	OpExtendVolume = "extend_volume"
)

// A Request is what is being placed.
type Request struct {
	ID        string             // volume or operation id; seeds ChanceWeigher
	SizeGB    int                // requested GiB (for extend: the growth, new - old)
	Zone      string             // the volume's availability zone, "" = any
	Type      *basalt.VolumeType // may be nil (no extra specs)
	Attempted []string           // pools (host@backend#pool) or backends (host@backend) already tried
	Operation string             // OpCreateVolume (also "") or OpExtendVolume
	Attached  bool               // the volume is attached (extend of an in-use volume)
}

// A Filter rejects pools that cannot take a request. Filters read only r and p, do no I/O and
// are safe for concurrent use.
type Filter interface {
	Name() string
	// Fits reports whether p can take r; if not, reason says why, with numbers.
	Fits(r *Request, p *basalt.Pool) (ok bool, reason string)
}

// A Weigher returns a raw value for a pool that passed the filters; the scheduler normalizes
// each weigher's values to [0,1] across candidates (all equal: 0), multiplies by the
// configured multiplier and sums. Weighers are safe for concurrent use.
type Weigher interface {
	Name() string
	Weigh(r *Request, p *basalt.Pool) float64
}

// The built-ins also implement these: they share one parse of the request and of each pool's
// capacity per Place.
type (
	filter interface {
		Filter
		fits(q *query, p *basalt.Pool, v *poolView) (bool, string)
	}
	weigher interface {
		Weigher
		weigh(q *query, p *basalt.Pool, v *poolView) float64
	}
	// adjuster rewrites a weigher's raw values across all candidates before normalization
	// and returns the new minimum and maximum.
	adjuster interface {
		adjust(raw []float64, lo, hi float64) (float64, float64)
	}
)

// query is a Request parsed once. It is read-only once built.
type query struct {
	r           *Request
	extend      bool
	requested   float64  // GiB asked for: the size, or the growth of an extend
	thin        bool     // provisioning:type is not "thick"
	zones       []string // RESKEY:availability_zones
	specs       []spec   // extra specs CapabilitiesFilter checks
	idHash      uint64
	ratio       ratioConfig
	shortSuffix string // " GiB virtual free < N GiB requested"
}

func newQuery(r *Request, g ratioConfig) *query {
	if r == nil {
		r = &Request{}
	}
	q := &query{
		r:         r,
		extend:    r.Operation == OpExtendVolume,
		requested: float64(r.SizeGB),
		thin:      true,
		idHash:    fnv64(r.ID),
		ratio:     g,
	}
	q.shortSuffix = " GiB virtual free < " + num(q.requested) + " GiB requested"
	if t := r.Type; t != nil {
		q.thin = t.ExtraSpecs["provisioning:type"] != "thick"
		q.zones = t.Zones()
		q.specs = compileSpecs(t)
	}
	return q
}

// poolView is what one Place learns of one pool: its capacity report, parsed on first use.
// It holds no pointers.
type poolView struct {
	parsed, factored bool
	c                capacity
	fs               factors // c.capacityFactors(q.thin, c.ratio)
}

func (v *poolView) capacity(q *query, p *basalt.Pool) *capacity {
	if !v.parsed {
		v.c = readCapacity(p.Capabilities, q.ratio)
		v.parsed = true
	}
	return &v.c
}

// factors returns the capacity factors of the request's provisioning type. Filter and
// weigher use the same: the pool's ratio applies only on the thin path, where CapacityFilter
// passes the pool's ratio too.
func (v *poolView) factors(q *query, p *basalt.Pool) factors {
	if !v.factored {
		c := v.capacity(q, p)
		v.fs = c.capacityFactors(q.thin, c.ratio)
		v.factored = true
	}
	return v.fs
}

// DefaultFilters returns Cinder's scheduler_default_filters: AvailabilityZoneFilter,
// CapacityFilter, CapabilitiesFilter.
func DefaultFilters() []string {
	return []string{"AvailabilityZoneFilter", "CapacityFilter", "CapabilitiesFilter"}
}

// DefaultWeighers returns Cinder's scheduler_default_weighers: CapacityWeigher.
func DefaultWeighers() []string { return []string{"CapacityWeigher"} }

// DefaultMultiplier returns the default multiplier of the named built-in weigher: 1 for
// CapacityWeigher and ChanceWeigher, -1 for AllocatedCapacityWeigher and
// VolumeNumberWeigher; 1 for any other name.
func DefaultMultiplier(weigher string) float64 {
	switch weigher {
	case "AllocatedCapacityWeigher", "VolumeNumberWeigher":
		return -1
	}
	return 1
}

// Config selects and tunes the filters and weighers.
type Config struct {
	// Filters names the filters, run in this order; nil means DefaultFilters(), an empty
	// non-nil slice none. RetryFilter is an alias of IgnoreAttemptedHostsFilter.
	Filters []string
	// Weighers names the weighers; nil means DefaultWeighers(), an empty non-nil slice none.
	Weighers []string
	// Multipliers sets weighers' multipliers by name; unset ones take DefaultMultiplier.
	Multipliers map[string]float64
	// MaxOverSubscriptionRatio is the global ratio for thin pools that report none (or 0);
	// 0 means DefaultMaxOverSubscriptionRatio (20).
	MaxOverSubscriptionRatio float64
	// AutoOverSubscription makes the global ratio "auto" (MaxOverSubscriptionRatio is then
	// ignored): 1 + provisioned/(total - free + 1), or 20 while nothing is provisioned.
	AutoOverSubscription bool
	// OmitWeights leaves Candidate.Weights nil (Weight still holds the sum), saving a map per
	// candidate: about a third of Place's time on thousands of pools.
	OmitWeights bool
}

// setDefaults fills unset fields; it copies what it changes, never the caller's slices or map.
func (c *Config) setDefaults() {
	if c.Filters == nil {
		c.Filters = DefaultFilters()
	}
	if c.Weighers == nil {
		c.Weighers = DefaultWeighers()
	}
	m := make(map[string]float64, len(c.Weighers))
	for _, w := range c.Weighers {
		m[w] = DefaultMultiplier(w)
	}
	for k, v := range c.Multipliers {
		m[k] = v
	}
	c.Multipliers = m
	if c.MaxOverSubscriptionRatio == 0 {
		c.MaxOverSubscriptionRatio = DefaultMaxOverSubscriptionRatio
	}
}

// Validate reports every problem with c: unknown or repeated filter and weigher names,
// multipliers for unknown weighers or not finite, a negative or non-finite ratio.
func (c *Config) Validate() error {
	var errs []error
	fs, ws := builtinFilters(c), builtinWeighers(c)
	seen := map[string]bool{} // canonical filter names
	for _, name := range c.Filters {
		if _, ok := fs[name]; !ok {
			errs = append(errs, fmt.Errorf("unknown scheduler filter %q", name))
		} else if seen[canonical(name)] {
			errs = append(errs, fmt.Errorf("scheduler filter %q listed twice", name))
		}
		seen[canonical(name)] = true
	}
	seenW := map[string]bool{}
	for _, name := range c.Weighers {
		if _, ok := ws[name]; !ok {
			errs = append(errs, fmt.Errorf("unknown scheduler weigher %q", name))
		} else if seenW[name] {
			errs = append(errs, fmt.Errorf("scheduler weigher %q listed twice", name))
		}
		seenW[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(c.Multipliers)) {
		v := c.Multipliers[name]
		if _, ok := ws[name]; !ok {
			errs = append(errs, fmt.Errorf("multiplier for unknown scheduler weigher %q", name))
		} else if math.IsNaN(v) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("multiplier of %s is %v", name, v))
		}
	}
	if r := c.MaxOverSubscriptionRatio; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		errs = append(errs, fmt.Errorf("max over-subscription ratio %v is not a finite number >= 0", r))
	}
	return errors.Join(errs...)
}

// canonical resolves an alias to the name the filter reports.
func canonical(name string) string {
	if name == "RetryFilter" {
		return "IgnoreAttemptedHostsFilter"
	}
	return name
}

// builtinFilters is the registry of filters Config may name.
func builtinFilters(c *Config) map[string]filter {
	ignore := IgnoreAttemptedHostsFilter{}
	return map[string]filter{
		"AvailabilityZoneFilter":     AvailabilityZoneFilter{},
		"CapacityFilter":             CapacityFilter{c.MaxOverSubscriptionRatio, c.AutoOverSubscription},
		"CapabilitiesFilter":         CapabilitiesFilter{},
		"IgnoreAttemptedHostsFilter": ignore,
		"RetryFilter":                ignore, // Cinder's entry-point name for it
	}
}

// builtinWeighers is the registry of weighers Config may name.
func builtinWeighers(c *Config) map[string]weigher {
	capMult, ok := c.Multipliers["CapacityWeigher"]
	if !ok {
		capMult = DefaultMultiplier("CapacityWeigher")
	}
	return map[string]weigher{
		"CapacityWeigher":          CapacityWeigher{capMult, c.MaxOverSubscriptionRatio, c.AutoOverSubscription},
		"AllocatedCapacityWeigher": AllocatedCapacityWeigher{},
		"VolumeNumberWeigher":      VolumeNumberWeigher{},
		"ChanceWeigher":            ChanceWeigher{},
	}
}

// A Scheduler places requests on pools. It holds no state beyond its configuration and
// reusable scratch memory, and is safe for concurrent use.
type Scheduler struct {
	filters  []filter
	weighers []weigher
	names    []string  // weigher names, in order
	mult     []float64 // weigher multipliers, in order
	capacity *CapacityFilter
	ratio    ratioConfig
	omit     bool      // Config.OmitWeights
	scratch  sync.Pool // of *scratch
	// chunk is the fewest pools worth a goroutine of their own, workers the most
	// goroutines (0: GOMAXPROCS). Tests change them.
	chunk, workers int
}

// New returns a Scheduler for cfg, defaults filled. It returns an error naming every unknown
// filter or weigher and every invalid setting.
func New(cfg Config) (*Scheduler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scheduler config: %w", err)
	}
	s := &Scheduler{
		ratio: ratioConfig{cfg.MaxOverSubscriptionRatio, cfg.AutoOverSubscription},
		omit:  cfg.OmitWeights,
		chunk: defaultChunk,
	}
	fs, ws := builtinFilters(&cfg), builtinWeighers(&cfg)
	for _, name := range cfg.Filters {
		f := fs[name]
		if cf, ok := f.(CapacityFilter); ok {
			s.capacity = &cf
		}
		s.filters = append(s.filters, f)
	}
	for _, name := range cfg.Weighers {
		s.weighers = append(s.weighers, ws[name])
		s.names = append(s.names, name)
		s.mult = append(s.mult, cfg.Multipliers[name])
	}
	return s, nil
}

// A Decision is the outcome of Place: every pool is either ranked or rejected.
type Decision struct {
	Ranked   []Candidate // pools that passed every filter, best first; ties keep input order
	Rejected []Rejection // pools a filter rejected, in input order
	weighers []string    // weigher names in configured order, for Explain
}

// A Candidate is a pool that passed every filter.
type Candidate struct {
	Pool    *basalt.Pool       // points into the slice given to Place
	Weight  float64            // sum of Weights
	Weights map[string]float64 // per weigher: normalized raw value times multiplier
	// Limit is the largest provisioned_capacity_gb the pool may reach after taking the
	// request: reserve atomically with ledger + size <= Limit, where the ledger starts at
	// the reported provisioned capacity. It is provisioned + virtual free from the same
	// factors as CapacityFilter (thin: at most max_over_subscription_ratio times the total
	// available; thick: provisioned + min(available - provisioned, free)), never below
	// provisioned + size. +Inf when free or total is infinite/unknown, when the request is
	// for 0 GiB, or when CapacityFilter is not configured.
	Limit float64
}

// A Rejection says which filter rejected a pool and why.
type Rejection struct {
	Pool   string // host@backend#pool
	Filter string // the filter's Name
	Reason string // with numbers: "3.34 GiB virtual free < 5 GiB requested"
}

// Best returns the top candidate, or nil when every pool was rejected.
func (d *Decision) Best() *Candidate {
	if len(d.Ranked) == 0 {
		return nil
	}
	return &d.Ranked[0]
}

// defaultChunk is the fewest pools worth a goroutine of their own: from 2*defaultChunk pools
// on, Place spreads its work over up to GOMAXPROCS goroutines, all finished before it
// returns.
const defaultChunk = 1024

// scratch is one Place's working memory, reused across calls. It holds no pointers.
type scratch struct {
	views   []poolView
	idx     []int32   // candidates' indices in pools
	raw     []float64 // raw values, per pool and weigher
	cand    []float64 // one weigher's raw values, per candidate
	total   []float64 // weights, per candidate
	contrib []float64 // contrib[j*k+w]: weigher w's share of candidate j's weight
	order   []rank
	tmp     []rank
}

// rank is a candidate's weight and index, for sorting.
type rank struct {
	w float64
	j int32
}

// byRank orders by descending weight, then ascending index: Python's stable
// sorted(reverse=True) on the weight.
func byRank(a, b rank) int {
	switch {
	case a.w > b.w:
		return -1
	case a.w < b.w:
		return 1
	}
	return cmp.Compare(a.j, b.j)
}

// grow returns s resized to n, reusing its memory when it can.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// parallel calls fn on [0,n) split into up to workers contiguous parts, the first on the
// calling goroutine, and returns when all are done.
func parallel(n, workers int, fn func(part, lo, hi int)) {
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(func() { fn(w, n*w/workers, n*(w+1)/workers) })
	}
	fn(0, 0, n/workers)
	wg.Wait()
}

func (s *Scheduler) workersFor(n int) int {
	most := s.workers
	if most <= 0 {
		most = runtime.GOMAXPROCS(0)
	}
	return max(1, min(most, n/s.chunk))
}

// Place runs the filters over pools, in order, then weighs and ranks the pools that passed.
// A nil r is an empty request. The Decision's candidates point into pools, which must not
// change while it is in use. Place does no I/O and is safe for concurrent use; on large pool
// sets it uses several goroutines, all finished when it returns.
func (s *Scheduler) Place(r *Request, pools []basalt.Pool) *Decision {
	q := newQuery(r, s.ratio)
	d := &Decision{weighers: s.names}
	sc, _ := s.scratch.Get().(*scratch)
	if sc == nil {
		sc = new(scratch)
	}
	defer s.scratch.Put(sc)

	// Filter every pool (in order, until a filter rejects it) and weigh those that pass, in
	// contiguous parts of the pool slice.
	views := grow(sc.views, len(pools))
	clear(views)
	sc.views = views
	idx := grow(sc.idx, len(pools))
	sc.idx = idx
	k := len(s.weighers)
	rawByPool := grow(sc.raw, len(pools)*k) // rawByPool[i*k+w]: weigher w's raw value of pool i
	sc.raw = rawByPool
	workers := s.workersFor(len(pools))
	counts := make([]int, workers)
	rejected := make([][]Rejection, workers)
	parallel(len(pools), workers, func(part, lo, hi int) {
		n := lo // passing pools of this part go to idx[lo:], in order
		var rej []Rejection
	pools:
		for i := lo; i < hi; i++ {
			p, v := &pools[i], &views[i]
			for _, f := range s.filters {
				if pass, why := f.fits(q, p, v); !pass {
					rej = append(rej, Rejection{Pool: p.Name, Filter: f.Name(), Reason: why})
					continue pools
				}
			}
			for w, wg := range s.weighers {
				rawByPool[i*k+w] = wg.weigh(q, p, v)
			}
			idx[n] = int32(i)
			n++
		}
		counts[part], rejected[part] = n-lo, rej
	})
	n := 0
	for part := range workers {
		lo := len(pools) * part / workers
		n += copy(idx[n:], idx[lo:lo+counts[part]])
		if d.Rejected == nil {
			d.Rejected = rejected[part]
		} else {
			d.Rejected = append(d.Rejected, rejected[part]...)
		}
	}
	if n == 0 {
		return d
	}
	idx = idx[:n]

	// Normalize each weigher's values across candidates, multiply and sum.
	raw := grow(sc.cand, n)
	total := grow(sc.total, n)
	contrib := grow(sc.contrib, n*k)
	sc.cand, sc.total, sc.contrib = raw, total, contrib
	clear(total)
	for w, wg := range s.weighers {
		for j, i := range idx {
			raw[j] = rawByPool[int(i)*k+w]
		}
		lo, hi := raw[0], raw[0]
		for _, x := range raw[1:] {
			if x < lo {
				lo = x
			} else if x > hi {
				hi = x
			}
		}
		if a, ok := wg.(adjuster); ok {
			lo, hi = a.adjust(raw, lo, hi)
		}
		m, span := s.mult[w], hi-lo
		for j, x := range raw {
			var c float64 // all equal: 0
			if lo != hi {
				c = float64(m * ((x - lo) / span))
			}
			contrib[j*k+w] = c
			total[j] += c
		}
	}

	// Rank: descending weight, ties in input order.
	order := grow(sc.order, n)
	sc.order = order
	for j := range order {
		order[j] = rank{total[j], int32(j)}
	}
	workers = s.workersFor(n)
	if workers > 1 {
		parallel(n, workers, func(_, lo, hi int) { slices.SortFunc(order[lo:hi], byRank) })
		sc.tmp = grow(sc.tmp, n)
		order = mergeRuns(order, sc.tmp, workers)
	} else {
		slices.SortFunc(order, byRank)
	}

	d.Ranked = make([]Candidate, n)
	parallel(n, workers, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			j := order[r].j
			i := idx[j]
			c := Candidate{Pool: &pools[i], Weight: total[j], Limit: math.Inf(1)}
			if !s.omit {
				c.Weights = make(map[string]float64, k)
				for w, name := range s.names {
					c.Weights[name] = contrib[int(j)*k+w]
				}
			}
			if s.capacity != nil {
				c.Limit = s.capacity.limit(q, &pools[i], &views[i])
			}
			d.Ranked[r] = c
		}
	})
	return d
}

// mergeRuns merges the parts runs of a (split as parallel splits) and returns the sorted
// slice, which is a or tmp.
func mergeRuns(a, tmp []rank, parts int) []rank {
	n := len(a)
	bounds := make([]int, parts+1)
	for p := range bounds {
		bounds[p] = n * p / parts
	}
	for len(bounds) > 2 {
		next := bounds[:0:0]
		for p := 0; p+1 < len(bounds); p += 2 {
			lo := bounds[p]
			if p+2 >= len(bounds) { // odd run out: copy
				copy(tmp[lo:], a[lo:bounds[p+1]])
				next = append(next, lo)
				continue
			}
			mid, hi := bounds[p+1], bounds[p+2]
			merge(tmp[lo:hi], a[lo:mid], a[mid:hi])
			next = append(next, lo)
		}
		next = append(next, n)
		bounds = next
		a, tmp = tmp, a
	}
	return a
}

// merge merges the sorted x and y into dst.
func merge(dst, x, y []rank) {
	i, j, k := 0, 0, 0
	for i < len(x) && j < len(y) {
		if byRank(y[j], x[i]) < 0 {
			dst[k] = y[j]
			j++
		} else {
			dst[k] = x[i]
			i++
		}
		k++
	}
	k += copy(dst[k:], x[i:])
	copy(dst[k:], y[j:])
}

// Explain returns one line per pool: the candidates best first with their weights and limit,
// then the rejected pools with the filter that rejected them and why:
//
//	block1@lvmdriver-b1#pool: rank 1, weight 1 (CapacityWeigher 1), limit 19000 GiB
//	block2@lvmdriver-b21#pool: CapacityFilter: 3.34 GiB virtual free < 5 GiB requested
func (d *Decision) Explain() string {
	var b strings.Builder
	for i, c := range d.Ranked {
		name := "?"
		if c.Pool != nil {
			name = c.Pool.Name
		}
		fmt.Fprintf(&b, "%s: rank %d, weight %s", name, i+1, weight(c.Weight))
		names := d.weighers
		if names == nil || c.Weights == nil {
			names = slices.Sorted(maps.Keys(c.Weights))
		}
		if len(names) > 0 {
			b.WriteString(" (")
			for j, n := range names {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(n + " " + weight(c.Weights[n]))
			}
			b.WriteString(")")
		}
		if math.IsInf(c.Limit, 1) {
			b.WriteString(", no limit\n")
		} else {
			b.WriteString(", limit " + num(c.Limit) + " GiB\n")
		}
	}
	for _, r := range d.Rejected {
		fmt.Fprintf(&b, "%s: %s: %s\n", r.Pool, r.Filter, r.Reason)
	}
	return b.String()
}

// weight formats a weight with six significant digits.
func weight(w float64) string { return strconv.FormatFloat(w, 'g', 6, 64) }
