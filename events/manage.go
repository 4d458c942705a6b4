package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/basalt-storage/basalt"
)

// Command kinds of adoption (Cinder's manage_existing) and release (unmanage). An agent runs
// manage_volume by checking that the object Command.Volume names is on its backend with that
// size and pool, and unmanage_volume by removing the volume's exports; neither changes the
// object's bytes.
const (
	KindManageVolume   = "manage_volume"
	KindUnmanageVolume = "unmanage_volume"
)

// InventoryKey holds the latest inventory of one backend (host@backend), as JSON.
func InventoryKey(backend string) string { return HostPrefix(backend) + "inventory:" + backend }

// An Inventory is what an agent reports of the volumes its backend holds, whether a record owns
// them or not: every object the driver lists (drivers.Lister), as the driver's Stat sees it.
type Inventory struct {
	Backend   string              `json:"backend"`
	Timestamp time.Time           `json:"timestamp"`
	Volumes   []basalt.VolumeSpec `json:"volumes"`
}

// ReportInventory stores a backend's inventory, replacing the previous one. Each backend has one
// agent, so inventories of one backend never race.
func (p *Presence) ReportInventory(ctx context.Context, inv Inventory) error {
	if inv.Timestamp.IsZero() {
		inv.Timestamp = p.now().UTC()
	}
	if inv.Volumes == nil {
		inv.Volumes = []basalt.VolumeSpec{}
	}
	b, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	if err := p.rdb.Set(ctx, InventoryKey(inv.Backend), b, 0).Err(); err != nil {
		return fmt.Errorf("report the inventory of %s: %w", inv.Backend, err)
	}
	return nil
}
