package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// OpenVolume opens volume id's file for reading and writing. The device reads and writes the
// file directly; writes are not synced until the file is, and may not go past the end of the
// volume (see device.WriteAt). A device keeps the file it opened: after a revert, or a delete,
// it still reads and writes the old bytes. It returns EINVALID for a bad id and ENOTFOUND for a
// missing volume. It is safe for concurrent use; so is the device.
func (d *Driver) OpenVolume(ctx context.Context, id string) (drivers.Device, error) {
	p, err := d.path(id)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := d.size(id, p); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", id)
	} else if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", id, err)
	}
	return &device{f: f, id: id}, nil
}

// A device is an open volume file.
type device struct {
	f  *os.File
	id string
}

// ReadAt reads like io.ReaderAt: at the end of the volume it returns io.EOF.
func (v *device) ReadAt(p []byte, off int64) (int, error) { return v.f.ReadAt(p, off) }

// WriteAt writes p at off. A write that would go past the end of the volume writes nothing
// and returns EINVALID: a volume's size changes only through ExtendVolume.
func (v *device) WriteAt(p []byte, off int64) (int, error) {
	fi, err := v.f.Stat()
	if err != nil {
		return 0, err
	}
	if off < 0 || off > fi.Size()-int64(len(p)) {
		return 0, basalt.Errorf(basalt.EINVALID, "Write of %d bytes at offset %d is outside volume %s (%d bytes).", len(p), off, v.id, fi.Size())
	}
	return v.f.WriteAt(p, off)
}

// Close closes the file.
func (v *device) Close() error { return v.f.Close() }
