package scheduler

import (
	"maps"
	"strings"

	"github.com/basalt-storage/basalt"
)

// Consume records in the set that a volume of sizeGB was placed on pool name, as Cinder's
// PoolState.consume_from_volume does after each decision: allocated_capacity_gb and
// provisioned_capacity_gb grow by the size and a numeric free_capacity_gb shrinks by it
// ("infinite" and "unknown" stay). The pool's prepared values are computed again, so the next
// decision on the set weighs and filters it as it is now, until a fresh report replaces the set.
// It reports whether the set has the pool.
//
// The orders Rank walks move the pool to its new place (two binary searches and a memmove of
// the entries between its old and new places), so the next Rank walks them as they are now.
//
// Consume changes the set and the pools it was prepared from (the slice given to Prepare; the
// capability maps in it are replaced, never changed): no PlaceSet or Rank on it, and no Decision
// or Ranking made from it, may be in use meanwhile (its owner serializes them, for example with
// a sync.RWMutex).
func (ps *PoolSet) Consume(name string, sizeGB float64) bool {
	if ps.byName == nil { // the first pool of each name, as a scan would find it
		ps.byName = make(map[string]int32, len(ps.pools))
		for j := len(ps.pools) - 1; j >= 0; j-- {
			ps.byName[ps.pools[j].Name] = int32(j)
		}
	}
	j, ok := ps.byName[name]
	if !ok {
		return false
	}
	i := int(j)
	var buf [4]orderUpdate
	ups := ps.ordersBefore(i, buf[:0])
	p := &ps.pools[i]
	caps := maps.Clone(p.Capabilities) // the report's map may be shared: it is not changed
	if caps == nil {
		caps = basalt.Capabilities{}
	}
	for _, key := range []string{keyAllocated, keyProvisioned} {
		if kind, f := readCap(caps, key); kind == capNumber {
			caps[key] = f + sizeGB
		}
	}
	if kind, f := readCap(caps, keyFree); kind == capNumber {
		caps[keyFree] = f - sizeGB
	}
	p.Capabilities = caps
	ps.info[i].read(p, ps.ratio, ps.paths)
	if ps.has != 0 {
		ps.extra[i].read(p, ps.has)
	}
	ps.ordersAfter(i, ups)
	// The capability columns hold the pool's values: read them again from its new report.
	if m := ps.cols.Load(); m != nil {
		for key, col := range *m {
			var path []string
			if !key.root {
				path = strings.Split(key.path, ":")
			}
			col.set(i, lookup(caps, path))
		}
	}
	return true
}
