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

// The built-ins also implement these: they read the pools of a PoolSet, prepared once, by
// index, and format a rejection's reason only when it is asked for.
type (
	filter interface {
		Filter
		// pass reports whether pool i of q's set can take the request. It formats nothing.
		pass(q *query, i int) bool
		// why says, with numbers, why pass rejected pool i.
		why(q *query, i int) string
	}
	weigher interface {
		Weigher
		weigh(q *query, i int) float64
	}
	// adjuster rewrites a weigher's raw values across all candidates before normalization
	// and returns the new minimum and maximum.
	adjuster interface {
		adjust(raw []float64, lo, hi float64) (float64, float64)
	}
)

// query is a Request parsed once, bound to the PoolSet it is placed on. It is read-only once
// built.
type query struct {
	r         *Request
	extend    bool
	requested float64  // GiB asked for: the size, or the growth of an extend
	thin      bool     // provisioning:type is not "thick"
	zones     []string // RESKEY:availability_zones
	specs     []spec   // extra specs CapabilitiesFilter checks
	verdicts  [][]bool // per spec: whether each distinct value of its column matches
	idHash    uint64
	ratio     ratioConfig
	attempted []attempt // Request.Attempted

	// Set by bind.
	set       *PoolSet
	cols      []*column // per spec: the capability values it compares
	onlineExt *column   // online_extend_support, for the extend of an attached volume
	zoneOK    []bool    // per zone of the set: AvailabilityZoneFilter passes it
}

// attempt is an entry of Request.Attempted.
type attempt struct {
	name    string
	backend bool // names a backend (no '#'): all its pools
}

func newQuery(r *Request, g ratioConfig) *query {
	rc := new(Request) // a copy: a Decision formats its reasons later
	if r != nil {
		*rc = *r
	}
	r = rc
	q := &query{
		r:         r,
		extend:    r.Operation == OpExtendVolume,
		requested: float64(r.SizeGB),
		thin:      true,
		idHash:    fnv64(r.ID),
		ratio:     g,
	}
	if t := r.Type; t != nil {
		q.thin = t.ExtraSpecs["provisioning:type"] != "thick"
		q.zones = t.Zones()
		q.specs = compileSpecs(t)
	}
	if len(r.Attempted) > 0 {
		q.attempted = make([]attempt, len(r.Attempted))
		for i, a := range r.Attempted {
			q.attempted[i] = attempt{a, !strings.Contains(a, "#")}
		}
	}
	return q
}

// bind resolves what the request reads of set once: the capability columns of its specs and
// which of the set's zones it accepts.
func (q *query) bind(set *PoolSet) {
	q.set = set
	if len(q.specs) > 0 {
		q.cols = make([]*column, len(q.specs))
		q.verdicts = make([][]bool, len(q.specs))
		for j := range q.specs {
			sp := &q.specs[j]
			c := set.column(sp.col, sp.path)
			q.cols[j] = c
			// Each different value of the column is judged once.
			v := make([]bool, len(c.distinct))
			for k, val := range c.distinct {
				_, absent := val.(absentT)
				v[k] = !absent && sp.matchAny(val)
			}
			q.verdicts[j] = v
		}
	}
	if q.extend && q.r.Attached {
		q.onlineExt = set.column(onlineExtCol.key, onlineExtCol.path)
	}
	q.zoneOK = make([]bool, len(set.zones))
	for z, zone := range set.zones {
		q.zoneOK[z] = q.zoneFits(zone)
	}
}

// columns returns the capability columns bind will ask for.
func (q *query) columns() []colSpec {
	var cols []colSpec
	for j := range q.specs {
		cols = append(cols, colSpec{q.specs[j].col, q.specs[j].path})
	}
	if q.extend && q.r.Attached {
		cols = append(cols, onlineExtCol)
	}
	return cols
}

// onlineExtCol is the column of online_extend_support.
var onlineExtCol = colSpec{colKey{path: keyOnlineExt}, []string{keyOnlineExt}}

// bindOne prepares p alone and binds q to it, for the built-ins' Fits and Weigh.
func (q *query) bindOne(p *basalt.Pool) *query {
	q.bind(prepareOne(p, q.ratio))
	return q
}

// fitsOne runs f on p alone.
func fitsOne(f filter, q *query, p *basalt.Pool) (bool, string) {
	q.bindOne(p)
	if f.pass(q, 0) {
		return true, ""
	}
	return false, f.why(q, 0)
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
	// OmitWeights leaves Candidate.Weights nil (Weight still holds the sum), saving Place a
	// map per candidate, about a third of its time on thousands of pools; PlaceSet then keeps
	// no per-weigher weights either (CandidateWeights returns nil, Explain shows the sum).
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
	need     prep      // what Prepare extracts for these weighers
	omit     bool      // Config.OmitWeights
	scratch  sync.Pool // of *scratch
	sets     sync.Pool // of *PoolSet, Place's
	// chunk is the fewest pools worth a goroutine of their own, workers the most
	// goroutines (0: GOMAXPROCS). Tests change them.
	chunk, workers int
	exit           earlyExit // how Rank may exit early
	spec           orderSpec // the order it walks, with exitOrder (thin set per request)
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
		switch name {
		case "AllocatedCapacityWeigher":
			s.need |= prepAllocated
		case "VolumeNumberWeigher":
			s.need |= prepVolumes
		case "ChanceWeigher":
			s.need |= prepNameHash
		}
		s.weighers = append(s.weighers, ws[name])
		s.names = append(s.names, name)
		s.mult = append(s.mult, cfg.Multipliers[name])
	}
	s.exit, s.spec = s.earlyExitOf()
	return s, nil
}

// A Decision is the outcome of Place or PlaceSet: every pool is either ranked or rejected.
type Decision struct {
	Ranked []Candidate // pools that passed every filter, best first; ties keep input order
	// Rejected lists the pools a filter rejected, in input order. Place fills it; PlaceSet
	// leaves it nil and formats the reasons only when Rejections or Explain asks for them.
	Rejected []Rejection
	weighers []string  // weigher names in configured order, for Explain
	ws       []float64 // PlaceSet's weights: k per candidate, by rank, weighers in order
	rej      *rejections
}

// rejections is what PlaceSet records of the pools it rejects: which filter, no reason yet.
type rejections struct {
	q       *query
	filters []filter
	log     []rejected
	once    sync.Once
	list    []Rejection // formatted from log, once
}

// rejected is pool i rejected by filter f.
type rejected struct {
	i, f int32
}

// A Candidate is a pool that passed every filter.
type Candidate struct {
	Pool   *basalt.Pool // points into the slice given to Place or Prepare
	Weight float64      // sum of the weighers' weights
	// Weights holds, per weigher, the normalized raw value times the multiplier. Place fills
	// it (unless Config.OmitWeights); PlaceSet leaves it nil: see Decision.CandidateWeights.
	Weights map[string]float64
	// Limit is the largest provisioned_capacity_gb the pool may reach after taking the
	// request: reserve atomically with ledger + size <= Limit, where the ledger starts at
	// the reported provisioned capacity. It is provisioned + virtual free from the same
	// factors as CapacityFilter (thin: at most max_over_subscription_ratio times the total
	// available; thick: provisioned + min(available - provisioned, free)), never below
	// provisioned + size. +Inf when free or total is infinite/unknown, when the request is
	// for 0 GiB, or when CapacityFilter is not configured.
	Limit float64
	ws    int32 // 1 + the index of its weights in its Decision's ws, by rank; 0: none
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

// Rejections returns the pools a filter rejected, in input order, with their reasons:
// Rejected when Place filled it, else the reasons PlaceSet recorded, formatted on the first
// call. It is safe for concurrent use.
func (d *Decision) Rejections() []Rejection {
	if d.Rejected != nil || d.rej == nil {
		return d.Rejected
	}
	z := d.rej
	z.once.Do(func() {
		if len(z.log) == 0 {
			return
		}
		z.list = make([]Rejection, len(z.log))
		for n, r := range z.log {
			f := z.filters[r.f]
			z.list[n] = Rejection{Pool: z.q.set.pools[r.i].Name, Filter: f.Name(), Reason: f.why(z.q, int(r.i))}
		}
	})
	return z.list
}

// NumRejected returns how many pools a filter rejected, without formatting any reason.
func (d *Decision) NumRejected() int {
	if d.Rejected == nil && d.rej != nil {
		return len(d.rej.log)
	}
	return len(d.Rejected)
}

// CandidateWeights returns Ranked[i]'s weight per weigher: its Weights when set, else a new
// map from the weights PlaceSet kept; nil with Config.OmitWeights.
func (d *Decision) CandidateWeights(i int) map[string]float64 {
	c := &d.Ranked[i]
	ws := d.weightsOf(c)
	if c.Weights != nil || ws == nil {
		return c.Weights
	}
	m := make(map[string]float64, len(d.weighers))
	for w, name := range d.weighers {
		m[name] = ws[w]
	}
	return m
}

// weightsOf returns the weights PlaceSet kept for c, in weigher order, or nil.
func (d *Decision) weightsOf(c *Candidate) []float64 {
	k := len(d.weighers)
	lo := int(c.ws-1) * k
	if c.ws <= 0 || lo+k > len(d.ws) {
		return nil
	}
	return d.ws[lo : lo+k : lo+k]
}

// defaultChunk is the fewest pools worth a goroutine of their own: from 2*defaultChunk pools
// on, Prepare, PlaceSet and Place spread their work over up to GOMAXPROCS goroutines, all
// finished before they return.
const defaultChunk = 1024

// scratch is one PlaceSet's working memory, reused across calls. It points only to its own
// buffers.
type scratch struct {
	idx     []int32   // candidates' indices in pools
	lim     []float64 // candidates' limits
	raw     []float64 // candidates' raw values, k a candidate
	cand    []float64 // one weigher's raw values, per candidate
	total   []float64 // weights, per candidate
	contrib []float64 // contrib[j*k+w]: weigher w's share of candidate j's weight
	order   []rank
	tmp     []rank
	rej     [][]rejected // per part
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
//
// Place is Prepare then PlaceSet, with every rejection's reason formatted into
// Decision.Rejected and every candidate's Weights filled in. To place several requests on
// the same pools, prepare them once and call PlaceSet.
func (s *Scheduler) Place(r *Request, pools []basalt.Pool) *Decision {
	set, _ := s.sets.Get().(*PoolSet)
	if set == nil {
		set = new(PoolSet)
	}
	q := newQuery(r, s.ratio)
	only := thickPath
	if q.thin {
		only = thinPath
	}
	var zoneOK func(string) bool
	if len(s.filters) > 0 && s.filters[0].Name() == "AvailabilityZoneFilter" {
		zoneOK = q.zoneFits // the other pools are rejected on their zone alone
	}
	set.reset(pools, s.ratio, s.need, only, s.workersFor(len(pools)), q.columns(), zoneOK)
	d := s.place(q, set)
	d.Rejected, d.rej = d.Rejections(), nil // the last reference to set
	set.recycle()
	s.sets.Put(set)
	if !s.omit && len(d.Ranked) > 0 {
		parallel(len(d.Ranked), s.workersFor(len(d.Ranked)), func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				d.Ranked[i].Weights = d.CandidateWeights(i)
			}
		})
	}
	return d
}

// PlaceSet is Place on a prepared set of pools: it runs the filters over the set, in order,
// then weighs and ranks the pools that passed. A nil r is an empty request, a nil set an
// empty one. It formats no rejection reason (Rejections and Explain do, on demand) and builds
// no Weights map (CandidateWeights and Explain read the weights it keeps); Ranked, Weight and
// Limit are as Place gives them. The Decision refers to set (not to r), which must not
// change while it is in use. PlaceSet does no I/O and is safe for concurrent use, on one set
// too; on large sets it uses several goroutines, all finished when it returns.
func (s *Scheduler) PlaceSet(r *Request, set *PoolSet) *Decision {
	if set == nil {
		set = s.Prepare(nil)
	} else if !set.fits(s.ratio, s.need) {
		set = s.Prepare(set.pools)
	}
	return s.place(newQuery(r, s.ratio), set)
}

// place is PlaceSet for q on a set prepared for s.
func (s *Scheduler) place(q *query, set *PoolSet) *Decision {
	q.bind(set)
	pools := set.pools
	d := &Decision{weighers: s.names}
	sc, _ := s.scratch.Get().(*scratch)
	if sc == nil {
		sc = new(scratch)
	}
	defer s.scratch.Put(sc)

	// Filter every pool (in order, until a filter rejects it), weigh those that pass and
	// compute their limits, in contiguous parts of the pool slice. The candidates of the part
	// starting at pool lo go to slots lo, lo+1, ... of idx, lim and raw (k values a slot).
	k := len(s.weighers)
	idx := grow(sc.idx, len(pools))
	lim := grow(sc.lim, len(pools))
	raw := grow(sc.raw, len(pools)*k)
	sc.idx, sc.lim, sc.raw = idx, lim, raw
	workers := s.workersFor(len(pools))
	counts := make([]int, workers)
	if len(sc.rej) < workers {
		sc.rej = append(sc.rej, make([][]rejected, workers-len(sc.rej))...)
	}
	parallel(len(pools), workers, func(part, lo, hi int) {
		n := lo
		rej := sc.rej[part][:0]
	pools:
		for i := lo; i < hi; i++ {
			for fi, f := range s.filters {
				if !f.pass(q, i) {
					rej = append(rej, rejected{int32(i), int32(fi)})
					continue pools
				}
			}
			for w, wg := range s.weighers {
				raw[n*k+w] = wg.weigh(q, i)
			}
			lim[n] = math.Inf(1)
			if s.capacity != nil {
				lim[n] = s.capacity.limit(q, i)
			}
			idx[n] = int32(i)
			n++
		}
		counts[part], sc.rej[part] = n-lo, rej
	})
	n, nrej := 0, 0
	for part := range workers {
		lo, c := len(pools)*part/workers, counts[part]
		if lo != n {
			copy(idx[n:], idx[lo:lo+c])
			copy(lim[n:], lim[lo:lo+c])
			copy(raw[n*k:], raw[lo*k:(lo+c)*k])
		}
		n += c
		nrej += len(sc.rej[part])
	}
	if nrej > 0 {
		log := make([]rejected, 0, nrej)
		for part := range workers {
			log = append(log, sc.rej[part]...)
		}
		d.rej = &rejections{q: q, filters: s.filters, log: log}
	}
	if n == 0 {
		return d
	}
	idx, lim = idx[:n], lim[:n]

	// Normalize each weigher's values across candidates, multiply and sum.
	vals := grow(sc.cand, n)
	total := grow(sc.total, n)
	contrib := grow(sc.contrib, n*k)
	sc.cand, sc.total, sc.contrib = vals, total, contrib
	clear(total)
	for w, wg := range s.weighers {
		for j := range vals {
			vals[j] = raw[j*k+w]
		}
		lo, hi := vals[0], vals[0]
		for _, x := range vals[1:] {
			if x < lo {
				lo = x
			} else if x > hi {
				hi = x
			}
		}
		if a, ok := wg.(adjuster); ok {
			lo, hi = a.adjust(vals, lo, hi)
		}
		m, span := s.mult[w], hi-lo
		for j, x := range vals {
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
	sc.tmp = grow(sc.tmp, n)
	nan := false
	for j := range order {
		order[j] = rank{total[j], int32(j)}
		nan = nan || total[j] != total[j]
	}
	workers = s.workersFor(n)
	switch {
	case n > radixMin && !nan:
		order = radixSort(order, sc.tmp)
	case workers > 1:
		parallel(n, workers, func(_, lo, hi int) { slices.SortFunc(order[lo:hi], byRank) })
		order = mergeRuns(order, sc.tmp, workers)
	default:
		slices.SortFunc(order, byRank)
	}

	d.Ranked = make([]Candidate, n)
	if !s.omit {
		// Not nil unless omitted, even without weighers.
		d.ws = make([]float64, n*k)
	}
	parallel(n, workers, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			j := order[r].j
			c := &d.Ranked[r] // set field by field: one write barrier, not a bulk one
			c.Pool = &pools[idx[j]]
			c.Weight, c.Limit = total[j], lim[j]
			if d.ws != nil {
				copy(d.ws[r*k:(r+1)*k], contrib[int(j)*k:])
				c.ws = int32(r + 1)
			}
		}
	})
	return d
}

// radixMin is the most candidates ranked by comparison sort; more are ranked by radixSort.
const radixMin = 64

// rankKey maps a weight to a key whose ascending order is the weights' descending order,
// -0 and +0 alike. Weights are not NaN.
func rankKey(w float64) uint64 {
	b := math.Float64bits(w + 0) // -0 + 0 = +0
	if b>>63 != 0 {
		return b // negative: ^b ascends, so b descends
	}
	return ^(b | 1<<63)
}

// radixSort sorts a by rankKey of the weight, stably, so that equal weights keep their index
// order: the order of byRank, for weights that are not NaN. It returns the sorted slice, a
// or tmp.
func radixSort(a, tmp []rank) []rank {
	var counts [8][256]int32
	for _, e := range a {
		k := rankKey(e.w)
		for b := range counts {
			counts[b][byte(k>>(8*b))]++
		}
	}
	for b := range counts {
		c := &counts[b]
		if int(c[byte(rankKey(a[0].w)>>(8*b))]) == len(a) {
			continue // every key has this byte
		}
		var sum int32
		for d, x := range c {
			c[d], sum = sum, sum+x
		}
		for _, e := range a {
			d := byte(rankKey(e.w) >> (8 * b))
			tmp[c[d]] = e
			c[d]++
		}
		a, tmp = tmp, a
	}
	return a
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
	for i := range d.Ranked {
		d.candidateLine(&b, i)
	}
	for _, r := range d.Rejections() {
		fmt.Fprintf(&b, "%s: %s: %s\n", r.Pool, r.Filter, r.Reason)
	}
	return b.String()
}

// candidateLine writes Explain's line of Ranked[i].
func (d *Decision) candidateLine(b *strings.Builder, i int) {
	c := &d.Ranked[i]
	name := "?"
	if c.Pool != nil {
		name = c.Pool.Name
	}
	fmt.Fprintf(b, "%s: rank %d, weight %s", name, i+1, weight(c.Weight))
	names, ws := d.weighers, d.weightsOf(c)
	if c.Weights != nil || ws == nil {
		ws = nil
		if names == nil || c.Weights == nil {
			names = slices.Sorted(maps.Keys(c.Weights))
		}
	}
	if len(names) > 0 {
		b.WriteString(" (")
		for j, n := range names {
			if j > 0 {
				b.WriteString(", ")
			}
			w := c.Weights[n]
			if ws != nil {
				w = ws[j]
			}
			b.WriteString(n + " " + weight(w))
		}
		b.WriteString(")")
	}
	writeLimit(b, c.Limit)
}

// writeLimit ends a candidate's line with its limit.
func writeLimit(b *strings.Builder, limit float64) {
	if math.IsInf(limit, 1) {
		b.WriteString(", no limit\n")
	} else {
		b.WriteString(", limit " + num(limit) + " GiB\n")
	}
}

// weight formats a weight with six significant digits.
func weight(w float64) string { return strconv.FormatFloat(w, 'g', 6, 64) }
