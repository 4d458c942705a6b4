package scheduler

import (
	"fmt"
	"math"

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

// capValue is one reported capacity value, classified.
type capValue struct {
	kind capKind
	f    float64
	raw  any
}

// readCap classifies caps[key]. A missing key is the number 0, as Cinder's
// capability.get(key, 0).
func readCap(caps basalt.Capabilities, key string) capValue {
	v, ok := caps[key]
	if !ok {
		return capValue{}
	}
	return classify(v)
}

func classify(v any) capValue {
	switch x := v.(type) {
	case nil:
		return capValue{kind: capNull}
	case float64:
		return capValue{f: x, raw: v}
	case string:
		if x == "infinite" || x == "unknown" {
			return capValue{kind: capInfinite, raw: v}
		}
	}
	if f, ok := toFloat(v); ok && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return capValue{f: f, raw: v}
	}
	return capValue{kind: capInvalid, raw: v}
}

// ratioConfig is the global max_over_subscription_ratio: a number, or "auto".
type ratioConfig struct {
	ratio float64 // 0 means DefaultMaxOverSubscriptionRatio
	auto  bool
}

// capacity is a pool's capacity report as Cinder's PoolState holds it, parsed once.
type capacity struct {
	total, free capValue
	provisioned float64 // provisioned_capacity_gb, default allocated_capacity_gb
	allocated   float64
	reserved    float64 // reserved_percentage
	ratio       float64 // the pool state's max_over_subscription_ratio
	thinSupport bool    // Python truthiness of thin_provisioning_support
	// bad names the first field the arithmetic needs that cannot be read, with its value;
	// Cinder raises (and fails the whole request) where Basalt rejects the pool with it.
	badAllocated, badProvisioned, badReserved, badRatio string
	provNonZero                                         bool // raw provisioned value != 0, for "auto"
}

// readCapacity parses a pool's capacity keys as PoolState.update_from_volume_capability and
// sched_utils.calculate_max_over_subscription_ratio do.
func readCapacity(caps basalt.Capabilities, g ratioConfig) capacity {
	var c capacity
	c.total = readCap(caps, keyTotal)
	c.free = readCap(caps, keyFree)
	alloc := readCap(caps, keyAllocated)
	switch alloc.kind {
	case capNumber:
		c.allocated = alloc.f
	case capInvalid:
		c.badAllocated = fmt.Sprintf("invalid %s %s", keyAllocated, show(alloc.raw))
	} // null counts as missing (0) where Cinder would raise on the arithmetic
	// provisioned_capacity_gb defaults to allocated_capacity_gb; "auto" asks whether that
	// raw value != 0, so the string "0" counts as provisioned.
	if pv, ok := caps[keyProvisioned]; ok && pv != nil {
		prov := classify(pv)
		if prov.kind == capNumber {
			c.provisioned = prov.f
		} else {
			c.badProvisioned = fmt.Sprintf("invalid %s %s", keyProvisioned, show(pv))
		}
		c.provNonZero = !isZero(pv)
	} else {
		c.provisioned = c.allocated
		c.badProvisioned = c.badAllocated
		c.provNonZero = alloc.raw != nil && !isZero(alloc.raw)
	}
	if rv, ok := caps[keyReserved]; ok && rv != nil {
		if f, ok := toFloat(rv); ok && !math.IsInf(f, 0) && !math.IsNaN(f) {
			c.reserved = f
		} else {
			c.badReserved = fmt.Sprintf("invalid %s %s", keyReserved, show(rv))
		}
	}
	c.thinSupport = truthy(caps[keyThin])
	c.ratio, c.badRatio = poolRatio(caps[keyRatio], &c, g)
	return c
}

// poolRatio is calculate_max_over_subscription_ratio: 1 without thin support or with an
// infinite/unknown total or free; else the pool's value v, falling back to the global one
// when v is falsy (0, null, "", missing); "auto" derives it from usage.
func poolRatio(v any, c *capacity, g ratioConfig) (float64, string) {
	if !c.thinSupport || c.total.kind == capInfinite || c.free.kind == capInfinite {
		return 1, ""
	}
	if !truthy(v) {
		switch {
		case g.auto:
			v = "auto"
		case g.ratio != 0:
			v = g.ratio
		default:
			v = DefaultMaxOverSubscriptionRatio
		}
	}
	if v == "auto" {
		if !c.provNonZero {
			return DefaultMaxOverSubscriptionRatio, ""
		}
		if c.badProvisioned != "" {
			return 0, c.badProvisioned
		}
		if c.total.kind != capNumber || c.free.kind != capNumber {
			// Cinder raises TypeError on total - free (free null, say).
			return 0, fmt.Sprintf("max_over_subscription_ratio auto needs numeric %s and %s", keyTotal, keyFree)
		}
		used := c.total.f - c.free.f
		if used+1 == 0 {
			// Cinder divides by zero; a report with free = total + 1 says nothing is used.
			return DefaultMaxOverSubscriptionRatio, ""
		}
		return 1 + c.provisioned/(used+1), ""
	}
	f, ok := toFloat(v)
	if !ok || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Sprintf("invalid %s %s", keyRatio, show(v))
	}
	return f, ""
}

// usable reports why the factors cannot be computed for a request (thin or not), or "" when
// they can: Cinder reads total, reserved and provisioned, the ratio on the thin path and the
// reported free on the thick one, and raises where one of them is unreadable.
func (c *capacity) unusable(thin bool) string {
	switch {
	case c.total.kind == capNull:
		return "total capacity unknown (null)"
	case c.total.kind == capInvalid:
		return fmt.Sprintf("invalid %s %s", keyTotal, show(c.total.raw))
	case c.badReserved != "":
		return c.badReserved
	case c.badProvisioned != "":
		return c.badProvisioned
	}
	if thin && c.thinSupport {
		return c.badRatio
	}
	switch c.free.kind {
	case capNull:
		return "free capacity unknown (null)"
	case capInvalid:
		return fmt.Sprintf("invalid %s %s", keyFree, show(c.free.raw))
	}
	return ""
}

// factors are the parts of sched_utils.calculate_capacity_factors the scheduler uses.
type factors struct {
	totalAvailable float64 // rounded to 2 decimals
	virtualFree    float64 // rounded to 2 decimals
	thin           bool    // thin arithmetic applied (thin request on a thin-capable pool)
}

// capacityFactors is calculate_capacity_factors for a pool whose total and free are numbers.
// ratio is the ratio Cinder passes in (the pool's when thin-capable, else 1).
func (c *capacity) capacityFactors(thin bool, ratio float64) factors {
	total := c.total.f
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
		if c.free.f < vfree {
			vfree = c.free.f
		}
	}
	return factors{totalAvailable: round2(avail), virtualFree: round2(vfree), thin: thin}
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
	q := newQuery(r, ratioConfig{f.MaxOverSubscriptionRatio, f.AutoOverSubscription})
	v := poolView{p: p}
	return f.fits(q, &v)
}

func (CapacityFilter) fits(q *query, v *poolView) (bool, string) {
	requested := q.requested
	if requested == 0 {
		return true, "" // a manage request, or an extend by nothing
	}
	c := v.capacity(q)
	switch {
	case c.free.kind == capNull:
		return false, "free capacity unknown (null)"
	case c.badReserved != "":
		return false, c.badReserved
	case c.free.kind == capInfinite:
		return true, ""
	case c.total.kind == capInfinite:
		if c.reserved/100 == 0 {
			return true, ""
		}
		return false, fmt.Sprintf("total capacity %s with %s%% reserved", c.total.raw, num(c.reserved))
	case c.total.kind == capNumber && c.total.f <= 0:
		return false, fmt.Sprintf("total capacity %s GiB", num(c.total.f))
	}
	if why := c.unusable(q.thin); why != "" {
		return false, why
	}
	thin := q.thin && c.thinSupport
	ratio := 1.0
	if c.thinSupport {
		ratio = c.ratio
	}
	fs := c.capacityFactors(q.thin, ratio)
	if thin && c.ratio >= 1 {
		if fs.totalAvailable == 0 {
			// Cinder divides by zero here.
			return false, "thin available capacity rounds to 0 GiB"
		}
		provRatio := (c.provisioned + requested) / fs.totalAvailable
		if provRatio > c.ratio {
			return false, fmt.Sprintf("provisioned ratio %s ((%s + %s GiB requested) / %s GiB available) > max_over_subscription_ratio %s",
				weight(provRatio), num(c.provisioned), num(requested), num(fs.totalAvailable), num(c.ratio))
		}
	} else if thin {
		return false, fmt.Sprintf("max_over_subscription_ratio %s < 1", num(c.ratio))
	}
	if fs.virtualFree < requested {
		return false, fmt.Sprintf("%s GiB virtual free < %s GiB requested", num(fs.virtualFree), num(requested))
	}
	return true, ""
}

// limit is Candidate.Limit for a pool that passed CapacityFilter (see Candidate).
func (CapacityFilter) limit(q *query, v *poolView) float64 {
	c := v.capacity(q)
	if q.requested == 0 || c.free.kind == capInfinite || c.total.kind == capInfinite || c.unusable(q.thin) != "" {
		return math.Inf(1)
	}
	thin := q.thin && c.thinSupport
	ratio := 1.0
	if c.thinSupport {
		ratio = c.ratio
	}
	fs := c.capacityFactors(q.thin, ratio)
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
	v := poolView{p: p}
	return w.weigh(q, &v)
}

func (w CapacityWeigher) weigh(q *query, v *poolView) float64 {
	c := v.capacity(q)
	if c.free.kind == capInfinite || c.total.kind == capInfinite || c.unusable(q.thin) != "" {
		// infinite/unknown as Cinder; null and unreadable values, where Cinder raises, alike.
		if w.Multiplier > 0 {
			return -1
		}
		return math.Inf(1)
	}
	return c.capacityFactors(q.thin, c.ratio).virtualFree
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
	if c := readCap(p.Capabilities, keyAllocated); c.kind == capNumber {
		return c.f
	}
	return 0
}

func (w AllocatedCapacityWeigher) weigh(q *query, v *poolView) float64 {
	return v.capacity(q).allocated
}

// show formats a reported value for a reason.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case nil:
		return "null"
	case float64:
		return num(v)
	}
	return fmt.Sprintf("%v", v)
}
