package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// A FeedBackend is what a cache of the pools keeps of one volume backend.
type FeedBackend struct {
	Beat     time.Time     // its latest heartbeat
	Disabled bool          // by an administrator
	Report   string        // its latest capability report, raw
	Pools    []basalt.Pool // the report's pools (PoolsFromReport), without the ledger's figures
}

// Backends returns every volume backend that ever heartbeated, with its latest report. A report
// that is what known (may be nil) holds for its backend is not decoded again: its pools are
// known's.
func (s *Store) Backends(ctx context.Context, known map[string]*FeedBackend) (map[string]*FeedBackend, error) {
	svcs, err := s.Services(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]*FeedBackend{}
	var hosts []string
	for _, svc := range svcs {
		if svc.Binary == basalt.BinaryVolume {
			out[svc.Host] = &FeedBackend{Beat: svc.UpdatedAt, Disabled: svc.Disabled}
			hosts = append(hosts, svc.Host)
		}
	}
	return out, s.readReports(ctx, hosts, out, known)
}

// BackendsChanged returns what changed at or after since: the heartbeat times of the volume
// backends that heartbeated, and the reports of those that reported (their entries in
// beats carry no heartbeat unless one came too). Times are the writers' clocks: callers look
// back a margin wider than the skew between hosts, and a report that is what known (may be nil)
// holds for its backend is not decoded again.
func (s *Store) BackendsChanged(ctx context.Context, since time.Time, known map[string]*FeedBackend) (map[string]*FeedBackend, error) {
	min := strconv.FormatInt(since.UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	beats := pipe.ZRangeByScoreWithScores(ctx, events.BeatsKey, &redis.ZRangeBy{Min: min, Max: "+inf"})
	reports := pipe.ZRangeByScore(ctx, events.ReportsKey, &redis.ZRangeBy{Min: min, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read what changed in the backends: %w", err)
	}
	out := map[string]*FeedBackend{}
	for _, z := range beats.Val() {
		binary, host, _ := strings.Cut(z.Member.(string), "|")
		if binary == basalt.BinaryVolume {
			out[host] = &FeedBackend{Beat: time.UnixMilli(int64(z.Score)).UTC()}
		}
	}
	hosts := reports.Val()
	for _, h := range hosts {
		if out[h] == nil {
			out[h] = &FeedBackend{}
		}
	}
	return out, s.readReports(ctx, hosts, out, known)
}

// readReports reads the reports of hosts into their entries of into, decoding only those that
// differ from known's.
func (s *Store) readReports(ctx context.Context, hosts []string, into map[string]*FeedBackend, known map[string]*FeedBackend) error {
	if len(hosts) == 0 {
		return nil
	}
	// One GET per report, pipelined: reports live in their hosts' slots (a Cluster's client
	// sends each node its share in one round trip), where one MGET could not reach them.
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(hosts))
	for i, h := range hosts {
		gets[i] = pipe.Get(ctx, events.CapabilitiesKey(h))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read capabilities: %w", err)
	}
	for i, get := range gets {
		str, err := get.Result()
		if err != nil {
			continue // no report yet
		}
		b := into[hosts[i]]
		b.Report = str
		if k := known[hosts[i]]; k != nil {
			if k.Report == str {
				b.Pools = k.Pools // unchanged since the caller read it: no decode
				continue
			}
			if at, ok := sameButTimestamp(k.Report, str); ok {
				// Reported again, the same but for its time: the known pools, at the new time.
				b.Pools = make([]basalt.Pool, len(k.Pools))
				for j, p := range k.Pools {
					p.UpdatedAt = at
					b.Pools[j] = p
				}
				continue
			}
		}
		var rep events.CapabilityReport
		if err := json.Unmarshal([]byte(str), &rep); err != nil {
			return fmt.Errorf("decode capabilities of %s: %w", hosts[i], err)
		}
		b.Pools = PoolsFromReport(rep)
	}
	return nil
}

// sameButTimestamp reports whether two raw capability reports differ at most in their
// timestamp, and returns b's. The report's own "timestamp" is the first one: Go writes the
// struct's fields in order, and the text cannot occur in a JSON string, where its quotes are
// escaped.
func sameButTimestamp(a, b string) (time.Time, bool) {
	const field = `"timestamp":"`
	ia, ib := strings.Index(a, field), strings.Index(b, field)
	if ia < 0 || ia != ib || a[:ia] != b[:ib] {
		return time.Time{}, false
	}
	ea := strings.IndexByte(a[ia+len(field):], '"')
	eb := strings.IndexByte(b[ib+len(field):], '"')
	if ea < 0 || eb < 0 || a[ia+len(field)+ea:] != b[ib+len(field)+eb:] {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, b[ib+len(field):ib+len(field)+eb])
	return at, err == nil
}

// WithLedger returns copies of pools whose allocated_capacity_gb is the capacity ledger's
// figure, and whose numeric provisioned_capacity_gb is at least that (anything else stays as
// reported, and the scheduler reads it as Cinder does). The maps of pools are not changed.
func (s *Store) WithLedger(ctx context.Context, pools []basalt.Pool) ([]basalt.Pool, error) {
	if len(pools) == 0 {
		return nil, nil
	}
	keys := make([]string, len(pools))
	for i := range pools {
		keys[i] = ledgerKey(pools[i].Name)
	}
	ledgers, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	out := make([]basalt.Pool, len(pools))
	for i, p := range pools {
		var alloc float64
		if str, ok := ledgers[i].(string); ok {
			alloc, _ = strconv.ParseFloat(str, 64)
		}
		c := maps.Clone(p.Capabilities)
		if c == nil {
			c = basalt.Capabilities{}
		}
		c["allocated_capacity_gb"] = alloc
		if prov, ok := c["provisioned_capacity_gb"].(float64); ok && prov < alloc {
			c["provisioned_capacity_gb"] = alloc
		}
		p.Capabilities = c
		out[i] = p
	}
	return out, nil
}
