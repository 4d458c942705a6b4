package scheduler

import (
	"math/rand/v2"

	"github.com/basalt-storage/basalt"
)

// VolumeNumberWeigher weighs pools by the number of volumes on them, read from the pool's
// total_volumes capability (missing or unreadable: 0); Cinder counts them in its database.
// With its default multiplier -1 the pool with fewest volumes wins.
type VolumeNumberWeigher struct{}

var _ Weigher = VolumeNumberWeigher{}

// Name returns "VolumeNumberWeigher".
func (VolumeNumberWeigher) Name() string { return "VolumeNumberWeigher" }

// Weigh returns p's total_volumes.
func (VolumeNumberWeigher) Weigh(_ *Request, p *basalt.Pool) float64 {
	if kind, f := readCap(p.Capabilities, keyVolumes); kind == capNumber {
		return f
	}
	return 0
}

func (VolumeNumberWeigher) weigh(q *query, i int) float64 { return q.set.extra[i].volumes }

// ChanceWeigher gives each pool a random weight in [0,1), as Cinder's random.random(), but
// drawn from a PCG generator seeded with hashes of the request id and the pool name: the same
// request weighs the same pool the same way on every scheduler replica and every retry.
type ChanceWeigher struct{}

var _ Weigher = ChanceWeigher{}

// Name returns "ChanceWeigher".
func (ChanceWeigher) Name() string { return "ChanceWeigher" }

// Weigh returns p's pseudo-random weight for r.
func (ChanceWeigher) Weigh(r *Request, p *basalt.Pool) float64 {
	var id string
	if r != nil {
		id = r.ID
	}
	return chance(fnv64(id), fnv64(p.Name))
}

func (ChanceWeigher) weigh(q *query, i int) float64 {
	return chance(q.idHash, q.set.extra[i].nameHash)
}

// chance is the weight of the pool whose name hashes to poolHash for the request whose id
// hashes to idHash.
func chance(idHash, poolHash uint64) float64 {
	var g rand.PCG
	g.Seed(idHash, poolHash)
	return float64(g.Uint64()>>11) / (1 << 53)
}

// fnv64 is the 64-bit FNV-1a hash of s.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
