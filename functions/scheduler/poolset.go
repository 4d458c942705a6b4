package scheduler

import (
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/basalt-storage/basalt"
)

// A PoolSet is a list of pools prepared for placement: every pool's capacity report parsed,
// its capacity factors computed for thin and thick requests, its zone interned, and the
// values other built-ins read extracted, once. The capability values CapabilitiesFilter
// compares are extracted on first use, one column per capability key over all pools, and
// kept for every later request that names the same key; likewise the pools in the order of a
// single weigher's raw values, for Rank's early exit. A PoolSet is immutable apart from those
// caches and Consume, and is safe for concurrent use; the pools given to Prepare must not
// change while the set or a Decision or Ranking made from it is in use.
//
// Build one per snapshot of the pools (reports change every minute or so) and place any
// number of requests on it with PlaceSet.
type PoolSet struct {
	pools   []basalt.Pool
	info    []poolInfo  // per pool
	extra   []poolExtra // per pool, when has is not 0
	zones   []string    // interned zones; info[i].zone indexes them
	ratio   ratioConfig
	has     prep  // what extra holds
	paths   paths // the provisioning types info has capacity factors for
	workers int   // goroutines to build columns with

	mu    sync.Mutex                         // serializes column builds
	cols  atomic.Pointer[map[colKey]*column] // copy on write
	spare [][]any                            // cleared column buffers to reuse (Place's sets)

	orderState                  // the pools in single weighers' orders, for Rank; see ranking.go
	byName     map[string]int32 // first pool of each name, for Consume (built by it)
}

// prep flags what Prepare extracted besides the capacity, for the configured built-ins.
type prep uint8

const (
	prepAllocated prep = 1 << iota // AllocatedCapacityWeigher
	prepVolumes                    // VolumeNumberWeigher
	prepNameHash                   // ChanceWeigher
)

// poolInfo is what a PoolSet knows of one pool for the default filters and weigher. It holds
// no pointers, so that the garbage collector never scans it.
type poolInfo struct {
	c    capacity   // ratio resolved for PoolSet.ratio
	fs   [2]factors // capacity factors: [0] thick path, [1] thin path (thin request, thin-capable pool)
	zone int32      // index into PoolSet.zones
}

// poolExtra is what a PoolSet knows of one pool for the other weighers.
type poolExtra struct {
	nameHash  uint64  // fnv64(Name), for ChanceWeigher
	allocated float64 // allocated_capacity_gb as AllocatedCapacityWeigher reads it
	volumes   float64 // total_volumes as VolumeNumberWeigher reads it
}

// factors returns the capacity factors of the request's provisioning type (see
// capacityFactors: the thin path needs a thin request and a thin-capable pool).
func (in *poolInfo) factors(thin bool) *factors {
	if thin && in.c.thinSupport {
		return &in.fs[1]
	}
	return &in.fs[0]
}

// maxColumns bounds the capability columns a PoolSet keeps: past it, columns are built for
// one request and dropped.
const maxColumns = 64

// colKey names a capability column: the path CapabilitiesFilter walks, joined with ':'. root
// is the path of no keys at all (the extra spec "capabilities" alone), whose column holds the
// whole report.
type colKey struct {
	path string
	root bool
}

// column holds one capability value per pool: the value found at the end of a path, or
// absent. Its values are also interned: codes[i] indexes pool i's value in distinct, so that a
// request judges each different value once (query.verdicts) and each pool by a table lookup.
// Lists and dicts are not compared: each is a distinct value of its own.
type column struct {
	vals     []any
	codes    []int32
	distinct []any
	index    map[any]int32 // scalar value -> code
}

// encode interns every value of c.
func (c *column) encode() {
	c.codes = make([]int32, len(c.vals))
	c.distinct = c.distinct[:0]
	c.index = make(map[any]int32, 4)
	for i, v := range c.vals {
		c.codes[i] = c.code(v)
	}
}

// set changes pool i's value to v.
func (c *column) set(i int, v any) {
	c.vals[i] = v
	if c.codes != nil {
		c.codes[i] = c.code(v)
	}
}

// code returns v's code, interning it.
func (c *column) code(v any) int32 {
	switch v.(type) {
	case nil, string, float64, bool, absentT, int, int64, json.Number:
		if k, ok := c.index[v]; ok {
			return k
		}
		k := int32(len(c.distinct))
		c.distinct = append(c.distinct, v)
		c.index[v] = k
		return k
	}
	k := int32(len(c.distinct)) // a list or a dict: never equal to another for interning
	c.distinct = append(c.distinct, v)
	return k
}

// absentT marks a capability a pool does not report.
type absentT struct{}

// Prepare parses pools for PlaceSet. The set refers to pools, which must not change while it
// is in use; candidates of its decisions point into pools. It is safe for concurrent use and
// spreads its work over several goroutines on large pool lists, all finished when it returns.
// A set may be used by any Scheduler; one configured with another over-subscription ratio, or
// with weighers reading values this Scheduler's did not need, prepares the pools again on
// every PlaceSet.
func (s *Scheduler) Prepare(pools []basalt.Pool) *PoolSet {
	return prepare(pools, s.ratio, s.need, s.workersFor(len(pools)))
}

func prepare(pools []basalt.Pool, g ratioConfig, need prep, workers int) *PoolSet {
	ps := new(PoolSet)
	ps.reset(pools, g, need, bothPaths, workers, nil, nil)
	return ps
}

// colSpec is a capability column to extract.
type colSpec struct {
	key  colKey
	path []string
}

// reset prepares pools into ps for the provisioning types only says, reusing its memory, and
// extracts cols in the same pass over each pool's report (Place's request's: the reports are
// read once while they are in cache). With zoneOK, it reads only the reports of pools in the
// zones zoneOK accepts: the others are left unread for a request that AvailabilityZoneFilter
// filters first. ps must not be in use.
func (ps *PoolSet) reset(pools []basalt.Pool, g ratioConfig, need prep, only paths, workers int,
	cols []colSpec, zoneOK func(zone string) bool) {
	ps.pools, ps.ratio, ps.has, ps.paths, ps.workers = pools, g, need, only, workers
	ps.dropOrders()
	ps.byName = nil
	ps.info = grow(ps.info, len(pools))
	clear(ps.info)
	ps.extra = ps.extra[:0]
	if need != 0 {
		ps.extra = grow(ps.extra, len(pools))
		clear(ps.extra)
	}
	ps.internZones()
	var skip []bool // by zone
	if zoneOK != nil {
		skip = make([]bool, len(ps.zones))
		for z, zone := range ps.zones {
			skip[z] = !zoneOK(zone)
		}
	}
	var built map[colKey]*column
	var fill []*column // built's columns, in cols order, each once
	for _, cs := range cols {
		if _, dup := built[cs.key]; dup {
			continue
		}
		if built == nil {
			built = make(map[colKey]*column, len(cols))
		}
		c := ps.newColumn()
		built[cs.key] = c
		fill = append(fill, c)
		cols[len(fill)-1] = cs
	}
	parallel(len(pools), workers, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			p, in := &pools[i], &ps.info[i]
			if skip != nil && skip[in.zone] {
				continue
			}
			in.read(p, g, only)
			if need != 0 {
				ps.extra[i].read(p, need)
			}
			for k, c := range fill {
				c.vals[i] = lookup(p.Capabilities, cols[k].path)
			}
		}
	})
	for _, c := range fill {
		c.encode()
	}
	if built != nil {
		ps.cols.Store(&built)
	}
}

// internZones fills ps.zones with the pools' distinct zones and sets each pool's index.
func (ps *PoolSet) internZones() {
	ps.zones = ps.zones[:0]
	var index map[string]int32 // beyond a few zones
	last := int32(-1)
	for i := range ps.pools {
		z := ps.pools[i].Zone
		if last >= 0 && ps.zones[last] == z {
			ps.info[i].zone = last
			continue
		}
		last = -1
		if index == nil {
			for j, known := range ps.zones {
				if known == z {
					last = int32(j)
					break
				}
			}
		} else if j, ok := index[z]; ok {
			last = j
		}
		if last < 0 {
			last = int32(len(ps.zones))
			ps.zones = append(ps.zones, z)
			if index != nil {
				index[z] = last
			} else if len(ps.zones) > 8 {
				index = make(map[string]int32, 2*len(ps.zones))
				for j, known := range ps.zones {
					index[known] = int32(j)
				}
			}
		}
		ps.info[i].zone = last
	}
}

// recycle clears ps for reuse by reset, keeping its buffers. Nothing may use ps any more.
func (ps *PoolSet) recycle() {
	if m := ps.cols.Load(); m != nil {
		for _, c := range *m {
			clear(c.vals)
			ps.spare = append(ps.spare, c.vals[:0])
		}
		ps.cols.Store(nil)
	}
	clear(ps.zones)
	ps.pools = nil
}

// prepareOne prepares a single pool, for the built-ins' Fits and Weigh.
func prepareOne(p *basalt.Pool, g ratioConfig) *PoolSet {
	return prepare([]basalt.Pool{*p}, g, prepAllocated|prepVolumes|prepNameHash, 1)
}

// paths says which provisioning types a set serves: factors computes the capacity factors of
// those only.
type paths uint8

const (
	bothPaths paths = iota // Prepare's
	thinPath               // Place's, for a thin request
	thickPath              // Place's, for a thick request
)

// read fills in what the set knows of p for the default filters and weigher.
func (in *poolInfo) read(p *basalt.Pool, g ratioConfig, only paths) {
	in.c = readCapacity(p.Capabilities, g)
	// Computed whether or not the pool's report is usable: then they are never read. The
	// thin path needs thin support; without it a thin request takes the thick path.
	if in.c.thinSupport && only != thickPath {
		in.fs[1] = in.c.capacityFactors(true, in.c.ratio)
	}
	if !in.c.thinSupport || only != thinPath {
		in.fs[0] = in.c.capacityFactors(false, in.c.ratio)
	}
}

// read fills in what the other weighers need of p.
func (in *poolExtra) read(p *basalt.Pool, need prep) {
	caps := p.Capabilities
	if need&prepAllocated != 0 {
		if kind, f := readCap(caps, keyAllocated); kind == capNumber {
			in.allocated = f
		}
	}
	if need&prepVolumes != 0 {
		if kind, f := readCap(caps, keyVolumes); kind == capNumber {
			in.volumes = f
		}
	}
	if need&prepNameHash != 0 {
		in.nameHash = fnv64(p.Name)
	}
}

// Len returns the number of pools in the set.
func (ps *PoolSet) Len() int { return len(ps.pools) }

// Pools returns the pools the set was prepared from (not a copy).
func (ps *PoolSet) Pools() []basalt.Pool { return ps.pools }

// fits reports whether the set can serve a Scheduler with ratio g needing need.
func (ps *PoolSet) fits(g ratioConfig, need prep) bool {
	return ps.ratio == g && ps.has&need == need && ps.paths == bothPaths
}

// column returns the values of the capability at the end of path for every pool, building
// and keeping the column on first use.
func (ps *PoolSet) column(key colKey, path []string) *column {
	if m := ps.cols.Load(); m != nil {
		if c, ok := (*m)[key]; ok {
			return c
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	old := ps.cols.Load()
	if old != nil {
		if c, ok := (*old)[key]; ok {
			return c
		}
	}
	c := ps.newColumn()
	parallel(len(ps.pools), ps.workers, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			c.vals[i] = lookup(ps.pools[i].Capabilities, path)
		}
	})
	c.encode()
	if old == nil || len(*old) < maxColumns {
		var m map[colKey]*column
		if old == nil {
			m = make(map[colKey]*column, 4)
		} else {
			m = make(map[colKey]*column, len(*old)+1)
			for k, v := range *old {
				m[k] = v
			}
		}
		m[key] = c
		ps.cols.Store(&m)
	}
	return c
}

// newColumn returns a column for every pool of ps, from a spare buffer when there is one.
// ps.mu must be held, or ps not in use.
func (ps *PoolSet) newColumn() *column {
	c := new(column)
	if n := len(ps.spare); n > 0 && cap(ps.spare[n-1]) >= len(ps.pools) {
		c.vals, ps.spare = ps.spare[n-1][:len(ps.pools)], ps.spare[:n-1]
	} else {
		c.vals = make([]any, len(ps.pools))
	}
	return c
}

// lookup walks path through caps and the dicts nested in it, as CapabilitiesFilter does.
func lookup(caps basalt.Capabilities, path []string) any {
	var val any = map[string]any(caps)
	for _, part := range path {
		m, ok := asMap(val)
		if ok {
			val, ok = m[part]
		}
		if !ok {
			return absentT{}
		}
	}
	return val
}
