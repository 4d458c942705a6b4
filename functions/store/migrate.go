package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/basalt-storage/basalt/events"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// The key layout. Layout 1 kept every key under events.KeyPrefix, in one Redis Cluster slot;
// layout 2 partitions the resource state by project (events.PrefixOf) and puts what a host
// writes in its host's slot (events.HostPrefix). layoutKey holds the layout in use once
// MigrateLayout has run; layoutLockKey is held by the process running it.
const (
	layoutKey     = p + "layout"
	layoutVersion = "2"
	layoutLockKey = p + "layout:lock"
	layoutLockTTL = 15 * time.Second
	layoutBatch   = 256 // keys, or members of a sorted set, per round trip
)

// errLayoutLockLost ends a migration whose lock another process took: it stopped renewing it
// in time (a stall longer than layoutLockTTL).
var errLayoutLockLost = errors.New("another process took the key layout lock")

// MigrateLayout moves the state that a version of Basalt before the partitioned layout wrote
// into the partitioned layout, and returns how many keys of the old layout it took away
// (moved, split into partitions, or dropped). It runs once per deployment: the API runs it at
// start, before ReindexVolumes, and a version key (basalt:{basalt}:layout = "2") marks it
// done, so that later calls return 0 at once. A deployment without keys of the old layout
// (a fresh one) gets the version key alone.
//
// The rule: each key of the old layout (basalt:{basalt}:<suffix>) goes where this version
// writes it. Records, and what a project or a volume lists, move whole to the partition of
// their id (vol:<id>, snap:<id>, att:<id>, op:<id>, msg:<id>, reply:<op>, decision:<vol>,
// charge:<ref>, vol:<id>:snaps) or project (quota:<p>:limits|usage, proj:<p>:vols|snaps|atts|msgs);
// the sorted sets of every project (vols, snaps, atts, ops:pending, outbox, charges:unbound)
// are split, each member into its own partition's set, with its score; heartbeats, capability
// reports, inventories and agent journals move to their host's slot. A migrated charge names
// its project's usage key (.usage), as charges of this version do, so that its refund gives
// back there. The volume list indexes (vols:by:*, proj:<p>:vols:by:*) and vols:index-version
// are dropped, so that ReindexVolumes rebuilds them; idempotency records (idem:*) are dropped
// too: they expire anyway (after a day by default), and the project that keys them cannot be
// read back from their hash. Everything else (types, default_type, svcadmin:*, services,
// services:version, svc:beats, caps:updated, ledger:*, alloc:*) is global in this layout too
// and stays.
//
// A key moves by DUMP, then RESTORE (with the TTL it had left), then DEL of the old key, and a
// set splits by ZADD of a batch of members into their partitions before their ZREM from the
// old set, so a run that stops anywhere (a crash, a lost connection, ctx) leaves nothing lost,
// and the next run finishes the job without doing anything twice: a key already restored
// (RESTORE answers BUSYKEY) is kept as the new layout holds it (what a hash, set or sorted set
// of the old key adds is merged in, field by field without overwriting), and members already
// added are added again with NX. (On a server whose DUMP serializes strings only, as the
// miniredis that basalt local may embed, a key is copied by type in the same way.) It works
// across Redis Cluster slots, as RENAME could not. One process at a time runs it (a lock,
// renewed while it runs and released at the end, or let expire by a process that died);
// others wait until it is done, so any number of API processes may start together.
//
// Stop every process of the older version first: what one writes to the old layout during or
// after the migration is not moved. And run it before any process of this version serves
// (the scheduler's results and reconciler read the new layout only): a result applied to an
// operation that has not moved yet finds no operation.
//
// Limitation: resources created before the partitioning keep their ids, which were not drawn
// in their project's partition (events.NewID), so most of them land in a partition other than
// their project's. On a single Redis that does not matter: they keep working wherever their
// partition falls. On a Redis Cluster they do not: a transaction or script that writes such a
// resource and its project's keys together (its creation-time lists, quota usage, list
// indexes) spans two slots and fails (CROSSSLOT, or a script's access to a non-local key), so
// ReindexVolumes, and every change, delete or refund of such a resource, fails. MigrateLayout
// refuses, on a Cluster, to move anything when there are such resources, and says so. So: a
// deployment of an older version that has resources keeps a single Redis; a deployment moves
// to a Redis Cluster from a fresh start.
func (s *Store) MigrateLayout(ctx context.Context) (moved int, err error) {
	if done, err := s.layoutDone(ctx); err != nil || done {
		return 0, err
	}
	token := uuid.NewString()
	held, err := s.lockLayout(ctx, token)
	if err != nil || !held {
		return 0, err
	}
	defer func() {
		// Released whatever happened; a release that fails lets the lock expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = unlockLayoutScript.Run(rctx, s.rdb, []string{layoutLockKey}, token).Err()
	}()
	// Done by another process between the first look and the lock?
	if done, err := s.layoutDone(ctx); err != nil || done {
		return 0, err
	}

	// Renew the lock while the migration runs; stop it if another process took the lock.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(layoutLockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				n, err := renewLayoutScript.Run(wctx, s.rdb, []string{layoutLockKey}, token, layoutLockTTL.Milliseconds()).Int()
				if err == nil && n == 0 {
					cancel(errLayoutLockLost)
					return
				}
			}
		}
	}()
	moved, err = s.migrateLayout(wctx)
	close(stop)
	wg.Wait()
	if errors.Is(context.Cause(wctx), errLayoutLockLost) {
		err = errLayoutLockLost
	}
	if err == nil {
		err = s.rdb.Set(wctx, layoutKey, layoutVersion, 0).Err()
	}
	if err != nil {
		return moved, fmt.Errorf("migrate the key layout: %w", err)
	}
	return moved, nil
}

// layoutDone reports whether the key layout is the current one.
func (s *Store) layoutDone(ctx context.Context) (bool, error) {
	v, err := s.rdb.Get(ctx, layoutKey).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read the key layout: %w", err)
	case v != layoutVersion:
		return false, fmt.Errorf("the key layout of this Redis is %q, which this version does not know (it knows %q)", v, layoutVersion)
	}
	return true, nil
}

var (
	unlockLayoutScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
	renewLayoutScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
)

// lockLayout takes the migration's lock under token, waiting while another process holds it.
// It returns false when the layout became current meanwhile (the other process finished).
func (s *Store) lockLayout(ctx context.Context, token string) (bool, error) {
	for {
		ok, err := s.rdb.SetNX(ctx, layoutLockKey, token, layoutLockTTL).Result()
		if err != nil {
			return false, fmt.Errorf("lock the key layout: %w", err)
		}
		if ok {
			return true, nil
		}
		if done, err := s.layoutDone(ctx); err != nil || done {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("wait for the key layout migration of another process: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// What becomes of a key of the old layout.
type layoutStep int

const (
	stepStay       layoutStep = iota // global in the new layout too
	stepDrop                         // rebuilt (list indexes) or expendable (idempotency records)
	stepRecord                       // moved whole: a record, or what a host writes
	stepCollection                   // moved whole, after the records: what a project or volume lists
	stepSplit                        // a sorted set of every project, split into its members' partitions
)

type layoutPlan struct {
	step   layoutStep
	to     string                     // the new key (stepRecord, stepCollection)
	charge bool                       // a charge record (stepRecord): it gets .usage
	keyOf  func(member string) string // the new key of a member (stepSplit)
}

// planLayout returns what becomes of the key of the old layout events.KeyPrefix + suffix.
func planLayout(suffix string) layoutPlan {
	record := func(to string) layoutPlan { return layoutPlan{step: stepRecord, to: to} }
	collection := func(to string) layoutPlan { return layoutPlan{step: stepCollection, to: to} }
	split := func(keyOf func(string) string) layoutPlan { return layoutPlan{step: stepSplit, keyOf: keyOf} }
	drop := layoutPlan{step: stepDrop}
	switch suffix {
	case "vols":
		return split(volumesKey)
	case "snaps":
		return split(snapshotsKey)
	case "atts":
		return split(attachmentsKey)
	case "ops:pending":
		return split(events.PendingOpsKey)
	case "outbox":
		return split(outboxKey)
	case "charges:unbound":
		return split(unboundChargesKey)
	case strings.TrimPrefix(volumeIndexVersionKey, p):
		return drop
	}
	kind, rest, ok := strings.Cut(suffix, ":")
	if !ok {
		return layoutPlan{}
	}
	switch kind {
	case "vol":
		if id, ok := strings.CutSuffix(rest, ":snaps"); ok {
			return collection(volumeSnapshotsKey(id))
		}
		return record(volumeKey(rest))
	case "snap":
		return record(snapshotKey(rest))
	case "att":
		return record(attachmentKey(rest))
	case "op":
		return record(events.OperationKey(rest))
	case "msg":
		return record(messageKey(rest))
	case "reply":
		return record(replyKey(rest))
	case "decision":
		return record(decisionKey(rest))
	case "charge":
		return layoutPlan{step: stepRecord, to: chargeKey(rest), charge: true}
	case "quota":
		if pr, ok := strings.CutSuffix(rest, ":limits"); ok {
			return record(quotaLimitsKey(pr))
		}
		if pr, ok := strings.CutSuffix(rest, ":usage"); ok {
			return record(quotaUsageKey(pr))
		}
	case "proj":
		if strings.Contains(rest, ":vols:by:") {
			return drop
		}
		for _, c := range []struct {
			suffix string
			key    func(string) string
		}{{":vols", projectVolumesKey}, {":snaps", projectSnapshotsKey}, {":atts", projectAttachmentsKey},
			{":msgs", projectMessagesKey}} {
			if pr, ok := strings.CutSuffix(rest, c.suffix); ok {
				return collection(c.key(pr))
			}
		}
	case "vols":
		if strings.HasPrefix(rest, "by:") {
			return drop
		}
	case "idem":
		return drop
	case "svc":
		// svc:<binary>:<host>; the host may hold ':' and '@', the binary holds neither.
		// svc:beats (no host) is global.
		if binary, host, ok := strings.Cut(rest, ":"); ok {
			return record(events.ServiceKey(binary, host))
		}
	case "caps":
		if rest != "updated" {
			return record(events.CapabilitiesKey(rest))
		}
	case "inventory":
		return record(events.InventoryKey(rest))
	case "agent":
		if backend, ok := strings.CutSuffix(rest, ":inflight"); ok {
			return record(events.JournalKey(backend))
		}
	}
	return layoutPlan{}
}

// A keyMove moves the key from to the key to.
type keyMove struct {
	from, to string
	charge   bool
}

// migrateLayout moves every key of the old layout, the records first and what lists them
// after, so that a reader of the new layout that finds an id in a list finds its record.
func (s *Store) migrateLayout(ctx context.Context) (int, error) {
	keys, err := scanKeys(ctx, s.rdb, p+"*")
	if err != nil {
		return 0, fmt.Errorf("list the keys of the old layout: %w", err)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys) // SCAN may return a key twice
	var drops []string
	var records, collections []keyMove
	type splitSet struct {
		key   string
		keyOf func(string) string
	}
	var splits []splitSet
	for _, k := range keys {
		if k == volumeIndexVersionKey {
			continue // dropped first, if there is anything to do
		}
		plan := planLayout(strings.TrimPrefix(k, p))
		switch plan.step {
		case stepDrop:
			drops = append(drops, k)
		case stepRecord:
			records = append(records, keyMove{from: k, to: plan.to, charge: plan.charge})
		case stepCollection:
			collections = append(collections, keyMove{from: k, to: plan.to})
		case stepSplit:
			splits = append(splits, splitSet{k, plan.keyOf})
		}
	}
	if len(drops)+len(records)+len(collections)+len(splits) == 0 {
		return 0, nil
	}
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		if err := s.checkAligned(ctx, records); err != nil {
			return 0, err
		}
	}
	// The index version first: until ReindexVolumes has rebuilt the indexes, they are
	// incomplete, whenever this run stops.
	moved, err := s.rdb.Del(ctx, volumeIndexVersionKey).Result()
	if err != nil {
		return 0, fmt.Errorf("drop the volume index version: %w", err)
	}
	for chunk := range slices.Chunk(drops, layoutBatch) {
		n, err := s.rdb.Del(ctx, chunk...).Result() // one slot: the old layout's
		moved += n
		if err != nil {
			return int(moved), fmt.Errorf("drop the list indexes and idempotency records: %w", err)
		}
	}
	for _, moves := range [][]keyMove{records, collections} {
		n, err := s.moveKeys(ctx, moves)
		moved += int64(n)
		if err != nil {
			return int(moved), err
		}
	}
	for _, set := range splits {
		did, err := s.splitSet(ctx, set.key, set.keyOf)
		if did {
			moved++
		}
		if err != nil {
			return int(moved), err
		}
	}
	return int(moved), nil
}

// checkAligned refuses, before anything moves, old resources that a Redis Cluster could not
// serve: a volume, snapshot or operation whose id is not in its project's partition, or an
// attachment not in its volume's. Their every later write would span two slots.
func (s *Store) checkAligned(ctx context.Context, records []keyMove) error {
	var keys, ids []string
	for _, m := range records {
		suffix := strings.TrimPrefix(m.from, p)
		kind, id, _ := strings.Cut(suffix, ":")
		if (kind == "vol" && !strings.Contains(id, ":")) || kind == "snap" || kind == "op" || kind == "att" {
			keys, ids = append(keys, m.from), append(ids, id)
		}
	}
	var misaligned []string
	for start := 0; start < len(keys); start += layoutBatch {
		end := min(start+layoutBatch, len(keys))
		vals, err := s.rdb.MGet(ctx, keys[start:end]...).Result() // one slot: the old layout's
		if err != nil {
			return fmt.Errorf("read the records of the old layout: %w", err)
		}
		for i, v := range vals {
			raw, ok := v.(string)
			if !ok {
				continue
			}
			id, owner := ids[start+i], ""
			if strings.HasPrefix(strings.TrimPrefix(keys[start+i], p), "att:") {
				owner = raw // an attachment's record is its volume's id
			} else {
				var rec struct {
					ProjectID string `json:"project_id"`
				}
				if json.Unmarshal([]byte(raw), &rec) != nil || rec.ProjectID == "" {
					continue
				}
				owner = rec.ProjectID
			}
			if events.ShardOf(id) != events.ShardOf(owner) {
				misaligned = append(misaligned, id)
			}
		}
	}
	if len(misaligned) > 0 {
		return fmt.Errorf("this Redis Cluster holds %d resources of an older version (%s...) whose ids are not "+
			"in their project's partition; a Cluster cannot serve them, nothing was moved: "+
			"run this version on a single Redis, or start the Cluster fresh", len(misaligned), misaligned[0])
	}
	return nil
}

// moveKeys moves keys, a batch per round trip of each step, and returns how many it moved.
func (s *Store) moveKeys(ctx context.Context, moves []keyMove) (int, error) {
	moved := 0
	for chunk := range slices.Chunk(moves, layoutBatch) {
		n, err := s.moveBatch(ctx, chunk)
		moved += n
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

func (s *Store) moveBatch(ctx context.Context, moves []keyMove) (int, error) {
	// Read every old key with its TTL (and a charge's project) at one point in time: the old
	// keys share one slot, so one transaction reads them all.
	dumps := make([]*redis.StringCmd, len(moves))
	ttls := make([]*redis.DurationCmd, len(moves))
	projects := make([]*redis.StringCmd, len(moves))
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, m := range moves {
			dumps[i] = pipe.Dump(ctx, m.from)
			ttls[i] = pipe.PTTL(ctx, m.from)
			if m.charge {
				projects[i] = pipe.HGet(ctx, m.from, chargeProjectField)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) {
		return 0, fmt.Errorf("read the keys of the old layout: %w", err)
	}

	// RESTORE each where the new layout keeps it, without replacing what is there.
	restores := make([]*redis.StatusCmd, len(moves))
	var copies []int // keys DUMP does not serialize
	pipe := s.rdb.Pipeline()
	for i, m := range moves {
		dump, err := dumps[i].Result()
		ttl := ttls[i].Val()
		switch {
		case errors.Is(err, redis.Nil) || ttl == -2:
			continue // gone already, or expired since
		case isWrongType(err):
			// A server whose DUMP serializes strings only (miniredis, which basalt local may
			// run on): copied by type below.
			copies = append(copies, i)
			continue
		case err != nil:
			return 0, fmt.Errorf("read %s: %w", m.from, err)
		}
		restores[i] = pipe.Restore(ctx, m.to, max(ttl, 0), dump)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command's error is read below
	}
	moved := make([]bool, len(moves))
	for i, m := range moves {
		if restores[i] == nil {
			continue
		}
		err := restores[i].Err()
		if err != nil && strings.HasPrefix(err.Error(), "BUSYKEY") {
			// The new key exists: this key was restored by a run that stopped before deleting
			// it, or the new layout wrote there since. The new key wins; merge in what the old
			// one adds.
			err = s.copyInto(ctx, m.from, m.to, 0)
		}
		if err != nil {
			return 0, fmt.Errorf("move %s to %s: %w", m.from, m.to, err)
		}
		moved[i] = true
	}
	for _, i := range copies {
		if err := s.copyInto(ctx, moves[i].from, moves[i].to, max(ttls[i].Val(), 0)); err != nil {
			return 0, fmt.Errorf("move %s to %s: %w", moves[i].from, moves[i].to, err)
		}
		moved[i] = true
	}

	// A charge names its project's usage key, where its refund gives back.
	pipe = s.rdb.Pipeline()
	var done []string
	for i, m := range moves {
		if !moved[i] {
			continue
		}
		done = append(done, m.from)
		if m.charge {
			if pr := projects[i].Val(); pr != "" {
				pipe.HSet(ctx, m.to, chargeUsageField, quotaUsageKey(pr))
			}
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, fmt.Errorf("name the usage keys of the charges moved: %w", err)
		}
	}
	if len(done) == 0 {
		return 0, nil
	}
	n, err := s.rdb.Del(ctx, done...).Result()
	if err != nil {
		return 0, fmt.Errorf("delete the keys moved from the old layout: %w", err)
	}
	return int(n), nil
}

func isWrongType(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE") }

// copyInto writes what the key from holds into the key to, by type, keeping what to holds: a
// string or a list is written only when to does not exist, a hash's fields and a set's or
// sorted set's members are added unless to has them. With ttl > 0, to expires after ttl. It
// may be repeated: a copy that stopped midway is finished, and nothing is added twice.
func (s *Store) copyInto(ctx context.Context, from, to string, ttl time.Duration) error {
	typ, err := s.rdb.Type(ctx, from).Result()
	if err != nil {
		return err
	}
	switch typ {
	case "string":
		var v string
		if v, err = s.rdb.Get(ctx, from).Result(); err == nil {
			err = s.rdb.SetNX(ctx, to, v, 0).Err()
		}
	case "list":
		var n int64
		if n, err = s.rdb.Exists(ctx, to).Result(); err == nil && n == 0 {
			var vs []string
			if vs, err = s.rdb.LRange(ctx, from, 0, -1).Result(); err == nil && len(vs) > 0 {
				err = s.rdb.RPush(ctx, to, anySlice(vs)...).Err()
			}
		}
	case "hash":
		var h map[string]string
		if h, err = s.rdb.HGetAll(ctx, from).Result(); err == nil && len(h) > 0 {
			pipe := s.rdb.Pipeline()
			for f, v := range h {
				pipe.HSetNX(ctx, to, f, v)
			}
			_, err = pipe.Exec(ctx)
		}
	case "set":
		var ms []string
		if ms, err = s.rdb.SMembers(ctx, from).Result(); err == nil && len(ms) > 0 {
			err = s.rdb.SAdd(ctx, to, anySlice(ms)...).Err()
		}
	case "zset":
		var zs []redis.Z
		if zs, err = s.rdb.ZRangeWithScores(ctx, from, 0, -1).Result(); err == nil && len(zs) > 0 {
			err = s.rdb.ZAddNX(ctx, to, zs...).Err()
		}
	case "none":
		return nil // gone since
	default:
		return fmt.Errorf("%s is a %s, which the key layout has none of", from, typ)
	}
	if errors.Is(err, redis.Nil) {
		return nil // gone since
	}
	if err == nil && ttl > 0 {
		err = s.rdb.PExpire(ctx, to, ttl).Err()
	}
	return err
}

// splitSet moves every member of the sorted set key, with its score, into the set keyOf(member)
// of its partition, a batch at a time: added there (NX: a score the new layout wrote since
// stands) before removed here. It reports whether it moved anything.
func (s *Store) splitSet(ctx context.Context, key string, keyOf func(string) string) (bool, error) {
	did := false
	for {
		zs, err := s.rdb.ZRangeWithScores(ctx, key, 0, layoutBatch-1).Result()
		if err != nil {
			return did, fmt.Errorf("read %s: %w", key, err)
		}
		if len(zs) == 0 {
			return did, nil
		}
		byKey := map[string][]redis.Z{}
		var targets []string
		members := make([]any, len(zs))
		for i, z := range zs {
			to := keyOf(z.Member.(string))
			if byKey[to] == nil {
				targets = append(targets, to)
			}
			byKey[to] = append(byKey[to], z)
			members[i] = z.Member
		}
		pipe := s.rdb.Pipeline()
		for _, to := range targets {
			pipe.ZAddNX(ctx, to, byKey[to]...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return did, fmt.Errorf("split %s into its partitions: %w", key, err)
		}
		if err := s.rdb.ZRem(ctx, key, members...).Err(); err != nil {
			return did, fmt.Errorf("split %s into its partitions: %w", key, err)
		}
		did = true
	}
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
