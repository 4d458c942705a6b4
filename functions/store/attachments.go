package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// Attachments live inside their volume's record (basalt.Volume.Attachments), so one
// compare-and-set changes an attachment and the volume's status together. Three indexes find
// them: att:<id> names the volume of attachment id, and two sorted sets (every attachment, and
// each project's) list them by creation time. The indexes are written in the same transaction
// as the volume.

func attachmentKey(id string) string         { return events.PrefixOf(id) + "att:" + id }
func projectAttachmentsKey(pr string) string { return events.PrefixOf(pr) + "proj:" + pr + ":atts" }
func replyKey(opID string) string            { return events.PrefixOf(opID) + "reply:" + opID }

// attachmentsKey lists the attachments of an attachment's partition; attachmentsIn, of partition n.
func attachmentsKey(id string) string { return events.PrefixOf(id) + "atts" }
func attachmentsIn(n int) string      { return events.ShardPrefix(n) + "atts" }

// A VolumeChange collects what one compare-and-set of a volume writes besides the volume
// itself: operation records, and the reply a waiting request reads.
type VolumeChange struct {
	ops   []*basalt.Operation
	reply *reply
}

type reply struct {
	opID    string
	payload []byte
	ttl     time.Duration
}

// PutOp stores op in the same transaction as the volume.
func (c *VolumeChange) PutOp(op *basalt.Operation) { c.ops = append(c.ops, op) }

// Reply pushes payload to the reply list of operation opID, which expires after ttl (at least
// one second): the request waiting on it (WaitReply) wakes up, and no key outlives its reader.
func (c *VolumeChange) Reply(opID string, payload []byte, ttl time.Duration) {
	c.reply = &reply{opID: opID, payload: payload, ttl: max(ttl, time.Second)}
}

// ChangeVolume applies fn to volume id in one compare-and-set, keeps the attachment indexes in
// step with the volume's attachments, and writes what fn added to c in the same transaction.
// fn may run several times (when another writer got there first); it must start from v alone.
// fn's error is returned as is.
func (s *Store) ChangeVolume(ctx context.Context, id string, fn func(v *basalt.Volume, c *VolumeChange) error) (*basalt.Volume, error) {
	now := s.Now()
	var c VolumeChange
	var before map[string]bool
	var indexed []ixEntry // the index entries of the record read
	return update(ctx, s.rdb, volumeKey(id), volumeNotFound(id), func(v *basalt.Volume) error {
		c = VolumeChange{}
		indexed = volumeIndexEntries(v)
		before = map[string]bool{}
		for _, a := range v.Attachments {
			before[a.ID] = true
		}
		if err := fn(v, &c); err != nil {
			return err
		}
		v.UpdatedAt = &now
		return nil
	}, func(tx redis.Pipeliner, v *basalt.Volume) {
		for _, a := range v.Attachments {
			if before[a.ID] {
				delete(before, a.ID)
				continue
			}
			indexAttachment(ctx, tx, a)
		}
		for gone := range before {
			unindexAttachment(ctx, tx, gone, v.ProjectID)
		}
		reindexVolume(ctx, tx, indexed, v)
		for _, op := range c.ops {
			putOp(ctx, tx, op)
		}
		if r := c.reply; r != nil {
			tx.RPush(ctx, replyKey(r.opID), r.payload)
			tx.PExpire(ctx, replyKey(r.opID), r.ttl)
		}
	})
}

func indexAttachment(ctx context.Context, tx redis.Pipeliner, a *basalt.Attachment) {
	z := redis.Z{Score: score(a.CreatedAt), Member: a.ID}
	tx.Set(ctx, attachmentKey(a.ID), a.VolumeID, 0)
	tx.ZAdd(ctx, attachmentsKey(a.ID), z)
	tx.ZAdd(ctx, projectAttachmentsKey(a.ProjectID), z)
}

func unindexAttachment(ctx context.Context, tx redis.Pipeliner, id, project string) {
	tx.Del(ctx, attachmentKey(id))
	tx.ZRem(ctx, attachmentsKey(id), id)
	tx.ZRem(ctx, projectAttachmentsKey(project), id)
}

// WaitReply waits up to timeout for the reply of operation opID and returns its payload, or
// nil when none came in time (or ctx ended).
func (s *Store) WaitReply(ctx context.Context, opID string, timeout time.Duration) ([]byte, error) {
	if timeout < time.Second {
		timeout = time.Second // BLPOP counts whole seconds on Redis < 6; be safe
	}
	res, err := s.rdb.BLPop(ctx, timeout, replyKey(opID)).Result()
	if errors.Is(err, redis.Nil) || ctx.Err() != nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wait for the reply of %s: %w", opID, err)
	}
	return []byte(res[1]), nil
}

func attachmentNotFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", id)
}

// AttachmentVolume returns the id of the volume that holds attachment id, or ENOTFOUND.
func (s *Store) AttachmentVolume(ctx context.Context, id string) (string, error) {
	vid, err := s.rdb.Get(ctx, attachmentKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", attachmentNotFound(id)
	}
	if err != nil {
		return "", fmt.Errorf("find attachment %s: %w", id, err)
	}
	return vid, nil
}

// Attachments returns the attachments of project (every project when ""), newest first, each
// with its volume.
func (s *Store) Attachments(ctx context.Context, project string) ([]*basalt.Attachment, error) {
	var ids []string
	var err error
	if project != "" {
		ids, err = s.rdb.ZRevRange(ctx, projectAttachmentsKey(project), 0, -1).Result()
	} else {
		ids, err = rangeAcross(ctx, s.rdb, attachmentsIn)
	}
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = attachmentKey(id)
	}
	vids, err := getMany(ctx, s.rdb, keys)
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	seen := map[string]bool{}
	var volIDs []string
	for _, raw := range vids {
		if vid, ok := raw.(string); ok && !seen[vid] {
			seen[vid] = true
			volIDs = append(volIDs, vid)
		}
	}
	vols, err := s.volumesByID(ctx, volIDs)
	if err != nil {
		return nil, err
	}
	byID := map[string]*basalt.Attachment{}
	for _, v := range vols {
		for _, a := range v.Attachments {
			byID[a.ID] = a
		}
	}
	out := make([]*basalt.Attachment, 0, len(ids))
	for _, id := range ids {
		if a := byID[id]; a != nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// EndOpWithReply ends pending operation opID in state (done or failed) with reason and, in the
// same transaction, pushes payload to its reply list (which expires at the operation's
// deadline, or a second from now when that has passed). ErrOpFinished: the operation had
// already ended, and nothing was written.
func (s *Store) EndOpWithReply(ctx context.Context, opID, state, reason string, payload []byte) error {
	now := s.Now()
	_, err := update(ctx, s.rdb, opKey(opID), basalt.Errorf(basalt.ENOTFOUND, "Operation %s could not be found.", opID),
		func(op *basalt.Operation) error {
			if op.State != basalt.OpPending {
				return ErrOpFinished
			}
			op.State, op.Reason, op.UpdatedAt = state, reason, now
			return nil
		}, func(tx redis.Pipeliner, op *basalt.Operation) {
			tx.ZRem(ctx, opsPendingKey(op.ID), op.ID)
			tx.RPush(ctx, replyKey(opID), payload)
			tx.PExpire(ctx, replyKey(opID), max(op.Deadline.Sub(now), time.Second))
		})
	return err
}
