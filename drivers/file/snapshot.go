package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// A sidecar is the content of snapshot-<id>.json: the facts of a snapshot that its file does
// not hold.
type sidecar struct {
	// VolumeID is the volume the snapshot was taken from; only it may be reverted to the
	// snapshot.
	VolumeID string `json:"volume_id"`
}

// snapshotPath validates id and returns its snapshot file's path.
func (d *Driver) snapshotPath(id string) (string, error) {
	if err := drivers.CheckID("snapshot", id); err != nil {
		return "", err
	}
	return filepath.Join(d.cfg.Dir, snapshotPrefix+id), nil
}

func (d *Driver) sidecarPath(id string) string {
	return filepath.Join(d.cfg.Dir, snapshotPrefix+id+sidecarSuffix)
}

// writeSidecar writes snapshot id's sidecar durably: under a temporary name, synced, renamed
// into place and the directory synced, so it is on disk before the snapshot's file appears.
func (d *Driver) writeSidecar(id string, s sidecar) (err error) {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(d.cfg.Dir, tempPrefix+snapshotPrefix+id+"-*")
	if err != nil {
		return noSpace(err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return noSpace(err)
	}
	if err := f.Sync(); err != nil {
		return noSpace(err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), d.sidecarPath(id)); err != nil {
		return err
	}
	return d.syncDir()
}

// readSidecar returns snapshot id's sidecar.
func (d *Driver) readSidecar(id string) (sidecar, error) {
	var s sidecar
	b, err := os.ReadFile(d.sidecarPath(id))
	if err != nil {
		return s, fmt.Errorf("snapshot %s: read sidecar: %w", id, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("snapshot %s: sidecar %s: %w", id, d.sidecarPath(id), err)
	}
	return s, nil
}

// CreateSnapshot copies volume volumeID to snapshot snapshotID: a reflink where the filesystem
// supports it, else a sparse copy. The snapshot appears whole or not at all: its sidecar, which
// names volumeID, is written first; then the copy is made under a temporary name, synced and
// renamed into place. The volume does not change through this driver while it is copied, but
// writes through open devices or exports are not paused: snapshot an attached volume only when
// its user has quiesced it. Creating a snapshot that exists for volumeID returns nil, even if
// the volume has been deleted since; for another volume, ECONFLICT. It returns EINVALID for a
// bad id, ENOTFOUND for a missing volume, EOVERLIMIT when the filesystem is full, and ctx.Err()
// if ctx is done before the copy ends (nothing is left behind). It is safe for concurrent use;
// snapshots of one volume proceed in parallel.
func (d *Driver) CreateSnapshot(ctx context.Context, volumeID, snapshotID string) error {
	p, err := d.path(volumeID)
	if err != nil {
		return err
	}
	sp, err := d.snapshotPath(snapshotID)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockFiles([]string{snapshotPrefix + snapshotID}, volumePrefix+volumeID)()

	switch _, err := fileSize("Snapshot", snapshotID, sp); {
	case err == nil:
		s, err := d.readSidecar(snapshotID)
		if err != nil {
			return fmt.Errorf("create snapshot: %w", err)
		}
		if s.VolumeID != volumeID {
			return basalt.Errorf(basalt.ECONFLICT, "Snapshot %s exists for volume %s, not for volume %s.", snapshotID, s.VolumeID, volumeID)
		}
		return nil
	case basalt.ErrorCode(err) != basalt.ENOTFOUND:
		return fmt.Errorf("create snapshot: %w", err)
	}
	size, err := d.size(volumeID, p)
	if err != nil {
		return err
	}
	if err := d.writeSidecar(snapshotID, sidecar{VolumeID: volumeID}); err != nil {
		return fmt.Errorf("create snapshot %s: %w", snapshotID, err)
	}
	copied, reflinked, err := d.materialize(ctx, sp, p, int64(size)*gib, snapshotPrefix+snapshotID)
	if err != nil {
		os.Remove(d.sidecarPath(snapshotID)) // an orphan; New would remove it too
		return fmt.Errorf("create snapshot %s of volume %s: %w", snapshotID, volumeID, err)
	}
	d.logger.InfoContext(ctx, "snapshot created", "snapshot_id", snapshotID, "volume_id", volumeID,
		"size_gb", size, "reflink", reflinked, "copied_bytes", copied)
	return nil
}

// DeleteSnapshot removes snapshot id's file, then its sidecar. Deleting a missing snapshot
// returns nil. It returns EINVALID for a bad id and ctx.Err() if ctx is done before it starts.
// It is safe for concurrent use.
func (d *Driver) DeleteSnapshot(ctx context.Context, id string) error {
	sp, err := d.snapshotPath(id)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockFiles([]string{snapshotPrefix + id})()
	removed := false
	for _, p := range []string{sp, d.sidecarPath(id)} {
		switch err := os.Remove(p); {
		case err == nil:
			removed = true
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("delete snapshot %s: %w", id, err)
		}
	}
	if !removed {
		return nil
	}
	if err := d.syncDir(); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	d.logger.InfoContext(ctx, "snapshot deleted", "snapshot_id", id)
	return nil
}

// StatSnapshot returns the size in GiB of snapshot id. It returns EINVALID for a bad id and
// ENOTFOUND for a missing snapshot. It is safe for concurrent use.
func (d *Driver) StatSnapshot(ctx context.Context, id string) (int, error) {
	sp, err := d.snapshotPath(id)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return fileSize("Snapshot", id, sp)
}

// CloneVolume creates volume v as a copy of volume sourceVolumeID (reflink or sparse copy, as
// CreateSnapshot), grown to v.SizeGB; the grown part reads as zeros. The clone appears whole or
// not at all. Cloning into a volume that exists with the same size returns nil, even if the
// source is gone; with another size, ECONFLICT. It returns EINVALID for a bad id, size or pool or
// a size smaller than the source's, ENOTFOUND for a missing source, EOVERLIMIT when the
// filesystem is full, and ctx.Err() if ctx is done before the copy ends. It is safe for
// concurrent use; clones of one source proceed in parallel.
func (d *Driver) CloneVolume(ctx context.Context, v basalt.VolumeSpec, sourceVolumeID string) error {
	src, err := d.path(sourceVolumeID)
	if err != nil {
		return err
	}
	return d.createFrom(ctx, v, "Volume", sourceVolumeID, src, volumePrefix+sourceVolumeID)
}

// CreateVolumeFromSnapshot creates volume v as a copy of snapshot snapshotID, like CloneVolume.
// It returns ENOTFOUND for a missing snapshot and EINVALID for a size smaller than the
// snapshot's. It is safe for concurrent use.
func (d *Driver) CreateVolumeFromSnapshot(ctx context.Context, v basalt.VolumeSpec, snapshotID string) error {
	src, err := d.snapshotPath(snapshotID)
	if err != nil {
		return err
	}
	return d.createFrom(ctx, v, "Snapshot", snapshotID, src, snapshotPrefix+snapshotID)
}

// createFrom creates volume v as a copy of the kind ("Volume" or "Snapshot") srcID, whose file
// is at srcPath and named srcName.
func (d *Driver) createFrom(ctx context.Context, v basalt.VolumeSpec, kind, srcID, srcPath, srcName string) error {
	p, err := d.path(v.ID)
	if err != nil {
		return err
	}
	if err := checkSize(v.SizeGB); err != nil {
		return err
	}
	if v.Pool != d.cfg.Pool {
		return basalt.Errorf(basalt.EINVALID, "Invalid pool %q: backend %q has only pool %q.", v.Pool, d.cfg.BackendName, d.cfg.Pool)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockFiles([]string{volumePrefix + v.ID}, srcName)()

	switch have, err := d.size(v.ID, p); {
	case err == nil && have == v.SizeGB:
		return nil
	case err == nil:
		return basalt.Errorf(basalt.ECONFLICT, "Volume %s exists with size %d GiB, not %d GiB.", v.ID, have, v.SizeGB)
	case basalt.ErrorCode(err) != basalt.ENOTFOUND:
		return fmt.Errorf("create volume: %w", err)
	}
	srcSize, err := fileSize(kind, srcID, srcPath)
	if err != nil {
		return err
	}
	if v.SizeGB < srcSize {
		return basalt.Errorf(basalt.EINVALID, "Volume size '%d'GB cannot be smaller than the %s size %dGB. They must be >= original %s size.",
			v.SizeGB, strings.ToLower(kind), srcSize, strings.ToLower(kind))
	}
	copied, reflinked, err := d.materialize(ctx, p, srcPath, int64(v.SizeGB)*gib, volumePrefix+v.ID)
	if err != nil {
		return fmt.Errorf("create volume %s from %s %s: %w", v.ID, strings.ToLower(kind), srcID, err)
	}
	d.logger.InfoContext(ctx, "volume created", "volume_id", v.ID, "size_gb", v.SizeGB, "source_"+strings.ToLower(kind)+"_id", srcID,
		"reflink", reflinked, "copied_bytes", copied)
	return nil
}

// RevertToSnapshot restores volume volumeID's bytes from snapshot snapshotID: a copy of the
// snapshot (reflink or sparse copy) is made under a temporary name and renamed over the volume's
// file, so the volume holds either its old bytes or the snapshot's, never a mix. Devices and
// exports opened before the revert keep the old bytes: revert only a detached volume. Reverting
// twice is harmless. It returns EINVALID for a bad id, a snapshot of another volume (as named by
// its sidecar) or sizes that differ, ENOTFOUND for a missing volume or snapshot, EOVERLIMIT when
// the filesystem is full, and ctx.Err() if ctx is done before the copy ends (the volume is then
// untouched). It is safe for concurrent use.
func (d *Driver) RevertToSnapshot(ctx context.Context, volumeID, snapshotID string) error {
	p, err := d.path(volumeID)
	if err != nil {
		return err
	}
	sp, err := d.snapshotPath(snapshotID)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockFiles([]string{volumePrefix + volumeID}, snapshotPrefix+snapshotID)()

	size, err := d.size(volumeID, p)
	if err != nil {
		return err
	}
	snapSize, err := fileSize("Snapshot", snapshotID, sp)
	if err != nil {
		return err
	}
	s, err := d.readSidecar(snapshotID)
	if err != nil {
		return fmt.Errorf("revert volume %s: %w", volumeID, err)
	}
	switch {
	case s.VolumeID != volumeID:
		return basalt.Errorf(basalt.EINVALID, "Snapshot %s was taken from volume %s, not from volume %s.", snapshotID, s.VolumeID, volumeID)
	case snapSize != size:
		return basalt.Errorf(basalt.EINVALID, "Volume %s is %d GiB but snapshot %s is %d GiB; a revert needs equal sizes.", volumeID, size, snapshotID, snapSize)
	}
	copied, reflinked, err := d.materialize(ctx, p, sp, int64(size)*gib, volumePrefix+volumeID)
	if err != nil {
		return fmt.Errorf("revert volume %s to snapshot %s: %w", volumeID, snapshotID, err)
	}
	d.logger.InfoContext(ctx, "volume reverted", "volume_id", volumeID, "snapshot_id", snapshotID,
		"reflink", reflinked, "copied_bytes", copied)
	return nil
}
