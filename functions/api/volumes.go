package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// FlexInt is an integer that clients may send as a number or a string of digits, as Cinder
// accepts for sizes. A value that is neither is kept as Raw for the error message.
type FlexInt struct {
	N   int
	Raw string
	OK  bool // a whole number was given
	Set bool // the key was present and not null
}

// UnmarshalJSON implements json.Unmarshaler; it never fails, so the caller reports a bad value
// in Cinder's words.
func (f *FlexInt) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		return nil
	}
	f.Set, f.Raw = true, s
	if u, err := strconv.Unquote(s); err == nil {
		s, f.Raw = strings.TrimSpace(u), u
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= -1<<31 && n <= 1<<50 {
		f.N, f.OK = int(n), true
	} else if fl, err := strconv.ParseFloat(s, 64); err == nil && fl >= 1<<50 {
		f.N, f.OK = 1<<50, true // far beyond any limit; reported as over the limit
	}
	return nil
}

// Schema describes FlexInt for OpenAPI.
func (f FlexInt) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Description: "An integer, or a string of digits",
		AnyOf: []*huma.Schema{{Type: "integer"}, {Type: "string"}, {Type: "null"}}}
}

// VolumeCreateRequest is the body of a volume create. Every field may be null; unknown fields
// are ignored (before microversion 3.53, as Cinder).
type VolumeCreateRequest struct {
	Volume VolumeCreateFields `json:"volume"`
	_      struct{}           `json:"-" additionalProperties:"true"`
}

// VolumeCreateFields are the fields of a volume create: the keys of Cinder's schema. From
// microversion 3.53 other keys are refused (check).
type VolumeCreateFields struct {
	_                  struct{}          `json:"-" additionalProperties:"true"`
	Size               FlexInt           `json:"size,omitempty"`
	Name               *string           `json:"name,omitempty"`
	DisplayName        *string           `json:"display_name,omitempty"`
	Description        *string           `json:"description,omitempty"`
	DisplayDescription *string           `json:"display_description,omitempty"`
	VolumeType         *string           `json:"volume_type,omitempty"`
	AvailabilityZone   *string           `json:"availability_zone,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	SnapshotID         *string           `json:"snapshot_id,omitempty"`
	SourceVolID        *string           `json:"source_volid,omitempty"`
	ImageRef           *string           `json:"imageRef,omitempty"`
	ImageID            *string           `json:"image_id,omitempty" doc:"an alias of imageRef"`
	BackupID           *string           `json:"backup_id,omitempty"`
	Multiattach        *bool             `json:"multiattach,omitempty"`
	ConsistencyGroupID *string           `json:"consistencygroup_id,omitempty" doc:"accepted and ignored: Basalt has no groups"`
	GroupID            *string           `json:"group_id,omitempty" doc:"accepted and ignored: Basalt has no groups"`
	raw                []byte            // the object as sent
}

// UnmarshalJSON decodes the fields and keeps the object as sent, for check.
func (f *VolumeCreateFields) UnmarshalJSON(b []byte) error {
	type fields VolumeCreateFields
	if err := json.Unmarshal(b, (*fields)(f)); err != nil {
		return err
	}
	f.raw = bytes.Clone(b)
	return nil
}

// check refuses, from microversion 3.53, keys that Cinder's schema of a volume create does not
// name: before, they are ignored. The error is EINVALID.
func (f *VolumeCreateFields) check(v Version) error {
	return checkVolumeKeys(f.raw, reflect.TypeFor[VolumeCreateFields](), v.AtLeast(53), false)
}

// VolumeCreateInput is a volume create request.
type VolumeCreateInput struct {
	Body VolumeCreateRequest
}

// VolumeOutput is one volume.
type VolumeOutput struct {
	Body struct {
		Volume VolumeView `json:"volume"`
	}
}

// VolumeIDInput names one volume.
type VolumeIDInput struct {
	ID string `path:"volume_id"`
}

// VolumeListInput is a volume listing request.
type VolumeListInput struct {
	AllTenants string `query:"all_tenants"`
	Marker     string `query:"marker"`
	Limit      string `query:"limit"`
	Offset     string `query:"offset"`
	Sort       string `query:"sort"`
	SortKey    string `query:"sort_key"`
	SortDir    string `query:"sort_dir"`
	Name       string `query:"name" doc:"exact name"`
	Status     string `query:"status"`
	raw        url.Values
	path       string
}

// Resolve keeps the raw query for filters and links.
func (in *VolumeListInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.raw, in.path = u.Query(), u.Path
	return nil
}

// VolumeListOutput is a plain volume list.
type VolumeListOutput struct {
	Body struct {
		Volumes []VolumeSummary `json:"volumes"`
		Links   []Link          `json:"volumes_links,omitempty"`
		Count   *int            `json:"count,omitempty" doc:"volumes matching the filters on every page (with_count=true, 3.45)"`
	}
}

// VolumeDetailListOutput is a detailed volume list.
type VolumeDetailListOutput struct {
	Body struct {
		Volumes []VolumeView `json:"volumes"`
		Links   []Link       `json:"volumes_links,omitempty"`
		Count   *int         `json:"count,omitempty" doc:"volumes matching the filters on every page (with_count=true, 3.45)"`
	}
}

// VolumeUpdateFields are the fields of a volume update. Other keys are refused (check).
type VolumeUpdateFields struct {
	_                  struct{}          `json:"-" additionalProperties:"true"`
	Name               *string           `json:"name,omitempty"`
	DisplayName        *string           `json:"display_name,omitempty"`
	Description        *string           `json:"description,omitempty"`
	DisplayDescription *string           `json:"display_description,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	raw                []byte            // the object as sent
}

// UnmarshalJSON decodes the fields and keeps the object as sent, for check.
func (f *VolumeUpdateFields) UnmarshalJSON(b []byte) error {
	type fields VolumeUpdateFields
	if err := json.Unmarshal(b, (*fields)(f)); err != nil {
		return err
	}
	f.raw = bytes.Clone(b)
	return nil
}

// check refuses keys that Cinder's schema of a volume update does not name, at every
// microversion, and from 3.53 an update that names none. The error is EINVALID.
func (f *VolumeUpdateFields) check(v Version) error {
	return checkVolumeKeys(f.raw, reflect.TypeFor[VolumeUpdateFields](), true, v.AtLeast(53))
}

// VolumeUpdateInput is a volume update.
type VolumeUpdateInput struct {
	ID   string `path:"volume_id"`
	Body struct {
		Volume VolumeUpdateFields `json:"volume"`
	}
}

// VolumeDeleteInput is a volume delete.
type VolumeDeleteInput struct {
	ID      string `path:"volume_id"`
	Cascade string `query:"cascade"`
	Force   string `query:"force"`
}

// ActionOutput answers an action with its status and no body.
type ActionOutput struct {
	Status int
	// Body is the answer of the actions that have one (os-initialize_connection).
	Body any
}

// VolumeActionInput is a volume action: a body with exactly one key, the action's name.
type VolumeActionInput struct {
	ID   string `path:"volume_id"`
	Body map[string]any
}

func firstNonNil(a, b *string) *string {
	if a != nil {
		return a
	}
	return b
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// listOptions reads the paging, sorting and filter parameters shared by list APIs. Keys in
// reserved are not filters.
func listOptions(ctx context.Context, q url.Values) (control.ListOptions, error) {
	o := control.ListOptions{Filters: map[string]string{}, Lenient: !info(ctx).version.AtLeast(31)}
	reserved := map[string]bool{"marker": true, "limit": true, "offset": true, "sort": true,
		"sort_key": true, "sort_dir": true, "all_tenants": true}
	for k, vs := range q {
		if !reserved[k] && len(vs) > 0 {
			o.Filters[k] = vs[len(vs)-1]
		}
	}
	if v := q.Get("all_tenants"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			if n, nerr := strconv.Atoi(v); nerr == nil {
				b, err = n != 0, nil
			}
		}
		if err != nil {
			return o, basalt.Errorf(basalt.EINVALID, "Invalid value '%s' for all_tenants.", v)
		}
		o.AllTenants = b && callerAdmin(ctx)
	}
	o.Marker = q.Get("marker")
	for _, p := range []struct {
		name string
		dst  *int
	}{{"limit", &o.Limit}, {"offset", &o.Offset}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, basalt.Errorf(basalt.EINVALID, "Invalid input received: %s must be a non-negative integer, not %q.", p.name, v)
			}
			*p.dst = n
		}
	}
	sortParam, sortKey := q.Get("sort"), q.Get("sort_key")
	if sortParam != "" && (sortKey != "" || q.Get("sort_dir") != "") {
		return o, basalt.Errorf(basalt.EINVALID, "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.")
	}
	if sortKey != "" || q.Get("sort_dir") != "" {
		// The legacy pair is one key and one direction, never lists (Cinder's get_sort_params).
		dir := strings.ToLower(strings.TrimSpace(q.Get("sort_dir")))
		if dir != "" && dir != "asc" && dir != "desc" {
			return o, basalt.Errorf(basalt.EINVALID, "Unknown sort direction, must be 'desc' or 'asc'.")
		}
		if k := strings.TrimSpace(sortKey); k != "" {
			o.Sort = []control.SortKey{{Key: k, Desc: dir != "asc"}}
		} else if dir != "" {
			o.Sort = []control.SortKey{{Key: "created_at", Desc: dir != "asc"}}
		}
		return o, nil
	}
	if sortParam != "" {
		for _, part := range strings.Split(sortParam, ",") {
			k, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
			dir = strings.ToLower(strings.TrimSpace(dir))
			if dir != "" && dir != "asc" && dir != "desc" {
				return o, basalt.Errorf(basalt.EINVALID, "Unknown sort direction, must be 'desc' or 'asc'.")
			}
			o.Sort = append(o.Sort, control.SortKey{Key: strings.TrimSpace(k), Desc: dir != "asc"})
		}
	}
	return o, nil
}

// withCount reads with_count into o for the listings that count (volumes and snapshots). From
// microversion 3.45 it asks for the count and is no filter; before, it is a filter like any
// other key, which a member may not use from 3.31 (as Cinder).
func withCount(ctx context.Context, q url.Values, o *control.ListOptions) error {
	vs, ok := q["with_count"]
	if !ok || !info(ctx).version.AtLeast(45) {
		return nil
	}
	delete(o.Filters, "with_count")
	v := vs[len(vs)-1]
	b, ok := strictBool(v)
	if !ok {
		return basalt.Errorf(basalt.EINVALID, "Value '%s' for 'with_count' is not a boolean.", v)
	}
	o.WithCount = b
	return nil
}

// count returns the count of pg for a list body, or nil when o did not ask for it.
func count[T any](o control.ListOptions, pg control.Page[T]) *int {
	if !o.WithCount {
		return nil
	}
	return &pg.Count
}

var volumeTag = []string{"volumes"}

func (s *Server) registerVolumes() {
	huma.Register(s.api, huma.Operation{OperationID: "create-volume", Method: http.MethodPost,
		Path: "/v3/volumes", Summary: "Create a volume", Tags: volumeTag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *VolumeCreateInput) (*VolumeOutput, error) {
			req, err := volumeCreate(info(ctx).version, in)
			if err != nil {
				return nil, fault(err)
			}
			v, err := s.plane.CreateVolume(ctx, req)
			if err != nil {
				return nil, fault(err)
			}
			out := &VolumeOutput{}
			out.Body.Volume = volumeView(ctx, v, false)
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "list-volumes", Method: http.MethodGet,
		Path: "/v3/volumes", Summary: "List volumes (id, name, links)", Tags: volumeTag},
		func(ctx context.Context, in *VolumeListInput) (*VolumeListOutput, error) {
			o, pg, err := s.listVolumes(ctx, in)
			if err != nil {
				return nil, fault(err)
			}
			out := &VolumeListOutput{}
			out.Body.Volumes = make([]VolumeSummary, 0, len(pg.Items))
			for _, v := range pg.Items {
				out.Body.Volumes = append(out.Body.Volumes, VolumeSummary{ID: v.ID, Name: v.Name, Links: selfLinks(ctx, "volumes", v.ID)})
			}
			if pg.More {
				out.Body.Links = nextLink(ctx, in.path, in.raw, pg.Items[len(pg.Items)-1].ID)
			}
			out.Body.Count = count(o, pg)
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "list-volumes-detail", Method: http.MethodGet,
		Path: "/v3/volumes/detail", Summary: "List volumes with details", Tags: volumeTag},
		func(ctx context.Context, in *VolumeListInput) (*VolumeDetailListOutput, error) {
			o, pg, err := s.listVolumes(ctx, in)
			if err != nil {
				return nil, fault(err)
			}
			out := &VolumeDetailListOutput{}
			out.Body.Volumes = make([]VolumeView, 0, len(pg.Items))
			for _, v := range pg.Items {
				out.Body.Volumes = append(out.Body.Volumes, volumeView(ctx, v, true))
			}
			if pg.More {
				out.Body.Links = nextLink(ctx, in.path, in.raw, pg.Items[len(pg.Items)-1].ID)
			}
			out.Body.Count = count(o, pg)
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "show-volume", Method: http.MethodGet,
		Path: "/v3/volumes/{volume_id}", Summary: "Show a volume", Tags: volumeTag},
		func(ctx context.Context, in *VolumeIDInput) (*VolumeOutput, error) {
			v, err := s.plane.Volume(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			out := &VolumeOutput{}
			out.Body.Volume = volumeView(ctx, v, true)
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "update-volume", Method: http.MethodPut,
		Path: "/v3/volumes/{volume_id}", Summary: "Update a volume's name, description or metadata", Tags: volumeTag},
		func(ctx context.Context, in *VolumeUpdateInput) (*VolumeOutput, error) {
			b := in.Body.Volume
			if err := b.check(info(ctx).version); err != nil {
				return nil, fault(err)
			}
			v, err := s.plane.UpdateVolume(ctx, in.ID, control.VolumeUpdate{
				Name: firstNonNil(b.Name, b.DisplayName), Description: firstNonNil(b.Description, b.DisplayDescription),
				Metadata: b.Metadata})
			if err != nil {
				return nil, fault(err)
			}
			out := &VolumeOutput{}
			out.Body.Volume = volumeView(ctx, v, true)
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "delete-volume", Method: http.MethodDelete,
		Path: "/v3/volumes/{volume_id}", Summary: "Delete a volume", Tags: volumeTag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *VolumeDeleteInput) (*struct{}, error) {
			force, ok := queryBool(in.Force)
			if !ok {
				return nil, fault(basalt.Errorf(basalt.EINVALID, "Invalid value '%s' for force.", in.Force))
			}
			if force && !info(ctx).version.AtLeast(23) {
				force = false
			}
			cascade, ok := queryBool(in.Cascade)
			if !ok {
				return nil, fault(basalt.Errorf(basalt.EINVALID, "Invalid value '%s' for cascade.", in.Cascade))
			}
			if err := s.plane.DeleteVolume(ctx, in.ID, force, cascade); err != nil {
				return nil, fault(err)
			}
			return nil, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "volume-action", Method: http.MethodPost,
		Path: "/v3/volumes/{volume_id}/action", Summary: "Run an action on a volume",
		Description: "The body has exactly one key, the action's name. Supported: os-extend, revert (3.40), " +
			"os-set_bootable (200), os-update_readonly_flag, os-reset_status (admin), os-force_delete (admin), " +
			"os-unmanage (admin: the record goes, the backend object stays).",
		Tags: volumeTag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *VolumeActionInput) (*ActionOutput, error) {
			status, err := s.volumeAction(ctx, in)
			if err != nil {
				return nil, fault(err)
			}
			return &ActionOutput{Status: status.code, Body: status.body}, nil
		})
}

func (s *Server) listVolumes(ctx context.Context, in *VolumeListInput) (control.ListOptions, control.Page[*basalt.Volume], error) {
	o, err := listOptions(ctx, in.raw)
	if err == nil {
		err = withCount(ctx, in.raw, &o)
	}
	if err != nil {
		return o, control.Page[*basalt.Volume]{}, err
	}
	pg, err := s.plane.Volumes(ctx, o)
	return o, pg, err
}

func volumeCreate(ver Version, in *VolumeCreateInput) (control.VolumeCreate, error) {
	b := in.Body.Volume
	if err := b.check(ver); err != nil {
		return control.VolumeCreate{}, err
	}
	fromSource := deref(b.SnapshotID) != "" || deref(b.SourceVolID) != ""
	if !b.Size.Set && !fromSource {
		return control.VolumeCreate{}, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute size. Value: None. size is required to create a blank volume.")
	}
	if b.Size.Set && !b.Size.OK {
		return control.VolumeCreate{}, basalt.Errorf(basalt.EINVALID, "Invalid volume size provided for create request: %s (size argument must be an integer (or string representation of an integer) and greater than zero).", b.Size.Raw)
	}
	if b.Size.Set && b.Size.N <= 0 {
		return control.VolumeCreate{}, basalt.Errorf(basalt.EINVALID, "Invalid volume size provided for create request: %d (size argument must be an integer (or string representation of an integer) and greater than zero).", b.Size.N)
	}
	if b.Multiattach != nil && *b.Multiattach {
		return control.VolumeCreate{}, basalt.Errorf(basalt.EINVALID, "multiattach parameter has been removed. The default behavior is to use multiattach enabled volume types. Contact your administrator to create a multiattach enabled volume type and use it to create multiattach volumes.")
	}
	for name, v := range map[string]*string{"imageRef": b.ImageRef, "image_id": b.ImageID, "backup_id": b.BackupID} {
		if v != nil && *v != "" {
			return control.VolumeCreate{}, basalt.Errorf(basalt.EINVALID, "Invalid input received: creating a volume from %s is not supported yet.", name)
		}
	}
	return control.VolumeCreate{Size: b.Size.N, Name: firstNonNil(b.Name, b.DisplayName),
		Description: firstNonNil(b.Description, b.DisplayDescription), VolumeType: deref(b.VolumeType),
		AvailabilityZone: deref(b.AvailabilityZone), Metadata: b.Metadata,
		SnapshotID: deref(b.SnapshotID), SourceVolID: deref(b.SourceVolID)}, nil
}

// action decodes one action's argument. Empty-body actions accept {}, null or "".
func action[T any](arg any) (T, error) {
	var a T
	if arg == nil || arg == "" {
		return a, nil
	}
	return a, remarshal(arg, &a)
}

// actionAnswer is what an action answers: a status and, for a few actions, a body.
type actionAnswer struct {
	code int
	body any
}

// volumeAction runs one volume action and returns the answer.
func (s *Server) volumeAction(ctx context.Context, in *VolumeActionInput) (actionAnswer, error) {
	if len(in.Body) != 1 {
		return actionAnswer{}, basalt.Errorf(basalt.EINVALID, "Malformed request body")
	}
	for name, arg := range in.Body {
		if code, body, ok, err := s.legacyAttachAction(ctx, in.ID, name, arg); ok {
			return actionAnswer{code, body}, err
		}
		code, err := s.volumeActionStatus(ctx, in.ID, name, arg)
		return actionAnswer{code: code}, err
	}
	return actionAnswer{}, nil
}

// volumeActionStatus runs the volume actions that answer with a status only.
func (s *Server) volumeActionStatus(ctx context.Context, id, name string, arg any) (int, error) {
	ver := info(ctx).version
	switch name {
	case "os-reset_status":
		a, err := action[struct {
			Status       *string `json:"status"`
			AttachStatus *string `json:"attach_status"`
		}](arg)
		if err != nil {
			return 0, err
		}
		return http.StatusAccepted, s.plane.ResetVolumeStatus(ctx, id, a.Status, a.AttachStatus)
	case "os-extend":
		a, err := action[struct {
			NewSize FlexInt `json:"new_size"`
		}](arg)
		if err != nil {
			return 0, err
		}
		if !a.NewSize.OK {
			return 0, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute new_size. Value: %s. new_size must be an integer.", a.NewSize.Raw)
		}
		return http.StatusAccepted, s.plane.ExtendVolume(ctx, id, a.NewSize.N, ver.AtLeast(42))
	case "revert":
		if !ver.AtLeast(40) {
			return 0, basalt.Errorf(basalt.ENOTFOUND, "The resource could not be found.")
		}
		a, err := action[struct {
			SnapshotID string `json:"snapshot_id"`
		}](arg)
		if err != nil {
			return 0, err
		}
		if a.SnapshotID == "" {
			return 0, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute snapshot_id. Value: None. snapshot_id is required.")
		}
		return http.StatusAccepted, s.plane.RevertVolume(ctx, id, a.SnapshotID)
	case "os-set_bootable":
		a, err := action[struct {
			Bootable any `json:"bootable"`
		}](arg)
		if err != nil {
			return 0, err
		}
		b, ok := strictBool(a.Bootable)
		if !ok {
			return 0, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute bootable. Value: %v. It must be a boolean.", a.Bootable)
		}
		return http.StatusOK, s.plane.SetBootable(ctx, id, b)
	case "os-update_readonly_flag":
		a, err := action[struct {
			ReadOnly any `json:"readonly"`
		}](arg)
		if err != nil {
			return 0, err
		}
		b, ok := strictBool(a.ReadOnly)
		if !ok {
			return 0, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute readonly. Value: %v. It must be a boolean.", a.ReadOnly)
		}
		return http.StatusAccepted, s.plane.SetReadOnly(ctx, id, b)
	case "os-force_delete":
		if !callerAdmin(ctx) {
			return 0, basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow volume_extension:volume_admin_actions:force_delete to be performed.")
		}
		return http.StatusAccepted, s.plane.DeleteVolume(ctx, id, true, false)
	case "os-unmanage":
		return http.StatusAccepted, s.plane.UnmanageVolume(ctx, id)
	}
	return 0, basalt.Errorf(basalt.EINVALID, "There is no such action: %s", name)
}

// queryBool reads an optional boolean query parameter ("" is false).
func queryBool(v string) (bool, bool) {
	if v == "" {
		return false, true
	}
	return strictBool(v)
}

// strictBool reads a boolean as Cinder does: true/false, or their string forms.
func strictBool(v any) (bool, bool) {
	switch b := v.(type) {
	case bool:
		return b, true
	case string:
		switch strings.ToLower(b) {
		case "true", "1", "t", "yes", "y", "on":
			return true, true
		case "false", "0", "f", "no", "n", "off":
			return false, true
		}
	}
	return false, false
}

func remarshal(in any, out any) error {
	b, err := json.Marshal(in)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		return basalt.Errorf(basalt.EINVALID, "Invalid input received: %v", fmt.Sprint(err))
	}
	return nil
}
