package results

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
)

// connected applies an initialize_connection outcome: the attachment (when the connection is
// one of the attachments API) takes the connection info and goes to attaching, or to
// error_attaching, and the operation ends; the reply that the waiting request reads is pushed
// in the same transaction. An export made for an operation that ended without it (the request
// gave up, the attachment was deleted) is torn down, so no target outlives its attachment.
func (f *Function) connected(ctx context.Context, r events.Result, cmd events.Command, log *slog.Logger) error {
	state, reason := basalt.OpDone, ""
	if !r.OK {
		state, reason = basalt.OpFailed, r.Error
	}
	reply := r
	reply.Command = nil
	payload, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	op, err := f.store.Op(ctx, r.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return f.orphanExport(ctx, r, cmd, nil, log)
	}
	if err != nil {
		return err
	}
	if cmd.AttachmentID == "" {
		err = f.store.EndOpWithReply(ctx, r.OpID, state, reason, payload)
	} else {
		now := f.store.Now()
		_, err = f.store.ChangeVolume(ctx, r.VolumeID, func(v *basalt.Volume, ch *store.VolumeChange) error {
			a := v.Attachment(cmd.AttachmentID)
			if a == nil || a.OpID != r.OpID || op.State != basalt.OpPending {
				return store.ErrOpFinished
			}
			a.OpID, a.UpdatedAt = "", &now
			if r.OK {
				a.Status, a.StatusReason, a.ConnectionInfo, a.Connector = basalt.AttachAttaching, "", r.ConnectionInfo, cmd.Connector
				a.AttachedHost, _ = cmd.Connector["host"].(string)
				a.Mountpoint, _ = cmd.Connector["mountpoint"].(string)
				if a.Mountpoint == "" {
					a.Mountpoint = "na"
				}
				if v.Status == basalt.StatusAvailable || v.Status == basalt.StatusReserved ||
					v.Status == basalt.StatusInUse || v.Status == basalt.StatusAttaching {
					v.Status, v.AttachStatus = basalt.StatusAttaching, basalt.AttachAttaching
				}
			} else {
				// The agent took back whatever it had exported for this attachment.
				a.Status, a.StatusReason, a.ConnectionInfo = basalt.AttachErrorAttaching, r.Error, nil
			}
			o := *op
			o.State, o.Reason, o.UpdatedAt = state, reason, now
			ch.PutOp(&o)
			ch.Reply(o.ID, payload, o.Deadline.Sub(now))
			return nil
		})
	}
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return f.orphanExport(ctx, r, cmd, op, log)
	}
	if err == nil {
		log.Info("connection initialized", "attachment_id", cmd.AttachmentID, "export_id", cmd.ExportID, "ok", r.OK)
	}
	return err
}

// orphanExport tears down the export of a successful initialize_connection that was not
// applied: its operation ended first. A redelivery of an outcome that was applied (its
// operation is done) changes nothing.
func (f *Function) orphanExport(ctx context.Context, r events.Result, cmd events.Command, op *basalt.Operation, log *slog.Logger) error {
	if !r.OK || (op != nil && op.State == basalt.OpDone) || r.Backend == "" || cmd.ExportID == "" {
		return nil
	}
	undoID := r.OpID + "-undo"
	if _, err := f.store.Op(ctx, undoID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		return err // already asked for (a redelivery), or Redis failed: retried
	}
	log.Warn("tearing down an export made for an operation that ended without it", "export_id", cmd.ExportID)
	now := f.store.Now()
	undo := &basalt.Operation{ID: undoID, Kind: events.KindTerminateConnection, VolumeID: r.VolumeID,
		ProjectID: cmd.ProjectID, RequestID: r.RequestID, State: basalt.OpPending, Owner: r.Backend,
		Deadline: now.Add(f.cfg.OpTimeout), CreatedAt: now, UpdatedAt: now,
		Topic: events.BackendTopic(r.Backend), Send: true}
	undo.Command = mustJSON(events.Command{OpID: undoID, RequestID: r.RequestID, Kind: events.KindTerminateConnection,
		VolumeID: r.VolumeID, ProjectID: cmd.ProjectID, Backend: r.Backend, ExportID: cmd.ExportID})
	// The teardown is an operation of its own with its command in the outbox: the relay sends
	// it if this process dies before it does.
	if err := f.store.PutOp(ctx, undo); err != nil {
		return err
	}
	f.send(ctx, undo)
	return nil
}

// disconnected applies a terminate_connection outcome: its operation ends and the waiting
// request is answered.
func (f *Function) disconnected(ctx context.Context, r events.Result, log *slog.Logger) error {
	state := basalt.OpDone
	if !r.OK {
		state = basalt.OpFailed
		log.Warn("export teardown failed", "err", r.Error)
	}
	reply := r
	reply.Command = nil
	payload, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	err = f.store.EndOpWithReply(ctx, r.OpID, state, r.Error, payload)
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	return err
}

// legacyExpired ends a legacy os-reserve or os-begin_detaching that nothing followed by its
// deadline, as the state machine's failure of its kind: the volume goes back to in-use when it
// has attachments, else available.
func (f *Function) legacyExpired(ctx context.Context, r events.Result) error {
	rule := basalt.VolumeTransitions[r.Kind]
	return f.finishWith(ctx, r.OpID, r.VolumeID, basalt.OpFailed, r.Error, func(v *basalt.Volume) error {
		if v.Status == rule.Doing {
			rule.Fail(v, r.Error)
		}
		v.PreviousStatus = ""
		return nil
	})
}
