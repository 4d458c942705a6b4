package control

import (
	"context"
	"fmt"
	"sort"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/google/uuid"
)

// ServiceView is a service with its computed state.
type ServiceView struct {
	*basalt.Service
	Up bool
	// BackendState is what a volume service's backend reports of its storage, "up" or "down"
	// (Cinder's backend_state, microversion 3.49); "" when the scheduler has no pool of it:
	// the service is down, disabled or has not reported yet.
	BackendState string
}

// Services lists services (admin), optionally only those of host and binary.
func (p *Plane) Services(ctx context.Context, host, binary string) ([]ServiceView, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	svcs, err := p.store.Services(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "list services", err)
	}
	now := p.store.Now()
	pools, err := p.store.Pools(ctx, now, p.cfg.ServiceDownTime)
	if err != nil {
		return nil, unavailable(p.logger, "list pools", err)
	}
	states := backendStates(pools)
	var out []ServiceView
	for _, s := range svcs {
		if (host != "" && s.Host != host) || (binary != "" && s.Binary != binary) {
			continue
		}
		sv := ServiceView{Service: s, Up: s.Up(now, p.cfg.ServiceDownTime)}
		if s.Binary == basalt.BinaryVolume {
			sv.BackendState = states[s.Host]
		}
		out = append(out, sv)
	}
	return out, nil
}

// backendStates maps each backend (host@backend) with a pool to the backend_state its pools
// report, "up" when they report none, as Cinder's os-services reads it from get_pools. Cinder
// keeps whichever pool it meets last; here one pool that reports "down" makes its backend down.
func backendStates(pools []basalt.Pool) map[string]string {
	states := map[string]string{}
	for _, pool := range pools {
		st, _ := pool.Capabilities["backend_state"].(string)
		if st == "" {
			st = "up"
		}
		if states[pool.Backend] != "down" {
			states[pool.Backend] = st
		}
	}
	return states
}

// serviceNamespace is the namespace of ServiceUUID's name-based UUIDs.
var serviceNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/basalt-storage/basalt/services"))

// ServiceUUID returns the id of the volume service of backend (host@backend): a version 5 UUID
// of the backend's name, the same in every process and across restarts. Cinder's volume view
// shows it as service_uuid (microversion 3.48).
func ServiceUUID(backend string) string {
	return uuid.NewSHA1(serviceNamespace, []byte(backend)).String()
}

// SetServiceDisabled enables or disables a service (admin). A disabled volume service gets no
// new volumes. Errors: EFORBIDDEN, EINVALID (missing host or binary), ENOTFOUND.
func (p *Plane) SetServiceDisabled(ctx context.Context, host, binary string, disabled bool, reason *string) (*basalt.Service, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if host == "" || binary == "" {
		return nil, invalid("Invalid input received: host and binary are required.")
	}
	if reason != nil && (len(*reason) == 0 || len(*reason) > 255) {
		return nil, invalid("Invalid input for field/attribute disabled_reason. It must be 1 to 255 characters.")
	}
	if err := p.store.SetServiceDisabled(ctx, binary, host, disabled, reason); err != nil {
		return nil, unavailable(p.logger, "change the service", err)
	}
	return &basalt.Service{Host: host, Binary: binary, Disabled: disabled, DisabledReason: reason}, nil
}

// PoolFilter narrows a pool listing.
type PoolFilter struct {
	Name string
	// VolumeType keeps the pools whose capabilities satisfy the type's extra specs (3.35).
	VolumeType string
	// Capabilities keeps the pools whose capability of each key equals the value, compared as
	// text (3.28).
	Capabilities map[string]string
}

// Pools lists the pools the scheduler can place on (admin): up, enabled, reported.
func (p *Plane) Pools(ctx context.Context, f PoolFilter) ([]basalt.Pool, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	var vt *basalt.VolumeType
	if f.VolumeType != "" {
		t, err := p.ResolveType(ctx, f.VolumeType)
		if err != nil {
			return nil, err
		}
		vt = t
	}
	pools, err := p.store.Pools(ctx, p.store.Now(), p.cfg.ServiceDownTime)
	if err != nil {
		return nil, unavailable(p.logger, "list pools", err)
	}
	var out []basalt.Pool
	for _, pool := range pools {
		if f.Name != "" && pool.Name != f.Name {
			continue
		}
		if vt != nil {
			if ok, _ := (scheduler.CapabilitiesFilter{}).Fits(&scheduler.Request{Type: vt}, &pool); !ok {
				continue
			}
		}
		match := true
		for k, want := range f.Capabilities {
			if v, ok := pool.Capabilities[k]; !ok || fmt.Sprint(v) != want {
				match = false
			}
		}
		if match {
			out = append(out, pool)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Zone is an availability zone and whether any enabled service serves it.
type Zone struct {
	Name      string
	Available bool
}

// AvailabilityZones lists the zones of the volume services, sorted by name.
func (p *Plane) AvailabilityZones(ctx context.Context) ([]Zone, error) {
	zs, err := p.Zones(ctx)
	if err != nil {
		return nil, err
	}
	var out []Zone
	for name, ok := range zs {
		out = append(out, Zone{Name: name, Available: ok})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeadLetters lists messages that failed every retry (admin).
func (p *Plane) DeadLetters(ctx context.Context, limit int64) ([]events.DeadLetter, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	dl, err := events.ListDeadLetters(ctx, p.store.Redis(), limit)
	if err != nil {
		return nil, unavailable(p.logger, "read the dead-letter stream", err)
	}
	return dl, nil
}

// Messages lists the caller's project's user messages (all projects' for an admin with
// allTenants), newest first, paged.
func (p *Plane) Messages(ctx context.Context, o ListOptions) ([]*basalt.Message, bool, error) {
	c := CallerFrom(ctx)
	msgs, err := p.store.Messages(ctx, c.ProjectID)
	if err != nil {
		return nil, false, unavailable(p.logger, "list messages", err)
	}
	var out []*basalt.Message
	for _, m := range msgs {
		if matchMessage(m, o.Filters) {
			out = append(out, m)
		}
	}
	page, more, err := paginate(out, o, func(m *basalt.Message) string { return m.ID })
	if err != nil {
		return nil, false, basalt.Errorf(basalt.ENOTFOUND, "Message %s could not be found.", o.Marker)
	}
	return page, more, nil
}

func matchMessage(m *basalt.Message, f map[string]string) bool {
	for k, v := range f {
		var have string
		switch k {
		case "resource_uuid":
			have = m.ResourceUUID
		case "resource_type":
			have = m.ResourceType
		case "event_id":
			have = m.EventID
		case "request_id":
			have = m.RequestID
		case "message_level":
			have = m.Level
		default:
			continue
		}
		if have != v {
			return false
		}
	}
	return true
}

// Message returns message id of the caller's project, else ENOTFOUND.
func (p *Plane) Message(ctx context.Context, id string) (*basalt.Message, error) {
	m, err := p.store.Message(ctx, id)
	if err != nil {
		return nil, unavailable(p.logger, "read the message", err)
	}
	if c := CallerFrom(ctx); m.ProjectID != c.ProjectID && !c.Admin {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Message %s could not be found.", id)
	}
	return m, nil
}

// DeleteMessage deletes message id of the caller's project.
func (p *Plane) DeleteMessage(ctx context.Context, id string) error {
	m, err := p.Message(ctx, id)
	if err != nil {
		return err
	}
	if err := p.store.DeleteMessage(ctx, m); err != nil {
		return unavailable(p.logger, "delete the message", err)
	}
	return nil
}
