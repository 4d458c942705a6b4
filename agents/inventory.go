package agents

import (
	"context"
	"fmt"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/events"
)

// reportInventory stores the volumes b's driver holds, records or not (events.Inventory), when
// the driver can list them (drivers.Lister). It runs with the capability report, on its timer:
// the manageable-volumes API reads it, so objects that no record owns can be adopted.
func (a *Agent) reportInventory(ctx context.Context, b *backend) error {
	l, ok := b.driver.(drivers.Lister)
	if !ok {
		return nil
	}
	vols, err := l.ListVolumes(ctx)
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	return a.presence.ReportInventory(ctx, events.Inventory{Backend: b.name, Volumes: vols})
}

// manage runs the commands of adoption and release. Adoption keeps the object as it is, under
// its own id: the agent checks that it is there with the size and pool the adoption was asked
// for (what the inventory said), so a volume becomes available only once its backend confirmed
// it. Release removes the volume's exports, as Cinder's remove_export before a driver's
// unmanage; the object and its bytes stay. Both are idempotent.
func (a *Agent) manage(ctx context.Context, b *backend, cmd events.Command) error {
	switch cmd.Kind {
	case events.KindManageVolume:
		have, err := b.driver.Stat(ctx, cmd.VolumeID)
		if err != nil {
			return err
		}
		if want := cmd.Volume; have.SizeGB != want.SizeGB || have.Pool != want.Pool {
			return basalt.Errorf(basalt.EINVALID, "Volume %s is %d GiB in pool %q on %s, not %d GiB in pool %q as listed when its adoption was asked; list the manageable volumes again.",
				cmd.VolumeID, have.SizeGB, have.Pool, b.name, want.SizeGB, want.Pool)
		}
		return nil
	case events.KindUnmanageVolume:
		return a.disconnect(ctx, b, cmd.VolumeID, "")
	}
	return fmt.Errorf("unknown command kind %q", cmd.Kind)
}
