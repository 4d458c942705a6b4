package control

import (
	"context"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/google/uuid"
)

// TypeCreate is a request to create a volume type.
type TypeCreate struct {
	Name        string
	Description *string
	IsPublic    *bool
	ExtraSpecs  map[string]string
}

// EnsureDefaultType creates the __DEFAULT__ type when no default exists, and returns the default.
func (p *Plane) EnsureDefaultType(ctx context.Context) (*basalt.VolumeType, error) {
	id, err := p.store.DefaultTypeID(ctx)
	if err != nil {
		return nil, err
	}
	if id != "" {
		if t, err := p.store.Type(ctx, id); err == nil {
			return t, nil
		}
	}
	desc := "Default Volume Type"
	t, err := p.store.EnsureType(ctx, &basalt.VolumeType{ID: uuid.NewString(), Name: basalt.DefaultTypeName,
		Description: &desc, IsPublic: true, ExtraSpecs: map[string]string{}, CreatedAt: p.store.Now()})
	if err != nil {
		return nil, err
	}
	return t, p.store.SetDefaultTypeID(ctx, t.ID)
}

// DefaultType returns the default volume type, creating __DEFAULT__ on first use.
func (p *Plane) DefaultType(ctx context.Context) (*basalt.VolumeType, error) {
	t, err := p.EnsureDefaultType(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "read the default volume type", err)
	}
	return t, nil
}

// UserVisibleSpec reports whether a member may see extra spec key, and filter types on it
// (Cinder's USER_VISIBLE_EXTRA_SPECS).
func UserVisibleSpec(key string) bool {
	switch key {
	case "RESKEY:availability_zones", "multiattach", "replication_enabled":
		return true
	}
	return false
}

// TypeFilter narrows a type listing.
type TypeFilter struct {
	// IsPublic keeps the public (true) or the private (false) types; nil keeps both.
	IsPublic *bool
	// ExtraSpecs is a dict literal, {'k': 'v', ...}, that keeps the types whose extra spec k is
	// v for every k; the value of RESKEY:availability_zones need only contain v (Cinder's
	// extra_specs filter, microversion 3.52). "" keeps every type.
	ExtraSpecs string
}

// Types lists the volume types the caller may see, filtered: admins see all, members see
// public types. A member who filters on an extra spec that UserVisibleSpec hides gets no types,
// as in Cinder: dropping the filter would list types that may not match it.
func (p *Plane) Types(ctx context.Context, f TypeFilter) ([]*basalt.VolumeType, error) {
	if _, err := p.DefaultType(ctx); err != nil {
		return nil, err
	}
	all, err := p.store.Types(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "list volume types", err)
	}
	admin := CallerFrom(ctx).Admin
	var specs map[string]string
	if f.ExtraSpecs != "" {
		specs = parseDictLiteral(f.ExtraSpecs)
	}
	for k := range specs {
		if !admin && !UserVisibleSpec(k) {
			return nil, nil
		}
	}
	var out []*basalt.VolumeType
	for _, t := range all {
		if !admin && !t.IsPublic {
			continue
		}
		if f.IsPublic != nil && t.IsPublic != *f.IsPublic {
			continue
		}
		if specsMatch(t.ExtraSpecs, specs) {
			out = append(out, t)
		}
	}
	return out, nil
}

// specsMatch reports whether have holds every spec of want, as Cinder's extra_specs filter
// compares: equal values, except RESKEY:availability_zones, a list of zones, which need only
// contain the wanted value.
func specsMatch(have, want map[string]string) bool {
	for k, v := range want {
		h, ok := have[k]
		switch {
		case !ok:
			return false
		case k == "RESKEY:availability_zones":
			if !strings.Contains(h, v) {
				return false
			}
		case h != v:
			return false
		}
	}
	return true
}

// Type returns type id (an id, or "default" for the default type). A private type is
// ENOTFOUND for members.
func (p *Plane) Type(ctx context.Context, id string) (*basalt.VolumeType, error) {
	if id == "default" {
		return p.DefaultType(ctx)
	}
	t, err := p.store.Type(ctx, id)
	if err != nil {
		return nil, unavailable(p.logger, "read the volume type", err)
	}
	if !t.IsPublic && !CallerFrom(ctx).Admin {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Volume type %s could not be found.", id)
	}
	return t, nil
}

// validateExtraSpecs checks a type's extra specs as they would be stored: keys of 1 to 255
// characters, values of at most 255, neither with control characters or invalid UTF-8, and at
// most Config.MaxExtraSpecs of them.
func (p *Plane) validateExtraSpecs(specs map[string]string) error {
	if len(specs) > p.cfg.MaxExtraSpecs {
		return invalid("Invalid input received: extra_specs would have %d items, more than the %d allowed.", len(specs), p.cfg.MaxExtraSpecs)
	}
	for k, v := range specs {
		if k == "" || len(k) > 255 {
			return invalid("Invalid input for field/attribute extra_specs. Key %q must be 1 to 255 characters.", k)
		}
		if why := badText(k); why != "" {
			return invalid("Invalid input for field/attribute extra_specs. Key %q %s.", k, why)
		}
		if len(v) > 255 {
			return invalid("Invalid input for field/attribute extra_specs. Value of %q is longer than 255 characters.", k)
		}
		if why := badText(v); why != "" {
			return invalid("Invalid input for field/attribute extra_specs. Value of %q %s.", k, why)
		}
	}
	if isTrue(specs["multiattach"]) && isTrue(specs["cacheable"]) {
		return invalid("Invalid input received: cacheable cannot be set with multiattach.")
	}
	return nil
}

// CreateType creates a volume type (admin). Errors: EFORBIDDEN, EINVALID, ECONFLICT (name taken).
func (p *Plane) CreateType(ctx context.Context, req TypeCreate) (*basalt.VolumeType, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > 255 {
		return nil, invalid("Invalid input for field/attribute name. Value: %q. It must be 1 to 255 characters.", req.Name)
	}
	if why := badText(req.Name); why != "" {
		return nil, invalid("Invalid input for field/attribute name. Value: %q. It %s.", req.Name, why)
	}
	if err := validateName("description", req.Description); err != nil {
		return nil, err
	}
	if err := p.validateExtraSpecs(req.ExtraSpecs); err != nil {
		return nil, err
	}
	if _, err := p.DefaultType(ctx); err != nil {
		return nil, err
	}
	specs := req.ExtraSpecs
	if specs == nil {
		specs = map[string]string{}
	}
	t := &basalt.VolumeType{ID: uuid.NewString(), Name: req.Name, Description: req.Description,
		IsPublic: req.IsPublic == nil || *req.IsPublic, ExtraSpecs: specs, CreatedAt: p.store.Now()}
	if err := p.store.CreateType(ctx, t); err != nil {
		return nil, unavailable(p.logger, "create the volume type", err)
	}
	return t, nil
}

// TypeUpdate changes a type; nil fields stay.
type TypeUpdate struct {
	Name        *string
	Description *string
	IsPublic    *bool
}

// UpdateType applies u to type id (admin). Errors: EFORBIDDEN, ENOTFOUND, EINVALID, ECONFLICT.
func (p *Plane) UpdateType(ctx context.Context, id string, u TypeUpdate) (*basalt.VolumeType, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if u.Name == nil && u.Description == nil && u.IsPublic == nil {
		return nil, invalid("Specify volume type name, description, is_public or a combination thereof.")
	}
	if u.Name != nil {
		n := strings.TrimSpace(*u.Name)
		if n == "" || len(n) > 255 {
			return nil, invalid("Invalid input for field/attribute name. Value: %q. It must be 1 to 255 characters.", *u.Name)
		}
		if why := badText(n); why != "" {
			return nil, invalid("Invalid input for field/attribute name. Value: %q. It %s.", n, why)
		}
		u.Name = &n
	}
	if err := validateName("description", u.Description); err != nil {
		return nil, err
	}
	t, err := p.store.UpdateType(ctx, id, func(t *basalt.VolumeType) error {
		if u.Name != nil {
			if t.Name == basalt.DefaultTypeName && *u.Name != t.Name {
				return invalid("Invalid volume type: The default volume type cannot be renamed.")
			}
			t.Name = *u.Name
		}
		if u.Description != nil {
			t.Description = u.Description
		}
		if u.IsPublic != nil {
			t.IsPublic = *u.IsPublic
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(p.logger, "update the volume type", err)
	}
	return t, nil
}

func (p *Plane) typeInUse(ctx context.Context, id string) (bool, error) {
	vols, err := p.store.Volumes(ctx, "")
	if err != nil {
		return false, err
	}
	for _, v := range vols {
		if v.VolumeTypeID == id {
			return true, nil
		}
	}
	return false, nil
}

// DeleteType deletes type id (admin). The default type and a type in use are EINVALID.
func (p *Plane) DeleteType(ctx context.Context, id string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	t, err := p.store.Type(ctx, id)
	if err != nil {
		return unavailable(p.logger, "read the volume type", err)
	}
	if def, _ := p.store.DefaultTypeID(ctx); def == t.ID {
		return invalid("Invalid volume type: Default volume type can not be deleted.")
	}
	used, err := p.typeInUse(ctx, id)
	if err != nil {
		return unavailable(p.logger, "delete the volume type", err)
	}
	if used {
		return invalid("Target volume type is still in use.")
	}
	if err := p.store.DeleteType(ctx, t); err != nil {
		return unavailable(p.logger, "delete the volume type", err)
	}
	return nil
}

// SetExtraSpecs merges specs into type id's extra specs (admin). A type in use is EINVALID.
func (p *Plane) SetExtraSpecs(ctx context.Context, id string, specs map[string]string) (map[string]string, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, invalid("Invalid input for field/attribute extra_specs. It must name at least one key.")
	}
	if err := p.validateExtraSpecs(specs); err != nil {
		return nil, err
	}
	return specs, p.changeSpecs(ctx, id, func(t *basalt.VolumeType) error {
		merged := map[string]string{}
		for k, v := range t.ExtraSpecs {
			merged[k] = v
		}
		for k, v := range specs {
			merged[k] = v
		}
		if err := p.validateExtraSpecs(merged); err != nil {
			return err
		}
		t.ExtraSpecs = merged
		return nil
	})
}

// DeleteExtraSpec removes key from type id's extra specs (admin). Errors: ENOTFOUND (type or key).
func (p *Plane) DeleteExtraSpec(ctx context.Context, id, key string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	return p.changeSpecs(ctx, id, func(t *basalt.VolumeType) error {
		if _, ok := t.ExtraSpecs[key]; !ok {
			return basalt.Errorf(basalt.ENOTFOUND, "Volume Type %s has no extra specs with key %s.", id, key)
		}
		delete(t.ExtraSpecs, key)
		return nil
	})
}

func (p *Plane) changeSpecs(ctx context.Context, id string, fn func(t *basalt.VolumeType) error) error {
	if _, err := p.store.Type(ctx, id); err != nil {
		return unavailable(p.logger, "read the volume type", err)
	}
	used, err := p.typeInUse(ctx, id)
	if err != nil {
		return unavailable(p.logger, "change extra specs", err)
	}
	if used {
		return invalid("Volume Type is currently in use.")
	}
	if _, err := p.store.UpdateType(ctx, id, func(t *basalt.VolumeType) error {
		if t.ExtraSpecs == nil {
			t.ExtraSpecs = map[string]string{}
		}
		return fn(t)
	}); err != nil {
		return unavailable(p.logger, "change extra specs", err)
	}
	return nil
}
