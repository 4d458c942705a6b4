package store

import (
	"context"
	"fmt"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// Inventory returns the latest inventory that backend's agent reported (events.Inventory), or
// nil when it has reported none.
func (s *Store) Inventory(ctx context.Context, backend string) (*events.Inventory, error) {
	inv, err := getJSON[events.Inventory](ctx, s.rdb, events.InventoryKey(backend))
	if err != nil {
		return nil, fmt.Errorf("read the inventory of %s: %w", backend, err)
	}
	return inv, nil
}

// VolumesByID returns the volumes among ids that have a record, by id.
func (s *Store) VolumesByID(ctx context.Context, ids []string) (map[string]*basalt.Volume, error) {
	vs, err := s.volumesByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*basalt.Volume, len(vs))
	for _, v := range vs {
		out[v.ID] = v
	}
	return out, nil
}

// CreateVolumeIfAbsent stores a new volume and its operation record, atomically, unless a
// volume with v's id exists: then it returns taken's error for the existing volume and writes
// nothing. An adoption keeps its object's id, so of two adoptions of one object exactly one
// creates the record.
func (s *Store) CreateVolumeIfAbsent(ctx context.Context, v *basalt.Volume, op *basalt.Operation,
	taken func(have *basalt.Volume) error) error {
	return s.txn(ctx, []string{volumeKey(v.ID)}, func(tx *redis.Tx) (func(redis.Pipeliner), error) {
		have, err := getJSON[basalt.Volume](ctx, tx, volumeKey(v.ID))
		if err != nil {
			return nil, err
		}
		if have != nil {
			return nil, taken(have)
		}
		return func(pipe redis.Pipeliner) {
			pipe.Set(ctx, volumeKey(v.ID), mustJSON(v), 0)
			pipe.ZAdd(ctx, volumesKey(v.ID), redis.Z{Score: score(v.CreatedAt), Member: v.ID})
			pipe.ZAdd(ctx, projectVolumesKey(v.ProjectID), redis.Z{Score: score(v.CreatedAt), Member: v.ID})
			reindexVolume(ctx, pipe, nil, v)
			if op != nil {
				putOp(ctx, pipe, op)
			}
		}, nil
	})
}
