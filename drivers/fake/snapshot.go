package fake

import (
	"context"
	"io"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// CreateSnapshot copies volume volumeID's bytes to snapshot snapshotID, in the volume's pool.
// Creating a snapshot that exists for volumeID returns nil, even if the volume has been deleted
// since; for another volume, ECONFLICT. It returns EINVALID for a bad id, ENOTFOUND for a
// missing volume, EOVERLIMIT when the pool lacks the volume's size, ctx.Err() if ctx is done
// before Latency has passed, and Fail's error (OpSnapshot, snapshotID) if it fails. It is safe
// for concurrent use.
func (d *Driver) CreateSnapshot(ctx context.Context, volumeID, snapshotID string) error {
	if err := checkID(volumeID); err != nil {
		return err
	}
	if err := checkSnapshotID(snapshotID); err != nil {
		return err
	}
	if err := d.act(ctx, OpSnapshot, snapshotID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.snaps[snapshotID]; ok {
		if s.volumeID != volumeID {
			return basalt.Errorf(basalt.ECONFLICT, "Snapshot %s exists for volume %s, not for volume %s.", snapshotID, s.volumeID, volumeID)
		}
		return nil
	}
	v, ok := d.vols[volumeID]
	if !ok {
		return notFound(volumeID)
	}
	if free := d.free(v.spec.Pool); float64(v.spec.SizeGB) > free {
		return basalt.Errorf(basalt.EOVERLIMIT, "Snapshot of %d GiB exceeds the %.2f GiB free in pool %q.", v.spec.SizeGB, free, v.spec.Pool)
	}
	d.snaps[snapshotID] = &snapshot{volumeID: volumeID, pool: v.spec.Pool, sizeGB: v.spec.SizeGB, data: v.data.clone()}
	d.logger.InfoContext(ctx, "snapshot created", "snapshot_id", snapshotID, "volume_id", volumeID, "size_gb", v.spec.SizeGB)
	return nil
}

// DeleteSnapshot forgets snapshot id and its bytes. Deleting a missing snapshot returns nil.
// It returns EINVALID for a bad id, ctx.Err() if ctx is done before Latency has passed, and
// Fail's error (OpDeleteSnapshot, id) if it fails. It is safe for concurrent use.
func (d *Driver) DeleteSnapshot(ctx context.Context, id string) error {
	if err := checkSnapshotID(id); err != nil {
		return err
	}
	if err := d.act(ctx, OpDeleteSnapshot, id); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.snaps[id]; ok {
		delete(d.snaps, id)
		d.logger.InfoContext(ctx, "snapshot deleted", "snapshot_id", id)
	}
	return nil
}

// StatSnapshot returns the size in GiB of snapshot id. It returns EINVALID for a bad id and
// ENOTFOUND for a missing snapshot. It is safe for concurrent use and does not wait for Latency.
func (d *Driver) StatSnapshot(ctx context.Context, id string) (int, error) {
	if err := checkSnapshotID(id); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.snaps[id]
	if !ok {
		return 0, snapshotNotFound(id)
	}
	return s.sizeGB, nil
}

// CloneVolume creates volume v with a copy of volume sourceVolumeID's bytes; the part beyond
// the source's size reads as zeros. v.Pool may be any pool of the backend. Cloning into a
// volume that exists as v returns nil, even if the source is gone; otherwise an existing v.ID
// is ECONFLICT. It returns EINVALID for a bad id, size or pool or a size smaller than the
// source's, ENOTFOUND for a missing source, EOVERLIMIT when v.Pool lacks v.SizeGB, ctx.Err() if
// ctx is done before Latency has passed, and Fail's error (OpClone, v.ID) if it fails. It is
// safe for concurrent use.
func (d *Driver) CloneVolume(ctx context.Context, v basalt.VolumeSpec, sourceVolumeID string) error {
	if err := checkID(sourceVolumeID); err != nil {
		return err
	}
	return d.createFrom(ctx, v, "volume", sourceVolumeID, func() (int, chunks, bool) {
		src, ok := d.vols[sourceVolumeID]
		if !ok {
			return 0, nil, false
		}
		return src.spec.SizeGB, src.data, true
	})
}

// CreateVolumeFromSnapshot creates volume v with a copy of snapshot snapshotID's bytes, like
// CloneVolume. It returns ENOTFOUND for a missing snapshot and EINVALID for a size smaller than
// the snapshot's. It is safe for concurrent use.
func (d *Driver) CreateVolumeFromSnapshot(ctx context.Context, v basalt.VolumeSpec, snapshotID string) error {
	if err := checkSnapshotID(snapshotID); err != nil {
		return err
	}
	return d.createFrom(ctx, v, "snapshot", snapshotID, func() (int, chunks, bool) {
		s, ok := d.snaps[snapshotID]
		if !ok {
			return 0, nil, false
		}
		return s.sizeGB, s.data, true
	})
}

// createFrom creates volume v from the kind ("volume" or "snapshot") srcID, which source looks
// up with d.mu held.
func (d *Driver) createFrom(ctx context.Context, v basalt.VolumeSpec, kind, srcID string, source func() (sizeGB int, data chunks, ok bool)) error {
	if err := d.checkSpec(v); err != nil {
		return err
	}
	if err := d.act(ctx, OpClone, v.ID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.vols[v.ID]; ok {
		_, err := d.checkCreate(v)
		return err
	}
	size, data, ok := source()
	switch {
	case !ok && kind == "volume":
		return notFound(srcID)
	case !ok:
		return snapshotNotFound(srcID)
	case v.SizeGB < size:
		return basalt.Errorf(basalt.EINVALID, "Volume size '%d'GB cannot be smaller than the %s size %dGB. They must be >= original %s size.",
			v.SizeGB, kind, size, kind)
	}
	if _, err := d.checkCreate(v); err != nil {
		return err
	}
	d.vols[v.ID] = &volume{spec: v, data: data.clone()}
	d.logger.InfoContext(ctx, "volume created", "volume_id", v.ID, "size_gb", v.SizeGB, "pool", v.Pool, "source_"+kind+"_id", srcID)
	return nil
}

// RevertToSnapshot replaces volume volumeID's bytes with a copy of snapshot snapshotID's. Open
// devices see the reverted bytes. Reverting twice is harmless. It returns EINVALID for a bad id,
// a snapshot of another volume or sizes that differ, ENOTFOUND for a missing volume or snapshot,
// ctx.Err() if ctx is done before Latency has passed, and Fail's error (OpRevert, volumeID) if
// it fails. It is safe for concurrent use.
func (d *Driver) RevertToSnapshot(ctx context.Context, volumeID, snapshotID string) error {
	if err := checkID(volumeID); err != nil {
		return err
	}
	if err := checkSnapshotID(snapshotID); err != nil {
		return err
	}
	if err := d.act(ctx, OpRevert, volumeID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[volumeID]
	if !ok {
		return notFound(volumeID)
	}
	s, ok := d.snaps[snapshotID]
	switch {
	case !ok:
		return snapshotNotFound(snapshotID)
	case s.volumeID != volumeID:
		return basalt.Errorf(basalt.EINVALID, "Snapshot %s was taken from volume %s, not from volume %s.", snapshotID, s.volumeID, volumeID)
	case s.sizeGB != v.spec.SizeGB:
		return basalt.Errorf(basalt.EINVALID, "Volume %s is %d GiB but snapshot %s is %d GiB; a revert needs equal sizes.",
			volumeID, v.spec.SizeGB, snapshotID, s.sizeGB)
	}
	v.data = s.data.clone()
	d.logger.InfoContext(ctx, "volume reverted", "volume_id", volumeID, "snapshot_id", snapshotID)
	return nil
}

// OpenVolume opens volume id's bytes. The device follows the volume: it sees extends and
// reverts, and fails with ENOTFOUND once the volume is deleted. Writes may not go past the end
// of the volume (EINVALID, nothing written). It returns EINVALID for a bad id and ENOTFOUND for
// a missing volume. It is safe for concurrent use and does not wait for Latency; so is the
// device.
func (d *Driver) OpenVolume(ctx context.Context, id string) (drivers.Device, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.vols[id]; !ok {
		return nil, notFound(id)
	}
	return &device{d: d, id: id}, nil
}

// A device is an open volume of a fake Driver.
type device struct {
	d      *Driver
	id     string
	closed bool // guarded by d.mu
}

// volume returns the device's volume. d.mu must be held.
func (dev *device) volume() (*volume, error) {
	if dev.closed {
		return nil, basalt.Errorf(basalt.EINVALID, "Device of volume %s is closed.", dev.id)
	}
	v, ok := dev.d.vols[dev.id]
	if !ok {
		return nil, notFound(dev.id)
	}
	return v, nil
}

// ReadAt reads like io.ReaderAt: at the end of the volume it returns io.EOF.
func (dev *device) ReadAt(p []byte, off int64) (int, error) {
	dev.d.mu.Lock()
	defer dev.d.mu.Unlock()
	v, err := dev.volume()
	if err != nil {
		return 0, err
	}
	size := int64(v.spec.SizeGB) * gib
	if off < 0 {
		return 0, basalt.Errorf(basalt.EINVALID, "Negative offset %d.", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	for done := 0; done < n; {
		i, at := (off+int64(done))/chunkSize, int((off+int64(done))%chunkSize)
		m := min(n-done, chunkSize-at)
		if c, ok := v.data[i]; ok {
			copy(p[done:done+m], c[at:])
		} else {
			clear(p[done : done+m])
		}
		done += m
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off. A write that would go past the end of the volume writes nothing and
// returns EINVALID. Zeros written where nothing was allocate no memory.
func (dev *device) WriteAt(p []byte, off int64) (int, error) {
	dev.d.mu.Lock()
	defer dev.d.mu.Unlock()
	v, err := dev.volume()
	if err != nil {
		return 0, err
	}
	size := int64(v.spec.SizeGB) * gib
	if off < 0 || off > size-int64(len(p)) {
		return 0, basalt.Errorf(basalt.EINVALID, "Write of %d bytes at offset %d is outside volume %s (%d bytes).", len(p), off, dev.id, size)
	}
	for done := 0; done < len(p); {
		i, at := (off+int64(done))/chunkSize, int((off+int64(done))%chunkSize)
		m := min(len(p)-done, chunkSize-at)
		c, ok := v.data[i]
		if !ok {
			if isZero(p[done : done+m]) {
				done += m
				continue
			}
			c = make([]byte, chunkSize)
			v.data[i] = c
		}
		copy(c[at:], p[done:done+m])
		done += m
	}
	return len(p), nil
}

// Close closes the device; later calls fail.
func (dev *device) Close() error {
	dev.d.mu.Lock()
	defer dev.d.mu.Unlock()
	dev.closed = true
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
