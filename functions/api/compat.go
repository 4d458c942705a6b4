package api

import (
	"context"
	"net/http"
	"sort"

	"github.com/danielgtaylor/huma/v2"
)

// unimplemented are the collections of the Cinder v3 API that Basalt does not serve yet: a
// request for one gets 501 notImplemented, which clients report clearly, rather than a 404
// that reads like a missing resource.
var unimplemented = map[string]string{
	"backups": "backups", "clusters": "clusters", "workers": "workers",
	"groups": "groups", "group_snapshots": "group snapshots", "group_types": "group types",
	"qos-specs": "QoS specs", "os-volume-transfer": "volume transfers", "volume-transfers": "volume transfers",
	"manageable_snapshots": "manageable snapshots", "os-snapshot-manage": "snapshot management",
	"default-types": "default types",
}

// VolumeSummaryOutput is the volumes summary (3.12; metadata from 3.36).
type VolumeSummaryOutput struct {
	Body struct {
		Summary struct {
			TotalCount int                 `json:"total_count"`
			TotalSize  int                 `json:"total_size"`
			Metadata   map[string][]string `json:"metadata,omitempty"`
		} `json:"volume-summary"`
	}
}

// ResourceFiltersOutput lists the filters members may use per resource (3.33).
type ResourceFiltersOutput struct {
	Body struct {
		ResourceFilters []ResourceFilter `json:"resource_filters"`
	}
}

// ResourceFilter is one resource's filters.
type ResourceFilter struct {
	Resource string   `json:"resource"`
	Filters  []string `json:"filters"`
}

var resourceFilters = []ResourceFilter{
	{"volume", []string{"name", "status", "metadata", "bootable", "migration_status", "availability_zone", "group_id", "size", "created_at", "updated_at", "consumes_quota"}},
	{"snapshot", []string{"name", "status", "volume_id", "metadata", "availability_zone", "consumes_quota"}},
	{"backup", []string{"name", "status", "volume_id"}},
	{"attachment", []string{"volume_id", "status", "instance_id", "attach_status"}},
	{"message", []string{"resource_uuid", "resource_type", "event_id", "request_id", "message_level"}},
	{"pool", []string{"name", "volume_type"}},
	{"volume_type", []string{"is_public", "extra_specs"}},
}

func (s *Server) registerCompat() {
	huma.Register(s.api, huma.Operation{OperationID: "volumes-summary", Method: http.MethodGet, Path: "/v3/volumes/summary",
		Summary: "Count and size of the caller's volumes (3.12)", Tags: volumeTag},
		func(ctx context.Context, in *struct {
			AllTenants string `query:"all_tenants"`
		}) (*VolumeSummaryOutput, error) {
			if err := requireVersion(ctx, 12); err != nil {
				return nil, fault(err)
			}
			o, err := listOptions(ctx, map[string][]string{"all_tenants": {in.AllTenants}})
			if err != nil {
				return nil, fault(err)
			}
			pg, err := s.plane.Volumes(ctx, o)
			if err != nil {
				return nil, fault(err)
			}
			out := &VolumeSummaryOutput{}
			md := map[string][]string{}
			for _, v := range pg.Items {
				out.Body.Summary.TotalCount++
				out.Body.Summary.TotalSize += v.Size
				for k, val := range v.Metadata {
					md[k] = appendUnique(md[k], val)
				}
			}
			if info(ctx).version.AtLeast(36) {
				for k := range md {
					sort.Strings(md[k])
				}
				out.Body.Summary.Metadata = md
			}
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "list-resource-filters", Method: http.MethodGet, Path: "/v3/resource_filters",
		Summary: "List the filters members may use (3.33)", Tags: []string{"versions"}},
		func(ctx context.Context, in *struct {
			Resource string `query:"resource"`
		}) (*ResourceFiltersOutput, error) {
			if err := requireVersion(ctx, 33); err != nil {
				return nil, fault(err)
			}
			out := &ResourceFiltersOutput{}
			out.Body.ResourceFilters = []ResourceFilter{}
			for _, f := range resourceFilters {
				if in.Resource == "" || in.Resource == f.Resource {
					out.Body.ResourceFilters = append(out.Body.ResourceFilters, f)
				}
			}
			return out, nil
		})
}

func appendUnique(xs []string, x string) []string {
	for _, y := range xs {
		if y == x {
			return xs
		}
	}
	return append(xs, x)
}

// notImplemented answers a request for a collection Basalt does not serve yet.
func notImplemented(w http.ResponseWriter, what string) {
	writeFault(w, http.StatusNotImplemented, "Basalt does not implement "+what+" yet.")
}
