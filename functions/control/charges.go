package control

import (
	"context"

	"github.com/basalt-storage/basalt"
)

func quotaVolume(typeName string, size int) QuotaRequest {
	return QuotaRequest{Volumes: 1, Gigabytes: size, TypeName: typeName, VolumeSizeGB: size}
}

func quotaSnapshot(typeName string, size int) QuotaRequest {
	return QuotaRequest{Snapshots: 1, Gigabytes: size, TypeName: typeName}
}

func quotaGrow(typeName string, delta, newSize int) QuotaRequest {
	return QuotaRequest{Gigabytes: delta, TypeName: typeName, VolumeSizeGB: newSize}
}

// charge takes r from project's quotas under chargeID, atomically: all or nothing.
// Errors: EOVERLIMIT with Cinder's message, EUNAVAILABLE.
func (p *Plane) charge(ctx context.Context, project, chargeID string, r QuotaRequest) error {
	return p.ChargeQuota(ctx, project, chargeID, r)
}

// refundAfter returns what was charged under chargeID after the write that was to own the
// charge failed with err. A refusal (a conflict, a status the request cannot start from) wrote
// nothing: the charge is refunded at once. A Redis failure is ambiguous, since the write may
// have landed with its reply lost, or may still land: the charge is then left to the scheduler's
// sweep (store.SweepCharges), which keeps it when its owner exists and refunds it otherwise.
func (p *Plane) refundAfter(ctx context.Context, chargeID string, err error) {
	if basalt.ErrorCode(err) == basalt.EINTERNAL {
		p.logger.Warn("the write that owns a quota charge failed ambiguously; the sweep settles the charge",
			"charge", chargeID, "err", err)
		return
	}
	p.refund(ctx, chargeID)
}

// refund returns everything charged under chargeID, on the way out of a request that did not
// go through. It is idempotent; a failure is logged (the charge stays, on the safe side).
func (p *Plane) refund(ctx context.Context, chargeID string) {
	if err := p.RefundQuota(ctx, chargeID); err != nil {
		p.logger.Error("refund quota", "charge", chargeID, "err", err)
	}
}
