// Package results is the results function: it applies agents' outcomes to resource state,
// reschedules failed creates, and reconciles operations past their deadline, so that no volume
// stays in a transitional status forever. Every change is keyed by operation id: a redelivered
// result, or one that arrives after the reconciler ended its operation, changes nothing.
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
}

// Publisher sends a message to a topic (events.Bus).
type Publisher interface {
	Publish(topic, opID, requestID string, v any) error
}

// Function applies results.
type Function struct {
	cfg    Config
	store  *store.Store
	pub    Publisher
	logger *slog.Logger
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
	return f.Apply(msg.Context(), r)
}

// Apply applies one result. It is idempotent.
func (f *Function) Apply(ctx context.Context, r events.Result) error {
	log := f.logger.With("volume_id", r.VolumeID, "op_id", r.OpID, "request_id", r.RequestID, "backend", r.Backend)
	switch r.Kind {
	case events.KindCreateVolume:
		if r.OK {
			return f.finish(ctx, r.OpID, r.VolumeID, func(v *basalt.Volume) error {
				v.Status, v.StatusReason = basalt.StatusAvailable, ""
				log.Info("volume available", "host", v.Host)
				return nil
			})
		}
		return f.createFailed(ctx, r, log)
	case events.KindDeleteVolume:
		if r.OK {
			return f.deleted(ctx, r, log)
		}
		log.Warn("volume delete failed", "err", r.Error)
		return f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, r.Error, func(v *basalt.Volume) error {
			v.Status, v.StatusReason = basalt.StatusErrorDeleting, r.Error
			return nil
		})
	case events.KindExtendVolume:
		if r.OK {
			return f.finish(ctx, r.OpID, r.VolumeID, func(v *basalt.Volume) error {
				v.Status = basalt.StatusAvailable
				return nil
			})
		}
		return f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, r.Error, func(v *basalt.Volume) error {
			v.Status, v.StatusReason = basalt.StatusErrorExtend, r.Error
			return nil
		})
	}
	return fmt.Errorf("unknown result kind %q", r.Kind)
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

func (f *Function) deleted(ctx context.Context, r events.Result, log *slog.Logger) error {
	v, err := f.store.Volume(ctx, r.VolumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if v.OpID != r.OpID {
		return nil
	}
	// Capacity first: if we crash after it, the redelivered result finds nothing to release
	// and deletes the record; the other order could leak capacity.
	if err := f.store.Release(ctx, v.ID); err != nil {
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
	if r.Reschedule && r.Command != nil && op.Attempts < f.cfg.MaxAttempts {
		if err := f.store.Release(ctx, r.VolumeID); err != nil {
			return err
		}
		_, err := f.store.UpdateVolumeWithOp(ctx, r.VolumeID, func(v *basalt.Volume) error {
			if v.OpID != r.OpID {
				return store.ErrOpFinished
			}
			v.Host = ""
			return nil
		}, func(*basalt.Volume) *basalt.Operation {
			o := *op
			o.Owner, o.Reason, o.UpdatedAt = "scheduler", "rescheduled after: "+r.Error, f.store.Now()
			return &o
		})
		if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil
		}
		if err != nil {
			return err
		}
		cmd := *r.Command
		cmd.Attempted = r.Attempted
		log.Warn("volume create failed; rescheduling", "err", r.Error, "attempt", op.Attempts)
		return f.pub.Publish(events.TopicScheduler, cmd.OpID, cmd.RequestID, cmd)
	}
	log.Warn("volume create failed", "err", r.Error)
	reason := fmt.Sprintf("Volume creation failed on %s: %s", r.Backend, r.Error)
	return placement.FailCreate(ctx, f.store, r.OpID, r.VolumeID, r.RequestID, basalt.EventCreateDriverError,
		"schedule allocate volume:"+reason, reason, f.cfg.MessageTTL)
}

// Reconcile ends every pending operation whose deadline has passed: a create ends in error, a
// delete in error_deleting, an extend in error_extending, each with the reason.
func (f *Function) Reconcile(ctx context.Context) error {
	ids, err := f.store.OverdueOps(ctx, f.store.Now())
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
		reason := fmt.Sprintf("The operation %s did not finish by its deadline %s (owner %s).", op.Kind,
			op.Deadline.UTC().Format(basalt.TimeLayout), op.Owner)
		f.logger.Warn("operation overdue", "op_id", op.ID, "volume_id", op.VolumeID, "owner", op.Owner)
		switch op.Kind {
		case events.KindCreateVolume:
			err = placement.FailCreate(ctx, f.store, op.ID, op.VolumeID, op.RequestID, basalt.EventUnknownError,
				"schedule allocate volume:"+reason, reason, f.cfg.MessageTTL)
		case events.KindDeleteVolume:
			err = f.finishWith(ctx, op.ID, op.VolumeID, basalt.OpFailed, reason, func(v *basalt.Volume) error {
				v.Status, v.StatusReason = basalt.StatusErrorDeleting, reason
				return nil
			})
		default:
			err = f.finishWith(ctx, op.ID, op.VolumeID, basalt.OpFailed, reason, func(v *basalt.Volume) error {
				v.Status, v.StatusReason = basalt.StatusErrorExtend, reason
				return nil
			})
		}
		if err != nil {
			return err
		}
		// An operation whose volume is gone is simply closed.
		if _, err := f.store.UpdateOp(ctx, op.ID, func(o *basalt.Operation) error {
			o.State, o.Reason = basalt.OpFailed, reason
			return nil
		}); err != nil && !errors.Is(err, store.ErrOpFinished) && basalt.ErrorCode(err) != basalt.ENOTFOUND {
			return err
		}
	}
	return nil
}

// RunReconciler calls Reconcile every ReconcileInterval until ctx ends.
func (f *Function) RunReconciler(ctx context.Context) error {
	t := time.NewTicker(f.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := f.Reconcile(ctx); err != nil && ctx.Err() == nil {
				f.logger.Error("reconcile", "err", err)
			}
		}
	}
}
