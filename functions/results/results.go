// Package results is the results function: it applies agents' outcomes to resource state,
// reschedules failed creates, and reconciles operations whose lease ran out, so that no volume
// stays in a transitional status forever. Every change is keyed by operation id: a redelivered
// result changes nothing. A success that arrives after its operation ended is reconciled, never
// ignored (late.go): a volume made for a create that ended in error is removed from its backend,
// and a volume left error_deleting by a delete that did complete loses its record.
package results

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/basalt-storage/basalt/internal/crash"
)

// Config configures the results function.
type Config struct {
	// MaxAttempts is scheduler_max_attempts (default 3): a failed create is rescheduled while
	// it has had fewer placements.
	MaxAttempts int
	// MessageTTL is how long user messages are kept. Default 30 days.
	MessageTTL time.Duration
	// ReconcileInterval is how often overdue operations are looked for. Default 5s.
	ReconcileInterval time.Duration
	// RelayDelay is how long a written command may wait for its writer to send it before the
	// relay sends it, and how often the relay looks. Default 2s.
	RelayDelay time.Duration
	// ChargeGrace is how long a quota charge may wait for the record that owns it before the
	// sweep refunds it (its request died in between). Default 2m: longer than any request lives.
	ChargeGrace time.Duration
	// OpTimeout is BASALT_OPERATION_TIMEOUT (default 10m, as control's). A rescheduled create
	// gets back the deadline its request gave it, created_at plus OpTimeout, when the lease of
	// the backend that failed it had brought the deadline closer: the next backend then has as
	// long to take the command up as the first had.
	OpTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.MessageTTL == 0 {
		c.MessageTTL = 30 * 24 * time.Hour
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 5 * time.Second
	}
	if c.RelayDelay == 0 {
		c.RelayDelay = 2 * time.Second
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 10 * time.Minute
	}
	if c.ChargeGrace == 0 {
		c.ChargeGrace = 2 * time.Minute
	}
}

// Publisher sends a message to a topic (events.Bus).
type Publisher interface {
	PublishContext(ctx context.Context, topic, opID, requestID string, v any) error
}

// Function applies results.
type Function struct {
	cfg    Config
	store  *store.Store
	pub    Publisher
	logger *slog.Logger
	blind  blindness // the reconciler's
}

// New returns the results function.
func New(cfg Config, st *store.Store, pub Publisher, logger *slog.Logger) *Function {
	cfg.setDefaults()
	return &Function{cfg: cfg, store: st, pub: pub, logger: logger}
}

// Handle is the Watermill handler of the results topic.
func (f *Function) Handle(msg *message.Message) error {
	var r events.Result
	if err := events.Decode(msg, &r); err != nil {
		return err
	}
	if err := f.Apply(msg.Context(), r); err != nil {
		return err
	}
	crash.Point("results.applied") // applied, not yet acknowledged: it is delivered again
	return nil
}

// Apply applies one result. It is idempotent.
func (f *Function) Apply(ctx context.Context, r events.Result) error {
	log := f.logger.With("volume_id", r.VolumeID, "op_id", r.OpID, "request_id", r.RequestID, "backend", r.Backend)
	var cmd events.Command
	if r.Command != nil {
		cmd = *r.Command
	}
	switch r.Kind {
	case events.KindCreateVolume:
		if r.OK {
			return f.created(ctx, r, cmd, log)
		}
		return f.createFailed(ctx, r, log)
	case events.KindDeleteVolume:
		if r.OK {
			return f.deleted(ctx, r, cmd.Snapshots, log)
		}
		log.Warn("volume delete failed", "err", r.Error)
		for _, id := range cmd.Snapshots {
			if err := f.cascadeFailed(ctx, r.OpID, id, r.Error); err != nil {
				return err
			}
		}
		return f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, r.Error, func(v *basalt.Volume) error {
			basalt.VolumeTransitions[basalt.KindDeleteVolume].Fail(v, r.Error)
			return nil
		})
	case events.KindExtendVolume:
		return f.extended(ctx, r, cmd, log)
	case events.KindCreateSnapshot:
		if r.OK {
			if err := f.finishSnapshot(ctx, r.OpID, r.SnapshotID, basalt.OpDone, "", func(sn *basalt.Snapshot) {
				basalt.SnapshotTransitions[basalt.KindCreateSnapshot].Succeed(sn)
				log.Info("snapshot available", "snapshot_id", sn.ID)
			}); err != nil {
				return err
			}
			return f.snapshotCreatedLate(ctx, r, cmd, log)
		}
		reason := fmt.Sprintf("Snapshot creation failed on %s: %s", r.Backend, r.Error)
		return placement.FailSnapshot(ctx, f.store, r.OpID, r.SnapshotID, r.RequestID, basalt.EventSnapshotError,
			"create snapshot:"+reason, reason, f.cfg.MessageTTL)
	case events.KindDeleteSnapshot:
		if r.OK {
			return f.snapshotDeleted(ctx, r.OpID, r.SnapshotID, true)
		}
		return f.finishSnapshot(ctx, r.OpID, r.SnapshotID, basalt.OpFailed, r.Error, func(sn *basalt.Snapshot) {
			basalt.SnapshotTransitions[basalt.KindDeleteSnapshot].Fail(sn, r.Error)
		})
	case events.KindRevert:
		if err := f.reverted(ctx, r, log); err != nil {
			return err
		}
		return f.revertedLate(ctx, r, log)
	case events.KindManageVolume:
		return f.managed(ctx, r, log)
	case events.KindUnmanageVolume:
		return f.unmanaged(ctx, r, log)
	case events.KindInitializeConnection:
		return f.connected(ctx, r, cmd, log)
	case events.KindTerminateConnection:
		return f.disconnected(ctx, r, log)
	case events.KindReserve, events.KindBeginDetaching:
		return f.legacyExpired(ctx, r)
	}
	return fmt.Errorf("unknown result kind %q", r.Kind)
}

// extended applies an extend's outcome: the new size and the previous status, or
// error_extending. The capacity and quota accounting then follows the operation's final state,
// whichever delivery ended it, so a retry after a transient failure completes it.
func (f *Function) extended(ctx context.Context, r events.Result, cmd events.Command, log *slog.Logger) error {
	var err error
	rule := basalt.VolumeTransitions[basalt.KindExtendVolume]
	if r.OK {
		err = f.finish(ctx, r.OpID, r.VolumeID, func(v *basalt.Volume) error {
			v.Size = cmd.Volume.SizeGB
			rule.Succeed(v)
			log.Info("volume extended", "size", v.Size)
			return nil
		})
	} else {
		log.Warn("volume extend failed", "err", r.Error)
		err = f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, r.Error, func(v *basalt.Volume) error {
			rule.Fail(v, r.Error)
			return nil
		})
	}
	if err != nil {
		return err
	}
	if r.OK {
		if err := f.extendedLate(ctx, r, cmd, log); err != nil {
			return err
		}
	}
	return SettleExtend(ctx, f.store, r.OpID, r.VolumeID)
}

// SettleExtend does the accounting of an ended extend, idempotently: a successful one keeps
// its growth (the claim and the quota charge become the volume's), any other returns them.
// It does nothing while the operation is pending.
func SettleExtend(ctx context.Context, st *store.Store, opID, volumeID string) error {
	op, err := st.Op(ctx, opID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil || op.State == basalt.OpPending {
		return err
	}
	if op.State == basalt.OpDone {
		if err := st.SettleGrow(ctx, volumeID, opID); err != nil {
			return err
		}
		return st.TransferCharge(ctx, "ext:"+opID, "vol:"+volumeID)
	}
	if v, err := st.Volume(ctx, volumeID); err == nil && v.Host != "" {
		if err := st.Shrink(ctx, volumeID, v.Host, opID); err != nil {
			return err
		}
	}
	return st.Refund(ctx, "ext:"+opID)
}

// reverted applies a revert's outcome: both back to available, or the volume in error and the
// snapshot available (as Cinder).
func (f *Function) reverted(ctx context.Context, r events.Result, log *slog.Logger) error {
	volRule, snapRule := basalt.VolumeTransitions[basalt.KindRevert], basalt.SnapshotTransitions[basalt.KindRevert]
	op, err := f.store.Op(ctx, r.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	_, _, err = f.store.UpdateVolumeAndSnapshots(ctx, r.VolumeID, []string{r.SnapshotID}, func(v *basalt.Volume, ss []*basalt.Snapshot) error {
		if v.OpID != r.OpID || op.State != basalt.OpPending {
			return store.ErrOpFinished
		}
		reason := "Revert to snapshot " + r.SnapshotID + " failed: " + r.Error
		if r.OK {
			volRule.Succeed(v)
		} else {
			volRule.Fail(v, reason)
		}
		if s := ss[0]; s.OpID == r.OpID {
			if r.OK {
				snapRule.Succeed(s)
			} else {
				snapRule.Fail(s, reason)
			}
		}
		return nil
	}, func() *basalt.Operation {
		o := *op
		o.State, o.Reason, o.UpdatedAt = basalt.OpDone, r.Error, f.store.Now()
		if !r.OK {
			o.State = basalt.OpFailed
		}
		return &o
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err == nil {
		log.Info("volume reverted", "snapshot_id", r.SnapshotID, "ok", r.OK)
	}
	return err
}

// finishSnapshot applies fn to a snapshot and ends its operation in state, if the operation is
// still the snapshot's.
func (f *Function) finishSnapshot(ctx context.Context, opID, snapID, state, reason string, fn func(sn *basalt.Snapshot)) error {
	op, err := f.store.Op(ctx, opID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = f.store.UpdateSnapshot(ctx, snapID, func(sn *basalt.Snapshot) error {
		if sn.OpID != opID || op.State != basalt.OpPending {
			return store.ErrOpFinished
		}
		sn.OpID = ""
		fn(sn)
		return nil
	}, func(*basalt.Snapshot) *basalt.Operation {
		o := *op
		o.State, o.Reason, o.UpdatedAt = state, reason, f.store.Now()
		return &o
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

// cascadeFailed fails the delete of a snapshot held by operation opID (a cascade).
func (f *Function) cascadeFailed(ctx context.Context, opID, snapID, reason string) error {
	_, err := f.store.UpdateSnapshot(ctx, snapID, func(sn *basalt.Snapshot) error {
		if sn.OpID != opID {
			return store.ErrOpFinished
		}
		basalt.SnapshotTransitions[basalt.KindDeleteSnapshot].Fail(sn, reason)
		return nil
	}, nil)
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

// snapshotDeleted removes a deleted snapshot's record and returns its capacity and quota.
// ownOp says the snapshot's own delete operation (not a cascade) is ending.
func (f *Function) snapshotDeleted(ctx context.Context, opID, snapID string, ownOp bool) error {
	sn, err := f.store.Snapshot(ctx, snapID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if sn.OpID != opID {
		return nil
	}
	// Capacity and quota first: if we crash after them, the redelivered result finds nothing
	// to return and removes the record; the other order could leak both.
	if err := f.store.Release(ctx, "snap:"+snapID); err != nil {
		return err
	}
	if err := f.store.Refund(ctx, "snap:"+snapID); err != nil {
		return err
	}
	if ownOp {
		if op, err := f.store.Op(ctx, opID); err == nil && op.State == basalt.OpPending {
			op.State, op.UpdatedAt = basalt.OpDone, f.store.Now()
			if err := f.store.PutOp(ctx, op); err != nil {
				return err
			}
		}
	}
	return f.store.RemoveSnapshot(ctx, sn)
}

func (f *Function) finish(ctx context.Context, opID, volumeID string, fn func(v *basalt.Volume) error) error {
	return f.finishWith(ctx, opID, volumeID, basalt.OpDone, "", fn)
}

// finishWith applies fn to the volume and ends its operation in state, in one transaction, if
// the operation is still the volume's.
func (f *Function) finishWith(ctx context.Context, opID, volumeID, state, reason string, fn func(v *basalt.Volume) error) error {
	op, err := f.store.Op(ctx, opID)
	if err != nil {
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil
		}
		return err
	}
	_, err = f.store.UpdateVolumeWithOp(ctx, volumeID, func(v *basalt.Volume) error {
		if v.OpID != opID || op.State != basalt.OpPending {
			return store.ErrOpFinished
		}
		v.OpID = ""
		return fn(v)
	}, func(*basalt.Volume) *basalt.Operation {
		o := *op
		o.State, o.Reason, o.UpdatedAt = state, reason, f.store.Now()
		return &o
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

func (f *Function) deleted(ctx context.Context, r events.Result, snapshots []string, log *slog.Logger) error {
	v, err := f.store.Volume(ctx, r.VolumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if v.OpID != r.OpID {
		return f.deletedLate(ctx, r, v, snapshots, log)
	}
	for _, id := range snapshots {
		if err := f.snapshotDeleted(ctx, r.OpID, id, false); err != nil {
			return err
		}
	}
	// Capacity and quota first: if we crash after them, the redelivered result finds nothing
	// to return and deletes the record; the other order could leak them.
	if err := f.store.Release(ctx, v.ID); err != nil {
		return err
	}
	if err := f.store.Refund(ctx, "vol:"+v.ID); err != nil {
		return err
	}
	op, err := f.store.Op(ctx, r.OpID)
	if err == nil {
		op.State, op.UpdatedAt = basalt.OpDone, f.store.Now()
		if err := f.store.PutOp(ctx, op); err != nil {
			return err
		}
	}
	log.Info("volume deleted")
	return f.store.DeleteVolume(ctx, v)
}

func (f *Function) createFailed(ctx context.Context, r events.Result, log *slog.Logger) error {
	op, err := f.store.Op(ctx, r.OpID)
	if err != nil {
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil
		}
		return err
	}
	if op.State != basalt.OpPending {
		return nil
	}
	if v, err := f.store.Volume(ctx, r.VolumeID); err != nil || v.OpID != r.OpID || v.Host != r.Host {
		return nil // gone, finished, or an earlier placement's outcome delivered late
	}
	if r.Reschedule && r.Command != nil && op.Attempts < f.cfg.MaxAttempts {
		// Capacity first, and only this placement's: a crash after it leaves the volume on
		// r.Host, so the redelivered result does the rest.
		if err := f.store.ReleaseFrom(ctx, r.VolumeID, r.Host); err != nil {
			return err
		}
		// The volume leaves its pool and the placement command goes out in one transaction.
		cmd := *r.Command
		cmd.Attempted = r.Attempted
		o := *op
		o.Owner, o.Reason, o.UpdatedAt = "scheduler", "rescheduled after: "+r.Error, f.store.Now()
		o.Deadline = later(o.Deadline, o.CreatedAt.Add(f.cfg.OpTimeout))
		o.Topic, o.Command, o.Send = events.TopicScheduler, mustJSON(cmd), true
		_, err := f.store.UpdateVolumeWithOp(ctx, r.VolumeID, func(v *basalt.Volume) error {
			if v.OpID != r.OpID || v.Host != r.Host {
				return store.ErrOpFinished
			}
			v.Host = ""
			return nil
		}, func(*basalt.Volume) *basalt.Operation { return &o })
		if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil
		}
		if err != nil {
			return err
		}
		log.Warn("volume create failed; rescheduling", "err", r.Error, "attempt", op.Attempts)
		f.send(ctx, &o)
		return nil
	}
	log.Warn("volume create failed", "err", r.Error)
	reason := fmt.Sprintf("Volume creation failed on %s: %s", r.Backend, r.Error)
	return placement.FailCreate(ctx, f.store, r.OpID, r.VolumeID, r.Host, r.RequestID, basalt.EventCreateDriverError,
		"schedule allocate volume:"+reason, reason, f.cfg.MessageTTL)
}

// Reconcile ends every pending operation whose deadline has passed: a create ends in error, a
// delete in error_deleting, an extend in error_extending, each with the reason. Once an agent
// holds an operation the deadline is its lease, which the agent renews while it works, so what
// ends here is work that no one does any more: an agent down or frozen past its lease, or a
// command that no agent took up within BASALT_OPERATION_TIMEOUT.
func (f *Function) Reconcile(ctx context.Context) error {
	now := f.store.Now()
	f.blind.begin(now, f.cfg.ReconcileInterval)
	ids, err := f.store.OverdueOps(ctx, now)
	if err != nil {
		return err
	}
	for _, id := range ids {
		op, err := f.store.Op(ctx, id)
		if err != nil {
			if basalt.ErrorCode(err) == basalt.ENOTFOUND {
				continue
			}
			return err
		}
		if op.State != basalt.OpPending {
			_ = f.store.PutOp(ctx, op) // drops it from the pending index
			continue
		}
		if op.Deadline.After(now) {
			continue // its lease was renewed after the index was read
		}
		if f.blind.postponed(op.Deadline, now) {
			continue // its lease ran out while no one could renew it
		}
		reason := fmt.Sprintf("The operation %s did not finish by its deadline %s (owner %s).", op.Kind,
			op.Deadline.UTC().Format(basalt.TimeLayout), op.Owner)
		f.logger.Warn("operation overdue", "op_id", op.ID, "volume_id", op.VolumeID, "owner", op.Owner)
		// An overdue operation ends as if its owner had reported this failure.
		failure := events.Result{OpID: op.ID, RequestID: op.RequestID, Kind: op.Kind, VolumeID: op.VolumeID,
			SnapshotID: op.SnapshotID, Backend: op.Owner, Error: reason,
			Command: &events.Command{AttachmentID: op.AttachmentID}}
		if v, err := f.store.Volume(ctx, op.VolumeID); err == nil {
			failure.Host = v.Host // the failure is about the current placement
		}
		if op.Kind == events.KindDeleteVolume {
			snaps, err := f.store.VolumeSnapshots(ctx, op.VolumeID)
			if err != nil {
				return err
			}
			for _, sn := range snaps {
				if sn.OpID == op.ID {
					failure.Command.Snapshots = append(failure.Command.Snapshots, sn.ID)
				}
			}
		}
		if err := f.Apply(ctx, failure); err != nil {
			return err
		}
		// An operation whose volume is gone is simply closed.
		if err := f.store.FailOp(ctx, op.ID, reason); err != nil {
			return err
		}
	}
	f.blind.done(now)
	return nil
}

// RunReconciler calls Reconcile every ReconcileInterval until ctx ends.
func (f *Function) RunReconciler(ctx context.Context) error {
	return f.every(ctx, f.cfg.ReconcileInterval, "reconcile", f.Reconcile)
}

// every calls fn every interval until ctx ends; a failure is logged as what.
func (f *Function) every(ctx context.Context, interval time.Duration, what string, fn func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				f.logger.Error(what, "err", err)
			}
		}
	}
}
