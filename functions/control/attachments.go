package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
)

// Attachments connect volumes to consumers, as Cinder's attachments API (3.27+) and its legacy
// volume actions do. The state lives in the volume's record (basalt.Volume.Attachments), so an
// attachment and its volume's status change in one compare-and-set. Exports are made by the
// agent of the volume's host: the API publishes an initialize_connection command with an
// operation record whose deadline is CallTimeout, and waits for the reply that the results
// function pushes in the same transaction that applies the outcome (Plane.call).

// AttachmentCreate is a request to create an attachment.
type AttachmentCreate struct {
	VolumeID     string
	InstanceUUID string
	// Connector, when non-nil, connects the attachment at once (as an update would).
	Connector map[string]any
	// Mode is "", rw or ro (microversion 3.54).
	Mode string
}

// attachmentStatuses a volume's attachments decide.
func attachDecided(s basalt.VolumeStatus) bool {
	switch s {
	case basalt.StatusAvailable, basalt.StatusInUse, basalt.StatusAttaching, basalt.StatusDetaching, basalt.StatusReserved:
		return true
	}
	return false
}

// attachmentVolume returns the volume holding attachment id, if the caller may see it.
func (p *Plane) attachmentVolume(ctx context.Context, id string) (*basalt.Volume, *basalt.Attachment, error) {
	vid, err := p.store.AttachmentVolume(ctx, id)
	if err != nil {
		return nil, nil, unavailable(p.logger, "read the attachment", err)
	}
	v, err := p.Volume(ctx, vid)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil, nil, basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", id)
	}
	if err != nil {
		return nil, nil, err
	}
	a := v.Attachment(id)
	if a == nil {
		return nil, nil, basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", id)
	}
	return v, a, nil
}

func checkMode(mode string) error {
	switch mode {
	case "", basalt.ModeRW, basalt.ModeRO:
		return nil
	}
	return invalid("Invalid input for field/attribute mode. Value: %s. '%s' is not one of ['rw', 'ro'].", mode, mode)
}

// CreateAttachment reserves volume req.VolumeID for a consumer: the volume goes to reserved and
// a reserved attachment is recorded. A non-multiattach volume must be available (a second
// attachment is refused, except for the same instance: a live migration); a multiattach one
// available or in-use. With a connector, the attachment is connected at once; if that fails the
// attachment is removed again. Errors: ENOTFOUND, EINVALID (status, mode), and those of
// UpdateAttachment.
func (p *Plane) CreateAttachment(ctx context.Context, req AttachmentCreate) (*basalt.Attachment, error) {
	c := CallerFrom(ctx)
	if err := checkMode(req.Mode); err != nil {
		return nil, err
	}
	if len(req.InstanceUUID) > 255 {
		return nil, invalid("Invalid input for field/attribute instance_uuid. Value is longer than 255 characters.")
	}
	if _, err := p.Volume(ctx, req.VolumeID); err != nil {
		return nil, err
	}
	now := p.store.Now()
	a := &basalt.Attachment{ID: events.NewID(req.VolumeID), VolumeID: req.VolumeID, InstanceUUID: req.InstanceUUID,
		Status: basalt.AttachReserved, Mode: req.Mode, CreatedAt: now}
	a.ExportID = a.ID
	_, err := p.store.ChangeVolume(ctx, req.VolumeID, func(v *basalt.Volume, _ *store.VolumeChange) error {
		if strings.Contains(string(v.Status), "error") {
			return invalid("Invalid volume: Volume attachments can not be created if the volume is in an error state. The Volume %s currently has a status of: %s ", v.ID, v.Status)
		}
		allowed := []basalt.VolumeStatus{basalt.StatusAvailable}
		if v.Multiattach {
			allowed = append(allowed, basalt.StatusInUse)
		}
		ok := false
		for _, s := range allowed {
			ok = ok || v.Status == s
		}
		if ok {
			v.Status = basalt.StatusReserved
		} else if !(req.InstanceUUID != "" && (v.Status == basalt.StatusInUse || v.Status == basalt.StatusReserved) && hasInstance(v, req.InstanceUUID)) {
			names := make([]string, len(allowed))
			for i, s := range allowed {
				names[i] = string(s)
			}
			return invalid("Invalid volume: Volume %s status must be %s to reserve, but the current status is %s.", v.ID, strings.Join(names, " or "), v.Status)
		}
		a.ProjectID = v.ProjectID
		if v.ReadOnly {
			a.Mode = basalt.ModeRO
		}
		v.Attachments = append(v.Attachments, a)
		return nil
	})
	if err != nil {
		return nil, unavailable(p.logger, "create the attachment", err)
	}
	p.logger.Info("attachment reserved", "volume_id", a.VolumeID, "attachment_id", a.ID, "request_id", c.RequestID)
	if len(req.Connector) == 0 { // cinderclient sends {} for "no connector"
		return a, nil
	}
	out, err := p.UpdateAttachment(ctx, a.ID, req.Connector)
	if err != nil {
		if _, derr := p.store.ChangeVolume(ctx, a.VolumeID, func(v *basalt.Volume, _ *store.VolumeChange) error {
			if v.RemoveAttachment(a.ID) {
				v.RecomputeAttachStatus()
			}
			return nil
		}); derr != nil {
			p.logger.Error("remove an attachment whose connection failed", "attachment_id", a.ID, "err", derr)
		}
		return nil, err
	}
	return out, nil
}

func hasInstance(v *basalt.Volume, instance string) bool {
	for _, a := range v.Attachments {
		if a.InstanceUUID == instance {
			return true
		}
	}
	return false
}

// connectorHost returns the connector's host, or "".
func connectorHost(c map[string]any) string {
	h, _ := c["host"].(string)
	return h
}

// UpdateAttachment connects attachment id to the consumer that connector describes: the agent
// of the volume's backend exports the volume and answers with the connection info, which the
// attachment keeps; the attachment and the volume go to attaching. It waits up to CallTimeout.
// Errors: ENOTFOUND; EINVALID (no connector, a volume in error, a connector the backend
// refuses); ECONFLICT (a non-multiattach volume already connected elsewhere, or an update of
// this attachment in flight); EINTERNAL (the backend failed to export); EUNAVAILABLE (the
// backend did not answer in time: the attachment is error_attaching and may be updated again).
func (p *Plane) UpdateAttachment(ctx context.Context, id string, connector map[string]any) (*basalt.Attachment, error) {
	c := CallerFrom(ctx)
	if len(connector) == 0 {
		return nil, invalid("Invalid input for field/attribute connector. Value: %v. connector is required and must not be empty.", connector)
	}
	v, _, err := p.attachmentVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	var op *basalt.Operation
	v, err = p.store.ChangeVolume(ctx, v.ID, func(v *basalt.Volume, ch *store.VolumeChange) error {
		a := v.Attachment(id)
		if a == nil {
			return basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", id)
		}
		if strings.Contains(string(v.Status), "error") {
			return invalid("Invalid volume: Volume attachments can not be updated if the volume is in an error state. The Volume %s currently has a status of: %s ", v.ID, v.Status)
		}
		if v.Host == "" {
			return invalid("Invalid volume: Volume %s is not placed on a backend yet.", v.ID)
		}
		if !v.Multiattach && len(v.Attachments) > 1 {
			for _, o := range v.Attachments {
				if o.ID != id && o.ConnectionInfo != nil {
					return basalt.Errorf(basalt.ECONFLICT, "Invalid volume: duplicate connectors detected on volume %s", v.ID)
				}
			}
		}
		if a.OpID != "" {
			return basalt.Errorf(basalt.ECONFLICT, "Attachment %s is being connected by another request; try again.", id)
		}
		mode := basalt.ModeRW
		if v.ReadOnly || a.Mode == basalt.ModeRO {
			mode = basalt.ModeRO
		}
		op = p.newCallOp(ctx, events.KindInitializeConnection, v)
		op.AttachmentID = id
		a.OpID = op.ID
		enqueue(op, events.BackendTopic(v.Backend()), events.Command{OpID: op.ID, RequestID: c.RequestID,
			Kind: events.KindInitializeConnection, VolumeID: v.ID, ProjectID: v.ProjectID, Backend: v.Backend(),
			ExportID: a.ExportID, AttachmentID: id, Connector: connector, Mode: mode,
			Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size}})
		ch.PutOp(op)
		return nil
	})
	if err != nil {
		return nil, unavailable(p.logger, "update the attachment", err)
	}
	res, err := p.call(ctx, op)
	if err != nil {
		return nil, err
	}
	if res == nil {
		// No answer in time. Whoever changes the attachment first wins: if the answer comes
		// later, the results function finds the operation gone and tears the export down.
		reason := fmt.Sprintf("The backend %s did not answer within %s.", v.Backend(), p.cfg.CallTimeout)
		if err := p.clearAttachmentOp(ctx, v.ID, id, op.ID, reason); err != nil && !errors.Is(err, store.ErrOpFinished) {
			return nil, unavailable(p.logger, "update the attachment", err)
		}
		p.endOp(ctx, op.ID, reason)
	}
	v, a, err := p.attachmentVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case a.ConnectionInfo != nil && a.Status != basalt.AttachErrorAttaching:
		p.logger.Info("attachment connected", "volume_id", v.ID, "attachment_id", id, "op_id", op.ID, "request_id", c.RequestID)
		return a, nil
	case res == nil:
		return nil, basalt.Errorf(basalt.EUNAVAILABLE, "Unable to update attachment.(%s The attachment is %s; try again.)", a.StatusReason, a.Status)
	case res.Invalid:
		return nil, invalid("Unable to update attachment.(%s).", res.Error)
	default:
		return nil, basalt.Errorf(basalt.EINTERNAL, "Unable to update attachment.(%s).", res.Error)
	}
}

// clearAttachmentOp ends operation opID's hold on an attachment, which goes to
// error_attaching for reason (an update that got no answer). ErrOpFinished: the operation no
// longer holds it.
func (p *Plane) clearAttachmentOp(ctx context.Context, volumeID, id, opID, reason string) error {
	_, err := p.store.ChangeVolume(ctx, volumeID, func(v *basalt.Volume, _ *store.VolumeChange) error {
		a := v.Attachment(id)
		if a == nil || a.OpID != opID {
			return store.ErrOpFinished
		}
		a.OpID = ""
		if reason != "" {
			a.Status, a.StatusReason = basalt.AttachErrorAttaching, reason
		}
		return nil
	})
	return err
}

// newCallOp returns an operation for a synchronous call to the volume's backend: its deadline
// is CallTimeout away.
func (p *Plane) newCallOp(ctx context.Context, kind string, v *basalt.Volume) *basalt.Operation {
	op := p.newOp(ctx, kind, v, v.Backend())
	op.Deadline = op.CreatedAt.Add(p.cfg.CallTimeout)
	return op
}

// call sends the command of an operation the caller has recorded (enqueue), and waits until the
// operation's deadline for the reply that the results function pushes when it applies the
// outcome. It returns the outcome, or nil when none came in time. It is Basalt's request/reply
// over the bus: the reply key expires with the deadline, and no goroutine outlives it.
func (p *Plane) call(ctx context.Context, op *basalt.Operation) (*events.Result, error) {
	p.send(ctx, op)
	raw, err := p.store.WaitReply(ctx, op.ID, op.Deadline.Sub(p.store.Now()))
	if err != nil {
		p.logger.Warn("wait for a reply", "op_id", op.ID, "err", err)
		return nil, nil
	}
	if raw == nil {
		return nil, nil
	}
	var r events.Result
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decode the reply of %s: %w", op.ID, err)
	}
	return &r, nil
}

// CompleteAttachment marks attachment id attached (microversion 3.44): the consumer has
// connected. The volume goes to in-use. Errors: ENOTFOUND, ECONFLICT (a connection in flight).
func (p *Plane) CompleteAttachment(ctx context.Context, id string) error {
	v, _, err := p.attachmentVolume(ctx, id)
	if err != nil {
		return err
	}
	now := p.store.Now()
	_, err = p.store.ChangeVolume(ctx, v.ID, func(v *basalt.Volume, _ *store.VolumeChange) error {
		a := v.Attachment(id)
		if a == nil {
			return basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", id)
		}
		if a.OpID != "" {
			return basalt.Errorf(basalt.ECONFLICT, "Attachment %s is being connected; try again when the update has answered.", id)
		}
		a.Status, a.StatusReason, a.AttachedAt, a.UpdatedAt = basalt.AttachAttached, "", &now, &now
		if attachDecided(v.Status) {
			v.Status, v.AttachStatus = basalt.StatusInUse, basalt.AttachAttached
		}
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "complete the attachment", err)
	}
	return nil
}

// DeleteAttachment removes attachment id and returns the volume's remaining attachments. The
// volume's status is recomputed from them. An attachment that was connected has its export
// torn down by the volume's agent: the request waits up to CallTimeout for that, and when the
// agent is away the teardown stays queued and runs when it returns. Errors: ENOTFOUND.
func (p *Plane) DeleteAttachment(ctx context.Context, id string) ([]*basalt.Attachment, error) {
	v, _, err := p.attachmentVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	var removed *basalt.Attachment
	v, err = p.store.ChangeVolume(ctx, v.ID, func(v *basalt.Volume, _ *store.VolumeChange) error {
		removed = v.Attachment(id)
		if removed == nil {
			return basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", id)
		}
		v.RemoveAttachment(id)
		v.RecomputeAttachStatus()
		return nil
	})
	if err != nil {
		return nil, unavailable(p.logger, "delete the attachment", err)
	}
	if removed.OpID != "" {
		p.endOp(ctx, removed.OpID, "the attachment was deleted")
	}
	if removed.Status != basalt.AttachReserved || removed.OpID != "" {
		p.teardown(ctx, v, removed.ExportID, false)
	}
	p.logger.Info("attachment deleted", "volume_id", v.ID, "attachment_id", id, "request_id", CallerFrom(ctx).RequestID)
	return v.Attachments, nil
}

// teardown asks the volume's agent to remove export exportID (or, all, every export of the
// volume) and waits up to CallTimeout for it to be done. A teardown not answered in time stays
// queued for the agent.
func (p *Plane) teardown(ctx context.Context, v *basalt.Volume, exportID string, all bool) error {
	if v.Host == "" {
		return nil
	}
	op := p.newCallOp(ctx, events.KindTerminateConnection, v)
	enqueue(op, events.BackendTopic(v.Backend()), events.Command{OpID: op.ID, RequestID: CallerFrom(ctx).RequestID,
		Kind: events.KindTerminateConnection, VolumeID: v.ID, ProjectID: v.ProjectID, Backend: v.Backend(),
		ExportID: exportID, AllExports: all, Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size}})
	if err := p.store.PutOp(ctx, op); err != nil {
		return unavailable(p.logger, "detach the volume", err)
	}
	res, err := p.call(ctx, op)
	if err != nil {
		return err
	}
	if res == nil {
		p.logger.Warn("export teardown not answered in time; it stays queued for the agent", "volume_id", v.ID,
			"export_id", exportID, "op_id", op.ID, "backend", v.Backend())
	}
	return nil
}

// Attachment returns attachment id if the caller may see it.
func (p *Plane) Attachment(ctx context.Context, id string) (*basalt.Attachment, error) {
	_, a, err := p.attachmentVolume(ctx, id)
	return a, err
}

var attachmentFilters = []string{"volume_id", "status", "instance_id", "attach_status"}

// Attachments lists the attachments the caller may see, newest first, filtered by volume_id,
// status (or attach_status) and instance_id, and paged. Errors: EINVALID (a filter a member may
// not use), ENOTFOUND (marker).
func (p *Plane) Attachments(ctx context.Context, o ListOptions) ([]*basalt.Attachment, bool, error) {
	c := CallerFrom(ctx)
	if err := checkFilters(c, o, attachmentFilters); err != nil {
		return nil, false, err
	}
	project := c.ProjectID
	if c.Admin && o.AllTenants {
		project = o.Filters["project_id"]
		delete(o.Filters, "project_id")
	}
	all, err := p.store.Attachments(ctx, project)
	if err != nil {
		return nil, false, unavailable(p.logger, "list attachments", err)
	}
	var out []*basalt.Attachment
	for _, a := range all {
		if attachmentMatches(a, o.Filters) {
			out = append(out, a)
		}
	}
	for _, k := range o.Sort {
		if k.Key != "created_at" && k.Key != "id" {
			return nil, false, invalid("Invalid sort key %s.", k.Key)
		}
	}
	if len(o.Sort) > 0 && !o.Sort[0].Desc {
		sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	}
	page, more, err := paginate(out, o, func(a *basalt.Attachment) string { return a.ID })
	if err != nil {
		return nil, false, basalt.Errorf(basalt.ENOTFOUND, "VolumeAttachment %s could not be found.", o.Marker)
	}
	return page, more, nil
}

func attachmentMatches(a *basalt.Attachment, f map[string]string) bool {
	for k, want := range f {
		var have string
		switch k {
		case "volume_id":
			have = a.VolumeID
		case "status", "attach_status":
			have = a.Status
		case "instance_id", "instance_uuid":
			have = a.InstanceUUID
		case "project_id":
			have = a.ProjectID
		default:
			continue
		}
		if have != want {
			return false
		}
	}
	return true
}

// ---- the legacy attach actions (what older Nova and many scripts send) ----

// legacyExportID names the export of a legacy connection: one per volume and consumer host,
// so os-initialize_connection, os-attach (host_name) and os-terminate_connection agree on it.
func legacyExportID(volumeID, host string) string {
	sum := sha256.Sum256([]byte(volumeID + "|" + host))
	return "conn-" + hex.EncodeToString(sum[:16])
}

// Reserve is os-reserve: an available volume (or an in-use multiattach one) goes to
// attaching, held by an operation whose deadline is OpTimeout: unless os-attach or os-unreserve
// comes first, the reconciler unreserves it. Errors: ENOTFOUND, EINVALID (status).
func (p *Plane) Reserve(ctx context.Context, id string) error {
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	reserve := basalt.VolumeTransitions[basalt.KindReserve]
	_, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, ch *store.VolumeChange) error {
		if !reserve.CanStart(v.Status, v.Multiattach) {
			want := "available"
			if v.Multiattach {
				want = "available or in-use"
			}
			return invalid("Invalid volume: Volume status must be %s to reserve, but the status is %s.", want, v.Status)
		}
		op := p.newOp(ctx, events.KindReserve, v, "client")
		reserve.Begin(v, op.ID)
		ch.PutOp(op)
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "reserve the volume", err)
	}
	return nil
}

// Unreserve is os-unreserve: an attaching volume goes back to in-use when it has attachments,
// else available. Any other status is left as it is.
func (p *Plane) Unreserve(ctx context.Context, id string) error {
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	return p.settleLegacy(ctx, id, basalt.KindReserve, "unreserved")
}

// settleLegacy ends a legacy reserve or begin_detaching (kind) as the state machine's failure of
// that kind: a volume in the kind's status goes to in-use when it has attachments, else
// available, and its operation ends.
func (p *Plane) settleLegacy(ctx context.Context, id string, kind string, reason string) error {
	var opID string
	rule := basalt.VolumeTransitions[kind]
	_, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, _ *store.VolumeChange) error {
		if v.Status != rule.Doing {
			return store.ErrOpFinished
		}
		opID = v.OpID
		rule.Fail(v, reason)
		return nil
	})
	if errors.Is(err, store.ErrOpFinished) {
		return nil
	}
	if err != nil {
		return unavailable(p.logger, "update the volume", err)
	}
	p.endOp(ctx, opID, reason)
	return nil
}

// BeginDetaching is os-begin_detaching: an in-use, attached volume goes to detaching, held by
// an operation that the reconciler rolls back at its deadline. Errors: EINVALID (status).
func (p *Plane) BeginDetaching(ctx context.Context, id string) error {
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	detach := basalt.VolumeTransitions[basalt.KindBeginDetaching]
	_, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, ch *store.VolumeChange) error {
		if !detach.CanStart(v.Status, false) || v.AttachStatus != basalt.AttachAttached {
			return invalid("Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach.")
		}
		op := p.newOp(ctx, events.KindBeginDetaching, v, "client")
		detach.Begin(v, op.ID)
		ch.PutOp(op)
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "detach the volume", err)
	}
	return nil
}

// RollDetaching is os-roll_detaching: a detaching volume goes back to in-use.
func (p *Plane) RollDetaching(ctx context.Context, id string) error {
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	return p.settleLegacy(ctx, id, basalt.KindBeginDetaching, "detach rolled back")
}

// InitializeConnection is os-initialize_connection: the volume's agent exports the volume to
// the consumer connector describes and the answer is Cinder's connection_info (driver type
// and data). The volume's status does not change. Errors: EINVALID (maintenance, no connector,
// unplaced, a connector the backend refuses), EINTERNAL (the backend failed), EUNAVAILABLE
// (no answer within CallTimeout).
func (p *Plane) InitializeConnection(ctx context.Context, id string, connector map[string]any) (map[string]any, error) {
	v, err := p.Volume(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.Status == basalt.StatusMaintenance {
		return nil, invalid("Invalid volume: The volume connection cannot be initialized in maintenance mode.")
	}
	if len(connector) == 0 {
		return nil, invalid("Invalid input for field/attribute connector. Value: None. connector is required.")
	}
	if v.Host == "" {
		return nil, invalid("Invalid volume: Volume %s is not placed on a backend yet.", v.ID)
	}
	mode := basalt.ModeRW
	if v.ReadOnly {
		mode = basalt.ModeRO
	}
	op := p.newCallOp(ctx, events.KindInitializeConnection, v)
	enqueue(op, events.BackendTopic(v.Backend()), events.Command{OpID: op.ID, RequestID: CallerFrom(ctx).RequestID,
		Kind: events.KindInitializeConnection, VolumeID: v.ID, ProjectID: v.ProjectID, Backend: v.Backend(),
		ExportID: legacyExportID(v.ID, connectorHost(connector)), Connector: connector, Mode: mode,
		Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size}})
	if err := p.store.PutOp(ctx, op); err != nil {
		return nil, unavailable(p.logger, "initialize the connection", err)
	}
	res, err := p.call(ctx, op)
	if err != nil {
		return nil, err
	}
	switch {
	case res == nil:
		p.endOp(ctx, op.ID, "no answer in time")
		return nil, basalt.Errorf(basalt.EUNAVAILABLE, "The backend %s did not answer within %s; try again.", v.Backend(), p.cfg.CallTimeout)
	case res.Invalid:
		return nil, invalid("Invalid input received: %s", res.Error)
	case !res.OK:
		return nil, basalt.Errorf(basalt.EINTERNAL, "Unable to initialize the connection of volume %s: %s", v.ID, res.Error)
	}
	return res.ConnectionInfo, nil
}

// TerminateConnection is os-terminate_connection: the volume's agent removes the export of
// the consumer connector describes, then the volume is unreserved.
func (p *Plane) TerminateConnection(ctx context.Context, id string, connector map[string]any) error {
	v, err := p.Volume(ctx, id)
	if err != nil {
		return err
	}
	if connector != nil {
		if err := p.teardown(ctx, v, legacyExportID(v.ID, connectorHost(connector)), false); err != nil {
			return err
		}
	}
	return p.settleLegacy(ctx, id, basalt.KindReserve, "connection terminated")
}

// LegacyAttach is a request of os-attach.
type LegacyAttach struct {
	InstanceUUID string
	HostName     string
	Mountpoint   string
	Mode         string
}

// Attach is os-attach: the volume is attached (an attached attachment is recorded) and goes to
// in-use. A read-only volume attaches ro only; a non-multiattach volume attaches once.
// Errors: EINVALID (maintenance, mode, status, neither instance nor host).
func (p *Plane) Attach(ctx context.Context, id string, req LegacyAttach) (*basalt.Attachment, error) {
	if req.InstanceUUID == "" && req.HostName == "" {
		return nil, invalid("Invalid request to attach volume to an invalid target")
	}
	if req.Mode == "" {
		req.Mode = basalt.ModeRW
	}
	if err := checkMode(req.Mode); err != nil {
		return nil, err
	}
	if _, err := p.Volume(ctx, id); err != nil {
		return nil, err
	}
	now := p.store.Now()
	a := &basalt.Attachment{ID: events.NewID(id), VolumeID: id, InstanceUUID: req.InstanceUUID,
		Status: basalt.AttachAttached, Mode: req.Mode, AttachedHost: req.HostName, Mountpoint: req.Mountpoint,
		ExportID: legacyExportID(id, req.HostName), AttachedAt: &now, CreatedAt: now}
	var opID string
	_, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, _ *store.VolumeChange) error {
		if v.Status == basalt.StatusMaintenance {
			return invalid("Invalid volume: The volume cannot be attached in maintenance mode.")
		}
		if v.ReadOnly && req.Mode != basalt.ModeRO {
			return invalid("Invalid attaching mode '%s' for volume %s.", req.Mode, id)
		}
		ok := v.Status == basalt.StatusAvailable || v.Status == basalt.StatusAttaching ||
			(v.Multiattach && v.Status == basalt.StatusInUse)
		if !ok || (!v.Multiattach && v.AttachStatus == basalt.AttachAttached) {
			return invalid("Invalid volume: Volume %s status must be available or attaching to attach, but the current status is %s.", id, v.Status)
		}
		a.ProjectID = v.ProjectID
		v.Attachments = append(v.Attachments, a)
		v.Status, v.AttachStatus, v.PreviousStatus = basalt.StatusInUse, basalt.AttachAttached, ""
		opID, v.OpID = v.OpID, ""
		return nil
	})
	if err != nil {
		return nil, unavailable(p.logger, "attach the volume", err)
	}
	p.endOp(ctx, opID, "attached")
	return a, nil
}

// Detach is os-detach: attachment attachmentID (or the volume's only attachment when it is "")
// is removed, its export torn down, and the volume goes to available, or stays in-use when
// other attachments remain. Errors: EINVALID (maintenance, no such attachment, several
// attachments and none named).
func (p *Plane) Detach(ctx context.Context, id, attachmentID string) error {
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	var removed *basalt.Attachment
	var opID string
	v, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, _ *store.VolumeChange) error {
		if v.Status == basalt.StatusMaintenance {
			return invalid("Invalid volume: The volume cannot be detached in maintenance mode.")
		}
		aid := attachmentID
		if aid == "" {
			if len(v.Attachments) != 1 {
				return invalid("Invalid volume: Detach volume failed: More than one attachment, but no attachment_id provided.")
			}
			aid = v.Attachments[0].ID
		}
		removed = v.Attachment(aid)
		if removed == nil {
			return invalid("Volume attachment %s could not be found on volume %s.", aid, id)
		}
		v.RemoveAttachment(aid)
		opID, v.OpID, v.PreviousStatus = v.OpID, "", ""
		if v.Status == basalt.StatusDetaching || v.Status == basalt.StatusAttaching {
			v.Status = basalt.StatusInUse // recomputed below from what remains
		}
		v.RecomputeAttachStatus()
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "detach the volume", err)
	}
	p.endOp(ctx, opID, "detached")
	return p.teardown(ctx, v, removed.ExportID, false)
}

// ForceDetach is os-force_detach (admin): attachment attachmentID is removed with its export;
// a connector tears down that consumer's legacy export; with neither, every attachment and
// every export of the volume goes. The volume's status is recomputed.
func (p *Plane) ForceDetach(ctx context.Context, id, attachmentID string, connector map[string]any) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	var removed []*basalt.Attachment
	var opID string
	v, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, _ *store.VolumeChange) error {
		removed = nil
		switch {
		case attachmentID != "":
			a := v.Attachment(attachmentID)
			if a == nil {
				return invalid("Volume attachment %s could not be found on volume %s.", attachmentID, id)
			}
			removed = append(removed, a)
			v.RemoveAttachment(attachmentID)
		case connector == nil:
			removed, v.Attachments = v.Attachments, nil
		}
		opID, v.OpID, v.PreviousStatus = v.OpID, "", ""
		if v.Status == basalt.StatusDetaching || v.Status == basalt.StatusAttaching {
			v.Status = basalt.StatusInUse
		}
		v.RecomputeAttachStatus()
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "force-detach the volume", err)
	}
	p.endOp(ctx, opID, "force-detached")
	for _, a := range removed {
		if a.OpID != "" {
			p.endOp(ctx, a.OpID, "force-detached")
		}
	}
	switch {
	case attachmentID != "":
		return p.teardown(ctx, v, removed[0].ExportID, false)
	case connector != nil:
		return p.teardown(ctx, v, legacyExportID(id, connectorHost(connector)), false)
	default:
		return p.teardown(ctx, v, "", true)
	}
}
