package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

// ServiceView is Cinder's service object.
type ServiceView struct {
	Binary            string     `json:"binary"`
	Host              string     `json:"host"`
	Zone              string     `json:"zone"`
	Status            string     `json:"status"`
	State             string     `json:"state"`
	UpdatedAt         *Timestamp `json:"updated_at"`
	DisabledReason    *string    `json:"disabled_reason"`
	ReplicationStatus *string    `json:"replication_status,omitempty"`
	ActiveBackendID   *string    `json:"active_backend_id,omitempty"`
	Frozen            *bool      `json:"frozen,omitempty"`
	Cluster           *string    `json:"cluster"`
	// BackendState is a volume service's backend state, "up" or "down", or null when the
	// scheduler has no pool of it (3.49).
	BackendState Nullable[string] `json:"backend_state,omitzero" doc:"3.49+, cinder-volume services: up or down; null when the scheduler has no pool of the service"`
	// Busy counts driver calls in flight at the last heartbeat (a Basalt extension): a busy
	// backend is still up.
	Busy int `json:"busy"`
}

// ServiceListOutput lists services.
type ServiceListOutput struct {
	Body struct {
		Services []ServiceView `json:"services"`
	}
}

// ServiceChangeInput enables or disables a service.
type ServiceChangeInput struct {
	Action string `path:"action" enum:"enable,disable,disable-log-reason"`
	Body   struct {
		_              struct{} `json:"-" additionalProperties:"true"`
		Host           string   `json:"host"`
		Binary         string   `json:"binary,omitempty"`
		Service        string   `json:"service,omitempty" doc:"deprecated alias of binary"`
		DisabledReason *string  `json:"disabled_reason,omitempty"`
	}
}

// ServiceChangeOutput answers a service change.
type ServiceChangeOutput struct {
	Body struct {
		Host           string  `json:"host"`
		Service        string  `json:"service"`
		Binary         string  `json:"binary"`
		Status         string  `json:"status"`
		Disabled       bool    `json:"disabled"`
		DisabledReason *string `json:"disabled_reason,omitempty"`
	}
}

// PoolView is a pool of get_pools.
type PoolView struct {
	Name         string              `json:"name"`
	Capabilities basalt.Capabilities `json:"capabilities,omitempty"`
}

// PoolListInput lists pools.
type PoolListInput struct {
	Detail     string `query:"detail"`
	Name       string `query:"name"`
	VolumeType string `query:"volume_type" doc:"pools that satisfy this type's extra specs (3.35)"`
	raw        url.Values
}

// Resolve keeps the raw query: other parameters filter on capabilities (3.28).
func (in *PoolListInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.raw = u.Query()
	return nil
}

// PoolListOutput lists pools.
type PoolListOutput struct {
	Body struct {
		Pools []PoolView `json:"pools"`
	}
}

// ZoneView is an availability zone.
type ZoneView struct {
	ZoneName  string `json:"zoneName"`
	ZoneState struct {
		Available bool `json:"available"`
	} `json:"zoneState"`
}

// ZoneListOutput lists availability zones.
type ZoneListOutput struct {
	Body struct {
		AvailabilityZoneInfo []ZoneView `json:"availabilityZoneInfo"`
	}
}

// DeadLetterOutput lists poisoned messages.
type DeadLetterOutput struct {
	Body struct {
		DeadLetters []events.DeadLetter `json:"dead_letters"`
	}
}

var serviceTag = []string{"services"}

func (s *Server) registerServices() {
	huma.Register(s.api, huma.Operation{OperationID: "list-services", Method: http.MethodGet, Path: "/v3/os-services",
		Summary: "List services (admin)", Tags: serviceTag},
		func(ctx context.Context, in *struct {
			Host   string `query:"host"`
			Binary string `query:"binary"`
		}) (*ServiceListOutput, error) {
			svcs, err := s.plane.Services(ctx, in.Host, in.Binary)
			if err != nil {
				return nil, fault(err)
			}
			out := &ServiceListOutput{}
			out.Body.Services = make([]ServiceView, 0, len(svcs))
			for _, sv := range svcs {
				out.Body.Services = append(out.Body.Services, serviceView(ctx, sv))
			}
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "change-service", Method: http.MethodPut, Path: "/v3/os-services/{action}",
		Summary: "Enable or disable a service (admin)", Tags: serviceTag},
		func(ctx context.Context, in *ServiceChangeInput) (*ServiceChangeOutput, error) {
			b := in.Body
			binary := b.Binary
			if binary == "" {
				binary = b.Service
			}
			disabled := in.Action != "enable"
			var reason *string
			if in.Action == "disable-log-reason" {
				if b.DisabledReason == nil {
					return nil, fault(basalt.Errorf(basalt.EINVALID, "Invalid input received: disabled_reason is required."))
				}
				reason = b.DisabledReason
			}
			svc, err := s.plane.SetServiceDisabled(ctx, b.Host, binary, disabled, reason)
			if err != nil {
				return nil, fault(err)
			}
			out := &ServiceChangeOutput{}
			out.Body.Host, out.Body.Binary, out.Body.Disabled, out.Body.DisabledReason = svc.Host, svc.Binary, svc.Disabled, svc.DisabledReason
			out.Body.Status = "enabled"
			if svc.Disabled {
				out.Body.Status = "disabled"
			}
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "get-pools", Method: http.MethodGet, Path: "/v3/scheduler-stats/get_pools",
		Summary: "List the pools the scheduler can place on (admin)", Tags: []string{"scheduler"}},
		func(ctx context.Context, in *PoolListInput) (*PoolListOutput, error) {
			f := control.PoolFilter{Name: in.Name}
			ver := info(ctx).version
			if ver.AtLeast(35) {
				f.VolumeType = in.VolumeType
			}
			if ver.AtLeast(28) {
				f.Capabilities = map[string]string{}
				for k, vs := range in.raw {
					if k != "detail" && k != "name" && k != "volume_type" && len(vs) > 0 {
						f.Capabilities[k] = vs[0]
					}
				}
			}
			pools, err := s.plane.Pools(ctx, f)
			if err != nil {
				return nil, fault(err)
			}
			detail := in.Detail == "true" || in.Detail == "True" || in.Detail == "1"
			out := &PoolListOutput{}
			out.Body.Pools = make([]PoolView, 0, len(pools))
			for _, p := range pools {
				pv := PoolView{Name: p.Name}
				if detail {
					pv.Capabilities = basalt.Capabilities{}
					for k, v := range p.Capabilities {
						pv.Capabilities[k] = v
					}
					pv.Capabilities["timestamp"] = p.UpdatedAt.UTC().Format(basalt.TimeLayout)
					// The scheduler holds storage_protocol expanded to its variants; Cinder's
					// view shows the first (api/views/scheduler_stats.py).
					if l, ok := pv.Capabilities["storage_protocol"].([]any); ok && len(l) > 0 {
						pv.Capabilities["storage_protocol"] = l[0]
					}
				}
				out.Body.Pools = append(out.Body.Pools, pv)
			}
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "list-availability-zones", Method: http.MethodGet,
		Path: "/v3/os-availability-zone", Summary: "List availability zones", Tags: []string{"availability zones"}},
		func(ctx context.Context, _ *struct{}) (*ZoneListOutput, error) {
			zs, err := s.plane.AvailabilityZones(ctx)
			if err != nil {
				return nil, fault(err)
			}
			out := &ZoneListOutput{}
			out.Body.AvailabilityZoneInfo = make([]ZoneView, 0, len(zs))
			for _, z := range zs {
				zv := ZoneView{ZoneName: z.Name}
				zv.ZoneState.Available = z.Available
				out.Body.AvailabilityZoneInfo = append(out.Body.AvailabilityZoneInfo, zv)
			}
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "list-dead-letters", Method: http.MethodGet, Path: "/v3/os-deadletters",
		Summary: "List messages that failed every retry (admin; a Basalt extension)", Tags: []string{"operations"}},
		func(ctx context.Context, in *struct {
			Limit int64 `query:"limit" minimum:"1" maximum:"1000" default:"100"`
		}) (*DeadLetterOutput, error) {
			dl, err := s.plane.DeadLetters(ctx, in.Limit)
			if err != nil {
				return nil, fault(err)
			}
			out := &DeadLetterOutput{}
			out.Body.DeadLetters = dl
			if dl == nil {
				out.Body.DeadLetters = []events.DeadLetter{}
			}
			return out, nil
		})
}

func serviceView(ctx context.Context, sv control.ServiceView) ServiceView {
	v := ServiceView{Binary: sv.Binary, Host: sv.Host, Zone: sv.Zone, Status: "enabled", State: "down",
		UpdatedAt: tsPtr(&sv.UpdatedAt), DisabledReason: sv.DisabledReason, Busy: sv.Busy}
	if sv.Disabled {
		v.Status = "disabled"
	}
	if sv.Up {
		v.State = "up"
	}
	if sv.Binary == basalt.BinaryVolume {
		f := false
		v.Frozen = &f
		if info(ctx).version.AtLeast(49) {
			var st *string
			if sv.BackendState != "" {
				st = &sv.BackendState
			}
			v.BackendState = shown(st)
		}
	}
	return v
}
