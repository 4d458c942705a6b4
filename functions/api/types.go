package api

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

var typeTag = []string{"volume types"}

// TypeOutput is one volume type.
type TypeOutput struct {
	Body struct {
		VolumeType VolumeTypeView `json:"volume_type"`
	}
}

// TypeListOutput lists volume types.
type TypeListOutput struct {
	Body struct {
		VolumeTypes []VolumeTypeView `json:"volume_types"`
	}
}

// TypeIDInput names a volume type.
type TypeIDInput struct {
	ID string `path:"type_id"`
}

// TypeCreateFields are the fields of a volume type create.
type TypeCreateFields struct {
	_           struct{}          `json:"-" additionalProperties:"true"`
	Name        string            `json:"name"`
	Description *string           `json:"description,omitempty"`
	IsPublic    *bool             `json:"os-volume-type-access:is_public,omitempty"`
	IsPublic2   *bool             `json:"is_public,omitempty"`
	ExtraSpecs  map[string]string `json:"extra_specs,omitempty"`
}

// TypeCreateInput creates a volume type.
type TypeCreateInput struct {
	Body struct {
		VolumeType TypeCreateFields `json:"volume_type"`
	}
}

// TypeUpdateFields are the fields of a volume type update.
type TypeUpdateFields struct {
	_           struct{} `json:"-" additionalProperties:"true"`
	Name        *string  `json:"name,omitempty"`
	Description *string  `json:"description,omitempty"`
	IsPublic    *bool    `json:"is_public,omitempty"`
}

// TypeUpdateInput updates a volume type.
type TypeUpdateInput struct {
	ID   string `path:"type_id"`
	Body struct {
		VolumeType TypeUpdateFields `json:"volume_type"`
	}
}

// ExtraSpecsOutput is a type's extra specs.
type ExtraSpecsOutput struct {
	Body struct {
		ExtraSpecs map[string]string `json:"extra_specs"`
	}
}

// ExtraSpecsInput sets extra specs.
type ExtraSpecsInput struct {
	ID   string `path:"type_id"`
	Body struct {
		ExtraSpecs map[string]string `json:"extra_specs"`
	}
}

// ExtraSpecKeyInput names one extra spec.
type ExtraSpecKeyInput struct {
	ID  string `path:"type_id"`
	Key string `path:"key"`
}

// ExtraSpecKeyOutput is one extra spec: {"<key>": "<value>"}.
type ExtraSpecKeyOutput struct {
	Body map[string]string
}

// ExtraSpecKeyPutInput sets one extra spec.
type ExtraSpecKeyPutInput struct {
	ID   string `path:"type_id"`
	Key  string `path:"key"`
	Body map[string]string
}

// TypeListInput lists volume types.
type TypeListInput struct {
	IsPublic   string `query:"is_public" doc:"admins: true (the default), false, or none for both; members see public types"`
	ExtraSpecs string `query:"extra_specs" doc:"a dict literal, {'key': 'value'}: the types with these extra specs (members from 3.52)"`
	raw        url.Values
}

// Resolve keeps the raw query: members may not use other filters from 3.52.
func (in *TypeListInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.raw = u.Query()
	return nil
}

// typeListParams are the parameters of a type listing that are not filters.
var typeListParams = []string{"marker", "limit", "offset", "sort", "sort_key", "sort_dir", "all_tenants"}

// typeFilter reads a type listing's filters as Cinder does. Admins filter on is_public and on
// extra_specs, at every microversion. Members always see the public types; from 3.52 they may
// filter on extra_specs and any filter but is_public is refused, before 3.52 their filters are
// dropped.
func typeFilter(ctx context.Context, in *TypeListInput) (control.TypeFilter, error) {
	var f control.TypeFilter
	if !callerAdmin(ctx) {
		if !info(ctx).version.AtLeast(52) {
			return f, nil
		}
		var bad []string
		for k := range in.raw {
			if k != "is_public" && k != "extra_specs" && !slices.Contains(typeListParams, k) {
				bad = append(bad, k)
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return f, basalt.Errorf(basalt.EINVALID, "Invalid filters %s are found in query options.", strings.Join(bad, ","))
		}
		f.ExtraSpecs = in.ExtraSpecs
		return f, nil
	}
	switch in.IsPublic {
	case "":
		t := true
		f.IsPublic = &t
	case "none", "None":
	default:
		b, err := strconv.ParseBool(in.IsPublic)
		if err != nil {
			return f, basalt.Errorf(basalt.EINVALID, "Invalid is_public filter [%s]", in.IsPublic)
		}
		f.IsPublic = &b
	}
	f.ExtraSpecs = in.ExtraSpecs
	return f, nil
}

func typeOutput(ctx context.Context, t *basalt.VolumeType) *TypeOutput {
	out := &TypeOutput{}
	out.Body.VolumeType = typeView(ctx, t)
	return out
}

func (s *Server) registerTypes() {
	huma.Register(s.api, huma.Operation{OperationID: "list-types", Method: http.MethodGet, Path: "/v3/types",
		Summary: "List volume types", Tags: typeTag},
		func(ctx context.Context, in *TypeListInput) (*TypeListOutput, error) {
			f, err := typeFilter(ctx, in)
			if err != nil {
				return nil, fault(err)
			}
			ts, err := s.plane.Types(ctx, f)
			if err != nil {
				return nil, fault(err)
			}
			out := &TypeListOutput{}
			out.Body.VolumeTypes = make([]VolumeTypeView, 0, len(ts))
			for _, t := range ts {
				out.Body.VolumeTypes = append(out.Body.VolumeTypes, typeView(ctx, t))
			}
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "show-type", Method: http.MethodGet, Path: "/v3/types/{type_id}",
		Summary: "Show a volume type (type_id \"default\": the default type)", Tags: typeTag},
		func(ctx context.Context, in *TypeIDInput) (*TypeOutput, error) {
			t, err := s.plane.Type(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			return typeOutput(ctx, t), nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "create-type", Method: http.MethodPost, Path: "/v3/types",
		Summary: "Create a volume type (admin)", Tags: typeTag},
		func(ctx context.Context, in *TypeCreateInput) (*TypeOutput, error) {
			b := in.Body.VolumeType
			pub := b.IsPublic
			if pub == nil {
				pub = b.IsPublic2
			}
			t, err := s.plane.CreateType(ctx, control.TypeCreate{Name: b.Name, Description: b.Description,
				IsPublic: pub, ExtraSpecs: b.ExtraSpecs})
			if err != nil {
				return nil, fault(err)
			}
			return typeOutput(ctx, t), nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "update-type", Method: http.MethodPut, Path: "/v3/types/{type_id}",
		Summary: "Update a volume type (admin)", Tags: typeTag},
		func(ctx context.Context, in *TypeUpdateInput) (*TypeOutput, error) {
			b := in.Body.VolumeType
			t, err := s.plane.UpdateType(ctx, in.ID, control.TypeUpdate{Name: b.Name, Description: b.Description, IsPublic: b.IsPublic})
			if err != nil {
				return nil, fault(err)
			}
			return typeOutput(ctx, t), nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "delete-type", Method: http.MethodDelete, Path: "/v3/types/{type_id}",
		Summary: "Delete a volume type (admin)", Tags: typeTag, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *TypeIDInput) (*struct{}, error) {
			return nil, fault(s.plane.DeleteType(ctx, in.ID))
		})

	huma.Register(s.api, huma.Operation{OperationID: "list-extra-specs", Method: http.MethodGet,
		Path: "/v3/types/{type_id}/extra_specs", Summary: "List a type's extra specs", Tags: typeTag},
		func(ctx context.Context, in *TypeIDInput) (*ExtraSpecsOutput, error) {
			t, err := s.plane.Type(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			out := &ExtraSpecsOutput{}
			out.Body.ExtraSpecs = typeView(ctx, t).ExtraSpecs
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "create-extra-specs", Method: http.MethodPost,
		Path: "/v3/types/{type_id}/extra_specs", Summary: "Create or update extra specs (admin)", Tags: typeTag},
		func(ctx context.Context, in *ExtraSpecsInput) (*ExtraSpecsOutput, error) {
			specs, err := s.plane.SetExtraSpecs(ctx, in.ID, in.Body.ExtraSpecs)
			if err != nil {
				return nil, fault(err)
			}
			out := &ExtraSpecsOutput{}
			out.Body.ExtraSpecs = specs
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "show-extra-spec", Method: http.MethodGet,
		Path: "/v3/types/{type_id}/extra_specs/{key}", Summary: "Show one extra spec", Tags: typeTag},
		func(ctx context.Context, in *ExtraSpecKeyInput) (*ExtraSpecKeyOutput, error) {
			t, err := s.plane.Type(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			v, ok := typeView(ctx, t).ExtraSpecs[in.Key]
			if !ok {
				return nil, fault(basalt.Errorf(basalt.ENOTFOUND, "Volume Type %s has no extra specs with key %s.", in.ID, in.Key))
			}
			return &ExtraSpecKeyOutput{Body: map[string]string{in.Key: v}}, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "update-extra-spec", Method: http.MethodPut,
		Path: "/v3/types/{type_id}/extra_specs/{key}", Summary: "Set one extra spec (admin)", Tags: typeTag},
		func(ctx context.Context, in *ExtraSpecKeyPutInput) (*ExtraSpecKeyOutput, error) {
			if _, ok := in.Body[in.Key]; !ok || len(in.Body) != 1 {
				return nil, fault(basalt.Errorf(basalt.EINVALID, "Request body and URI mismatch"))
			}
			specs, err := s.plane.SetExtraSpecs(ctx, in.ID, in.Body)
			if err != nil {
				return nil, fault(err)
			}
			return &ExtraSpecKeyOutput{Body: specs}, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "delete-extra-spec", Method: http.MethodDelete,
		Path: "/v3/types/{type_id}/extra_specs/{key}", Summary: "Delete one extra spec (admin)", Tags: typeTag,
		DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *ExtraSpecKeyInput) (*struct{}, error) {
			return nil, fault(s.plane.DeleteExtraSpec(ctx, in.ID, in.Key))
		})
}
