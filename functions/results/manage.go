package results

import (
	"context"
	"fmt"
	"log/slog"
	"math"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
)

// Outcomes of adoption (manage_volume) and release (unmanage_volume).
//
// An adoption the backend confirmed counts its volume on the pool's ledger, becomes available,
// and keeps its quota (the operation's charge moves into vol:<id>). A failed one is
// error_managing, and its record no longer names a pool: the object was never the volume's, so
// deleting the record, or unmanaging it, leaves the object alone; its quota and capacity are
// returned. A success that arrives after the adoption ended changes nothing: the object stays
// where it is, as an adoption never changes an object.
//
// A release the backend confirmed (its exports are gone) removes the record, its capacity and
// its quota; the object stays. A failed one is error_unmanaging. A success that arrives after
// the release ended in error_unmanaging completes it.

// managed applies an adoption's outcome, then its accounting.
func (f *Function) managed(ctx context.Context, r events.Result, log *slog.Logger) error {
	var err error
	if r.OK {
		v, verr := f.store.Volume(ctx, r.VolumeID)
		if verr == nil && v.OpID == r.OpID && v.Host != "" {
			// The ledger counts the volume before it shows available. Cinder's CapacityFilter
			// passes an adoption whatever the pool holds: the object is there already.
			if _, err := f.store.Reserve(ctx, v.ID, v.Host, v.Size, math.Inf(1)); err != nil {
				return err
			}
		}
		err = f.finish(ctx, r.OpID, r.VolumeID, func(v *basalt.Volume) error {
			basalt.VolumeTransitions[basalt.KindManageVolume].Succeed(v)
			log.Info("volume adopted", "host", v.Host, "size", v.Size)
			return nil
		})
	} else {
		log.Warn("volume adoption failed", "err", r.Error)
		reason := fmt.Sprintf("Manage existing volume failed on %s: %s", r.Backend, r.Error)
		err = f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, reason, func(v *basalt.Volume) error {
			basalt.VolumeTransitions[basalt.KindManageVolume].Fail(v, reason)
			v.Host = ""
			return nil
		})
	}
	if err != nil {
		return err
	}
	return SettleManage(ctx, f.store, r.OpID, r.VolumeID)
}

// SettleManage does the accounting of an ended adoption, idempotently: when the volume keeps its
// object (the adoption succeeded, or an administrator took the volume over by resetting its
// status or deleting it), its capacity is on the ledger and the operation's charge moves into
// vol:<id>; otherwise (the adoption failed, or its record is gone: deleting it returned what
// vol:<id> held) the capacity and the charge are returned. It does nothing while the operation is pending, or for other operations.
func SettleManage(ctx context.Context, st *store.Store, opID, volumeID string) error {
	op, err := st.Op(ctx, opID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil || op.State == basalt.OpPending || op.Kind != events.KindManageVolume {
		return err
	}
	charge := ManageChargeID(opID)
	v, err := st.Volume(ctx, volumeID)
	if err != nil && basalt.ErrorCode(err) != basalt.ENOTFOUND {
		return err
	}
	if v != nil && v.Host != "" {
		if _, err := st.Reserve(ctx, v.ID, v.Host, v.Size, math.Inf(1)); err != nil {
			return err
		}
		return st.TransferCharge(ctx, charge, "vol:"+volumeID)
	}
	if err := st.Release(ctx, volumeID); err != nil {
		return err
	}
	return st.Refund(ctx, charge)
}

// ManageChargeID is the quota charge of adoption opID until it succeeds: the volume's id may be
// another volume's until the adoption's record claims it, so the adoption never charges under
// vol:<id> itself.
func ManageChargeID(opID string) string { return "mng:" + opID }

// unmanaged applies a release's outcome: the record goes with its capacity and quota (the
// object stays), or the volume is error_unmanaging.
func (f *Function) unmanaged(ctx context.Context, r events.Result, log *slog.Logger) error {
	if !r.OK {
		log.Warn("volume unmanage failed", "err", r.Error)
		reason := fmt.Sprintf("Unmanage failed on %s: %s", r.Backend, r.Error)
		return f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, reason, func(v *basalt.Volume) error {
			basalt.VolumeTransitions[basalt.KindUnmanageVolume].Fail(v, reason)
			return nil
		})
	}
	v, err := f.store.Volume(ctx, r.VolumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	op, err := f.store.Op(ctx, r.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	own := v.OpID == r.OpID
	late := v.OpID == "" && v.Status == basalt.StatusErrorUnmanaging && v.Backend() == r.Backend &&
		op.Kind == events.KindUnmanageVolume && op.VolumeID == v.ID && op.State == basalt.OpFailed
	if !own && !late {
		return nil
	}
	// Capacity and quota first: if we crash after them, the redelivered result finds nothing
	// to return and removes the record; the other order could leak them.
	if err := f.store.Release(ctx, v.ID); err != nil {
		return err
	}
	if err := f.store.Refund(ctx, "vol:"+v.ID); err != nil {
		return err
	}
	if op.State == basalt.OpPending {
		op.State, op.UpdatedAt = basalt.OpDone, f.store.Now()
		if err := f.store.PutOp(ctx, op); err != nil {
			return err
		}
	}
	log.Info("volume unmanaged; its object stays on the backend", "late", late)
	return f.store.DeleteVolume(ctx, v)
}
