package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

func snapshotKey(id string) string         { return events.PrefixOf(id) + "snap:" + id }
func projectSnapshotsKey(pr string) string { return events.PrefixOf(pr) + "proj:" + pr + ":snaps" }
func volumeSnapshotsKey(v string) string   { return events.PrefixOf(v) + "vol:" + v + ":snaps" }

// snapshotsKey lists the snapshots of a snapshot's partition; snapshotsIn, of partition n.
func snapshotsKey(id string) string { return events.PrefixOf(id) + "snaps" }
func snapshotsIn(n int) string      { return events.ShardPrefix(n) + "snaps" }

func snapshotNotFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Snapshot %s could not be found.", id)
}

// txn runs fn in an optimistic transaction watching keys, retrying when another writer got
// there first. fn reads through tx and returns the writes to queue, or an error to abort.
func (s *Store) txn(ctx context.Context, keys []string, fn func(tx *redis.Tx) (func(redis.Pipeliner), error)) error {
	for attempt := 0; attempt < 100; attempt++ {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			writes, err := fn(tx)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				writes(pipe)
				return nil
			})
			return err
		}, keys...)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return err
	}
	return basalt.Errorf(basalt.ECONFLICT, "Too many concurrent updates; try again.")
}

func (s *Store) putSnapshot(ctx context.Context, pipe redis.Pipeliner, sn *basalt.Snapshot) {
	pipe.Set(ctx, snapshotKey(sn.ID), mustJSON(sn), 0)
	z := redis.Z{Score: score(sn.CreatedAt), Member: sn.ID}
	pipe.ZAdd(ctx, snapshotsKey(sn.ID), z)
	pipe.ZAdd(ctx, projectSnapshotsKey(sn.ProjectID), z)
	pipe.ZAdd(ctx, volumeSnapshotsKey(sn.VolumeID), z)
}

// CreateSnapshot stores a new snapshot of volume sn.VolumeID and its operation, if check
// accepts the volume's current state; the volume's snapshot count goes up in the same
// transaction, so a concurrent delete of the volume sees it.
func (s *Store) CreateSnapshot(ctx context.Context, sn *basalt.Snapshot, op *basalt.Operation, check func(v *basalt.Volume) error) error {
	now := s.Now()
	return s.txn(ctx, []string{volumeKey(sn.VolumeID)}, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		v, err := getJSON[basalt.Volume](ctx, tx, volumeKey(sn.VolumeID))
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, volumeNotFound(sn.VolumeID)
		}
		if err := check(v); err != nil {
			return nil, err
		}
		before := volumeIndexEntries(v)
		v.Snapshots++
		v.UpdatedAt = &now
		return func(pipe redis.Pipeliner) {
			pipe.Set(ctx, volumeKey(v.ID), mustJSON(v), 0)
			reindexVolume(ctx, pipe, before, v)
			s.putSnapshot(ctx, pipe, sn)
			if op != nil {
				putOp(ctx, pipe, op)
			}
		}, nil
	})
}

// Snapshot returns snapshot id, or ENOTFOUND.
func (s *Store) Snapshot(ctx context.Context, id string) (*basalt.Snapshot, error) {
	sn, err := getJSON[basalt.Snapshot](ctx, s.rdb, snapshotKey(id))
	if err != nil {
		return nil, fmt.Errorf("get snapshot %s: %w", id, err)
	}
	if sn == nil {
		return nil, snapshotNotFound(id)
	}
	return sn, nil
}

// Snapshots returns project's snapshots (every project's when ""), newest first.
func (s *Store) Snapshots(ctx context.Context, project string) ([]*basalt.Snapshot, error) {
	if project != "" {
		return s.snapshotsIn(ctx, projectSnapshotsKey(project))
	}
	ids, err := rangeAcross(ctx, s.rdb, snapshotsIn)
	if err != nil {
		return nil, err
	}
	return s.snapshotsByID(ctx, ids)
}

// VolumeSnapshots returns the snapshots of volume id, newest first.
func (s *Store) VolumeSnapshots(ctx context.Context, volumeID string) ([]*basalt.Snapshot, error) {
	return s.snapshotsIn(ctx, volumeSnapshotsKey(volumeID))
}

func (s *Store) snapshotsIn(ctx context.Context, key string) ([]*basalt.Snapshot, error) {
	ids, err := s.rdb.ZRevRange(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	return s.snapshotsByID(ctx, ids)
}

func (s *Store) snapshotsByID(ctx context.Context, ids []string) ([]*basalt.Snapshot, error) {
	out := make([]*basalt.Snapshot, 0, len(ids))
	for _, id := range ids {
		sn, err := getJSON[basalt.Snapshot](ctx, s.rdb, snapshotKey(id))
		if err != nil {
			return nil, err
		}
		if sn != nil {
			out = append(out, sn)
		}
	}
	return out, nil
}

// UpdateSnapshot applies fn to snapshot id atomically (compare-and-set) and, when op returns
// an operation, stores it in the same transaction.
func (s *Store) UpdateSnapshot(ctx context.Context, id string, fn func(sn *basalt.Snapshot) error,
	op func(sn *basalt.Snapshot) *basalt.Operation) (*basalt.Snapshot, error) {
	now := s.Now()
	return update(ctx, s.rdb, snapshotKey(id), snapshotNotFound(id), func(sn *basalt.Snapshot) error {
		if err := fn(sn); err != nil {
			return err
		}
		sn.UpdatedAt = &now
		return nil
	}, func(pipe redis.Pipeliner, sn *basalt.Snapshot) {
		if op != nil {
			if o := op(sn); o != nil {
				putOp(ctx, pipe, o)
			}
		}
	})
}

// RemoveSnapshot deletes snapshot sn's record and lowers its volume's snapshot count, in one
// transaction. It is idempotent.
func (s *Store) RemoveSnapshot(ctx context.Context, sn *basalt.Snapshot) error {
	now := s.Now()
	return s.txn(ctx, []string{volumeKey(sn.VolumeID), snapshotKey(sn.ID)}, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		exists, err := tx.Exists(ctx, snapshotKey(sn.ID)).Result()
		if err != nil {
			return nil, err
		}
		v, err := getJSON[basalt.Volume](ctx, tx, volumeKey(sn.VolumeID))
		if err != nil {
			return nil, err
		}
		return func(pipe redis.Pipeliner) {
			if exists == 0 {
				return
			}
			pipe.Del(ctx, snapshotKey(sn.ID))
			pipe.ZRem(ctx, snapshotsKey(sn.ID), sn.ID)
			pipe.ZRem(ctx, projectSnapshotsKey(sn.ProjectID), sn.ID)
			pipe.ZRem(ctx, volumeSnapshotsKey(sn.VolumeID), sn.ID)
			if v != nil {
				before := volumeIndexEntries(v)
				v.Snapshots = max(0, v.Snapshots-1)
				v.UpdatedAt = &now
				pipe.Set(ctx, volumeKey(v.ID), mustJSON(v), 0)
				reindexVolume(ctx, pipe, before, v)
			}
		}, nil
	})
}

// UpdateVolumeAndSnapshots applies fn to volume volumeID and its snapshots snapIDs in one
// compare-and-set (revert, cascade delete), storing the operation op returns (when op is
// non-nil and returns one) in the same transaction. fn may change any of them.
func (s *Store) UpdateVolumeAndSnapshots(ctx context.Context, volumeID string, snapIDs []string,
	fn func(v *basalt.Volume, snaps []*basalt.Snapshot) error, op func() *basalt.Operation) (*basalt.Volume, []*basalt.Snapshot, error) {
	now := s.Now()
	keys := []string{volumeKey(volumeID)}
	for _, id := range snapIDs {
		keys = append(keys, snapshotKey(id))
	}
	var vOut *basalt.Volume
	var sOut []*basalt.Snapshot
	err := s.txn(ctx, keys, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		v, err := getJSON[basalt.Volume](ctx, tx, volumeKey(volumeID))
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, volumeNotFound(volumeID)
		}
		snaps := make([]*basalt.Snapshot, 0, len(snapIDs))
		for _, id := range snapIDs {
			sn, err := getJSON[basalt.Snapshot](ctx, tx, snapshotKey(id))
			if err != nil {
				return nil, err
			}
			if sn == nil {
				return nil, snapshotNotFound(id)
			}
			snaps = append(snaps, sn)
		}
		before := volumeIndexEntries(v)
		if err := fn(v, snaps); err != nil {
			return nil, err
		}
		v.UpdatedAt = &now
		for _, sn := range snaps {
			sn.UpdatedAt = &now
		}
		vOut, sOut = v, snaps
		return func(pipe redis.Pipeliner) {
			pipe.Set(ctx, volumeKey(v.ID), mustJSON(v), 0)
			reindexVolume(ctx, pipe, before, v)
			for _, sn := range snaps {
				pipe.Set(ctx, snapshotKey(sn.ID), mustJSON(sn), 0)
			}
			if op != nil {
				if o := op(); o != nil {
					putOp(ctx, pipe, o)
				}
			}
		}, nil
	})
	return vOut, sOut, err
}

// growScript claims delta more GiB for a volume that already holds capacity on its pool, once
// per operation. KEYS: ledger, alloc. ARGV: op id, delta, limit ("inf"). Returns 1 when
// claimed (or already claimed by this operation), 0 when the limit would be exceeded.
var growScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[2], 'op:' .. ARGV[1]) == 1 then return 1 end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local delta = tonumber(ARGV[2])
if ARGV[3] ~= 'inf' and cur + delta > tonumber(ARGV[3]) + 0.000001 then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], delta)
redis.call('HINCRBYFLOAT', KEYS[2], 'size', delta)
redis.call('HSET', KEYS[2], 'op:' .. ARGV[1], ARGV[2])
return 1
`)

// shrinkScript returns what an operation claimed with Grow. KEYS: ledger, alloc. ARGV: op id.
var shrinkScript = redis.NewScript(`
local delta = redis.call('HGET', KEYS[2], 'op:' .. ARGV[1])
if not delta then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], -tonumber(delta))
redis.call('HINCRBYFLOAT', KEYS[2], 'size', -tonumber(delta))
redis.call('HDEL', KEYS[2], 'op:' .. ARGV[1])
return 1
`)

// Grow claims deltaGB more on pool for volumeID (which must hold capacity there) on behalf
// of operation opID, if the ledger stays within ledgerLimit. It is idempotent per operation.
func (s *Store) Grow(ctx context.Context, volumeID, pool, opID string, deltaGB int, ledgerLimit float64) (bool, error) {
	limit := "inf"
	if ledgerLimit < 1e300 {
		limit = fmt.Sprintf("%f", ledgerLimit)
	}
	n, err := growScript.Run(ctx, s.rdb, []string{ledgerKey(pool), allocKey(volumeID)}, opID, deltaGB, limit).Int()
	if err != nil {
		return false, fmt.Errorf("grow %s on %s: %w", volumeID, pool, err)
	}
	return n == 1, nil
}

// Shrink returns what operation opID claimed with Grow. It is idempotent.
func (s *Store) Shrink(ctx context.Context, volumeID, pool, opID string) error {
	return shrinkScript.Run(ctx, s.rdb, []string{ledgerKey(pool), allocKey(volumeID)}, opID).Err()
}

// SettleGrow forgets operation opID's claim record once the growth is permanent, so that
// Release returns the whole size. It is idempotent.
func (s *Store) SettleGrow(ctx context.Context, volumeID, opID string) error {
	return s.rdb.HDel(ctx, allocKey(volumeID), "op:"+opID).Err()
}
