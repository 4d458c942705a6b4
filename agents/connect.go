package agents

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents/export"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/events"
)

// Target protocols of a backend (BackendConfig.TargetProtocol).
const (
	// TargetLocal hands consumers the volume's local path (os-brick's "local" connector): no
	// target, so it needs nothing installed, and only consumers on the storage host attach.
	TargetLocal = "local"
	TargetISCSI = export.ProtocolISCSI
	TargetNBD   = export.ProtocolNBD
)

// openExports makes the export managers that the agent's backends use, one per protocol, each
// with its state under data_dir/<host>/exports-<protocol>.
func (a *Agent) openExports() error {
	for _, b := range a.backends {
		p := b.cfg.TargetProtocol
		if p == TargetLocal || a.exports[p] != nil {
			continue
		}
		if _, ok := b.driver.(drivers.Pather); !ok {
			continue // the driver connects consumers itself, or cannot
		}
		if a.cfg.DataDir == "" {
			return fmt.Errorf("agent config: backend %s: target_protocol %s needs the agent's data_dir", b.cfg.Name, p)
		}
		cfg := export.Config{Protocol: p, StateDir: filepath.Join(a.cfg.DataDir, a.cfg.Host, "exports-"+p),
			Portal: a.cfg.ISCSI.Portal, ControlPort: a.cfg.ISCSI.ControlPort, NBDAddress: a.cfg.NBD.Address}
		m, err := export.New(cfg, a.logger)
		if err != nil {
			return fmt.Errorf("%s exports: %w", p, err)
		}
		a.exports[p] = m
	}
	return nil
}

// startExports starts the target daemons and re-exports every recorded export (Cinder's
// ensure_export at start-up): a consumer attached before a crash finds its export again.
func (a *Agent) startExports(ctx context.Context) error {
	for p, m := range a.exports {
		if err := m.Start(ctx); err != nil {
			return fmt.Errorf("start %s exports: %w", p, err)
		}
		a.logger.Info("exports ready", "protocol", p, "exports", len(m.Specs()))
	}
	return nil
}

// connect runs an initialize_connection: a driver with a protocol of its own connects the
// consumer; otherwise the agent exports the driver's local path over the backend's target
// protocol. It returns Cinder's connection_info.
func (a *Agent) connect(ctx context.Context, b *backend, cmd events.Command) (map[string]any, error) {
	mode := cmd.Mode
	if mode == "" {
		mode = basalt.ModeRW
	}
	if c, ok := b.driver.(drivers.Connector); ok {
		return c.InitializeConnection(ctx, cmd.VolumeID, drivers.ConnectionRequest{ExportID: cmd.ExportID,
			Connector: cmd.Connector, Mode: mode})
	}
	pt, ok := b.driver.(drivers.Pather)
	if !ok {
		return nil, basalt.Errorf(basalt.EINVALID, "the %s driver of %s cannot attach volumes", b.cfg.Driver, b.name)
	}
	path, err := pt.Path(cmd.VolumeID)
	if err != nil {
		return nil, err
	}
	m := a.exports[b.cfg.TargetProtocol]
	if m == nil {
		return map[string]any{"driver_volume_type": "local", "data": map[string]any{
			"device_path": path, "volume_id": cmd.VolumeID, "access_mode": mode, "encrypted": false}}, nil
	}
	initiator, _ := cmd.Connector["initiator"].(string)
	if b.cfg.TargetProtocol == TargetISCSI && initiator == "" {
		return nil, basalt.Errorf(basalt.EINVALID, "The connector has no initiator: an iSCSI target admits named initiators only.")
	}
	spec := export.Spec{ID: cmd.ExportID, VolumeID: cmd.VolumeID, Path: path, Mode: mode, Initiator: initiator}
	info, err := m.Export(ctx, spec)
	if basalt.ErrorCode(err) == basalt.ECONFLICT {
		// The same connection asked again for another consumer or mode: replace it.
		if err := m.Unexport(ctx, cmd.ExportID); err != nil {
			return nil, err
		}
		info, err = m.Export(ctx, spec)
	}
	if err != nil {
		// A failed export keeps its spec for a retry; the attachment is error_attaching and
		// nothing will retry it, so take it back rather than let a restart re-create it.
		if uerr := m.Unexport(ctx, cmd.ExportID); uerr != nil {
			a.logger.Warn("remove a failed export", "export_id", cmd.ExportID, "err", uerr)
		}
		return nil, err
	}
	return map[string]any{"driver_volume_type": info.DriverVolumeType, "data": info.Data}, nil
}

// disconnect runs a terminate_connection: one export, or every export of the volume.
func (a *Agent) disconnect(ctx context.Context, b *backend, volumeID, exportID string) error {
	if c, ok := b.driver.(drivers.Connector); ok {
		return c.TerminateConnection(ctx, volumeID, exportID)
	}
	m := a.exports[b.cfg.TargetProtocol]
	if m == nil {
		return nil
	}
	if exportID == "" {
		return m.UnexportVolume(ctx, volumeID)
	}
	return m.Unexport(ctx, exportID)
}

// storageProtocol is what b reports as storage_protocol: its target protocol, in Cinder's
// spelling, when the agent exports its volumes.
func storageProtocol(b *backend, driverProtocol string) string {
	if _, ok := b.driver.(drivers.Pather); !ok {
		return driverProtocol
	}
	switch b.cfg.TargetProtocol {
	case TargetISCSI:
		return "iSCSI"
	case TargetNBD:
		return "nbd"
	}
	return driverProtocol
}
