package scheduler

import (
	"slices"
	"strconv"
	"strings"

	"github.com/basalt-storage/basalt"
)

// AvailabilityZoneFilter passes pools in the zones the request asks for
// (availability_zone_filter.py): the type's RESKEY:availability_zones when it names any,
// which replace the volume's own zone, else the request's Zone; neither passes every pool.
// It is safe for concurrent use.
type AvailabilityZoneFilter struct{}

var _ Filter = AvailabilityZoneFilter{}

// Name returns "AvailabilityZoneFilter".
func (AvailabilityZoneFilter) Name() string { return "AvailabilityZoneFilter" }

// Fits reports whether p's zone is one r asks for.
func (f AvailabilityZoneFilter) Fits(r *Request, p *basalt.Pool) (bool, string) {
	return fitsOne(f, newQuery(r, ratioConfig{}), p)
}

func (AvailabilityZoneFilter) pass(q *query, i int) bool {
	return q.zoneOK[q.set.info[i].zone]
}

func (AvailabilityZoneFilter) why(q *query, i int) string {
	zone := q.set.pools[i].Zone
	if len(q.zones) > 0 {
		return "zone " + strconv.Quote(zone) + " not in type zones [" + strings.Join(q.zones, " ") + "]"
	}
	return "zone " + strconv.Quote(zone) + " != requested zone " + strconv.Quote(q.r.Zone)
}

// zoneFits reports whether AvailabilityZoneFilter passes a pool in zone.
func (q *query) zoneFits(zone string) bool {
	if len(q.zones) > 0 {
		return slices.Contains(q.zones, zone)
	}
	return q.r.Zone == "" || q.r.Zone == zone
}

// IgnoreAttemptedHostsFilter rejects pools already tried for the request
// (ignore_attempted_hosts_filter.py; Cinder's entry point calls it RetryFilter, which Config
// accepts as an alias). An entry of Request.Attempted with a '#' names one pool, as Cinder's
// retry list does; one without names a backend (host@backend) and rejects all its pools.
// It is safe for concurrent use.
type IgnoreAttemptedHostsFilter struct{}

var _ Filter = IgnoreAttemptedHostsFilter{}

// Name returns "IgnoreAttemptedHostsFilter".
func (IgnoreAttemptedHostsFilter) Name() string { return "IgnoreAttemptedHostsFilter" }

// Fits reports whether p has not been attempted for r.
func (f IgnoreAttemptedHostsFilter) Fits(r *Request, p *basalt.Pool) (bool, string) {
	return fitsOne(f, newQuery(r, ratioConfig{}), p)
}

func (IgnoreAttemptedHostsFilter) pass(q *query, i int) bool {
	return q.attemptedBy(i) < 0
}

func (IgnoreAttemptedHostsFilter) why(q *query, i int) string {
	return q.attempted[q.attemptedBy(i)].name + " already attempted"
}

// attemptedBy returns the index of the first entry of Request.Attempted naming pool i or its
// backend, or -1.
func (q *query) attemptedBy(i int) int {
	if len(q.attempted) == 0 {
		return -1
	}
	p := &q.set.pools[i]
	for n, a := range q.attempted {
		if a.name == p.Name || a.backend && a.name == p.Backend {
			return n
		}
	}
	return -1
}
