package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// AttachmentSummary is an attachment in a plain list.
type AttachmentSummary struct {
	ID       string  `json:"id"`
	Status   string  `json:"status"`
	Instance *string `json:"instance"`
	VolumeID string  `json:"volume_id"`
}

// AttachmentView is Cinder's detailed attachment view. attached_at and detached_at are "" when
// unset, as Cinder writes them.
type AttachmentView struct {
	AttachmentSummary
	AttachedAt     string         `json:"attached_at"`
	DetachedAt     string         `json:"detached_at"`
	AttachMode     string         `json:"attach_mode"`
	ConnectionInfo map[string]any `json:"connection_info"`
}

// connectionData returns the data of a backend's connection info with the keys Cinder's volume
// manager adds: access_mode, encrypted, cacheable and qos_specs.
func connectionData(info map[string]any, mode string) map[string]any {
	data := map[string]any{}
	if d, ok := info["data"].(map[string]any); ok {
		for k, v := range d {
			data[k] = v
		}
	}
	if _, ok := data["access_mode"]; !ok {
		data["access_mode"] = mode
	}
	for k, v := range map[string]any{"encrypted": false, "cacheable": false, "qos_specs": nil} {
		if _, ok := data[k]; !ok {
			data[k] = v
		}
	}
	return data
}

func attachmentSummary(a *basalt.Attachment) AttachmentSummary {
	s := AttachmentSummary{ID: a.ID, Status: a.Status, VolumeID: a.VolumeID}
	if a.InstanceUUID != "" {
		s.Instance = &a.InstanceUUID
	}
	return s
}

func attachmentView(a *basalt.Attachment) AttachmentView {
	v := AttachmentView{AttachmentSummary: attachmentSummary(a), AttachMode: a.Mode, ConnectionInfo: map[string]any{}}
	if v.AttachMode == "" {
		v.AttachMode = "null" // Cinder's default when no mode was asked for
	}
	if a.AttachedAt != nil {
		v.AttachedAt = a.AttachedAt.UTC().Format(basalt.TimeLayout)
	}
	if a.ConnectionInfo != nil {
		// The attachments API answers connection_info flat: the driver's data beside
		// driver_volume_type and attachment_id (Nova nests it again).
		mode := a.Mode
		if mode == "" || mode == "null" {
			mode = basalt.ModeRW
		}
		for k, val := range connectionData(a.ConnectionInfo, mode) {
			v.ConnectionInfo[k] = val
		}
		v.ConnectionInfo["driver_volume_type"] = a.ConnectionInfo["driver_volume_type"]
		v.ConnectionInfo["attachment_id"] = a.ID
	}
	return v
}

// AttachmentCreateFields are the fields of an attachment create.
type AttachmentCreateFields struct {
	_            struct{}       `json:"-" additionalProperties:"true"`
	VolumeUUID   string         `json:"volume_uuid" doc:"the volume to attach"`
	InstanceUUID *string        `json:"instance_uuid,omitempty"`
	Connector    map[string]any `json:"connector,omitempty" doc:"os-brick's connector; without one the attachment is only reserved"`
	Mode         *string        `json:"mode,omitempty" doc:"rw or ro (3.54)"`
}

// AttachmentCreateInput is an attachment create.
type AttachmentCreateInput struct {
	Body struct {
		Attachment AttachmentCreateFields `json:"attachment"`
	}
}

// AttachmentUpdateFields are the fields of an attachment update.
type AttachmentUpdateFields struct {
	_         struct{}       `json:"-" additionalProperties:"true"`
	Connector map[string]any `json:"connector"`
}

// AttachmentUpdateInput connects an attachment.
type AttachmentUpdateInput struct {
	ID   string `path:"attachment_id"`
	Body struct {
		Attachment AttachmentUpdateFields `json:"attachment"`
	}
}

// AttachmentOutput is one attachment.
type AttachmentOutput struct {
	Body struct {
		Attachment AttachmentView `json:"attachment"`
	}
}

// AttachmentIDInput names one attachment.
type AttachmentIDInput struct {
	ID string `path:"attachment_id"`
}

// AttachmentActionInput is an attachment action.
type AttachmentActionInput struct {
	ID   string `path:"attachment_id"`
	Body map[string]any
}

// AttachmentListInput is an attachment listing.
type AttachmentListInput struct {
	AllTenants string `query:"all_tenants"`
	VolumeID   string `query:"volume_id"`
	Status     string `query:"status"`
	InstanceID string `query:"instance_id"`
	Marker     string `query:"marker"`
	Limit      string `query:"limit"`
	raw        url.Values
	path       string
}

// Resolve keeps the raw query for filters and links.
func (in *AttachmentListInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.raw, in.path = u.Query(), u.Path
	return nil
}

// AttachmentListOutput is a plain attachment list.
type AttachmentListOutput struct {
	Body struct {
		Attachments []AttachmentSummary `json:"attachments"`
		Links       []Link              `json:"attachments_links,omitempty"`
	}
}

// AttachmentDetailListOutput is a detailed attachment list.
type AttachmentDetailListOutput struct {
	Body struct {
		Attachments []AttachmentView `json:"attachments"`
		Links       []Link           `json:"attachments_links,omitempty"`
	}
}

var attachmentTag = []string{"attachments"}

func (s *Server) registerAttachments() {
	huma.Register(s.api, huma.Operation{OperationID: "create-attachment", Method: http.MethodPost,
		Path: "/v3/attachments", Summary: "Create an attachment (3.27)", Tags: attachmentTag,
		Description: "Reserves the volume for a consumer. With a connector the volume's backend exports it " +
			"and the answer carries connection_info."}, s.createAttachment)
	huma.Register(s.api, huma.Operation{OperationID: "update-attachment", Method: http.MethodPut,
		Path: "/v3/attachments/{attachment_id}", Summary: "Connect an attachment (3.27)", Tags: attachmentTag},
		s.updateAttachment)
	huma.Register(s.api, huma.Operation{OperationID: "attachment-action", Method: http.MethodPost,
		Path: "/v3/attachments/{attachment_id}/action", Summary: "Complete an attachment (os-complete, 3.44)",
		Tags: attachmentTag, DefaultStatus: http.StatusNoContent}, s.attachmentAction)
	huma.Register(s.api, huma.Operation{OperationID: "delete-attachment", Method: http.MethodDelete,
		Path: "/v3/attachments/{attachment_id}", Summary: "Delete an attachment (3.27)", Tags: attachmentTag,
		Description: "Answers with the volume's remaining attachments."}, s.deleteAttachment)
	huma.Register(s.api, huma.Operation{OperationID: "list-attachments", Method: http.MethodGet,
		Path: "/v3/attachments", Summary: "List attachments (3.27)", Tags: attachmentTag}, s.listAttachments)
	huma.Register(s.api, huma.Operation{OperationID: "list-attachments-detail", Method: http.MethodGet,
		Path: "/v3/attachments/detail", Summary: "List attachments with details (3.27)", Tags: attachmentTag},
		s.listAttachmentsDetail)
	huma.Register(s.api, huma.Operation{OperationID: "show-attachment", Method: http.MethodGet,
		Path: "/v3/attachments/{attachment_id}", Summary: "Show an attachment (3.27)", Tags: attachmentTag},
		s.showAttachment)
}

func attachmentOutput(a *basalt.Attachment) *AttachmentOutput {
	out := &AttachmentOutput{}
	out.Body.Attachment = attachmentView(a)
	return out
}

func (s *Server) createAttachment(ctx context.Context, in *AttachmentCreateInput) (*AttachmentOutput, error) {
	if err := requireVersion(ctx, 27); err != nil {
		return nil, fault(err)
	}
	b := in.Body.Attachment
	if b.VolumeUUID == "" {
		return nil, fault(basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute volume_uuid. Value: None. volume_uuid is required."))
	}
	req := control.AttachmentCreate{VolumeID: b.VolumeUUID, InstanceUUID: deref(b.InstanceUUID), Connector: b.Connector}
	if info(ctx).version.AtLeast(54) && b.Mode != nil && *b.Mode != "null" {
		req.Mode = *b.Mode
	}
	a, err := s.plane.CreateAttachment(ctx, req)
	if err != nil {
		return nil, fault(err)
	}
	return attachmentOutput(a), nil
}

func (s *Server) updateAttachment(ctx context.Context, in *AttachmentUpdateInput) (*AttachmentOutput, error) {
	if err := requireVersion(ctx, 27); err != nil {
		return nil, fault(err)
	}
	a, err := s.plane.UpdateAttachment(ctx, in.ID, in.Body.Attachment.Connector)
	if err != nil {
		return nil, fault(err)
	}
	return attachmentOutput(a), nil
}

func (s *Server) attachmentAction(ctx context.Context, in *AttachmentActionInput) (*struct{}, error) {
	if err := requireVersion(ctx, 27); err != nil {
		return nil, fault(err)
	}
	if len(in.Body) != 1 {
		return nil, fault(basalt.Errorf(basalt.EINVALID, "Malformed request body"))
	}
	if _, ok := in.Body["os-complete"]; !ok || !info(ctx).version.AtLeast(44) {
		for name := range in.Body {
			return nil, fault(basalt.Errorf(basalt.EINVALID, "There is no such action: %s", name))
		}
	}
	return nil, fault(s.plane.CompleteAttachment(ctx, in.ID))
}

func (s *Server) deleteAttachment(ctx context.Context, in *AttachmentIDInput) (*AttachmentListOutput, error) {
	if err := requireVersion(ctx, 27); err != nil {
		return nil, fault(err)
	}
	rest, err := s.plane.DeleteAttachment(ctx, in.ID)
	if err != nil {
		return nil, fault(err)
	}
	out := &AttachmentListOutput{}
	out.Body.Attachments = make([]AttachmentSummary, 0, len(rest))
	for _, a := range rest {
		out.Body.Attachments = append(out.Body.Attachments, attachmentSummary(a))
	}
	return out, nil
}

func (s *Server) attachmentList(ctx context.Context, in *AttachmentListInput) ([]*basalt.Attachment, bool, error) {
	if err := requireVersion(ctx, 27); err != nil {
		return nil, false, err
	}
	o, err := listOptions(ctx, in.raw)
	if err != nil {
		return nil, false, err
	}
	return s.plane.Attachments(ctx, o)
}

func (s *Server) listAttachments(ctx context.Context, in *AttachmentListInput) (*AttachmentListOutput, error) {
	list, more, err := s.attachmentList(ctx, in)
	if err != nil {
		return nil, fault(err)
	}
	out := &AttachmentListOutput{}
	out.Body.Attachments = make([]AttachmentSummary, 0, len(list))
	for _, a := range list {
		out.Body.Attachments = append(out.Body.Attachments, attachmentSummary(a))
	}
	if more {
		out.Body.Links = nextLink(ctx, in.path, in.raw, list[len(list)-1].ID)
	}
	return out, nil
}

func (s *Server) listAttachmentsDetail(ctx context.Context, in *AttachmentListInput) (*AttachmentDetailListOutput, error) {
	list, more, err := s.attachmentList(ctx, in)
	if err != nil {
		return nil, fault(err)
	}
	out := &AttachmentDetailListOutput{}
	out.Body.Attachments = make([]AttachmentView, 0, len(list))
	for _, a := range list {
		out.Body.Attachments = append(out.Body.Attachments, attachmentView(a))
	}
	if more {
		out.Body.Links = nextLink(ctx, in.path, in.raw, list[len(list)-1].ID)
	}
	return out, nil
}

func (s *Server) showAttachment(ctx context.Context, in *AttachmentIDInput) (*AttachmentOutput, error) {
	if err := requireVersion(ctx, 27); err != nil {
		return nil, fault(err)
	}
	a, err := s.plane.Attachment(ctx, in.ID)
	if err != nil {
		return nil, fault(err)
	}
	return attachmentOutput(a), nil
}

// legacyAttachAction runs the legacy attach actions of a volume (os-reserve, os-attach, ...).
// handled is false for any other action.
func (s *Server) legacyAttachAction(ctx context.Context, id, name string, arg any) (status int, body any, handled bool, err error) {
	type connectorArg struct {
		Connector map[string]any `json:"connector"`
	}
	switch name {
	case "os-reserve":
		return http.StatusAccepted, nil, true, s.plane.Reserve(ctx, id)
	case "os-unreserve":
		return http.StatusAccepted, nil, true, s.plane.Unreserve(ctx, id)
	case "os-begin_detaching":
		return http.StatusAccepted, nil, true, s.plane.BeginDetaching(ctx, id)
	case "os-roll_detaching":
		return http.StatusAccepted, nil, true, s.plane.RollDetaching(ctx, id)
	case "os-initialize_connection":
		a, err := action[connectorArg](arg)
		if err != nil {
			return 0, nil, true, err
		}
		info, err := s.plane.InitializeConnection(ctx, id, a.Connector)
		if err != nil {
			return 0, nil, true, err
		}
		mode := basalt.ModeRW
		if d, ok := info["data"].(map[string]any); ok {
			if m, ok := d["access_mode"].(string); ok {
				mode = m
			}
		}
		conn := map[string]any{"driver_volume_type": info["driver_volume_type"],
			"data": connectionData(info, mode), "enforce_multipath": false}
		return http.StatusOK, map[string]any{"connection_info": conn}, true, nil
	case "os-terminate_connection":
		a, err := action[connectorArg](arg)
		if err != nil {
			return 0, nil, true, err
		}
		return http.StatusAccepted, nil, true, s.plane.TerminateConnection(ctx, id, a.Connector)
	case "os-attach":
		a, err := action[struct {
			InstanceUUID *string `json:"instance_uuid"`
			HostName     *string `json:"host_name"`
			Mountpoint   *string `json:"mountpoint"`
			Mode         *string `json:"mode"`
		}](arg)
		if err != nil {
			return 0, nil, true, err
		}
		_, err = s.plane.Attach(ctx, id, control.LegacyAttach{InstanceUUID: deref(a.InstanceUUID),
			HostName: deref(a.HostName), Mountpoint: deref(a.Mountpoint), Mode: deref(a.Mode)})
		return http.StatusAccepted, nil, true, err
	case "os-detach":
		a, err := action[struct {
			AttachmentID *string `json:"attachment_id"`
		}](arg)
		if err != nil {
			return 0, nil, true, err
		}
		return http.StatusAccepted, nil, true, s.plane.Detach(ctx, id, deref(a.AttachmentID))
	case "os-force_detach":
		if !callerAdmin(ctx) {
			return 0, nil, true, basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow volume_extension:volume_admin_actions:force_detach to be performed.")
		}
		a, err := action[struct {
			AttachmentID *string        `json:"attachment_id"`
			Connector    map[string]any `json:"connector"`
		}](arg)
		if err != nil {
			return 0, nil, true, err
		}
		return http.StatusAccepted, nil, true, s.plane.ForceDetach(ctx, id, deref(a.AttachmentID), a.Connector)
	}
	return 0, nil, false, nil
}
