package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/basalt-storage/basalt"
	"github.com/redis/go-redis/v9"
)

func typeNotFound(idOrName string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Volume type %s could not be found.", idOrName)
}

// CreateType stores a new volume type; a type of the same name is ECONFLICT.
func (s *Store) CreateType(ctx context.Context, t *basalt.VolumeType) error {
	ok, err := s.rdb.SetNX(ctx, typeNameKey(t.Name), t.ID, 0).Result()
	if err != nil {
		return fmt.Errorf("create type: %w", err)
	}
	if !ok {
		return basalt.Errorf(basalt.ECONFLICT, "Volume Type %s already exists.", t.Name)
	}
	_, err = s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Set(ctx, typeKey(t.ID), mustJSON(t), 0)
		tx.ZAdd(ctx, typesKey, redis.Z{Score: score(t.CreatedAt), Member: t.ID})
		return nil
	})
	return err
}

// EnsureType creates t unless a type of its name exists, and returns the stored type.
func (s *Store) EnsureType(ctx context.Context, t *basalt.VolumeType) (*basalt.VolumeType, error) {
	err := s.CreateType(ctx, t)
	if err != nil && basalt.ErrorCode(err) != basalt.ECONFLICT {
		return nil, err
	}
	return s.TypeByName(ctx, t.Name)
}

// Type returns the type with this id, or ENOTFOUND.
func (s *Store) Type(ctx context.Context, id string) (*basalt.VolumeType, error) {
	t, err := getJSON[basalt.VolumeType](ctx, s.rdb, typeKey(id))
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, typeNotFound(id)
	}
	return t, nil
}

// TypeByName returns the type with this name, or ENOTFOUND.
func (s *Store) TypeByName(ctx context.Context, name string) (*basalt.VolumeType, error) {
	id, err := s.rdb.Get(ctx, typeNameKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Volume type with name %s could not be found.", name)
	}
	if err != nil {
		return nil, err
	}
	return s.Type(ctx, id)
}

// Types returns every volume type, oldest first.
func (s *Store) Types(ctx context.Context) ([]*basalt.VolumeType, error) {
	ids, err := s.rdb.ZRange(ctx, typesKey, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	var out []*basalt.VolumeType
	for _, id := range ids {
		t, err := getJSON[basalt.VolumeType](ctx, s.rdb, typeKey(id))
		if err != nil {
			return nil, err
		}
		if t != nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// UpdateType applies fn to type id atomically. A rename to a taken name is ECONFLICT.
func (s *Store) UpdateType(ctx context.Context, id string, fn func(t *basalt.VolumeType) error) (*basalt.VolumeType, error) {
	old, err := s.Type(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := update(ctx, s.rdb, typeKey(id), typeNotFound(id), fn, nil)
	if err != nil {
		return nil, err
	}
	if t.Name != old.Name {
		ok, err := s.rdb.SetNX(ctx, typeNameKey(t.Name), t.ID, 0).Result()
		if err != nil {
			return nil, err
		}
		if !ok {
			// Undo the rename: the name belongs to another type.
			_, _ = update(ctx, s.rdb, typeKey(id), typeNotFound(id), func(x *basalt.VolumeType) error {
				x.Name = old.Name
				return nil
			}, nil)
			return nil, basalt.Errorf(basalt.ECONFLICT, "Volume Type %s already exists.", t.Name)
		}
		s.rdb.Del(ctx, typeNameKey(old.Name))
	}
	return t, nil
}

// DeleteType deletes type t.
func (s *Store) DeleteType(ctx context.Context, t *basalt.VolumeType) error {
	_, err := s.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Del(ctx, typeKey(t.ID), typeNameKey(t.Name))
		tx.ZRem(ctx, typesKey, t.ID)
		return nil
	})
	return err
}

// DefaultTypeID returns the id of the default volume type ("" when none is set).
func (s *Store) DefaultTypeID(ctx context.Context) (string, error) {
	id, err := s.rdb.Get(ctx, defaultType).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return id, err
}

// SetDefaultTypeID makes type id the default.
func (s *Store) SetDefaultTypeID(ctx context.Context, id string) error {
	return s.rdb.Set(ctx, defaultType, id, 0).Err()
}
