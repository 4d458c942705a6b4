package fake

import (
	"context"

	"github.com/basalt-storage/basalt/drivers"
)

var _ drivers.Connector = (*Driver)(nil)

// InitializeConnection connects a consumer to volume volumeID with the fake protocol: nothing
// can read the bytes through it, but its connection info has the shape of a real one, and the
// driver remembers the connection until TerminateConnection. Connecting an existing export id
// again returns the same info. Injected failures use the operation name "initialize".
func (d *Driver) InitializeConnection(ctx context.Context, volumeID string, req drivers.ConnectionRequest) (map[string]any, error) {
	if err := checkID(volumeID); err != nil {
		return nil, err
	}
	if err := drivers.CheckID("export", req.ExportID); err != nil {
		return nil, err
	}
	if err := d.act(ctx, "initialize", volumeID); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.vols[volumeID]; !ok {
		return nil, notFound(volumeID)
	}
	if d.conns == nil {
		d.conns = map[string]string{}
	}
	d.conns[req.ExportID] = volumeID
	host, _ := req.Connector["host"].(string)
	return map[string]any{"driver_volume_type": "fake", "data": map[string]any{
		"volume_id": volumeID, "export_id": req.ExportID, "host": host, "access_mode": req.Mode}}, nil
}

// TerminateConnection forgets connection exportID of volume volumeID ("" forgets them all).
func (d *Driver) TerminateConnection(ctx context.Context, volumeID, exportID string) error {
	if err := checkID(volumeID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, vid := range d.conns {
		if vid == volumeID && (exportID == "" || id == exportID) {
			delete(d.conns, id)
		}
	}
	return nil
}

// Connections returns the number of connections of volume volumeID.
func (d *Driver) Connections(volumeID string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, vid := range d.conns {
		if vid == volumeID {
			n++
		}
	}
	return n
}
