package results

import (
	"context"
	"errors"
	"log/slog"
	"math"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
)

// Late outcomes. The reconciler ends an operation whose lease ran out (its agent was down or
// frozen) while the driver call may still finish. Such a success is never ignored:
//
//   - a create whose operation ended in error made a volume that the user was told failed: the
//     backend is asked to delete it (a delete_volume with operation id <op>-undo, idempotent like
//     every driver call). The record stays in error, as Cinder leaves a failed create, and the
//     user deletes it. Repairing the record instead would take capacity and quota back after
//     they were returned, and may no longer fit.
//   - a delete whose operation ended left the volume error_deleting: the backend did delete it,
//     so its capacity and quota are returned and the record is removed.

// created applies a successful create, then removes the volume from the backend if no record
// owns it there.
func (f *Function) created(ctx context.Context, r events.Result, cmd events.Command, log *slog.Logger) error {
	err := f.finish(ctx, r.OpID, r.VolumeID, func(v *basalt.Volume) error {
		if v.Host != r.Host {
			return store.ErrOpFinished // an earlier placement's outcome, delivered late
		}
		basalt.VolumeTransitions[basalt.KindCreateVolume].Succeed(v)
		log.Info("volume available", "host", v.Host)
		return nil
	})
	if err != nil {
		return err
	}
	return f.removeUnowned(ctx, r, cmd, log)
}

// removeUnowned asks r.Backend to delete the volume that the successful create r made there when
// no record owns it (unowned). A redelivery asks again, which the driver's idempotent delete
// absorbs; the undo's own result changes nothing, as its operation has no record.
func (f *Function) removeUnowned(ctx context.Context, r events.Result, cmd events.Command, log *slog.Logger) error {
	if r.Backend == "" {
		return nil
	}
	op, err := f.store.Op(ctx, r.OpID)
	if err != nil && basalt.ErrorCode(err) != basalt.ENOTFOUND {
		return err
	}
	v, err := f.store.Volume(ctx, r.VolumeID)
	if err != nil && basalt.ErrorCode(err) != basalt.ENOTFOUND {
		return err
	}
	if !unowned(op, v, r.Backend) {
		return nil
	}
	log.Warn("removing a volume whose create succeeded after its operation ended", "host", r.Host)
	undo := events.Command{OpID: r.OpID + "-undo", RequestID: r.RequestID, Kind: events.KindDeleteVolume,
		VolumeID: r.VolumeID, ProjectID: cmd.ProjectID, Backend: r.Backend}
	return f.pub.PublishContext(ctx, events.BackendTopic(r.Backend), undo.OpID, undo.RequestID, undo)
}

// unowned reports whether a volume that a successful create made on backend belongs to no
// record, given the create's operation and the volume's record (each nil when there is none).
// It is pure. When in doubt it answers false: a leaked volume can be found and removed later, a
// deleted one cannot be brought back.
func unowned(op *basalt.Operation, v *basalt.Volume, backend string) bool {
	if v == nil {
		return true // deleted meanwhile (the delete may have run before the create ended)
	}
	here := v.Backend() == backend
	switch {
	case op != nil && op.State == basalt.OpPending:
		// Still being created: the volume's own only if it was placed elsewhere since.
		return v.Host != "" && !here
	case op != nil && op.State == basalt.OpFailed:
		// The create failed (its lease ran out): the record does not count on this volume,
		// unless an administrator has reset it since.
		return !here || v.Status == basalt.StatusError || v.Status == basalt.StatusDeleting ||
			v.Status == basalt.StatusErrorDeleting
	default:
		// Done (a redelivery of the success that was applied), or a record long expired.
		return !here
	}
}

// deletedLate applies the success of a delete whose operation ended before it (its lease ran
// out, or a failure was reported first): the volume, error_deleting with no operation in
// flight, is gone from the backend, so its snapshots of the same cascade, its capacity, its
// quota and its record go too. Anything else (a retried delete in flight, the undo of a create,
// a redelivery) changes nothing.
func (f *Function) deletedLate(ctx context.Context, r events.Result, v *basalt.Volume, snapshots []string, log *slog.Logger) error {
	if v.OpID != "" || v.Status != basalt.StatusErrorDeleting || v.Backend() != r.Backend {
		return nil
	}
	op, err := f.store.Op(ctx, r.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if op.Kind != events.KindDeleteVolume || op.VolumeID != v.ID || op.State != basalt.OpFailed {
		return nil
	}
	var snaps []*basalt.Snapshot
	for _, id := range snapshots {
		sn, err := f.store.Snapshot(ctx, id)
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			continue
		}
		if err != nil {
			return err
		}
		if sn.VolumeID != v.ID || sn.OpID != "" || sn.Status != basalt.SnapErrorDeleting {
			return nil // someone acts on it again: their outcome decides
		}
		snaps = append(snaps, sn)
	}
	if v.Snapshots > len(snaps) {
		return nil // snapshots outside the cascade: the volume cannot go
	}
	log.Warn("removing the record of a volume whose delete succeeded after its operation ended")
	// Capacity and quota first, as for a delete in time: a redelivery finds nothing to return.
	for _, sn := range snaps {
		if err := f.store.Release(ctx, "snap:"+sn.ID); err != nil {
			return err
		}
		if err := f.store.Refund(ctx, "snap:"+sn.ID); err != nil {
			return err
		}
		if err := f.store.RemoveSnapshot(ctx, sn); err != nil {
			return err
		}
	}
	if err := f.store.Release(ctx, v.ID); err != nil {
		return err
	}
	if err := f.store.Refund(ctx, "vol:"+v.ID); err != nil {
		return err
	}
	err = f.store.DeleteVolumeIf(ctx, v.ID, func(cur *basalt.Volume) error {
		if cur.OpID != "" || cur.Status != basalt.StatusErrorDeleting || cur.Snapshots > 0 {
			return store.ErrOpFinished
		}
		return nil
	})
	if err == nil || errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

// Late outcomes of work that cannot be undone repair the record instead:
//
//   - an extend whose operation ended left the volume error_extending at its old size while the
//     backend grew it: the volume takes its new size and its status back, and the growth is
//     claimed on its pool and charged to its project whatever the limits (the bytes exist; quota
//     and capacity must count them), in the operation's name, so the settlement of a done extend
//     follows (SettleExtend).
//   - a revert whose operation ended left the volume in error while the backend did restore the
//     snapshot's bytes: the volume is available again.
//
// A snapshot created after its operation ended is removed from the backend, as a late create is
// (the snapshot's record stays in error, and its delete finds nothing to remove).

// extendedLate repairs the record of an extend that succeeded after its operation ended. A
// redelivery finds the operation done and changes nothing.
func (f *Function) extendedLate(ctx context.Context, r events.Result, cmd events.Command, log *slog.Logger) error {
	op, v, ok, err := f.lateTarget(ctx, r, events.KindExtendVolume)
	if !ok || err != nil {
		return err
	}
	newSize, oldSize := cmd.Volume.SizeGB, cmd.OldSizeGB
	if v.Status != basalt.StatusErrorExtend || v.Size != oldSize || newSize <= oldSize {
		return nil // reset or changed since: the administrator's word stands
	}
	// Claim and charge first, in the operation's name (both idempotent): if we crash before the
	// record is repaired, the failed operation's settlement returns them and a redelivery
	// takes them again.
	if _, err := f.store.Grow(ctx, v.ID, v.Host, op.ID, newSize-oldSize, math.Inf(1)); err != nil {
		return err
	}
	if err := f.store.ForceCharge(ctx, v.ProjectID, "ext:"+op.ID,
		store.QuotaRequest{Gigabytes: newSize - oldSize, TypeName: v.VolumeTypeName}); err != nil {
		return err
	}
	err = f.repair(ctx, op, v.ID, func(v *basalt.Volume) error {
		if v.OpID != "" || v.Status != basalt.StatusErrorExtend || v.Size != oldSize {
			return store.ErrOpFinished
		}
		v.Size, v.StatusReason = newSize, ""
		basalt.VolumeTransitions[basalt.KindExtendVolume].Succeed(v)
		return nil
	})
	if err == nil {
		log.Warn("repaired the record of a volume extended after its operation ended", "size", newSize)
	}
	return err
}

// revertedLate repairs the record of a revert that succeeded after its operation ended.
func (f *Function) revertedLate(ctx context.Context, r events.Result, log *slog.Logger) error {
	op, v, ok, err := f.lateTarget(ctx, r, events.KindRevert)
	if !ok || err != nil || v.Status != basalt.StatusError {
		return err
	}
	err = f.repair(ctx, op, v.ID, func(v *basalt.Volume) error {
		if v.OpID != "" || v.Status != basalt.StatusError {
			return store.ErrOpFinished
		}
		v.StatusReason = ""
		basalt.VolumeTransitions[basalt.KindRevert].Succeed(v)
		return nil
	})
	if err == nil {
		log.Warn("repaired the record of a volume reverted after its operation ended", "snapshot_id", r.SnapshotID)
	}
	return err
}

// lateTarget returns the failed operation of kind that r reports a success of, and its volume
// on r's backend with no operation in flight; ok is false when there is nothing to repair.
func (f *Function) lateTarget(ctx context.Context, r events.Result, kind string) (*basalt.Operation, *basalt.Volume, bool, error) {
	if !r.OK {
		return nil, nil, false, nil
	}
	op, err := f.store.Op(ctx, r.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil, nil, false, nil
	}
	if err != nil || op.State != basalt.OpFailed || op.Kind != kind || op.VolumeID != r.VolumeID {
		return nil, nil, false, err
	}
	v, err := f.store.Volume(ctx, r.VolumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil, nil, false, nil
	}
	if err != nil || v.OpID != "" || v.Backend() != r.Backend {
		return nil, nil, false, err
	}
	return op, v, true, nil
}

// repair applies fn to the volume and marks its failed operation done, in one transaction.
func (f *Function) repair(ctx context.Context, op *basalt.Operation, volumeID string, fn func(v *basalt.Volume) error) error {
	_, err := f.store.UpdateVolumeWithOp(ctx, volumeID, fn, func(*basalt.Volume) *basalt.Operation {
		o := *op
		o.State, o.Reason, o.UpdatedAt = basalt.OpDone, "completed after its lease ran out: "+op.Reason, f.store.Now()
		return &o
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

// snapshotCreatedLate removes from the backend a snapshot whose create succeeded after its
// operation ended (the snapshot's record is in error, or gone). A redelivery asks again, which
// the driver's idempotent delete absorbs.
func (f *Function) snapshotCreatedLate(ctx context.Context, r events.Result, cmd events.Command, log *slog.Logger) error {
	if !r.OK || r.Backend == "" {
		return nil
	}
	op, err := f.store.Op(ctx, r.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil || op.State != basalt.OpFailed || op.Kind != events.KindCreateSnapshot {
		return err
	}
	sn, err := f.store.Snapshot(ctx, r.SnapshotID)
	switch {
	case basalt.ErrorCode(err) == basalt.ENOTFOUND:
	case err != nil:
		return err
	case sn.OpID != "" || sn.Status != basalt.SnapError:
		return nil // acted on again since (a delete in flight, a reset): its outcome decides
	}
	log.Warn("removing a snapshot whose create succeeded after its operation ended", "snapshot_id", r.SnapshotID)
	undo := cmd
	undo.OpID, undo.Kind, undo.Backend = r.OpID+"-undo", events.KindDeleteSnapshot, r.Backend
	return f.pub.PublishContext(ctx, events.BackendTopic(r.Backend), undo.OpID, undo.RequestID, undo)
}
