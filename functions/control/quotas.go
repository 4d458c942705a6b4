package control

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/store"
)

// QuotaRequest is what one operation takes from its project's quotas (see store.QuotaRequest).
type QuotaRequest = store.QuotaRequest

// maxQuotaLimit is the largest limit a quota set accepts (Cinder's db.MAX_INT).
const maxQuotaLimit = 0x7FFFFFFF

// ChargeQuota takes r from project's quotas and records it under chargeID ("vol:<id>",
// "snap:<id>", ...), atomically: all or nothing. A chargeID is charged once; charging it again
// changes nothing. Errors: EOVERLIMIT with Cinder's message; EUNAVAILABLE when Redis fails. The
// charge may have landed with its reply lost, so on EUNAVAILABLE it is refunded (exactly what
// it took, if anything) before the error returns.
func (p *Plane) ChargeQuota(ctx context.Context, project, chargeID string, r QuotaRequest) error {
	err := p.store.Charge(ctx, project, chargeID, r, p.cfg.QuotaDefaults)
	if err != nil && basalt.ErrorCode(err) == basalt.EINTERNAL {
		p.refund(ctx, chargeID)
	}
	if err != nil {
		return unavailable(p.logger, "check quotas", err)
	}
	return nil
}

// RefundQuota returns exactly what was charged under chargeID. It is idempotent: refunding
// twice, or a charge never made, does nothing. Errors: EUNAVAILABLE.
func (p *Plane) RefundQuota(ctx context.Context, chargeID string) error {
	if err := p.store.Refund(ctx, chargeID); err != nil {
		return unavailable(p.logger, "refund quotas", err)
	}
	return nil
}

// TransferQuota moves what was charged under from into the charge to (for example an extend's
// "extend:<op>" into "vol:<id>" once the volume has grown), leaving usage unchanged. It is
// idempotent. Errors: EUNAVAILABLE.
func (p *Plane) TransferQuota(ctx context.Context, from, to string) error {
	if err := p.store.TransferCharge(ctx, from, to); err != nil {
		return unavailable(p.logger, "transfer quotas", err)
	}
	return nil
}

// A QuotaUsage is one resource's limit and what is in use of it. Reserved is always 0: Basalt
// charges atomically and has no reservations.
type QuotaUsage struct {
	Limit    int
	InUse    int
	Reserved int
}

// quotaResources returns every quota resource: the project-wide ones, then the per-type ones of
// every volume type, by type name.
func (p *Plane) quotaResources(ctx context.Context) ([]string, error) {
	if _, err := p.EnsureDefaultType(ctx); err != nil {
		return nil, err
	}
	types, err := p.store.Types(ctx)
	if err != nil {
		return nil, err
	}
	out := store.QuotaResources()
	for _, t := range types {
		out = append(out, store.TypeQuotaResources(t.Name)...)
	}
	return out, nil
}

// mayReadQuotas refuses a member reading another project's quotas.
func mayReadQuotas(ctx context.Context, project string) error {
	if c := CallerFrom(ctx); !c.Admin && c.ProjectID != project {
		return basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow this operation to be performed.")
	}
	return nil
}

// QuotaDefaults returns the default limit of every quota resource. A member may read only its
// own project's. Errors: EFORBIDDEN, EUNAVAILABLE.
func (p *Plane) QuotaDefaults(ctx context.Context, project string) (map[string]int, error) {
	if err := mayReadQuotas(ctx, project); err != nil {
		return nil, err
	}
	res, err := p.quotaResources(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "read quotas", err)
	}
	out := make(map[string]int, len(res))
	for _, r := range res {
		out[r] = store.QuotaDefault(p.cfg.QuotaDefaults, r)
	}
	return out, nil
}

// QuotaSet returns project's limit of every quota resource. A member may read only its own
// project's. Errors: EFORBIDDEN, EUNAVAILABLE.
func (p *Plane) QuotaSet(ctx context.Context, project string) (map[string]int, error) {
	u, err := p.QuotaSetUsage(ctx, project)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(u))
	for r, q := range u {
		out[r] = q.Limit
	}
	return out, nil
}

// QuotaSetUsage returns project's limit and usage of every quota resource. A member may read
// only its own project's. Errors: EFORBIDDEN, EUNAVAILABLE.
func (p *Plane) QuotaSetUsage(ctx context.Context, project string) (map[string]QuotaUsage, error) {
	if err := mayReadQuotas(ctx, project); err != nil {
		return nil, err
	}
	res, err := p.quotaResources(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "read quotas", err)
	}
	limits, err := p.store.QuotaLimits(ctx, project)
	if err != nil {
		return nil, unavailable(p.logger, "read quotas", err)
	}
	usage, err := p.store.QuotaUsage(ctx, project)
	if err != nil {
		return nil, unavailable(p.logger, "read quotas", err)
	}
	out := make(map[string]QuotaUsage, len(res))
	for _, r := range res {
		lim, ok := limits[r]
		if !ok {
			lim = store.QuotaDefault(p.cfg.QuotaDefaults, r)
		}
		out[r] = QuotaUsage{Limit: lim, InUse: usage[r]}
	}
	return out, nil
}

// nonQuotaKeys may appear in a quota set update and are ignored (Cinder's NON_QUOTA_KEYS).
var nonQuotaKeys = []string{"id", "tenant_id"}

// UpdateQuotaSet sets project's limits (admin) from values, each a limit as the client wrote
// it (a number or a string of digits; -1 = unlimited), all or none, and returns the project's
// limits. Errors: EFORBIDDEN; EINVALID for no values, an unknown resource, a value that is
// not an integer in [-1, 2147483647], or a limit below what is in use (except -1 and
// per_volume_gigabytes); EUNAVAILABLE.
func (p *Plane) UpdateQuotaSet(ctx context.Context, project string, values map[string]string) (map[string]int, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if len(project) > 255 {
		return nil, invalid("Invalid input received: quota_set_name has %d characters, more than 255.", len(project))
	}
	if len(values) == 0 {
		return nil, invalid("Invalid input for field/attribute quota_set. Value: {}. {} does not have enough properties")
	}
	res, err := p.quotaResources(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "read quotas", err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	limits := map[string]int{}
	var bad []string
	for _, k := range keys {
		if slices.Contains(nonQuotaKeys, k) {
			continue
		}
		if !slices.Contains(res, k) {
			bad = append(bad, k)
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(values[k]))
		switch {
		case err != nil:
			return nil, invalid("%s must be an integer", k)
		case n < -1:
			return nil, invalid("%s must be >= -1", k)
		case n > maxQuotaLimit:
			return nil, invalid("%s must be <= %d", k, maxQuotaLimit)
		}
		limits[k] = n
	}
	if len(bad) > 0 {
		return nil, invalid("Invalid input received: Bad key(s) in quota set: %s", strings.Join(bad, ", "))
	}
	if err := p.store.SetQuotaLimits(ctx, project, limits); err != nil {
		return nil, unavailable(p.logger, "update quotas", err)
	}
	p.logger.Info("quota set updated", "project_id", project, "limits", limits, "request_id", CallerFrom(ctx).RequestID)
	return p.QuotaSet(ctx, project)
}

// ResetQuotaSet returns project's limits to the defaults (admin). Usage is kept. Errors:
// EFORBIDDEN, EUNAVAILABLE.
func (p *Plane) ResetQuotaSet(ctx context.Context, project string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	if err := p.store.DeleteQuotaLimits(ctx, project); err != nil {
		return unavailable(p.logger, "reset quotas", err)
	}
	p.logger.Info("quota set reset", "project_id", project, "request_id", CallerFrom(ctx).RequestID)
	return nil
}
