package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/redis/go-redis/v9"
)

// KeyPrefix is the prefix of Basalt's global keys: volume types, service administration, the
// capacity ledger and the indexes of heartbeats and reports, all in one Redis Cluster slot.
// A project's state lives in its partition (PrefixOf, shard.go), and what a host writes
// (heartbeats, capability reports, inventories, agent journals) in its host's slot
// (HostPrefix), so that the load spreads over a Cluster's masters while every multi-key script
// and transaction stays in one slot. docs/architecture.md lists every key.
const KeyPrefix = "basalt:{basalt}:"

// HostPrefix returns the prefix of the keys written by one host's processes: those keys share
// the host's Cluster slot (the hash tag is the host, the part of a service's host before '@').
// No transaction spans a host's keys and the state's: a host's writes are single-slot, and the
// indexes that name them (ServicesKey, BeatsKey, ReportsKey) are written after them.
func HostPrefix(host string) string {
	if i := strings.IndexByte(host, '@'); i >= 0 {
		host = host[:i]
	}
	return "basalt:{h:" + host + "}:"
}

// ServicesKey is the set of every service that ever heartbeated, as "binary|host".
const ServicesKey = KeyPrefix + "services"

// ServiceKey is the hash of one service's heartbeat: zone, created_at, updated_at (Unix
// nanoseconds) and busy (driver calls in flight).
func ServiceKey(binary, host string) string { return HostPrefix(host) + "svc:" + binary + ":" + host }

// CapabilitiesKey holds the latest capability report of one backend (host@backend), as JSON.
func CapabilitiesKey(backend string) string { return HostPrefix(backend) + "caps:" + backend }

// A CapabilityReport is what an agent reports for one backend: its driver's report as Cinder's
// volume manager sends it to the scheduler, raw. Capabilities holds the backend-level keys and
// Pools the pools, each as reported: a key the driver does not report is absent, and no
// backend-level key is merged into the pools here. The reader builds each pool's capabilities
// as Cinder's scheduler host manager does (functions/store.PoolsFromReport).
type CapabilityReport struct {
	Backend   string    `json:"backend"`
	Zone      string    `json:"zone"`
	Timestamp time.Time `json:"timestamp"`
	// Capabilities holds the backend-level keys (volume_backend_name, vendor_name,
	// driver_version, storage_protocol, ...). Reports written before it existed have none:
	// their pools carry the backend's keys.
	Capabilities basalt.Capabilities `json:"capabilities,omitempty"`
	// Pools holds the pools' keys. null, with Capabilities, is a driver that reports no pools
	// (the backend is its own single pool); [] is a backend without pools.
	Pools []basalt.Capabilities `json:"pools"`
}

// Presence writes heartbeats and capability reports. It is safe for concurrent use; give it a
// Redis client of its own so that a busy data path never delays a heartbeat.
type Presence struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// NewPresence returns a Presence writing through rdb. now is the clock (time.Now if nil).
func NewPresence(rdb redis.UniversalClient, now func() time.Time) *Presence {
	if now == nil {
		now = time.Now
	}
	return &Presence{rdb: rdb, now: now}
}

// Close closes the Redis client the Presence writes through. The owner of a Presence made with
// a client of its own calls it once nothing runs Run or writes through it any more; a Presence
// made with a shared client is left to that client's owner.
func (p *Presence) Close() error { return p.rdb.Close() }

// Heartbeat records that service binary on host is alive, in zone, with busy calls in flight.
func (p *Presence) Heartbeat(ctx context.Context, binary, host, zone string, busy int) error {
	now := p.now().UTC().UnixNano()
	key := ServiceKey(binary, host)
	member := binary + "|" + host
	// The heartbeat first, then the indexes that name it (another slot in a Cluster): a reader
	// that finds the service in the indexes finds its heartbeat. Both writes may be repeated.
	_, err := p.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.HSetNX(ctx, key, "created_at", now)
		tx.HSet(ctx, key, "zone", zone, "updated_at", strconv.FormatInt(now, 10), "busy", busy)
		return nil
	})
	if err == nil {
		_, err = p.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
			tx.SAdd(ctx, ServicesKey, member)
			tx.ZAdd(ctx, BeatsKey, redis.Z{Score: float64(now / 1e6), Member: member})
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("heartbeat %s %s: %w", binary, host, err)
	}
	return nil
}

// Report stores a backend's capability report, replacing the previous one. Each backend has
// one agent, so reports of one backend never race.
func (p *Presence) Report(ctx context.Context, r CapabilityReport) error {
	if r.Timestamp.IsZero() {
		r.Timestamp = p.now().UTC()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// The report first, then its entry in the index of reports (another slot in a Cluster).
	err = p.rdb.Set(ctx, CapabilitiesKey(r.Backend), b, 0).Err()
	if err == nil {
		err = p.rdb.ZAdd(ctx, ReportsKey, redis.Z{Score: float64(p.now().UnixMilli()), Member: r.Backend}).Err()
	}
	if err != nil {
		return fmt.Errorf("report capabilities of %s: %w", r.Backend, err)
	}
	return nil
}

// ReportsKey indexes the backends by when they last reported (ms), so that a scheduler reads
// only the reports written since it last looked.
const ReportsKey = KeyPrefix + "caps:updated"

// BeatsKey indexes the services ("binary|host") by when they last heartbeated (ms), so that a
// scheduler reads only the heartbeats written since it last looked.
const BeatsKey = KeyPrefix + "svc:beats"

// Run heartbeats service binary on host every interval until ctx ends, starting at once. busy,
// if non-nil, reports the calls in flight. Failures are logged, never fatal: a heartbeat that
// cannot be written is what makes a service look down.
func (p *Presence) Run(ctx context.Context, binary, host, zone string, interval time.Duration,
	busy func() int, logger *slog.Logger) error {
	beat := func() {
		n := 0
		if busy != nil {
			n = busy()
		}
		hctx, cancel := context.WithTimeout(ctx, interval)
		defer cancel()
		if err := p.Heartbeat(hctx, binary, host, zone, n); err != nil && ctx.Err() == nil {
			logger.Warn("heartbeat", "binary", binary, "host", host, "err", err)
		}
	}
	beat()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			beat()
		}
	}
}

// OperationKey holds operation id's record (JSON, written by functions). Agents read it to skip
// commands whose operation already ended.
func OperationKey(id string) string { return PrefixOf(id) + "op:" + id }

// JournalKey is the hash of the commands a backend (host@backend) accepted and has not finished
// (op id → command), written by its agent, in its host's slot.
func JournalKey(backend string) string { return HostPrefix(backend) + "agent:" + backend + ":inflight" }
