// Package drivers holds the contract between the agent and storage drivers. A driver knows
// nothing of Redis, HTTP or messages: it manages volumes on one backend of one host.
//
// Every driver passes the conformance suite in drivers/drivertest.
package drivers

import (
	"context"
	"regexp"

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

// Snapshotter is implemented by drivers that take snapshots: point-in-time copies of a
// volume's bytes, kept on the volume's backend and counted in its provisioned capacity.
// Creating a snapshot that exists returns nil (ECONFLICT when it exists for another volume);
// deleting a missing one returns nil. A volume with snapshots may still be deleted: snapshots
// are independent copies. Errors: ENOTFOUND (volume), EINVALID (ids), EOVERLIMIT.
type Snapshotter interface {
	CreateSnapshot(ctx context.Context, volumeID, snapshotID string) error
	DeleteSnapshot(ctx context.Context, snapshotID string) error
	// StatSnapshot returns the snapshot's size in GiB (the volume's size when it was taken),
	// or ENOTFOUND.
	StatSnapshot(ctx context.Context, snapshotID string) (sizeGB int, err error)
}

// Cloner is implemented by drivers that create volumes from other volumes or from snapshots
// on the same backend. v.SizeGB may exceed the source's size (the rest reads as zeros) but
// never be smaller (EINVALID). Like CreateVolume, a clone appears whole or not at all, and
// cloning into a volume that exists with the same size returns nil.
type Cloner interface {
	CloneVolume(ctx context.Context, v basalt.VolumeSpec, sourceVolumeID string) error
	CreateVolumeFromSnapshot(ctx context.Context, v basalt.VolumeSpec, snapshotID string) error
}

// Reverter is implemented by drivers that restore a volume's bytes from one of its snapshots.
// The sizes must be equal (EINVALID otherwise). Reverting twice is harmless.
type Reverter interface {
	RevertToSnapshot(ctx context.Context, volumeID, snapshotID string) error
}

// Accessor is implemented by drivers whose volume bytes can be read and written directly (the
// file driver's sparse files, the fake's memory). Tests and data-path tools use it.
type Accessor interface {
	// OpenVolume opens volume id's bytes for reading and writing. The caller closes it.
	OpenVolume(ctx context.Context, id string) (Device, error)
}

// Device is an open volume. WriteAt past the end fails and writes nothing; ReadAt returns
// io.EOF at the end. A device opened before a revert or delete may keep seeing the old bytes
// (the file driver replaces the file): reverts and deletes are for detached volumes.
type Device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Close() error
}

// validID admits 1 to 64 letters, digits, '-' and '_': no separator, dot or NUL, so no id can
// name a path outside a driver's directory.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether id is a valid volume or snapshot id for every Basalt driver.
func ValidID(id string) bool { return validID.MatchString(id) }

// CheckID returns an EINVALID error naming kind ("volume", "snapshot") when id is not valid.
func CheckID(kind, id string) error {
	if !ValidID(id) {
		return basalt.Errorf(basalt.EINVALID, "Invalid %s id %+q: use 1 to 64 letters, digits, '-' or '_'.", kind, id)
	}
	return nil
}

// Pather is implemented by drivers whose volumes are local files or block devices. The agent
// exports that path to consumers through its own targets (iSCSI with tgt, NBD with nbdkit), so
// such a driver needs no attach code of its own.
type Pather interface {
	// Path returns the local path of volume id's bytes: EINVALID for a bad id, ENOTFOUND for a
	// missing volume.
	Path(id string) (string, error)
}

// A ConnectionRequest asks a Connector to connect one consumer to a volume.
type ConnectionRequest struct {
	// ExportID names the connection: the same id connects (idempotently) and disconnects it.
	ExportID string
	// Connector describes the consumer as os-brick does (initiator, host, ip, ...).
	Connector map[string]any
	// Mode is rw or ro.
	Mode string
}

// Connector is implemented by drivers that connect consumers with a protocol of their own (RBD
// through librbd): the agent uses it instead of its targets. Connecting twice with the same
// ExportID returns the same info; disconnecting a missing connection returns nil.
type Connector interface {
	// InitializeConnection returns Cinder's connection_info: driver_volume_type and data.
	InitializeConnection(ctx context.Context, volumeID string, req ConnectionRequest) (map[string]any, error)
	TerminateConnection(ctx context.Context, volumeID, exportID string) error
}

// Lister is implemented by drivers that can tell which volumes their backend holds: the agent
// reports them, so that objects no record owns can be listed as manageable and adopted
// (Cinder's manage_existing). ListVolumes returns every volume the backend holds, in any order,
// each as Stat reports it: id, size and pool. It lists only what Stat accepts (snapshots,
// temporary files and objects of sizes Stat refuses are not volumes), it is safe for concurrent
// use, and it changes nothing. A volume created or deleted while it runs may or may not be in
// the list.
type Lister interface {
	ListVolumes(ctx context.Context) ([]basalt.VolumeSpec, error)
}
