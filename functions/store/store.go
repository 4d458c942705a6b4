// Package store keeps Basalt's resource state in Redis: volumes, volume types, operations, user
// messages, service administration and the capacity ledger. Functions are its only writers.
// A project's state lives in its partition (events.PrefixOf: one Redis Cluster slot per
// partition), so that a request's transaction or script touches one slot; types, service
// administration and the capacity ledger are global (events.KeyPrefix); what hosts write
// (heartbeats, reports, inventories) lives in their hosts' slots (events.HostPrefix). What
// reads across slots does it with pipelines (partitions.go), never with one multi-key command.
//
// Methods are safe for concurrent use by any number of processes. State changes that depend on
// the current state are compare-and-set (optimistic WATCH transactions or Lua scripts): of two
// concurrent conflicting changes exactly one wins.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

const p = events.KeyPrefix

// Keys in a project's partition (events.PrefixOf: the project's, or its resource's by id).
func volumeKey(id string) string         { return events.PrefixOf(id) + "vol:" + id }
func projectVolumesKey(pr string) string { return events.PrefixOf(pr) + "proj:" + pr + ":vols" }
func typeKey(id string) string           { return p + "type:" + id }
func typeNameKey(name string) string     { return p + "typename:" + name }
func opKey(id string) string             { return events.OperationKey(id) }
func messageKey(id string) string        { return events.PrefixOf(id) + "msg:" + id }
func projectMessagesKey(pr string) string {
	return events.PrefixOf(pr) + "proj:" + pr + ":msgs"
}
func serviceAdminKey(binary, host string) string { return p + "svcadmin:" + binary + ":" + host }
func ledgerKey(pool string) string               { return p + "ledger:" + pool }
func allocKey(volumeID string) string            { return p + "alloc:" + volumeID }

const (
	typesKey    = p + "types"
	defaultType = p + "default_type"
)

// Keys of one partition that list what is in it across projects: resource id → its list.
func volumesKey(id string) string      { return events.PrefixOf(id) + "vols" }
func opsPendingKey(opID string) string { return events.PendingOpsKey(opID) }
func outboxKey(opID string) string     { return events.PrefixOf(opID) + "outbox" }

// volumesIn lists every volume of partition n (its key of volumesKey).
func volumesIn(n int) string { return events.ShardPrefix(n) + "vols" }

// Store is the Redis-backed system of record.
type Store struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// New returns a Store on rdb; now is the clock (time.Now if nil).
func New(rdb redis.UniversalClient, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{rdb: rdb, now: now}
}

// Redis returns the underlying client (for presence readers and the dead-letter listing).
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Now returns the store's clock reading in UTC.
func (s *Store) Now() time.Time { return s.now().UTC() }

func getJSON[T any](ctx context.Context, c redis.Cmdable, key string) (*T, error) {
	b, err := c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are encoded
	}
	return b
}

func score(t time.Time) float64 { return float64(t.UnixMicro()) }

// update runs fn on the decoded value at key inside an optimistic transaction and writes the
// result back, retrying when another writer got there first. fn returns an error to abort
// (its error is returned as is); extra queues further writes in the same transaction.
func update[T any](ctx context.Context, rdb redis.UniversalClient, key string, notFound error,
	fn func(v *T) error, extra func(tx redis.Pipeliner, v *T)) (*T, error) {
	for attempt := 0; attempt < 100; attempt++ {
		var out *T
		var wrote []byte // the record as this attempt's transaction writes it
		execFailed := false
		err := rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := getJSON[T](ctx, tx, key)
			if err != nil {
				return err
			}
			if v == nil {
				return notFound
			}
			if err := fn(v); err != nil {
				return err
			}
			wrote = mustJSON(v)
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, wrote, redis.KeepTTL) // an operation record keeps its expiry
				if extra != nil {
					extra(pipe, v)
				}
				return nil
			})
			out = v
			execFailed = err != nil && !errors.Is(err, redis.TxFailedErr)
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil && execFailed && landed(ctx, rdb, key, wrote) {
			return out, nil // the transaction ran; only its reply was lost
		}
		return out, err
	}
	return nil, basalt.Errorf(basalt.ECONFLICT, "Too many concurrent updates of %s; try again.", key)
}

// landed reports whether key holds exactly what a transaction whose reply was lost wrote: the
// transaction is all or nothing, and every record written carries its update time, so it ran.
func landed(ctx context.Context, rdb redis.UniversalClient, key string, wrote []byte) bool {
	b, err := rdb.Get(ctx, key).Bytes()
	return err == nil && bytes.Equal(b, wrote)
}

// ---- volumes ----

// CreateVolume stores a new volume and, when op is non-nil, its operation record, atomically.
func (s *Store) CreateVolume(ctx context.Context, v *basalt.Volume, op *basalt.Operation) error {
	_, err := s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Set(ctx, volumeKey(v.ID), mustJSON(v), 0)
		tx.ZAdd(ctx, volumesKey(v.ID), redis.Z{Score: score(v.CreatedAt), Member: v.ID})
		tx.ZAdd(ctx, projectVolumesKey(v.ProjectID), redis.Z{Score: score(v.CreatedAt), Member: v.ID})
		reindexVolume(ctx, tx, nil, v)
		if op != nil {
			putOp(ctx, tx, op)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	return nil
}

// Volume returns volume id, or ENOTFOUND.
func (s *Store) Volume(ctx context.Context, id string) (*basalt.Volume, error) {
	v, err := getJSON[basalt.Volume](ctx, s.rdb, volumeKey(id))
	if err != nil {
		return nil, fmt.Errorf("get volume %s: %w", id, err)
	}
	if v == nil {
		return nil, volumeNotFound(id)
	}
	return v, nil
}

func volumeNotFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", id)
}

// Volumes returns the volumes of project (every project when project is ""), newest first.
func (s *Store) Volumes(ctx context.Context, project string) ([]*basalt.Volume, error) {
	var ids []string
	var err error
	if project != "" {
		ids, err = s.rdb.ZRevRange(ctx, projectVolumesKey(project), 0, -1).Result()
	} else {
		ids, err = rangeAcross(ctx, s.rdb, volumesIn)
	}
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return s.volumesByID(ctx, ids)
}

// VolumePage returns up to limit volumes of project (every project when ""), newest first,
// starting after the volume marker ("" for the first page) and skipping offset more. It reads
// only the page. An unknown marker is ENOTFOUND.
func (s *Store) VolumePage(ctx context.Context, project, marker string, offset, limit int) ([]*basalt.Volume, error) {
	if project == "" {
		return s.volumePageAcross(ctx, marker, offset, limit)
	}
	key := projectVolumesKey(project)
	start := int64(offset)
	if marker != "" {
		rank, err := s.rdb.ZRevRank(ctx, key, marker).Result()
		if errors.Is(err, redis.Nil) {
			return nil, volumeNotFound(marker)
		}
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		start += rank + 1
	}
	ids, err := s.rdb.ZRevRange(ctx, key, start, start+int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return s.volumesByID(ctx, ids)
}

// volumePageAcross is VolumePage of every project.
func (s *Store) volumePageAcross(ctx context.Context, marker string, offset, limit int) ([]*basalt.Volume, error) {
	var after *redis.Z
	if marker != "" {
		score, err := s.rdb.ZScore(ctx, volumesKey(marker), marker).Result()
		if errors.Is(err, redis.Nil) {
			return nil, volumeNotFound(marker)
		}
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		after = &redis.Z{Score: score, Member: marker}
	}
	ids, err := revPageAcross(ctx, s.rdb, volumesIn, after, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return s.volumesByID(ctx, ids)
}

func (s *Store) volumesByID(ctx context.Context, ids []string) ([]*basalt.Volume, error) {
	out := make([]*basalt.Volume, 0, len(ids))
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		keys := make([]string, 0, end-start)
		for _, id := range ids[start:end] {
			keys = append(keys, volumeKey(id))
		}
		vals, err := getMany(ctx, s.rdb, keys)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		for _, raw := range vals {
			str, ok := raw.(string)
			if !ok {
				continue // deleted between the two reads
			}
			var v basalt.Volume
			if err := json.Unmarshal([]byte(str), &v); err != nil {
				return nil, fmt.Errorf("decode volume: %w", err)
			}
			out = append(out, &v)
		}
	}
	return out, nil
}

// UpdateVolume applies fn to volume id atomically (compare-and-set): fn sees the current
// record and returns an error to refuse the change. It returns the updated volume.
func (s *Store) UpdateVolume(ctx context.Context, id string, fn func(v *basalt.Volume) error) (*basalt.Volume, error) {
	return s.UpdateVolumeWithOp(ctx, id, fn, nil)
}

// UpdateVolumeWithOp is UpdateVolume that also stores the operation record that op returns
// (nil for none) in the same transaction.
func (s *Store) UpdateVolumeWithOp(ctx context.Context, id string, fn func(v *basalt.Volume) error,
	op func(v *basalt.Volume) *basalt.Operation) (*basalt.Volume, error) {
	now := s.Now()
	var before []ixEntry // the index entries of the record read
	return update(ctx, s.rdb, volumeKey(id), volumeNotFound(id), func(v *basalt.Volume) error {
		before = volumeIndexEntries(v)
		if err := fn(v); err != nil {
			return err
		}
		v.UpdatedAt = &now
		return nil
	}, func(tx redis.Pipeliner, v *basalt.Volume) {
		reindexVolume(ctx, tx, before, v)
		if op != nil {
			if o := op(v); o != nil {
				putOp(ctx, tx, o)
			}
		}
	})
}

// DeleteVolume removes volume id's record. It is idempotent. The index entries removed are
// those of the record as stored (read under WATCH), which v may not be.
func (s *Store) DeleteVolume(ctx context.Context, v *basalt.Volume) error {
	err := s.txn(ctx, []string{volumeKey(v.ID)}, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		stored, err := getJSON[basalt.Volume](ctx, tx, volumeKey(v.ID))
		if err != nil {
			return nil, err
		}
		return func(tx redis.Pipeliner) {
			tx.Del(ctx, volumeKey(v.ID))
			tx.ZRem(ctx, volumesKey(v.ID), v.ID)
			tx.ZRem(ctx, projectVolumesKey(v.ProjectID), v.ID)
			for _, a := range v.Attachments {
				unindexAttachment(ctx, tx, a.ID, v.ProjectID)
			}
			reindexVolume(ctx, tx, volumeIndexEntries(stored), nil)
		}, nil
	})
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", v.ID, err)
	}
	return nil
}

// DeleteVolumeIf removes volume id's record in one compare-and-set, if check accepts its
// current state (check's error is returned as is).
func (s *Store) DeleteVolumeIf(ctx context.Context, id string, check func(v *basalt.Volume) error) error {
	return s.txn(ctx, []string{volumeKey(id)}, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		v, err := getJSON[basalt.Volume](ctx, tx, volumeKey(id))
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, volumeNotFound(id)
		}
		if err := check(v); err != nil {
			return nil, err
		}
		return func(pipe redis.Pipeliner) {
			pipe.Del(ctx, volumeKey(id))
			pipe.ZRem(ctx, volumesKey(id), id)
			pipe.ZRem(ctx, projectVolumesKey(v.ProjectID), id)
			for _, a := range v.Attachments {
				unindexAttachment(ctx, pipe, a.ID, v.ProjectID)
			}
			reindexVolume(ctx, pipe, volumeIndexEntries(v), nil)
		}, nil
	})
}

// ---- operations ----

func putOp(ctx context.Context, tx redis.Pipeliner, op *basalt.Operation) {
	tx.Set(ctx, opKey(op.ID), mustJSON(op), 7*24*time.Hour)
	if op.State == basalt.OpPending {
		tx.ZAdd(ctx, opsPendingKey(op.ID), redis.Z{Score: float64(op.Deadline.UnixMilli()), Member: op.ID})
	} else {
		tx.ZRem(ctx, opsPendingKey(op.ID), op.ID)
	}
	if op.Send && op.State == basalt.OpPending && len(op.Command) > 0 {
		tx.ZAdd(ctx, outboxKey(op.ID), redis.Z{Score: float64(op.UpdatedAt.UnixMilli()), Member: op.ID})
	}
}

// outboxKey (one per partition) indexes operations whose command is written but not yet sent,
// by when it was written (the outbox). Its entries name operation records, which hold the
// commands.

// MarkSent records that operation id's command reached its topic. It is idempotent.
func (s *Store) MarkSent(ctx context.Context, id string) error {
	return s.rdb.ZRem(ctx, outboxKey(id), id).Err()
}

// Unsent returns up to 100 operations of each partition whose command was written before
// before and is not marked sent, oldest first within each partition.
func (s *Store) Unsent(ctx context.Context, before time.Time) ([]string, error) {
	return partitionsByScore(ctx, s.rdb, func(n int) string { return events.ShardPrefix(n) + "outbox" },
		fmt.Sprint(before.UnixMilli()), 100)
}

// PutOp stores an operation record (pending ones are indexed by deadline).
func (s *Store) PutOp(ctx context.Context, op *basalt.Operation) error {
	_, err := s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error { putOp(ctx, tx, op); return nil })
	return err
}

// Op returns operation id, or ENOTFOUND.
func (s *Store) Op(ctx context.Context, id string) (*basalt.Operation, error) {
	op, err := getJSON[basalt.Operation](ctx, s.rdb, opKey(id))
	if err != nil {
		return nil, err
	}
	if op == nil {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Operation %s could not be found.", id)
	}
	return op, nil
}

// ErrOpFinished is returned by UpdateOp when the operation already ended: the caller is
// seeing a redelivery and must do nothing.
var ErrOpFinished = errors.New("operation already finished")

// UpdateOp applies fn to pending operation id atomically. It returns ErrOpFinished when the
// operation is no longer pending, so each outcome is applied exactly once.
func (s *Store) UpdateOp(ctx context.Context, id string, fn func(op *basalt.Operation) error) (*basalt.Operation, error) {
	now := s.Now()
	return update(ctx, s.rdb, opKey(id), basalt.Errorf(basalt.ENOTFOUND, "Operation %s could not be found.", id),
		func(op *basalt.Operation) error {
			if op.State != basalt.OpPending {
				return ErrOpFinished
			}
			op.UpdatedAt = now
			return fn(op)
		}, func(tx redis.Pipeliner, op *basalt.Operation) {
			if op.State == basalt.OpPending {
				tx.ZAdd(ctx, opsPendingKey(op.ID), redis.Z{Score: float64(op.Deadline.UnixMilli()), Member: op.ID})
			} else {
				tx.ZRem(ctx, opsPendingKey(op.ID), op.ID)
			}
			if op.Send && op.State == basalt.OpPending && len(op.Command) > 0 {
				tx.ZAdd(ctx, outboxKey(op.ID), redis.Z{Score: float64(op.UpdatedAt.UnixMilli()), Member: op.ID})
			}
		})
}

// FailOp ends pending operation id as failed with reason. An operation that already ended, or
// does not exist, is left as it is (nil): callers use it to close whatever is still open.
func (s *Store) FailOp(ctx context.Context, id, reason string) error {
	if id == "" {
		return nil
	}
	_, err := s.UpdateOp(ctx, id, func(op *basalt.Operation) error {
		op.State, op.Reason = basalt.OpFailed, reason
		return nil
	})
	if errors.Is(err, ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

// OverdueOps returns the ids of pending operations whose deadline is before now, up to 1000
// of each partition.
func (s *Store) OverdueOps(ctx context.Context, now time.Time) ([]string, error) {
	return partitionsByScore(ctx, s.rdb, events.PendingOpsIn, fmt.Sprint(now.UnixMilli()), 1000)
}

// ---- messages ----

// CreateMessage stores a user message; it expires at m.ExpiresAt.
func (s *Store) CreateMessage(ctx context.Context, m *basalt.Message) error {
	ttl := m.ExpiresAt.Sub(s.Now())
	if ttl <= 0 {
		ttl = time.Second
	}
	_, err := s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Set(ctx, messageKey(m.ID), mustJSON(m), ttl)
		tx.ZAdd(ctx, projectMessagesKey(m.ProjectID), redis.Z{Score: score(m.CreatedAt), Member: m.ID})
		return nil
	})
	return err
}

// Message returns message id, or ENOTFOUND.
func (s *Store) Message(ctx context.Context, id string) (*basalt.Message, error) {
	m, err := getJSON[basalt.Message](ctx, s.rdb, messageKey(id))
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Message %s could not be found.", id)
	}
	return m, nil
}

// Messages returns project's messages, newest first; expired ones are pruned.
func (s *Store) Messages(ctx context.Context, project string) ([]*basalt.Message, error) {
	ids, err := s.rdb.ZRevRange(ctx, projectMessagesKey(project), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	var out []*basalt.Message
	for _, id := range ids {
		m, err := getJSON[basalt.Message](ctx, s.rdb, messageKey(id))
		if err != nil {
			return nil, err
		}
		if m == nil {
			s.rdb.ZRem(ctx, projectMessagesKey(project), id)
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// DeleteMessage deletes message m.
func (s *Store) DeleteMessage(ctx context.Context, m *basalt.Message) error {
	_, err := s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Del(ctx, messageKey(m.ID))
		tx.ZRem(ctx, projectMessagesKey(m.ProjectID), m.ID)
		return nil
	})
	return err
}

func decisionKey(volumeID string) string { return events.PrefixOf(volumeID) + "decision:" + volumeID }

// PutDecision records the scheduler's explanation of a volume's placement for a week.
func (s *Store) PutDecision(ctx context.Context, volumeID, explanation string) error {
	return s.rdb.Set(ctx, decisionKey(volumeID), explanation, 7*24*time.Hour).Err()
}

// Decision returns the recorded explanation of a volume's placement ("" when none).
func (s *Store) Decision(ctx context.Context, volumeID string) (string, error) {
	v, err := s.rdb.Get(ctx, decisionKey(volumeID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}
