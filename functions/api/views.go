package api

import (
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// Timestamp is a time as Cinder writes it: UTC, six fractional digits, no zone suffix.
type Timestamp time.Time

// MarshalJSON implements json.Marshaler.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Time(t).UTC().Format(basalt.TimeLayout))
}

// Schema describes the timestamp for OpenAPI.
func (t Timestamp) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: "string", Description: "UTC time as YYYY-MM-DDTHH:MM:SS.ffffff (no zone suffix)",
		Examples: []any{"2026-11-22T01:02:03.456789"}}
}

func ts(t time.Time) Timestamp { return Timestamp(t) }

func tsPtr(t *time.Time) *Timestamp {
	if t == nil || t.IsZero() {
		return nil
	}
	x := Timestamp(*t)
	return &x
}

// Nullable is a field of a view that only some microversions show, and that may then be null.
// Its zero value is absent from the view (with the omitzero option); a value made with shown is
// present, null when its pointer is nil.
type Nullable[T any] struct {
	v     *T
	shown bool
}

// shown returns a present field of value v (null when v is nil).
func shown[T any](v *T) Nullable[T] { return Nullable[T]{v: v, shown: true} }

// IsZero reports whether the field is absent.
func (n Nullable[T]) IsZero() bool { return !n.shown }

// MarshalJSON writes the value, or null.
func (n Nullable[T]) MarshalJSON() ([]byte, error) { return json.Marshal(n.v) }

// Schema describes the field for OpenAPI: T, or null.
func (n Nullable[T]) Schema(r huma.Registry) *huma.Schema {
	s := *r.Schema(reflect.TypeFor[T](), true, "")
	s.Nullable = true
	return &s
}

// Link is a hypermedia link.
type Link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

// selfLinks returns the self and bookmark links of resource coll/id.
func selfLinks(ctx context.Context, coll, id string) []Link {
	i := info(ctx)
	proj := ""
	if i.projectInURL != "" {
		proj = i.projectInURL + "/"
	}
	return []Link{
		{Rel: "self", Href: i.base + "/v3/" + proj + coll + "/" + id},
		{Rel: "bookmark", Href: i.base + "/" + proj + coll + "/" + id},
	}
}

// nextLink returns the "next" link of a full page: the request's query with marker replaced.
func nextLink(ctx context.Context, path string, query url.Values, lastID string) []Link {
	i := info(ctx)
	q := url.Values{}
	for k, vs := range query {
		if k != "marker" {
			q[k] = vs
		}
	}
	q.Set("marker", lastID)
	proj := ""
	if i.projectInURL != "" {
		proj = i.projectInURL + "/"
	}
	return []Link{{Rel: "next", Href: i.base + "/v3/" + proj + strings.TrimPrefix(path, "/v3/") + "?" + q.Encode()}}
}

// VolumeSummary is a volume in a plain (non-detail) list.
type VolumeSummary struct {
	ID    string  `json:"id"`
	Name  *string `json:"name"`
	Links []Link  `json:"links"`
}

// VolumeAttachment is one attached attachment of a volume, as the volume view lists it. id is
// the volume's id (Cinder's quirk); host_name is shown to administrators only.
type VolumeAttachment struct {
	ID           string     `json:"id"`
	AttachmentID string     `json:"attachment_id"`
	VolumeID     string     `json:"volume_id"`
	ServerID     *string    `json:"server_id"`
	HostName     *string    `json:"host_name"`
	Device       *string    `json:"device"`
	AttachedAt   *Timestamp `json:"attached_at"`
}

// volumeAttachments lists the volume's attached attachments.
func volumeAttachments(ctx context.Context, v *basalt.Volume) []VolumeAttachment {
	out := []VolumeAttachment{}
	for _, a := range v.Attachments {
		if a.Status != basalt.AttachAttached {
			continue
		}
		va := VolumeAttachment{ID: v.ID, AttachmentID: a.ID, VolumeID: v.ID, AttachedAt: tsPtr(a.AttachedAt)}
		if a.InstanceUUID != "" {
			va.ServerID = &a.InstanceUUID
		}
		if a.Mountpoint != "" {
			va.Device = &a.Mountpoint
		}
		if a.AttachedHost != "" && callerAdmin(ctx) {
			va.HostName = &a.AttachedHost
		}
		out = append(out, va)
	}
	return out
}

// VolumeView is Cinder's volume view. Host and tenant attributes appear in show and detail
// responses only (not in the create response), and the host only for administrators.
type VolumeView struct {
	ID                 string             `json:"id"`
	Status             string             `json:"status"`
	Size               int                `json:"size"`
	AvailabilityZone   string             `json:"availability_zone"`
	CreatedAt          Timestamp          `json:"created_at"`
	UpdatedAt          *Timestamp         `json:"updated_at"`
	Name               *string            `json:"name"`
	Description        *string            `json:"description"`
	VolumeType         string             `json:"volume_type"`
	SnapshotID         *string            `json:"snapshot_id"`
	SourceVolID        *string            `json:"source_volid"`
	Metadata           map[string]string  `json:"metadata"`
	Links              []Link             `json:"links"`
	UserID             string             `json:"user_id"`
	Bootable           string             `json:"bootable"`
	Encrypted          bool               `json:"encrypted"`
	ReplicationStatus  *string            `json:"replication_status"`
	ConsistencyGroupID *string            `json:"consistencygroup_id"`
	Multiattach        bool               `json:"multiattach"`
	Attachments        []VolumeAttachment `json:"attachments"`
	MigrationStatus    *string            `json:"migration_status"`
	GroupID            *string            `json:"group_id"`
	ProviderID         *string            `json:"provider_id"`
	SharedTargets      *bool              `json:"shared_targets,omitempty" doc:"3.48+: whether the volume's export target serves other volumes too"`
	ServiceUUID        Nullable[string]   `json:"service_uuid,omitzero" doc:"3.48+: the id of the volume service that holds the volume; null until placed"`
	Host               string             `json:"os-vol-host-attr:host,omitempty"`
	TenantID           string             `json:"os-vol-tenant-attr:tenant_id,omitempty"`
	// StatusReason says why a volume is in an error status (a Basalt extension).
	StatusReason string `json:"status_reason,omitempty"`
}

func volumeView(ctx context.Context, v *basalt.Volume, full bool) VolumeView {
	vv := VolumeView{
		ID: v.ID, Status: string(v.Status.ShownStatus()), Size: v.Size, AvailabilityZone: v.AvailabilityZone,
		CreatedAt: ts(v.CreatedAt), UpdatedAt: tsPtr(v.UpdatedAt), Name: v.Name, Description: v.Description,
		VolumeType: v.VolumeTypeName, SnapshotID: v.SnapshotID, SourceVolID: v.SourceVolID,
		Metadata: v.Metadata, Links: selfLinks(ctx, "volumes", v.ID), UserID: v.UserID,
		Bootable: strconv.FormatBool(v.Bootable), Multiattach: v.Multiattach,
		Attachments: volumeAttachments(ctx, v), StatusReason: v.StatusReason,
	}
	if vv.Metadata == nil {
		vv.Metadata = map[string]string{}
	}
	if v.ReadOnly {
		// Cinder shows the read-only admin flag among the metadata.
		md := map[string]string{"readonly": "True"}
		for k, val := range vv.Metadata {
			md[k] = val
		}
		vv.Metadata = md
	}
	if full {
		vv.TenantID = v.ProjectID
		if callerAdmin(ctx) {
			vv.Host = v.Host
		}
	}
	if info(ctx).version.AtLeast(48) {
		vv.SharedTargets, vv.ServiceUUID = targets(v)
	}
	return vv
}

// targets returns a volume's shared_targets and service_uuid. Basalt exports each volume on a
// target of its own, so a placed volume shares none. A volume not placed yet shows what Cinder
// shows before its volume service sets them: shared_targets true (the column's default) and no
// service.
func targets(v *basalt.Volume) (*bool, Nullable[string]) {
	backend := v.Backend()
	if backend == "" {
		shared := true
		return &shared, shown[string](nil)
	}
	shared, id := false, control.ServiceUUID(backend)
	return &shared, shown(&id)
}

// VolumeTypeView is Cinder's volume type view.
type VolumeTypeView struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description *string           `json:"description"`
	IsPublic    bool              `json:"is_public"`
	ExtraSpecs  map[string]string `json:"extra_specs"`
	QoSSpecsID  *string           `json:"qos_specs_id"`
	AccessIs    bool              `json:"os-volume-type-access:is_public"`
}

func typeView(ctx context.Context, t *basalt.VolumeType) VolumeTypeView {
	specs := t.ExtraSpecs
	if specs == nil {
		specs = map[string]string{}
	}
	if !callerAdmin(ctx) {
		visible := map[string]string{}
		for k, v := range specs {
			if control.UserVisibleSpec(k) {
				visible[k] = v
			}
		}
		specs = visible
	}
	return VolumeTypeView{ID: t.ID, Name: t.Name, Description: t.Description, IsPublic: t.IsPublic,
		ExtraSpecs: specs, AccessIs: t.IsPublic}
}
