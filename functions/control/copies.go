package control

import (
	"context"
	"slices"

	"github.com/basalt-storage/basalt"
)

// A volume or snapshot being copied into a new volume (a clone, a volume from a snapshot)
// lists the copy's operation in its Copies, added in a compare-and-set that checks the source
// is still usable. Delete and revert refuse a source with a pending copy. Ending a copy does
// not have to remove its entry: an entry whose operation has ended is dropped whenever the
// list is read (pendingCopies), so no path that ends a create can leave a source locked.

// pendingCopies returns the operations of copies that are still pending; the others are
// dropped. An operation that cannot be read counts as pending (the safe side).
func (p *Plane) pendingCopies(ctx context.Context, ops []string) []string {
	var out []string
	for _, id := range ops {
		op, err := p.store.Op(ctx, id)
		if basalt.ErrorCode(err) == basalt.ENOTFOUND || (err == nil && op.State != basalt.OpPending) {
			continue
		}
		out = append(out, id)
	}
	return out
}

// holdSource records copy operation opID on the source of a new volume: a snapshot, or a
// volume. It re-checks the source's status in the same compare-and-set.
func (p *Plane) holdSource(ctx context.Context, req VolumeCreate, opID string) error {
	switch {
	case req.SnapshotID != "":
		_, err := p.store.UpdateSnapshot(ctx, req.SnapshotID, func(sn *basalt.Snapshot) error {
			if sn.Status != basalt.SnapAvailable {
				return invalid("Invalid snapshot: Originating snapshot status must be one of 'available' values")
			}
			sn.Copies = append(p.pendingCopies(ctx, sn.Copies), opID)
			return nil
		}, nil)
		return err
	case req.SourceVolID != "":
		_, err := p.store.UpdateVolume(ctx, req.SourceVolID, func(v *basalt.Volume) error {
			if v.Status != basalt.StatusAvailable && v.Status != basalt.StatusInUse {
				return invalid("Invalid volume: Unable to clone volumes that are in an error state, or whose status is not available or in-use (status: %s).", v.Status)
			}
			v.Copies = append(p.pendingCopies(ctx, v.Copies), opID)
			return nil
		})
		return err
	}
	return nil
}

// releaseSource drops copy operation opID from the new volume's source (a create that did not
// go through). It is best effort: a leftover entry is dropped once its operation has ended.
func (p *Plane) releaseSource(ctx context.Context, req VolumeCreate, opID string) {
	drop := func(ops []string) []string { return slices.DeleteFunc(ops, func(id string) bool { return id == opID }) }
	var err error
	switch {
	case req.SnapshotID != "":
		_, err = p.store.UpdateSnapshot(ctx, req.SnapshotID, func(sn *basalt.Snapshot) error {
			sn.Copies = drop(sn.Copies)
			return nil
		}, nil)
	case req.SourceVolID != "":
		_, err = p.store.UpdateVolume(ctx, req.SourceVolID, func(v *basalt.Volume) error {
			v.Copies = drop(v.Copies)
			return nil
		})
	}
	if err != nil && basalt.ErrorCode(err) != basalt.ENOTFOUND {
		p.logger.Warn("release the source of a create", "op_id", opID, "err", err)
	}
}

// refuseCopied is the refusal of a delete or revert of a source with pending copies.
func refuseCopied(kind, id string, ops []string) error {
	return invalid("Invalid %s: %s %s is being copied into a new volume (operation %s); try again when the copy has ended.",
		kind, kind, id, ops[0])
}
