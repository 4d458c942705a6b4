package results

import (
	"sync"
	"time"
)

// blindness remembers the latest stretch during which the reconciler could not look: from its
// last complete pass to a pass that came more than two intervals later (Redis away, or this
// process stalled). Agents could not renew leases then either, so an operation whose lease ran
// out in that stretch gets its length again before it is ended: an agent that missed renewals
// only because Redis was away renews before anything is ended. (An agent whose lease runs out
// missed two renewals, so it was cut off for two thirds of its lease before the deadline; the
// stretch is at least that long, and its length covers the third it needs to renew.) It is safe
// for concurrent use.
type blindness struct {
	mu       sync.Mutex
	lastPass time.Time
	from, to time.Time
}

// begin records a pass that starts at now, given the interval between passes.
func (b *blindness) begin(now time.Time, interval time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.lastPass.IsZero() && now.Sub(b.lastPass) > 2*interval {
		b.from, b.to = b.lastPass, now
	}
}

// done records that the pass that started at now completed.
func (b *blindness) done(now time.Time) {
	b.mu.Lock()
	b.lastPass = now
	b.mu.Unlock()
}

// postponed reports whether an operation whose deadline is deadline must wait at now because
// its lease ran out while the reconciler was blind.
func (b *blindness) postponed(deadline, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return deadline.After(b.from) && now.Before(deadline.Add(b.to.Sub(b.from)))
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
