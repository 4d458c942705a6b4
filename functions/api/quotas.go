package api

import (
	"context"
	"net/http"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// QuotaSetOutput is a project's quota set: {"quota_set": {"id": "<project>", "<resource>":
// <limit>, ...}}; with usage=true each limit is {"limit": L, "in_use": U, "reserved": 0}.
type QuotaSetOutput struct {
	Body struct {
		QuotaSet map[string]any `json:"quota_set" doc:"id, then every quota resource (volumes, snapshots, gigabytes, backups, backup_gigabytes, groups, per_volume_gigabytes, volumes_<type>, snapshots_<type>, gigabytes_<type>) and its limit; -1 is unlimited"`
	}
}

// QuotaSetInput names a project's quota set.
type QuotaSetInput struct {
	Project string `path:"project" doc:"the project whose quotas these are"`
	Usage   string `query:"usage" doc:"true: each value is {limit, in_use, reserved}"`
}

// QuotaProjectInput names a project.
type QuotaProjectInput struct {
	Project string `path:"project" doc:"the project whose quotas these are"`
}

// QuotaSetUpdateInput sets limits.
type QuotaSetUpdateInput struct {
	Project string `path:"project" doc:"the project whose quotas these are"`
	Body    struct {
		QuotaSet map[string]FlexInt `json:"quota_set" doc:"limits by resource; -1 is unlimited"`
	}
}

// LimitsOutput is the caller's absolute limits and usage.
type LimitsOutput struct {
	Body struct {
		Limits LimitsView `json:"limits"`
	}
}

// LimitsView holds rate limits (always none) and absolute limits.
type LimitsView struct {
	Rate     []any          `json:"rate"`
	Absolute map[string]int `json:"absolute" doc:"maxTotalVolumes, maxTotalSnapshots, maxTotalVolumeGigabytes, maxTotalBackups, maxTotalBackupGigabytes and the matching total*Used"`
}

// absoluteLimits maps Cinder's absolute-limit names to quota resources: max* is the limit,
// total*Used the usage.
var absoluteLimits = []struct{ max, used, resource string }{
	{"maxTotalVolumes", "totalVolumesUsed", "volumes"},
	{"maxTotalSnapshots", "totalSnapshotsUsed", "snapshots"},
	{"maxTotalVolumeGigabytes", "totalGigabytesUsed", "gigabytes"},
	{"maxTotalBackups", "totalBackupsUsed", "backups"},
	{"maxTotalBackupGigabytes", "totalBackupGigabytesUsed", "backup_gigabytes"},
}

func quotaSetOutput(id string, limits map[string]int) *QuotaSetOutput {
	out := &QuotaSetOutput{}
	out.Body.QuotaSet = make(map[string]any, len(limits)+1)
	for k, v := range limits {
		out.Body.QuotaSet[k] = v
	}
	if id != "" {
		out.Body.QuotaSet["id"] = id
	}
	return out
}

func (s *Server) registerQuotas() {
	tag := []string{"quotas"}
	huma.Register(s.api, huma.Operation{OperationID: "show-quota-set", Method: http.MethodGet,
		Path: "/v3/os-quota-sets/{project}", Summary: "Show a project's quotas (members: their own project only)", Tags: tag},
		func(ctx context.Context, in *QuotaSetInput) (*QuotaSetOutput, error) {
			usage := false
			if in.Usage != "" {
				b, ok := strictBool(in.Usage)
				if !ok {
					return nil, fault(basalt.Errorf(basalt.EINVALID, "Value '%s' for 'usage' is not a boolean.", in.Usage))
				}
				usage = b
			}
			if !usage {
				limits, err := s.plane.QuotaSet(ctx, in.Project)
				if err != nil {
					return nil, fault(err)
				}
				return quotaSetOutput(in.Project, limits), nil
			}
			u, err := s.plane.QuotaSetUsage(ctx, in.Project)
			if err != nil {
				return nil, fault(err)
			}
			out := &QuotaSetOutput{}
			out.Body.QuotaSet = make(map[string]any, len(u)+1)
			for k, q := range u {
				out.Body.QuotaSet[k] = map[string]int{"limit": q.Limit, "in_use": q.InUse, "reserved": q.Reserved}
			}
			out.Body.QuotaSet["id"] = in.Project
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "show-quota-defaults", Method: http.MethodGet,
		Path: "/v3/os-quota-sets/{project}/defaults", Summary: "Show the default quotas", Tags: tag},
		func(ctx context.Context, in *QuotaProjectInput) (*QuotaSetOutput, error) {
			limits, err := s.plane.QuotaDefaults(ctx, in.Project)
			if err != nil {
				return nil, fault(err)
			}
			return quotaSetOutput(in.Project, limits), nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "update-quota-set", Method: http.MethodPut,
		Path: "/v3/os-quota-sets/{project}", Summary: "Update a project's quotas (admin)", Tags: tag},
		func(ctx context.Context, in *QuotaSetUpdateInput) (*QuotaSetOutput, error) {
			values := make(map[string]string, len(in.Body.QuotaSet))
			for k, v := range in.Body.QuotaSet {
				values[k] = v.Raw
			}
			limits, err := s.plane.UpdateQuotaSet(ctx, in.Project, values)
			if err != nil {
				return nil, fault(err)
			}
			return quotaSetOutput("", limits), nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "delete-quota-set", Method: http.MethodDelete,
		Path: "/v3/os-quota-sets/{project}", Summary: "Reset a project's quotas to the defaults (admin)", Tags: tag,
		DefaultStatus: http.StatusOK},
		func(ctx context.Context, in *QuotaProjectInput) (*struct{}, error) {
			return nil, fault(s.plane.ResetQuotaSet(ctx, in.Project))
		})

	huma.Register(s.api, huma.Operation{OperationID: "show-limits", Method: http.MethodGet, Path: "/v3/limits",
		Summary: "Show the caller's absolute limits and usage", Tags: []string{"limits"}},
		func(ctx context.Context, in *struct{}) (*LimitsOutput, error) {
			u, err := s.plane.QuotaSetUsage(ctx, control.CallerFrom(ctx).ProjectID)
			if err != nil {
				return nil, fault(err)
			}
			out := &LimitsOutput{}
			out.Body.Limits.Rate = []any{}
			out.Body.Limits.Absolute = make(map[string]int, 2*len(absoluteLimits))
			for _, a := range absoluteLimits {
				out.Body.Limits.Absolute[a.max] = u[a.resource].Limit
				out.Body.Limits.Absolute[a.used] = u[a.resource].InUse
			}
			return out, nil
		})
}
