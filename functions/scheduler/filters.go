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
	return f.fits(newQuery(r, ratioConfig{}), p, nil)
}

func (AvailabilityZoneFilter) fits(q *query, p *basalt.Pool, _ *poolView) (bool, string) {
	zone := p.Zone
	if len(q.zones) > 0 {
		if slices.Contains(q.zones, zone) {
			return true, ""
		}
		return false, "zone " + strconv.Quote(zone) + " not in type zones [" + strings.Join(q.zones, " ") + "]"
	}
	if q.r.Zone != "" && q.r.Zone != zone {
		return false, "zone " + strconv.Quote(zone) + " != requested zone " + strconv.Quote(q.r.Zone)
	}
	return true, ""
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
	return f.fits(newQuery(r, ratioConfig{}), p, nil)
}

func (IgnoreAttemptedHostsFilter) fits(q *query, p *basalt.Pool, _ *poolView) (bool, string) {
	for _, a := range q.r.Attempted {
		if a == p.Name || a == p.Backend && !strings.Contains(a, "#") {
			return false, a + " already attempted"
		}
	}
	return true, ""
}
