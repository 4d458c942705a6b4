package results

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
)

// The outbox: a transaction that starts an operation writes its command into the operation's
// record and indexes it as unsent (store.Unsent); whoever made the change publishes it at once
// and marks it sent. The relay sends what is still unsent after RelayDelay: the command of a
// process that died between its transaction and its publish, or of a publish the bus refused.
// A command may so be sent twice; every consumer is idempotent by operation id.

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a plain struct of ours
	}
	return b
}

// send publishes op's command and marks it sent; on failure the relay sends it later.
func (f *Function) send(ctx context.Context, op *basalt.Operation) {
	if err := f.pub.PublishContext(ctx, events.CurrentTopic(op.Topic), op.ID, op.RequestID, op.Command); err != nil {
		f.logger.Warn("publish command; the relay will send it", "topic", op.Topic, "op_id", op.ID, "err", err)
		return
	}
	if err := f.store.MarkSent(ctx, op.ID); err != nil {
		f.logger.Warn("mark a command sent; the relay may send it again", "op_id", op.ID, "err", err)
	}
}

// Relay sends every command of a pending operation that was written before now minus
// RelayDelay and is not marked sent, and drops entries of operations that have ended.
func (f *Function) Relay(ctx context.Context) error {
	ids, err := f.store.Unsent(ctx, f.store.Now().Add(-f.cfg.RelayDelay))
	if err != nil {
		return err
	}
	for _, id := range ids {
		op, err := f.store.Op(ctx, id)
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			_ = f.store.MarkSent(ctx, id)
			continue
		}
		if err != nil {
			return err
		}
		if op.State != basalt.OpPending || len(op.Command) == 0 {
			if err := f.store.MarkSent(ctx, id); err != nil {
				return err
			}
			continue
		}
		f.logger.Info("relaying an unsent command", "op_id", op.ID, "topic", op.Topic, "kind", op.Kind)
		if err := f.pub.PublishContext(ctx, events.CurrentTopic(op.Topic), op.ID, op.RequestID, op.Command); err != nil {
			return err
		}
		if err := f.store.MarkSent(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// RunRelay calls Relay and SweepCharges every RelayDelay until ctx ends.
func (f *Function) RunRelay(ctx context.Context) error {
	return f.every(ctx, f.cfg.RelayDelay, "relay", func(ctx context.Context) error {
		return errors.Join(f.Relay(ctx), f.SweepCharges(ctx))
	})
}

// SweepCharges refunds the quota charges whose request died between the charge and the
// record that owns it (store.SweepCharges), once they are ChargeGrace old.
func (f *Function) SweepCharges(ctx context.Context) error {
	refunded, err := f.store.SweepCharges(ctx, f.store.Now().Add(-f.cfg.ChargeGrace))
	for _, id := range refunded {
		f.logger.Warn("refunded a quota charge that no record owns", "charge", id)
	}
	return err
}
