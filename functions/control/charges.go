package control

import "context"

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

// refund returns everything charged under chargeID, on the way out of a request that did not
// go through. It is idempotent; a failure is logged (the charge stays, on the safe side).
func (p *Plane) refund(ctx context.Context, chargeID string) {
	if err := p.RefundQuota(ctx, chargeID); err != nil {
		p.logger.Error("refund quota", "charge", chargeID, "err", err)
	}
}
