package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// Services returns every service that ever heartbeated, with its administrative state, sorted
// by binary then host.
func (s *Store) Services(ctx context.Context) ([]*basalt.Service, error) {
	members, err := s.rdb.SMembers(ctx, events.ServicesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	sort.Strings(members)
	pipe := s.rdb.Pipeline()
	beats := make([]*redis.MapStringStringCmd, len(members))
	admins := make([]*redis.MapStringStringCmd, len(members))
	for i, m := range members {
		binary, host, _ := strings.Cut(m, "|")
		beats[i] = pipe.HGetAll(ctx, events.ServiceKey(binary, host))
		admins[i] = pipe.HGetAll(ctx, serviceAdminKey(binary, host))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list services: %w", err)
	}
	out := make([]*basalt.Service, 0, len(members))
	for i, m := range members {
		binary, host, _ := strings.Cut(m, "|")
		beat, admin := beats[i].Val(), admins[i].Val()
		svc := &basalt.Service{Binary: binary, Host: host, Zone: beat["zone"],
			UpdatedAt: unixNano(beat["updated_at"]), CreatedAt: unixNano(beat["created_at"])}
		svc.Busy, _ = strconv.Atoi(beat["busy"])
		if admin["disabled"] == "1" {
			svc.Disabled = true
			if r, ok := admin["reason"]; ok {
				svc.DisabledReason = &r
			}
		}
		out = append(out, svc)
	}
	return out, nil
}

func unixNano(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// SetServiceDisabled enables or disables service binary on host; reason is kept when disabling
// (nil for none). An unknown service is ENOTFOUND.
func (s *Store) SetServiceDisabled(ctx context.Context, binary, host string, disabled bool, reason *string) error {
	ok, err := s.rdb.SIsMember(ctx, events.ServicesKey, binary+"|"+host).Result()
	if err != nil {
		return err
	}
	if !ok {
		return basalt.Errorf(basalt.ENOTFOUND, "Service %s on host %s could not be found.", binary, host)
	}
	key := serviceAdminKey(binary, host)
	_, err = s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Incr(ctx, servicesVersionKey)
		tx.Del(ctx, key)
		if disabled {
			tx.HSet(ctx, key, "disabled", "1")
			if reason != nil {
				tx.HSet(ctx, key, "reason", *reason)
			}
		}
		return nil
	})
	return err
}

// servicesVersionKey counts the administrative changes of services (enable, disable), so that
// caches of the pools notice them at once.
const servicesVersionKey = p + "services:version"

// ServicesVersion returns the count of administrative changes of services so far.
func (s *Store) ServicesVersion(ctx context.Context) (int64, error) {
	n, err := s.rdb.Get(ctx, servicesVersionKey).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read services version: %w", err)
	}
	return n, nil
}

// Pools returns the pools of every volume service that is up (heartbeat within downTime of
// now), enabled and has reported capabilities. Each pool's allocated_capacity_gb is the
// capacity ledger's figure, and a numeric provisioned_capacity_gb is at least that.
func (s *Store) Pools(ctx context.Context, now time.Time, downTime time.Duration) ([]basalt.Pool, error) {
	svcs, err := s.Services(ctx)
	if err != nil {
		return nil, err
	}
	var backends []*basalt.Service
	for _, svc := range svcs {
		if svc.Binary == basalt.BinaryVolume && !svc.Disabled && svc.Up(now, downTime) {
			backends = append(backends, svc)
		}
	}
	if len(backends) == 0 {
		return nil, nil
	}
	return s.poolsOf(ctx, backends)
}

// poolsOf returns the pools that backends report, with the ledger's allocated capacity.
func (s *Store) poolsOf(ctx context.Context, backends []*basalt.Service) ([]basalt.Pool, error) {
	hosts := make([]string, len(backends))
	feed := make(map[string]*FeedBackend, len(backends))
	for i, b := range backends {
		hosts[i] = b.Host
		feed[b.Host] = &FeedBackend{}
	}
	if err := s.readReports(ctx, hosts, feed, nil); err != nil {
		return nil, err
	}
	var pools []basalt.Pool
	for _, h := range hosts {
		pools = append(pools, feed[h].Pools...)
	}
	return s.WithLedger(ctx, pools)
}

// reserveScript claims size GiB on a pool's ledger for a volume, if the ledger stays within
// the limit. It is idempotent per volume: a second reservation for the same volume and pool
// succeeds without claiming again. KEYS: ledger, alloc. ARGV: pool, size, limit ("inf" for none).
// Returns 1 when reserved, 0 when the limit would be exceeded.
var reserveScript = redis.NewScript(`
local have = redis.call('HGET', KEYS[2], 'pool')
if have == ARGV[1] then return 1 end
if have then return redis.error_reply('volume already holds capacity on ' .. have) end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local size = tonumber(ARGV[2])
if ARGV[3] ~= 'inf' and cur + size > tonumber(ARGV[3]) + 0.000001 then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], size)
redis.call('HSET', KEYS[2], 'pool', ARGV[1], 'size', ARGV[2])
return 1
`)

// releaseScript returns a volume's claim to its pool's ledger. KEYS: alloc. ARGV: key prefix,
// and optionally the pool the claim must be on (a claim on another pool is left alone).
var releaseScript = redis.NewScript(`
local pool = redis.call('HGET', KEYS[1], 'pool')
if not pool then return 0 end
if ARGV[2] and ARGV[2] ~= '' and ARGV[2] ~= pool then return 0 end
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
local ledger = ARGV[1] .. 'ledger:' .. pool
local left = tonumber(redis.call('INCRBYFLOAT', ledger, -size))
if left < 0.000001 then redis.call('SET', ledger, '0') end
redis.call('DEL', KEYS[1])
return 1
`)

// Reserve claims sizeGB on pool for volumeID atomically, if the pool's ledger stays at or
// below ledgerLimit (math.Inf(1) for no limit). It reports whether the claim was made. Any
// number of scheduler replicas may call it concurrently: the ledger never exceeds the limit.
// Reserving again for the same volume and pool is a no-op that reports true.
func (s *Store) Reserve(ctx context.Context, volumeID, pool string, sizeGB int, ledgerLimit float64) (bool, error) {
	limit := "inf"
	if !math.IsInf(ledgerLimit, 1) {
		limit = strconv.FormatFloat(ledgerLimit, 'f', 6, 64)
	}
	n, err := reserveScript.Run(ctx, s.rdb, []string{ledgerKey(pool), allocKey(volumeID)},
		pool, sizeGB, limit).Int()
	if err != nil {
		return false, fmt.Errorf("reserve %d GiB on %s for %s: %w", sizeGB, pool, volumeID, err)
	}
	return n == 1, nil
}

// Release returns volumeID's claim to its pool. It is idempotent.
func (s *Store) Release(ctx context.Context, volumeID string) error {
	// The ledger key is computed inside the script from the alloc record; both share the
	// hash tag of events.KeyPrefix, so the script stays within one Cluster slot.
	if err := releaseScript.Run(ctx, s.rdb, []string{allocKey(volumeID)}, p).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release capacity of %s: %w", volumeID, err)
	}
	return nil
}

// ReleaseFrom returns volumeID's claim only if it is on pool: a stale outcome of an earlier
// placement never releases the current one. It is idempotent.
func (s *Store) ReleaseFrom(ctx context.Context, volumeID, pool string) error {
	if pool == "" {
		return nil
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{allocKey(volumeID)}, p, pool).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release capacity of %s on %s: %w", volumeID, pool, err)
	}
	return nil
}

// Ledger returns the GiB the ledger holds on pool.
func (s *Store) Ledger(ctx context.Context, pool string) (float64, error) {
	v, err := s.rdb.Get(ctx, ledgerKey(pool)).Float64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}
