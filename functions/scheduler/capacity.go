package scheduler

import (
	"fmt"
	"math"
	"strconv"

	"github.com/basalt-storage/basalt"
)

// Capability keys the capacity arithmetic reads (Cinder's names).
const (
	keyTotal       = "total_capacity_gb"
	keyFree        = "free_capacity_gb"
	keyAllocated   = "allocated_capacity_gb"
	keyProvisioned = "provisioned_capacity_gb"
	keyReserved    = "reserved_percentage"
	keyThin        = "thin_provisioning_support"
	keyRatio       = "max_over_subscription_ratio"
	keyVolumes     = "total_volumes"
	keyOnlineExt   = "online_extend_support"
)

// DefaultMaxOverSubscriptionRatio is Cinder's global max_over_subscription_ratio ("20.0"),
// also the ratio "auto" starts from while nothing is provisioned (INITIAL_AUTO_MOSR).
const DefaultMaxOverSubscriptionRatio = 20.0

// capKind classifies a reported capacity value.
type capKind uint8

const (
	capNumber   capKind = iota // a number (or a bool, or a numeric string)
	capInfinite                // the exact string "infinite" or "unknown"
	capNull                    // JSON null
	capInvalid                 // anything else: a non-numeric string, a list, a dict
)

// readCap classifies caps[key]. A missing key is the number 0, as Cinder's
// capability.get(key, 0).
func readCap(caps basalt.Capabilities, key string) (capKind, float64) {
	v, ok := caps[key]
	if !ok {
		return capNumber, 0
	}
	return classify(v)
}

func classify(v any) (capKind, float64) {
	switch x := v.(type) {
	case nil:
		return capNull, 0
	case float64:
		return capNumber, x
	case string:
		if x == "infinite" || x == "unknown" {
			return capInfinite, 0
		}
	}
	if f, ok := finite(v); ok {
		return capNumber, f
	}
	return capInvalid, 0
}

// finite is toFloat refusing infinities and NaN, which no capacity may be.
func finite(v any) (float64, bool) {
	f, ok := toFloat(v)
	return f, ok && !math.IsInf(f, 0) && !math.IsNaN(f)
}

// ratioConfig is the global max_over_subscription_ratio: a number, or "auto".
type ratioConfig struct {
	ratio float64 // 0 means DefaultMaxOverSubscriptionRatio
	auto  bool
}

// A problem is a capacity value the arithmetic needs but cannot read. Cinder raises there
// (and fails the whole request); Basalt rejects the pool, naming the value.
type problem uint8

const (
	noProblem problem = iota
	problemNullTotal
	problemTotal
	problemNullFree
	problemFree
	problemReserved
	problemProvisioned
	problemAllocated // provisioned_capacity_gb unset, allocated_capacity_gb unreadable
	problemRatio
	problemAuto // ratio "auto" without numeric total and free
)

// reason says what is wrong, reading the offending value back from caps.
func (pr problem) reason(caps basalt.Capabilities) string {
	invalid := func(key string) string { return "invalid " + key + " " + show(caps[key]) }
	switch pr {
	case problemNullTotal:
		return "total capacity unknown (null)"
	case problemTotal:
		return invalid(keyTotal)
	case problemNullFree:
		return "free capacity unknown (null)"
	case problemFree:
		return invalid(keyFree)
	case problemReserved:
		return invalid(keyReserved)
	case problemProvisioned:
		return invalid(keyProvisioned)
	case problemAllocated:
		return invalid(keyAllocated)
	case problemRatio:
		return invalid(keyRatio)
	case problemAuto:
		return "max_over_subscription_ratio auto needs numeric " + keyTotal + " and " + keyFree
	}
	return ""
}

// capacity is a pool's capacity report as Cinder's PoolState holds it, parsed once. It holds
// no pointers, so that a Place's per-pool scratch costs the garbage collector nothing.
type capacity struct {
	total, free     float64
	provisioned     float64 // provisioned_capacity_gb, default allocated_capacity_gb
	reserved        float64 // reserved_percentage
	ratio           float64 // the pool state's max_over_subscription_ratio
	totalKind       capKind
	freeKind        capKind
	thinSupport     bool // Python truthiness of thin_provisioning_support
	provNonZero     bool // the raw provisioned value != 0, for "auto"
	provProblem     problem
	reservedProblem problem
	ratioProblem    problem
}

// readCapacity parses a pool's capacity keys as PoolState.update_from_volume_capability and
// sched_utils.calculate_max_over_subscription_ratio do.
func readCapacity(caps basalt.Capabilities, g ratioConfig) capacity {
	var c capacity
	c.totalKind, c.total = readCap(caps, keyTotal)
	c.freeKind, c.free = readCap(caps, keyFree)
	// provisioned_capacity_gb defaults to allocated_capacity_gb; null counts as missing
	// where Cinder would raise on the arithmetic. "auto" asks whether that raw value != 0,
	// so the string "0" counts as provisioned.
	pr := problemProvisioned
	pv, ok := caps[keyProvisioned]
	if !ok || pv == nil {
		pr = problemAllocated
		pv, ok = caps[keyAllocated]
	}
	if ok && pv != nil {
		kind, f := classify(pv)
		if kind == capNumber {
			c.provisioned = f
		} else {
			c.provProblem = pr
		}
		c.provNonZero = !isZero(pv)
	}
	if rv, ok := caps[keyReserved]; ok && rv != nil {
		if f, ok := finite(rv); ok {
			c.reserved = f
		} else {
			c.reservedProblem = problemReserved
		}
	}
	c.thinSupport = truthy(caps[keyThin])
	c.ratio, c.ratioProblem = poolRatio(caps, &c, g)
	return c
}

// poolRatio is calculate_max_over_subscription_ratio: 1 without thin support or with an
// infinite/unknown total or free; else the pool's value, falling back to the global one when
// the pool's is falsy (0, null, "", missing); "auto" derives it from usage.
func poolRatio(caps basalt.Capabilities, c *capacity, g ratioConfig) (float64, problem) {
	if !c.thinSupport || c.totalKind == capInfinite || c.freeKind == capInfinite {
		return 1, noProblem
	}
	v := caps[keyRatio]
	if !truthy(v) {
		switch {
		case g.auto:
			v = "auto"
		case g.ratio != 0:
			return g.ratio, noProblem
		default:
			return DefaultMaxOverSubscriptionRatio, noProblem
		}
	}
	if v == "auto" {
		if !c.provNonZero {
			return DefaultMaxOverSubscriptionRatio, noProblem
		}
		if c.provProblem != noProblem {
			return 0, c.provProblem
		}
		if c.totalKind != capNumber || c.freeKind != capNumber {
			return 0, problemAuto // Cinder raises TypeError on total - free (free null, say)
		}
		used := c.total - c.free
		if used+1 == 0 {
			// Cinder divides by zero; a report with free = total + 1 says nothing is used.
			return DefaultMaxOverSubscriptionRatio, noProblem
		}
		return 1 + c.provisioned/(used+1), noProblem
	}
	f, ok := finite(v)
	if !ok {
		return 0, problemRatio
	}
	return f, noProblem
}

// unusable reports why the factors cannot be computed for a thin or thick request: Cinder
// reads total, reserved and provisioned, the ratio on the thin path and the reported free on
// the thick one, and raises where one of them is unreadable.
func (c *capacity) unusable(thin bool) problem {
	switch {
	case c.totalKind == capNull:
		return problemNullTotal
	case c.totalKind == capInvalid:
		return problemTotal
	case c.reservedProblem != noProblem:
		return c.reservedProblem
	case c.provProblem != noProblem:
		return c.provProblem
	}
	if thin && c.thinSupport {
		return c.ratioProblem
	}
	switch c.freeKind {
	case capNull:
		return problemNullFree
	case capInvalid:
		return problemFree
	}
	return noProblem
}

// factors are the parts of sched_utils.calculate_capacity_factors the scheduler uses.
type factors struct {
	totalAvailable float64 // rounded to 2 decimals
	virtualFree    float64 // rounded to 2 decimals
}

// capacityFactors is calculate_capacity_factors for a pool whose total and free are numbers.
// ratio is the ratio Cinder passes in (the pool's when thin-capable, else 1).
func (c *capacity) capacityFactors(thin bool, ratio float64) factors {
	total := c.total
	reserved := c.reserved / 100
	reservedCap := math.Floor(float64(total * reserved))
	trAvail := total - reservedCap
	var avail, vfree float64
	thin = thin && c.thinSupport
	if thin {
		avail = float64(trAvail * ratio)
		vfree = avail - c.provisioned
	} else {
		avail = trAvail
		vfree = avail - c.provisioned
		if c.free < vfree {
			vfree = c.free
		}
	}
	return factors{totalAvailable: round2(avail), virtualFree: round2(vfree)}
}

// CapacityFilter passes pools with room for the request, with Cinder's exact arithmetic
// (capacity_filter.py and sched_utils.calculate_capacity_factors): thin requests on
// thin-capable pools may use total*(1-reserved)*max_over_subscription_ratio less what is
// provisioned; thick ones the smaller of that (ratio 1) and the reported free capacity.
// The zero value uses Cinder's global ratio 20. It is safe for concurrent use.
type CapacityFilter struct {
	// MaxOverSubscriptionRatio is the global ratio for pools that report none; 0 means 20.
	MaxOverSubscriptionRatio float64
	// AutoOverSubscription makes the global ratio "auto".
	AutoOverSubscription bool
}

var _ Filter = CapacityFilter{}

// Name returns "CapacityFilter".
func (CapacityFilter) Name() string { return "CapacityFilter" }

// Fits reports whether p has capacity for r.SizeGB (the growth, for an extend).
func (f CapacityFilter) Fits(r *Request, p *basalt.Pool) (bool, string) {
	return fitsOne(f, newQuery(r, ratioConfig{f.MaxOverSubscriptionRatio, f.AutoOverSubscription}), p)
}

// capVerdict is CapacityFilter's decision on a pool: pass, or which check failed.
type capVerdict uint8

const (
	capPass             capVerdict = iota
	capNullFree                    // free_capacity_gb null
	capReserved                    // reserved_percentage unreadable
	capInfiniteReserved            // infinite/unknown total with a reserved percentage
	capNoTotal                     // total <= 0
	capUnusable                    // a value the arithmetic needs is unreadable
	capThinZero                    // thin available capacity rounds to 0
	capProvRatio                   // provisioned ratio above the max over-subscription ratio
	capRatioBelowOne               // thin with a ratio < 1
	capShort                       // virtual free below the request
)

func (f CapacityFilter) pass(q *query, i int) bool {
	return f.verdict(q, &q.set.info[i]) == capPass
}

// verdict is capacity_filter.py's backend_passes, deciding only.
func (CapacityFilter) verdict(q *query, in *poolInfo) capVerdict {
	requested := q.requested
	if requested == 0 {
		return capPass // a manage request, or an extend by nothing
	}
	c := &in.c
	switch {
	case c.freeKind == capNull:
		return capNullFree
	case c.reservedProblem != noProblem:
		return capReserved
	case c.freeKind == capInfinite:
		return capPass
	case c.totalKind == capInfinite:
		if c.reserved/100 == 0 {
			return capPass
		}
		return capInfiniteReserved
	case c.totalKind == capNumber && c.total <= 0:
		return capNoTotal
	}
	if c.unusable(q.thin) != noProblem {
		return capUnusable
	}
	thin := q.thin && c.thinSupport
	fs := in.factors(q.thin)
	if thin && c.ratio >= 1 {
		if fs.totalAvailable == 0 {
			return capThinZero // Cinder divides by zero here.
		}
		provRatio := (c.provisioned + requested) / fs.totalAvailable
		if provRatio > c.ratio {
			return capProvRatio
		}
	} else if thin {
		return capRatioBelowOne
	}
	if fs.virtualFree < requested {
		return capShort
	}
	return capPass
}

func (f CapacityFilter) why(q *query, i int) string {
	in, p := &q.set.info[i], &q.set.pools[i]
	c, fs := &in.c, in.factors(q.thin)
	switch f.verdict(q, in) {
	case capNullFree:
		return "free capacity unknown (null)"
	case capReserved:
		return c.reservedProblem.reason(p.Capabilities)
	case capInfiniteReserved:
		return fmt.Sprintf("total capacity %s with %s%% reserved", p.Capabilities[keyTotal], num(c.reserved))
	case capNoTotal:
		return "total capacity " + num(c.total) + " GiB"
	case capUnusable:
		return c.unusable(q.thin).reason(p.Capabilities)
	case capThinZero:
		return "thin available capacity rounds to 0 GiB"
	case capProvRatio:
		provRatio := (c.provisioned + q.requested) / fs.totalAvailable
		return fmt.Sprintf("provisioned ratio %s ((%s + %s GiB requested) / %s GiB available) > max_over_subscription_ratio %s",
			weight(provRatio), num(c.provisioned), num(q.requested), num(fs.totalAvailable), num(c.ratio))
	case capRatioBelowOne:
		return "max_over_subscription_ratio " + num(c.ratio) + " < 1"
	case capShort: // the commonest reason: one allocation
		var buf [80]byte
		b := strconv.AppendFloat(buf[:0], fs.virtualFree, 'f', -1, 64)
		b = append(b, " GiB virtual free < "...)
		b = strconv.AppendFloat(b, q.requested, 'f', -1, 64)
		return string(append(b, " GiB requested"...))
	}
	return ""
}

// limit is Candidate.Limit for pool i, which passed CapacityFilter (see Candidate).
func (CapacityFilter) limit(q *query, i int) float64 {
	in := &q.set.info[i]
	c := &in.c
	if q.requested == 0 || c.freeKind == capInfinite || c.totalKind == capInfinite || c.unusable(q.thin) != noProblem {
		return math.Inf(1)
	}
	thin := q.thin && c.thinSupport
	fs := in.factors(q.thin)
	lim := c.provisioned + fs.virtualFree
	if thin {
		lim = math.Min(lim, float64(c.ratio*fs.totalAvailable))
	}
	// Never below what the filter just accepted, whatever the float rounding of the ratio.
	return math.Max(lim, c.provisioned+q.requested)
}

// CapacityWeigher weighs pools by virtual free capacity (weights/capacity.py): the same
// factors as CapacityFilter. Pools reporting infinite or unknown capacity weigh -1 when the
// multiplier is positive, else +Inf, which the scheduler replaces before normalizing by
// max + 100*(max-min) of the finite weights (max + 10000 when they are all equal).
type CapacityWeigher struct {
	// Multiplier is the configured multiplier; only its sign matters here.
	Multiplier float64
	// MaxOverSubscriptionRatio and AutoOverSubscription are the global ratio, as in
	// CapacityFilter.
	MaxOverSubscriptionRatio float64
	AutoOverSubscription     bool
}

var _ Weigher = CapacityWeigher{}

// Name returns "CapacityWeigher".
func (CapacityWeigher) Name() string { return "CapacityWeigher" }

// Weigh returns p's raw virtual free capacity in GiB.
func (w CapacityWeigher) Weigh(r *Request, p *basalt.Pool) float64 {
	q := newQuery(r, ratioConfig{w.MaxOverSubscriptionRatio, w.AutoOverSubscription})
	return w.weigh(q.bindOne(p), 0)
}

func (w CapacityWeigher) weigh(q *query, i int) float64 {
	// infinite/unknown as Cinder; null and unreadable values, where Cinder raises, alike.
	raw, _ := capacityRaw(&q.set.info[i], q.thin, w.Multiplier > 0)
	return raw
}

// adjust replaces infinite raw weights as CapacityWeigher.weigh_objects does, given the
// running minimum and maximum, and returns the new bounds. When every weight is infinite
// Cinder fails the request (max() of nothing); here they all normalize to 0.
func (CapacityWeigher) adjust(raw []float64, lo, hi float64) (float64, float64) {
	if !math.IsInf(hi, 1) {
		return lo, hi
	}
	maxFinite, found := 0.0, false
	for _, x := range raw {
		if !math.IsInf(x, 0) && (!found || x > maxFinite) {
			maxFinite, found = x, true
		}
	}
	if !found {
		return lo, hi
	}
	offset := float64((maxFinite - lo) * 100)
	if offset == 0 {
		hi = maxFinite + 10000
	} else {
		hi = maxFinite + offset
	}
	for i, x := range raw {
		if math.IsInf(x, 1) {
			raw[i] = hi
		}
	}
	return lo, hi
}

// AllocatedCapacityWeigher weighs pools by allocated_capacity_gb (missing or unreadable: 0).
// With its default multiplier -1 the least allocated pool wins.
type AllocatedCapacityWeigher struct{}

var _ Weigher = AllocatedCapacityWeigher{}

// Name returns "AllocatedCapacityWeigher".
func (AllocatedCapacityWeigher) Name() string { return "AllocatedCapacityWeigher" }

// Weigh returns p's allocated_capacity_gb.
func (AllocatedCapacityWeigher) Weigh(_ *Request, p *basalt.Pool) float64 {
	if kind, f := readCap(p.Capabilities, keyAllocated); kind == capNumber {
		return f
	}
	return 0
}

func (AllocatedCapacityWeigher) weigh(q *query, i int) float64 { return q.set.extra[i].allocated }

// show formats a reported value for a reason.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case nil:
		return "null"
	case float64:
		return num(v)
	}
	return fmt.Sprint(v)
}
