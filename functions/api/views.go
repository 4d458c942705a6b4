package api

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
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

// VolumeAttachment is one attachment of a volume.
type VolumeAttachment struct {
	ID           string `json:"id"`
	AttachmentID string `json:"attachment_id"`
	VolumeID     string `json:"volume_id"`
	ServerID     string `json:"server_id"`
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
	Host               string             `json:"os-vol-host-attr:host,omitempty"`
	TenantID           string             `json:"os-vol-tenant-attr:tenant_id,omitempty"`
	// StatusReason says why a volume is in an error status (a Basalt extension).
	StatusReason string `json:"status_reason,omitempty"`
}

func volumeView(ctx context.Context, v *basalt.Volume, full bool) VolumeView {
	vv := VolumeView{
		ID: v.ID, Status: string(v.Status), Size: v.Size, AvailabilityZone: v.AvailabilityZone,
		CreatedAt: ts(v.CreatedAt), UpdatedAt: tsPtr(v.UpdatedAt), Name: v.Name, Description: v.Description,
		VolumeType: v.VolumeTypeName, SnapshotID: v.SnapshotID, SourceVolID: v.SourceVolID,
		Metadata: v.Metadata, Links: selfLinks(ctx, "volumes", v.ID), UserID: v.UserID,
		Bootable: strconv.FormatBool(v.Bootable), Multiattach: v.Multiattach,
		Attachments: []VolumeAttachment{}, StatusReason: v.StatusReason,
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
	return vv
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

// userVisibleSpecs are the extra specs a non-admin may see.
var userVisibleSpecs = []string{"RESKEY:availability_zones", "multiattach", "replication_enabled"}

func typeView(ctx context.Context, t *basalt.VolumeType) VolumeTypeView {
	specs := t.ExtraSpecs
	if specs == nil {
		specs = map[string]string{}
	}
	if !callerAdmin(ctx) {
		visible := map[string]string{}
		for _, k := range userVisibleSpecs {
			if v, ok := specs[k]; ok {
				visible[k] = v
			}
		}
		specs = visible
	}
	return VolumeTypeView{ID: t.ID, Name: t.Name, Description: t.Description, IsPublic: t.IsPublic,
		ExtraSpecs: specs, AccessIs: t.IsPublic}
}
