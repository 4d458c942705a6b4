// Package drivers holds the contract between the agent and storage drivers. A driver knows
// nothing of Redis, HTTP or messages: it manages volumes on one backend of one host.
//
// Every driver passes the conformance suite in drivers/drivertest.
package drivers

import (
	"context"

	"github.com/basalt-storage/basalt"
)

// A Driver manages volumes on one backend of one host. Methods may be called concurrently.
// Mutating methods are idempotent: commands are redelivered after a crash, so creating a volume
// that exists with the same size, or deleting one that is gone, returns nil.
//
// Errors are *basalt.Error where the cause is known: EINVALID for a bad id or size, ENOTFOUND for
// a missing volume, ECONFLICT for a volume that exists with another size, EOVERLIMIT when the
// pool is out of space.
type Driver interface {
	// Capabilities reports the backend's pools, capacity and features.
	Capabilities(ctx context.Context) (basalt.BackendStats, error)
	// CreateVolume creates volume v in pool v.Pool. A volume is created whole or not at all:
	// a crash in the middle leaves nothing that Stat would report.
	CreateVolume(ctx context.Context, v basalt.VolumeSpec) error
	// DeleteVolume deletes volume id; deleting a missing volume returns nil.
	DeleteVolume(ctx context.Context, id string) error
	// Stat returns the volume's spec, or an ENOTFOUND error.
	Stat(ctx context.Context, id string) (basalt.VolumeSpec, error)
}

// Extender is implemented by drivers that grow volumes. Extending to the current size returns
// nil; shrinking is EINVALID. Data is kept.
type Extender interface {
	ExtendVolume(ctx context.Context, id string, newSizeGB int) error
}
