package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// SnapshotView is Cinder's snapshot view. The extended attributes appear in show and detail.
type SnapshotView struct {
	ID          string            `json:"id"`
	CreatedAt   Timestamp         `json:"created_at"`
	UpdatedAt   *Timestamp        `json:"updated_at"`
	Name        *string           `json:"name"`
	Description *string           `json:"description"`
	VolumeID    string            `json:"volume_id"`
	Status      string            `json:"status"`
	Size        int               `json:"size"`
	Metadata    map[string]string `json:"metadata"`
	Progress    string            `json:"os-extended-snapshot-attributes:progress,omitempty"`
	ProjectID   string            `json:"os-extended-snapshot-attributes:project_id,omitempty"`
	UserID      string            `json:"user_id,omitempty"`
	// StatusReason says why a snapshot is in an error status (a Basalt extension).
	StatusReason string `json:"status_reason,omitempty"`
}

func snapshotView(ctx context.Context, sn *basalt.Snapshot, full bool) SnapshotView {
	v := SnapshotView{ID: sn.ID, CreatedAt: ts(sn.CreatedAt), UpdatedAt: tsPtr(sn.UpdatedAt), Name: sn.Name,
		Description: sn.Description, VolumeID: sn.VolumeID, Status: string(sn.Status), Size: sn.Size,
		Metadata: sn.Metadata, StatusReason: sn.StatusReason}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	if full {
		v.Progress = "0%"
		if sn.Status == basalt.SnapAvailable || sn.Status == basalt.SnapRestoring {
			v.Progress = "100%"
		}
		v.ProjectID = sn.ProjectID
	}
	ver := info(ctx).version
	if ver.AtLeast(41) {
		v.UserID = sn.UserID
	}
	return v
}

// SnapshotOutput is one snapshot.
type SnapshotOutput struct {
	Body struct {
		Snapshot SnapshotView `json:"snapshot"`
	}
}

// SnapshotListOutput lists snapshots.
type SnapshotListOutput struct {
	Body struct {
		Snapshots []SnapshotView `json:"snapshots"`
		Links     []Link         `json:"snapshots_links,omitempty"`
		Count     *int           `json:"count,omitempty" doc:"snapshots matching the filters on every page (with_count=true, 3.45)"`
	}
}

// SnapshotCreateFields are the fields of a snapshot create.
type SnapshotCreateFields struct {
	_                  struct{}          `json:"-" additionalProperties:"true"`
	VolumeID           string            `json:"volume_id"`
	Name               *string           `json:"name,omitempty"`
	DisplayName        *string           `json:"display_name,omitempty"`
	Description        *string           `json:"description,omitempty"`
	DisplayDescription *string           `json:"display_description,omitempty"`
	Force              any               `json:"force,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
}

// SnapshotCreateInput creates a snapshot.
type SnapshotCreateInput struct {
	Body struct {
		Snapshot SnapshotCreateFields `json:"snapshot"`
	}
}

// SnapshotIDInput names a snapshot.
type SnapshotIDInput struct {
	ID string `path:"snapshot_id"`
}

// SnapshotUpdateFields are the fields of a snapshot update.
type SnapshotUpdateFields struct {
	_                  struct{} `json:"-" additionalProperties:"true"`
	Name               *string  `json:"name,omitempty"`
	DisplayName        *string  `json:"display_name,omitempty"`
	Description        *string  `json:"description,omitempty"`
	DisplayDescription *string  `json:"display_description,omitempty"`
}

// SnapshotUpdateInput updates a snapshot.
type SnapshotUpdateInput struct {
	ID   string `path:"snapshot_id"`
	Body struct {
		Snapshot SnapshotUpdateFields `json:"snapshot"`
	}
}

// SnapshotDeleteInput deletes a snapshot.
type SnapshotDeleteInput struct {
	ID string `path:"snapshot_id"`
}

// SnapshotActionInput is a snapshot action.
type SnapshotActionInput struct {
	ID   string `path:"snapshot_id"`
	Body map[string]any
}

// SnapshotListInput lists snapshots.
type SnapshotListInput struct {
	AllTenants string `query:"all_tenants"`
	Marker     string `query:"marker"`
	Limit      string `query:"limit"`
	VolumeID   string `query:"volume_id"`
	Status     string `query:"status"`
	raw        url.Values
	path       string
}

// Resolve keeps the raw query for filters and links.
func (in *SnapshotListInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.raw, in.path = u.Query(), u.Path
	return nil
}

func (s *Server) registerSnapshots() {
	tag := []string{"snapshots"}
	huma.Register(s.api, huma.Operation{OperationID: "create-snapshot", Method: http.MethodPost, Path: "/v3/snapshots",
		Summary: "Create a snapshot of a volume", Tags: tag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *SnapshotCreateInput) (*SnapshotOutput, error) {
			b := in.Body.Snapshot
			force := false
			if b.Force != nil {
				f, ok := strictBool(b.Force)
				if !ok {
					return nil, fault(basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute force. Value: %v. It must be a boolean.", b.Force))
				}
				force = f
			}
			if b.VolumeID == "" {
				return nil, fault(basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute volume_id. Value: None. volume_id is required."))
			}
			sn, err := s.plane.CreateSnapshot(ctx, control.SnapshotCreate{VolumeID: b.VolumeID,
				Name: firstNonNil(b.Name, b.DisplayName), Description: firstNonNil(b.Description, b.DisplayDescription),
				Force: force, Metadata: b.Metadata})
			if err != nil {
				return nil, fault(err)
			}
			out := &SnapshotOutput{}
			out.Body.Snapshot = snapshotView(ctx, sn, false)
			return out, nil
		})
	list := func(full bool) func(ctx context.Context, in *SnapshotListInput) (*SnapshotListOutput, error) {
		return func(ctx context.Context, in *SnapshotListInput) (*SnapshotListOutput, error) {
			o, err := listOptions(ctx, in.raw)
			if err == nil {
				err = withCount(ctx, in.raw, &o)
			}
			if err != nil {
				return nil, fault(err)
			}
			pg, err := s.plane.Snapshots(ctx, o)
			if err != nil {
				return nil, fault(err)
			}
			out := &SnapshotListOutput{}
			out.Body.Snapshots = make([]SnapshotView, 0, len(pg.Items))
			for _, sn := range pg.Items {
				out.Body.Snapshots = append(out.Body.Snapshots, snapshotView(ctx, sn, full))
			}
			if pg.More {
				out.Body.Links = nextLink(ctx, in.path, in.raw, pg.Items[len(pg.Items)-1].ID)
			}
			out.Body.Count = count(o, pg)
			return out, nil
		}
	}
	huma.Register(s.api, huma.Operation{OperationID: "list-snapshots", Method: http.MethodGet, Path: "/v3/snapshots",
		Summary: "List snapshots", Tags: tag}, list(false))
	huma.Register(s.api, huma.Operation{OperationID: "list-snapshots-detail", Method: http.MethodGet, Path: "/v3/snapshots/detail",
		Summary: "List snapshots with details", Tags: tag}, list(true))
	huma.Register(s.api, huma.Operation{OperationID: "show-snapshot", Method: http.MethodGet, Path: "/v3/snapshots/{snapshot_id}",
		Summary: "Show a snapshot", Tags: tag},
		func(ctx context.Context, in *SnapshotIDInput) (*SnapshotOutput, error) {
			sn, err := s.plane.Snapshot(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			out := &SnapshotOutput{}
			out.Body.Snapshot = snapshotView(ctx, sn, true)
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "update-snapshot", Method: http.MethodPut, Path: "/v3/snapshots/{snapshot_id}",
		Summary: "Update a snapshot's name or description", Tags: tag},
		func(ctx context.Context, in *SnapshotUpdateInput) (*SnapshotOutput, error) {
			b := in.Body.Snapshot
			sn, err := s.plane.UpdateSnapshot(ctx, in.ID, control.SnapshotUpdate{
				Name: firstNonNil(b.Name, b.DisplayName), Description: firstNonNil(b.Description, b.DisplayDescription)})
			if err != nil {
				return nil, fault(err)
			}
			out := &SnapshotOutput{}
			out.Body.Snapshot = snapshotView(ctx, sn, true)
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-snapshot", Method: http.MethodDelete, Path: "/v3/snapshots/{snapshot_id}",
		Summary: "Delete a snapshot", Tags: tag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *SnapshotDeleteInput) (*struct{}, error) {
			return nil, fault(s.plane.DeleteSnapshot(ctx, in.ID, false))
		})
	huma.Register(s.api, huma.Operation{OperationID: "snapshot-action", Method: http.MethodPost, Path: "/v3/snapshots/{snapshot_id}/action",
		Summary: "Run an action on a snapshot", Description: "Supported: os-reset_status (admin), os-force_delete (admin).",
		Tags: tag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *SnapshotActionInput) (*struct{}, error) {
			return nil, fault(s.snapshotAction(ctx, in))
		})
	s.registerMetadata("snapshots", "snapshot", metadataStore{get: s.plane.SnapshotMetadata,
		set: s.plane.SetSnapshotMetadata, del: s.plane.DeleteSnapshotMetadata})
}

func (s *Server) snapshotAction(ctx context.Context, in *SnapshotActionInput) error {
	if len(in.Body) != 1 {
		return basalt.Errorf(basalt.EINVALID, "Malformed request body")
	}
	for name, arg := range in.Body {
		switch name {
		case "os-reset_status":
			a, err := action[struct {
				Status string `json:"status"`
			}](arg)
			if err != nil {
				return err
			}
			return s.plane.ResetSnapshotStatus(ctx, in.ID, a.Status)
		case "os-force_delete":
			if !callerAdmin(ctx) {
				return basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow volume_extension:snapshot_admin_actions:force_delete to be performed.")
			}
			return s.plane.DeleteSnapshot(ctx, in.ID, true)
		}
		return basalt.Errorf(basalt.EINVALID, "There is no such action: %s", name)
	}
	return nil
}
