package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// Manageable volumes (microversion 3.8): GET and POST /manageable_volumes, and the older
// /os-volume-manage extension, which Cinder serves at every microversion and cinderclient's
// `manage` posts to. Both are for administrators.

// ManageableVolumeSummary is a backend volume in a plain manageable-volumes list.
type ManageableVolumeSummary struct {
	Reference    map[string]string `json:"reference" doc:"the object: {\"source-name\": \"volume-<id>\"}"`
	Size         int               `json:"size" doc:"GiB"`
	SafeToManage bool              `json:"safe_to_manage"`
}

// ManageableVolumeDetail is a backend volume in a detailed manageable-volumes list.
type ManageableVolumeDetail struct {
	ManageableVolumeSummary
	ReasonNotSafe *string        `json:"reason_not_safe" doc:"\"already managed\" for a volume a record owns"`
	CinderID      *string        `json:"cinder_id" doc:"the volume that owns the object"`
	ExtraInfo     map[string]any `json:"extra_info"`
}

// ManageableListOutput lists manageable volumes.
type ManageableListOutput struct {
	Body struct {
		Volumes []ManageableVolumeSummary `json:"manageable-volumes"`
	}
}

// ManageableDetailListOutput lists manageable volumes with details.
type ManageableDetailListOutput struct {
	Body struct {
		Volumes []ManageableVolumeDetail `json:"manageable-volumes"`
	}
}

// ManageableListInput lists a backend's manageable volumes.
type ManageableListInput struct {
	Host    string `query:"host" doc:"host@backend, optionally #pool (then only that pool's volumes)"`
	Cluster string `query:"cluster" doc:"3.17+: a cluster instead of a host; Basalt has no clusters"`
	Marker  string `query:"marker" doc:"the reference of the last volume seen, as JSON"`
	Limit   string `query:"limit"`
	Offset  string `query:"offset"`
	Sort    string `query:"sort" doc:"key[:dir],...: keys reference and size, directions asc and desc (default reference:desc)"`
	SortKey string `query:"sort_key"`
	SortDir string `query:"sort_dir"`
	has     map[string]bool
}

// Resolve records which sort parameters were given.
func (in *ManageableListInput) Resolve(ctx huma.Context) []error {
	in.has = map[string]bool{}
	u := ctx.URL()
	for k := range u.Query() {
		in.has[k] = true
	}
	return nil
}

// query reads the paging and sorting parameters as Cinder's get_pagination_params and
// get_sort_params do. Errors: EINVALID.
func (in *ManageableListInput) query(ver Version) (control.ManageableQuery, error) {
	q := control.ManageableQuery{Host: in.Host, Marker: in.Marker, Clusters: ver.AtLeast(17)}
	if q.Clusters {
		q.Cluster = in.Cluster
	}
	if in.has["limit"] {
		n, err := strconv.Atoi(in.Limit)
		if err != nil {
			return q, basalt.Errorf(basalt.EINVALID, "limit param must be an integer")
		}
		if n < 0 {
			return q, basalt.Errorf(basalt.EINVALID, "limit param must be positive")
		}
		q.Limit = &n
	}
	if in.has["offset"] {
		n, err := strconv.Atoi(in.Offset)
		if err != nil {
			return q, basalt.Errorf(basalt.EINVALID, "offset must be an integer")
		}
		if n < 0 {
			return q, basalt.Errorf(basalt.EINVALID, "offset must be >= 0")
		}
		q.Offset = n
	}
	if in.has["sort"] && (in.has["sort_key"] || in.has["sort_dir"]) {
		return q, basalt.Errorf(basalt.EINVALID, "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.")
	}
	key, dir := "reference", "desc"
	if in.has["sort_key"] {
		key = in.SortKey
	}
	if in.has["sort_dir"] {
		dir = in.SortDir
	}
	if !in.has["sort"] {
		q.SortKeys, q.SortDirs = []string{strings.TrimSpace(key)}, []string{strings.TrimSpace(dir)}
		return q, nil
	}
	for _, part := range strings.Split(strings.TrimSpace(in.Sort), ",") {
		k, d, _ := strings.Cut(part, ":")
		if d == "" {
			d = "desc"
		}
		q.SortKeys = append(q.SortKeys, strings.TrimSpace(k))
		q.SortDirs = append(q.SortDirs, strings.TrimSpace(d))
	}
	return q, nil
}

// ManageVolumeInput adopts a backend object as a volume.
type ManageVolumeInput struct {
	Body ManageVolumeRequest
}

// ManageVolumeRequest is the body of an adoption: {"volume": {...}}. Cinder's schema allows no
// other key, here or in the volume.
type ManageVolumeRequest struct {
	_      struct{}            `json:"-" additionalProperties:"true"`
	Volume *ManageVolumeFields `json:"volume,omitempty"`
	raw    []byte
}

// UnmarshalJSON decodes the request and keeps it as sent, for check.
func (r *ManageVolumeRequest) UnmarshalJSON(b []byte) error {
	type plain ManageVolumeRequest
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	r.raw = bytes.Clone(b)
	return nil
}

// ManageVolumeFields are the fields of an adoption.
type ManageVolumeFields struct {
	_                struct{} `json:"-" additionalProperties:"true"`
	Host             *string  `json:"host,omitempty" doc:"host@backend, optionally #pool (which must be the object's)"`
	Cluster          *string  `json:"cluster,omitempty" doc:"3.16+: a cluster instead of a host; Basalt has no clusters"`
	Ref              any      `json:"ref,omitempty" doc:"the object: {\"source-name\": \"volume-<id>\"} or {\"source-id\": \"<id>\"}; the volume keeps the object's id"`
	Name             *string  `json:"name,omitempty"`
	Description      *string  `json:"description,omitempty"`
	VolumeType       *string  `json:"volume_type,omitempty" doc:"name or id; the default type when absent"`
	AvailabilityZone *string  `json:"availability_zone,omitempty" doc:"the zone of the backend's service when absent"`
	Metadata         any      `json:"metadata,omitempty" doc:"an object of strings, or null"`
	Bootable         any      `json:"bootable,omitempty" doc:"a boolean, or its string form"`
	raw              []byte
}

// UnmarshalJSON decodes the fields and keeps the object as sent, for check.
func (f *ManageVolumeFields) UnmarshalJSON(b []byte) error {
	type plain ManageVolumeFields
	if err := json.Unmarshal(b, (*plain)(f)); err != nil {
		return err
	}
	f.raw = bytes.Clone(b)
	return nil
}

// manageRequest checks an adoption as Cinder's schema (volume_manage_create, and from 3.16 its
// cluster) does, and returns it. Errors: EINVALID in the schema's words.
func manageRequest(ver Version, r *ManageVolumeRequest) (control.VolumeManage, error) {
	if err := onlyKeys(r.raw, "", "volume"); err != nil {
		return control.VolumeManage{}, err
	}
	f := r.Volume
	if f == nil {
		if bytes.Contains(r.raw, []byte(`"volume"`)) {
			return control.VolumeManage{}, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute volume. Value: None. None is not of type 'object'")
		}
		return control.VolumeManage{}, basalt.Errorf(basalt.EINVALID, "'volume' is a required property")
	}
	known := []string{"host", "ref", "name", "description", "volume_type", "availability_zone", "metadata", "bootable"}
	if ver.AtLeast(16) {
		known = append(known, "cluster")
	}
	if err := onlyKeys(f.raw, "volume", known...); err != nil {
		return control.VolumeManage{}, err
	}
	if f.Ref == nil {
		return control.VolumeManage{}, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute volume. Value: %s. 'ref' is a required property", pyRepr(f.raw))
	}
	req := control.VolumeManage{Host: deref(f.Host), Ref: f.Ref, VolumeType: deref(f.VolumeType),
		AvailabilityZone: deref(f.AvailabilityZone), Clusters: ver.AtLeast(16)}
	if ver.AtLeast(16) {
		req.Cluster = deref(f.Cluster)
	}
	// As Cinder: names are stripped, and an empty one is no name.
	for _, p := range []struct {
		in  *string
		out **string
	}{{f.Name, &req.Name}, {f.Description, &req.Description}} {
		if s := strings.TrimSpace(deref(p.in)); s != "" {
			*p.out = &s
		}
	}
	if f.Bootable != nil {
		b, ok := strictBool(f.Bootable)
		if !ok {
			return control.VolumeManage{}, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute bootable. Value: %v. It must be a boolean.", f.Bootable)
		}
		req.Bootable = b
	}
	if f.Metadata != nil {
		md, ok := f.Metadata.(map[string]any)
		if !ok {
			return control.VolumeManage{}, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute metadata. Value: %v. It is not of type 'object'", f.Metadata)
		}
		req.Metadata = map[string]string{}
		for k, v := range md {
			s, ok := v.(string)
			if !ok {
				return control.VolumeManage{}, basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute %s. Value: %v. It is not of type 'string'", k, v)
			}
			req.Metadata[k] = s
		}
	}
	return req, nil
}

// onlyKeys refuses, as a JSON schema with additionalProperties false does, keys of the object
// raw that are not among known. field names the object in the message ("" for the body).
func onlyKeys(raw []byte, field string, known ...string) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil // not an object: huma's schema has refused it already
	}
	var extra []string
	for k := range obj {
		if !slices.Contains(known, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	quoted := make([]string, len(extra))
	for i, k := range extra {
		quoted[i] = pyString(k)
	}
	verb := "was"
	if len(extra) > 1 {
		verb = "were"
	}
	msg := "Additional properties are not allowed (" + strings.Join(quoted, ", ") + " " + verb + " unexpected)"
	if field == "" {
		return basalt.Errorf(basalt.EINVALID, "%s", msg)
	}
	return basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute %s. Value: %s. %s", field, pyRepr(raw), msg)
}

var manageTag = []string{"manageable volumes"}

func (s *Server) registerManage() {
	for _, r := range []struct {
		coll   string
		minor  int // the microversion that serves it
		suffix string
	}{{"manageable_volumes", 8, ""}, {"os-volume-manage", 0, "-legacy"}} {
		huma.Register(s.api, huma.Operation{OperationID: "list-manageable-volumes" + r.suffix, Method: http.MethodGet,
			Path: "/v3/" + r.coll, Summary: "List the volumes a backend holds (admin)", Tags: manageTag,
			Description: manageListDoc(r.minor)},
			func(ctx context.Context, in *ManageableListInput) (*ManageableListOutput, error) {
				vs, err := s.manageable(ctx, in, r.minor)
				if err != nil {
					return nil, fault(err)
				}
				out := &ManageableListOutput{}
				out.Body.Volumes = make([]ManageableVolumeSummary, 0, len(vs))
				for _, v := range vs {
					out.Body.Volumes = append(out.Body.Volumes, manageableSummary(v))
				}
				return out, nil
			})
		huma.Register(s.api, huma.Operation{OperationID: "list-manageable-volumes-detail" + r.suffix, Method: http.MethodGet,
			Path: "/v3/" + r.coll + "/detail", Summary: "List the volumes a backend holds, with details (admin)", Tags: manageTag,
			Description: manageListDoc(r.minor)},
			func(ctx context.Context, in *ManageableListInput) (*ManageableDetailListOutput, error) {
				vs, err := s.manageable(ctx, in, r.minor)
				if err != nil {
					return nil, fault(err)
				}
				out := &ManageableDetailListOutput{}
				out.Body.Volumes = make([]ManageableVolumeDetail, 0, len(vs))
				for _, v := range vs {
					out.Body.Volumes = append(out.Body.Volumes, ManageableVolumeDetail{ManageableVolumeSummary: manageableSummary(v),
						ReasonNotSafe: v.ReasonNotSafe, CinderID: v.CinderID, ExtraInfo: v.ExtraInfo})
				}
				return out, nil
			})
		huma.Register(s.api, huma.Operation{OperationID: "manage-volume" + r.suffix, Method: http.MethodPost,
			Path: "/v3/" + r.coll, Summary: "Adopt a backend object as a volume (admin)", Tags: manageTag,
			Description: "The volume keeps the object's id and size, and answers as creating (managing) until its " +
				"backend confirms the object, then it is available; on failure it is error (error_managing) and the " +
				"object stays untouched. " + manageVersionDoc(r.minor),
			DefaultStatus: http.StatusAccepted},
			func(ctx context.Context, in *ManageVolumeInput) (*VolumeOutput, error) {
				if err := requireVersion(ctx, r.minor); err != nil {
					return nil, fault(err)
				}
				req, err := manageRequest(info(ctx).version, &in.Body)
				if err != nil {
					return nil, fault(err)
				}
				v, err := s.plane.ManageVolume(ctx, req)
				if err != nil {
					return nil, fault(err)
				}
				out := &VolumeOutput{}
				out.Body.Volume = volumeView(ctx, v, false)
				return out, nil
			})
	}
}

// manageable lists a backend's manageable volumes for a request served from microversion
// 3.minor.
func (s *Server) manageable(ctx context.Context, in *ManageableListInput, minor int) ([]control.ManageableVolume, error) {
	if err := requireVersion(ctx, minor); err != nil {
		return nil, err
	}
	q, err := in.query(info(ctx).version)
	if err != nil {
		return nil, err
	}
	return s.plane.ManageableVolumes(ctx, q)
}

func manageableSummary(v control.ManageableVolume) ManageableVolumeSummary {
	return ManageableVolumeSummary{Reference: v.Reference, Size: v.Size, SafeToManage: v.SafeToManage}
}

func manageVersionDoc(minor int) string {
	if minor == 0 {
		return "The os-volume-manage extension, served at every microversion."
	}
	return "From microversion 3.8."
}

func manageListDoc(minor int) string {
	return "The volumes the backend's agent reported at its last capability report, sorted and paged as Cinder " +
		"does (marker is a reference as JSON). A volume a record owns is not safe to manage: already managed. " +
		manageVersionDoc(minor)
}
