package scheduler

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Ranking with an early exit.
//
// With one weigher, the weights are that weigher's raw values, normalized (x-min)/(max-min)
// over the candidates and multiplied by the multiplier: a function of the raw value that never
// decreases (multiplier > 0) or never increases (< 0) as the raw value grows, whatever the
// minimum and maximum are. So the ranking is the order of the raw values, ties in pool order,
// and a set can keep its pools in that order, once per set, and a request walk it, running the
// filters pool by pool, until it has the candidates it needs.
//
// The one catch is rounding: two different raw values may normalize to the same weight (then
// the full ranking orders them by pool index, not by value). That takes raw values closer than
// a few ulps of the largest magnitude in play; the walk checks, for every candidate it yields,
// that the next different value in the whole set is further than tau = 2^-40 * X below it (X
// the largest magnitude of any key in the set), which is proved enough below, and ranks in
// full when it is not. Raw values that are not finite or beyond 2^50 (unsafe pools) send every
// request of that order to the full ranking too.
//
// Why tau is enough. Let u = 2^-53, a and b two candidates with raw values xa > xb, g = xa-xb,
// lo <= xb and hi >= xa the candidates' minimum and maximum (|lo|, |hi| <= X), s = fl(hi-lo).
// Subtraction rounds with a relative error of at most u (and is exact when subnormal), so
// fl(xa-lo) - fl(xb-lo) >= g - 4uX. Both are at most s, so their quotients by s are at most 1,
// each rounded by at most u + 2^-1075, and multiplying by m (|m| >= 2^-900) adds at most
// u|m| + 2^-1075 each. The weights differ when (g - 4uX)/s > 4u(1 + 2^-120). Without the
// infinite-capacity adjustment s <= 2X(1+u); with it (CapacityWeigher, negative multiplier,
// infinite pools among the candidates) hi becomes max + 100*(max-lo), so s <= 203X. Either way
// g > 4uX + 813uX suffices, and tau = 8192uX. The infinite pools themselves then weigh m
// exactly and the finite ones at most |m|/101 in magnitude (or 0), so they rank last, in
// pool order, as their key (-Inf) places them; max + 10000, when all finite candidates are
// equal, cannot round back to max below 2^50.

// maxSafe bounds the raw values the early exit vouches for.
const maxSafe = 1 << 50

// minMultiplier is the smallest non-zero |multiplier| the early exit vouches for.
var minMultiplier = math.Ldexp(1, -900)

// tauScale is tau / X.
var tauScale = math.Ldexp(1, -40)

// orderKind names the weigher an order sorts by.
type orderKind uint8

const (
	kindCapacity orderKind = iota
	kindAllocated
	kindVolumes
	numKinds
)

// orderSpec names one order of a set: the weigher, the provisioning path (CapacityWeigher
// only) and the sign of the multiplier.
type orderSpec struct {
	kind orderKind
	thin bool
	sign int8 // 1, -1 or 0
}

const numOrders = int(numKinds) * 2 * 3

func (sp orderSpec) slot() int {
	s := int(sp.kind)*6 + int(sp.sign+1)
	if sp.thin {
		s += 3
	}
	return s
}

// An order is a set's pools sorted for one single-weigher ranking: by descending key (the
// weigher's raw value; negated for a negative multiplier, so that infinite pools are -Inf;
// 0 for a zero multiplier), ties by ascending pool index, which is byRank's order and
// radixSort's. Consume keeps it sorted as values change.
type order struct {
	e      []rank // w: the key, j: the pool
	unsafe int    // pools whose raw value is not finite or beyond maxSafe
	tail   int    // entries whose key is -Inf: infinite pools under a negative multiplier
}

// capacityRaw is CapacityWeigher's raw value for a prepared pool, and whether the pool counts
// as infinite (infinite/unknown capacity, or values the arithmetic cannot read).
func capacityRaw(in *poolInfo, thin, positive bool) (float64, bool) {
	c := &in.c
	if c.freeKind == capInfinite || c.totalKind == capInfinite || c.unusable(thin) != noProblem {
		if positive {
			return -1, true
		}
		return math.Inf(1), true
	}
	return in.factors(thin).virtualFree, false
}

// orderKey returns pool i's key in order sp, and whether the early exit cannot vouch for it.
func (ps *PoolSet) orderKey(sp orderSpec, i int) (key float64, unsafe bool) {
	var raw float64
	infinite := false
	switch sp.kind {
	case kindCapacity:
		raw, infinite = capacityRaw(&ps.info[i], sp.thin, sp.sign > 0)
	case kindAllocated:
		raw = ps.extra[i].allocated
	case kindVolumes:
		raw = ps.extra[i].volumes
	}
	unsafe = !infinite && !(math.Abs(raw) <= maxSafe)
	switch {
	case sp.sign == 0:
		return 0, unsafe
	case sp.sign < 0:
		return -raw, unsafe
	}
	return raw, unsafe
}

// order returns the set's order sp, building it on first use.
func (ps *PoolSet) order(sp orderSpec) *order {
	slot := sp.slot()
	if o := ps.orders[slot].Load(); o != nil {
		return o
	}
	ps.omu.Lock()
	defer ps.omu.Unlock()
	if o := ps.orders[slot].Load(); o != nil {
		return o
	}
	n := len(ps.pools)
	o := &order{e: make([]rank, n)}
	for i := range n {
		k, unsafe := ps.orderKey(sp, i)
		o.e[i] = rank{k, int32(i)}
		o.count(k, unsafe, 1)
	}
	if n > 1 {
		o.e = radixSort(o.e, make([]rank, n))
	}
	ps.orders[slot].Store(o)
	return o
}

// count adds d times a pool of key k to o's counters.
func (o *order) count(k float64, unsafe bool, d int) {
	if unsafe {
		o.unsafe += d
	}
	if math.IsInf(k, -1) {
		o.tail += d
	}
}

// cmpEntry orders entries as radixSort leaves them.
func cmpEntry(a, b rank) int {
	if ka, kb := rankKey(a.w), rankKey(b.w); ka != kb {
		if ka < kb {
			return -1
		}
		return 1
	}
	return int(a.j) - int(b.j)
}

// move changes pool i's key from old to key, moving its entry to keep o sorted: two binary
// searches and a memmove of the entries in between.
func (o *order) move(i int, old, key float64) {
	e := o.e
	p, found := slices.BinarySearchFunc(e, rank{old, int32(i)}, cmpEntry)
	if !found {
		panic("scheduler: pool order out of step with the pool set")
	}
	nr := rank{key, int32(i)}
	q, _ := slices.BinarySearchFunc(e, nr, cmpEntry)
	if q > p {
		copy(e[p:q-1], e[p+1:q])
		e[q-1] = nr
	} else {
		copy(e[q+1:p+1], e[q:p])
		e[q] = nr
	}
}

// orderUpdate is what Consume notes of one order before a pool changes.
type orderUpdate struct {
	o      *order
	sp     orderSpec
	old    float64
	unsafe bool
}

// ordersBefore notes pool i's keys in every order the set has built.
func (ps *PoolSet) ordersBefore(i int, buf []orderUpdate) []orderUpdate {
	for slot := range ps.orders {
		o := ps.orders[slot].Load()
		if o == nil {
			continue
		}
		sp := specOf(slot)
		k, unsafe := ps.orderKey(sp, i)
		buf = append(buf, orderUpdate{o, sp, k, unsafe})
	}
	return buf
}

// ordersAfter moves pool i to its new place in every order noted by ordersBefore.
func (ps *PoolSet) ordersAfter(i int, ups []orderUpdate) {
	for _, u := range ups {
		k, unsafe := ps.orderKey(u.sp, i)
		u.o.count(u.old, u.unsafe, -1)
		u.o.count(k, unsafe, 1)
		u.o.move(i, u.old, k)
	}
}

// specOf is slot's inverse.
func specOf(slot int) orderSpec {
	sp := orderSpec{kind: orderKind(slot / 6)}
	r := slot % 6
	sp.thin = r >= 3
	sp.sign = int8(r%3) - 1
	return sp
}

// earlyExit says how a Scheduler may rank without visiting every pool.
type earlyExit uint8

const (
	exitNone     earlyExit = iota // several weighers, or one without an order: rank in full
	exitOrder                     // one weigher: walk its order
	exitIdentity                  // no weigher: every weight is 0, the ranking is the pool order
)

// earlyExitOf decides, for New, whether and how s can exit early.
func (s *Scheduler) earlyExitOf() (earlyExit, orderSpec) {
	switch len(s.weighers) {
	case 0:
		return exitIdentity, orderSpec{}
	case 1:
	default:
		return exitNone, orderSpec{}
	}
	var sp orderSpec
	switch s.names[0] {
	case "CapacityWeigher":
		sp.kind = kindCapacity
	case "AllocatedCapacityWeigher":
		sp.kind = kindAllocated
	case "VolumeNumberWeigher":
		sp.kind = kindVolumes
	default:
		return exitNone, orderSpec{} // ChanceWeigher: its values depend on the request
	}
	switch m := s.mult[0]; {
	case m == 0:
		sp.sign = 0
	case math.Abs(m) < minMultiplier:
		return exitNone, orderSpec{}
	case m > 0:
		sp.sign = 1
	default:
		sp.sign = -1
	}
	return exitOrder, sp
}

// A Ranking yields the candidates of one request on a PoolSet best first, in exactly the order
// of the Decision PlaceSet would make: same pools, same limits. With the configured weighers
// being one built-in weigher other than ChanceWeigher (Cinder's default, CapacityWeigher alone,
// among them), or none, it walks the set's pools in that weigher's order, which the set keeps,
// and runs the filters on each pool it reaches, so a request that needs the first few
// candidates visits few pools. Otherwise, or where rounding could make the orders differ, it
// ranks in full (Full), and yields the Decision's candidates.
//
// A Ranking refers to the set, which must not change (Consume) while it is in use. It is not
// safe for concurrent use; several Rankings on one set are.
type Ranking struct {
	s    *Scheduler
	q    *query
	set  *PoolSet
	mode earlyExit // exitNone: ranked in full, d
	o    *order    // exitOrder's
	pos  int       // the next position of the walk
	d    *Decision
	got  []int32 // the pools yielded, in order (for Explain)
	n    int     // candidates yielded
	done bool
	tau  float64 // < 0: not computed yet
}

// Rank starts a Ranking of r on set (nil: an empty request, an empty set). It does not visit
// the pools; Next does, as far as it needs. A set prepared for other settings or weighers is
// ranked in full, as PlaceSet would (which prepares it again).
func (s *Scheduler) Rank(r *Request, set *PoolSet) *Ranking {
	k := &Ranking{s: s, set: set, mode: s.exit, tau: -1}
	if set == nil || !set.fits(s.ratio, s.need) {
		k.mode = exitNone
	}
	if k.mode == exitNone {
		k.d = s.PlaceSet(r, set)
		return k
	}
	k.q = newQuery(r, s.ratio)
	k.q.bind(set)
	if k.mode == exitOrder {
		sp := s.spec
		sp.thin = sp.kind == kindCapacity && k.q.thin
		k.o = set.order(sp)
		if k.o.unsafe > 0 {
			k.full()
		}
	}
	return k
}

// full switches k to the full ranking, keeping what it yielded (the same candidates).
func (k *Ranking) full() {
	k.d = k.s.place(k.q, k.set)
	k.mode = exitNone
}

// Full reports whether k ranks in full: Decision costs nothing more, and the candidates carry
// their weights. A walking Ranking leaves Candidate.Weight NaN: the weights are normalized
// over every candidate, which it does not visit.
func (k *Ranking) Full() bool { return k.mode == exitNone }

// Next returns the next candidate, best first, or false. A walking Ranking looks at pools up
// to position limit of its order (limit <= 0: no bound), counting every earlier call, and
// returns false when it found none there; Done then says whether any is left. A full one
// ignores limit.
func (k *Ranking) Next(limit int) (Candidate, bool) {
	if k.mode == exitNone {
		if k.n < len(k.d.Ranked) {
			c := k.d.Ranked[k.n]
			k.n++
			return c, true
		}
		k.done = true
		return Candidate{}, false
	}
	n := len(k.set.pools)
	if limit <= 0 || limit > n {
		limit = n
	}
	filters := k.s.filters
walk:
	for k.pos < limit {
		p := k.pos
		k.pos++
		i := p
		if k.o != nil {
			i = int(k.o.e[p].j)
		}
		for _, f := range filters {
			if !f.pass(k.q, i) {
				continue walk
			}
		}
		if k.o != nil && !k.separated(p) {
			k.full() // its first k.n candidates are the ones yielded: see separated
			return k.Next(0)
		}
		c := Candidate{Pool: &k.set.pools[i], Weight: math.NaN(), Limit: math.Inf(1)}
		if k.s.capacity != nil {
			c.Limit = k.s.capacity.limit(k.q, i)
		}
		k.got = append(k.got, int32(i))
		k.n++
		return c, true
	}
	if k.pos >= n {
		k.done = true
	}
	return Candidate{}, false
}

// separated reports whether the candidate at position p of the order outranks, in the full
// ranking, every pool after it: the next different key in the set is more than tau below its
// key (or -Inf, the infinite pools). Equal keys weigh the same and keep pool order, as in the
// order. Checked for every candidate yielded, it makes the candidates yielded the first of the
// full ranking, in its order.
func (k *Ranking) separated(p int) bool {
	e := k.o.e
	key := rankKey(e[p].w)
	q := p + 1
	if q < len(e) && rankKey(e[q].w) == key {
		q += sortSearch(len(e)-q, func(x int) bool { return rankKey(e[q+x].w) != key })
	}
	if q >= len(e) || math.IsInf(e[q].w, -1) {
		return true
	}
	if k.tau < 0 {
		last := len(e) - 1 - k.o.tail // the last finite key; p <= last here
		k.tau = math.Max(math.Abs(e[0].w), math.Abs(e[last].w)) * tauScale
	}
	return e[p].w-e[q].w > k.tau
}

// sortSearch is sort.Search.
func sortSearch(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if !f(h) {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo
}

// Done reports whether k has yielded every candidate.
func (k *Ranking) Done() bool { return k.done }

// Visited returns how many pools k has looked at: the positions of its order walked, or every
// pool when it ranks in full.
func (k *Ranking) Visited() int {
	if k.mode == exitNone {
		if k.set == nil {
			return 0
		}
		return k.set.Len()
	}
	return k.pos
}

// Decision returns the Decision PlaceSet makes for the request on the set, with every
// rejection: what a failure reports and what Explain shows. A walking Ranking computes it
// then (once); its Ranked begins with the candidates Next yielded.
func (k *Ranking) Decision() *Decision {
	if k.d == nil {
		k.d = k.s.place(k.q, k.set)
	}
	return k.d
}

// Explain returns one line per candidate yielded so far. A full Ranking writes them as
// Decision.Explain does; a walking one gives the weigher's raw value instead of the weight,
// which it does not know:
//
//	block1@lvmdriver-b1#pool: rank 1, CapacityWeigher raw 19000, limit 19000 GiB
func (k *Ranking) Explain() string {
	var b strings.Builder
	if k.mode == exitNone && k.got == nil {
		for i := range k.n {
			k.d.candidateLine(&b, i)
		}
		return b.String()
	}
	for n, i := range k.got {
		c := Candidate{Pool: &k.set.pools[i], Limit: math.Inf(1)}
		if k.s.capacity != nil {
			c.Limit = k.s.capacity.limit(k.q, int(i))
		}
		b.WriteString(c.Pool.Name + ": rank " + strconv.Itoa(n+1))
		if len(k.s.weighers) == 1 {
			b.WriteString(", " + k.s.names[0] + " raw " + num(k.s.weighers[0].weigh(k.q, int(i))))
		}
		writeLimit(&b, c.Limit)
	}
	// After a switch to the full ranking, the rest of the yielded candidates.
	for i := len(k.got); i < k.n; i++ {
		k.d.candidateLine(&b, i)
	}
	return b.String()
}

// orderState is the part of a PoolSet for the orders: built on first use, one per spec.
type orderState struct {
	omu    sync.Mutex // serializes order builds
	orders [numOrders]atomic.Pointer[order]
}

// dropOrders forgets every order, for a set prepared again.
func (st *orderState) dropOrders() {
	for i := range st.orders {
		st.orders[i].Store(nil)
	}
}
