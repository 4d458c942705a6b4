package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/basalt-storage/basalt"
	"golang.org/x/sys/unix"
)

// copyChunk is the unit of a sparse copy: data is read in chunks aligned to it, and a chunk
// that reads as all zeros is not written.
const copyChunk = 1 << 20

// probeReflink reports why files in Dir cannot share extents, or nil when they can: it clones
// a one-block temporary file into another and removes both.
func (d *Driver) probeReflink() error {
	src, err := os.CreateTemp(d.cfg.Dir, tempPrefix+"reflink-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(src.Name())
	defer src.Close()
	if _, err := src.Write(bytes.Repeat([]byte{0xb5}, 4096)); err != nil {
		return err
	}
	dst, err := os.CreateTemp(d.cfg.Dir, tempPrefix+"reflink-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	return ficlone(dst, src)
}

// materialize makes the file at p a copy of the file at srcPath, sized to size bytes (at least
// srcPath's size; the rest reads as zeros). The copy appears whole or not at all: it is made
// under a temporary name, synced, renamed over p and the directory synced; on error nothing is
// left behind and p is untouched. name is the id the temporary name carries. It returns the
// bytes copied and whether the copy is a reflink, and EOVERLIMIT when the filesystem is full or
// cannot hold a file of size bytes. The caller holds the locks of p and srcPath.
func (d *Driver) materialize(ctx context.Context, p, srcPath string, size int64, name string) (copied int64, reflinked bool, err error) {
	src, err := os.Open(srcPath)
	if err != nil {
		return 0, false, err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(d.cfg.Dir, tempPrefix+name+"-*")
	if err != nil {
		return 0, false, noSpace(err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	copied, reflinked, err = d.copyInto(ctx, tmp, src, size)
	d.copied.Add(copied)
	if err != nil {
		return copied, reflinked, noSpace(err)
	}
	if err := tmp.Close(); err != nil {
		return copied, reflinked, noSpace(err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return copied, reflinked, err
	}
	if err := d.syncDir(); err != nil {
		return copied, reflinked, err
	}
	return copied, reflinked, nil
}

// copyInto fills the empty file dst with src's bytes, sizes it to size bytes and syncs it. It
// shares src's extents when the driver uses reflink and the clone succeeds; otherwise (or when
// the clone fails for any reason but a full filesystem) it copies the data ranges of src and
// leaves the holes as holes. It returns the bytes copied (0 for a reflink).
func (d *Driver) copyInto(ctx context.Context, dst, src *os.File, size int64) (copied int64, reflinked bool, err error) {
	if d.reflink {
		switch err := ficlone(dst, src); {
		case err == nil:
			reflinked = true
		case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
			return 0, false, err
		default:
			d.logger.WarnContext(ctx, "reflink failed, copying instead", "file", filepath.Base(src.Name()), "error", err)
			if err := dst.Truncate(0); err != nil { // drop whatever a partial clone left
				return 0, false, err
			}
		}
	}
	if !reflinked {
		if copied, err = copySparse(ctx, dst, src); err != nil {
			return copied, false, err
		}
	}
	if err := dst.Truncate(size); err != nil {
		if errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EINVAL) {
			return copied, reflinked, basalt.Errorf(basalt.EOVERLIMIT, "Requested volume size %d GiB is larger than the filesystem allows for a file.", size/gib)
		}
		return copied, reflinked, err
	}
	return copied, reflinked, dst.Sync()
}

// copySparse copies the data of src into dst at the same offsets and returns the bytes written.
// It finds data with SEEK_DATA and SEEK_HOLE, so holes stay holes, and it does not write chunks
// that read as zeros, so it never writes a zero range. dst must read as zeros (be new). It checks
// ctx between chunks.
func copySparse(ctx context.Context, dst, src *os.File) (int64, error) {
	fi, err := src.Stat()
	if err != nil {
		return 0, err
	}
	end := fi.Size()
	buf := make([]byte, copyChunk)
	zeros := make([]byte, copyChunk)
	var copied int64
	for off := int64(0); off < end; {
		data, hole, err := dataAfter(src, off, end)
		if err != nil {
			return copied, err
		}
		for data < hole {
			if err := ctx.Err(); err != nil {
				return copied, err
			}
			n := min(hole, (data/copyChunk+1)*copyChunk) - data // up to the next chunk boundary
			b := buf[:n]
			if _, err := src.ReadAt(b, data); err != nil {
				return copied, fmt.Errorf("read at %d: %w", data, err)
			}
			if !bytes.Equal(b, zeros[:n]) {
				if _, err := dst.WriteAt(b, data); err != nil {
					return copied, err
				}
				copied += n
			}
			data += n
		}
		off = hole
	}
	return copied, nil
}

// dataAfter returns the first range [data, hole) of src's data at or after off, or end, end
// when there is none. Where the filesystem cannot tell data from holes (EINVAL), everything
// from off is data.
func dataAfter(src *os.File, off, end int64) (data, hole int64, err error) {
	data, err = src.Seek(off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return end, end, nil
	case errors.Is(err, syscall.EINVAL):
		return off, end, nil
	case err != nil:
		return 0, 0, err
	}
	hole, err = src.Seek(data, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, err
	}
	return data, min(hole, end), nil
}

// noSpace turns a full filesystem or quota into EOVERLIMIT and returns other errors as they are.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w (%v)", basalt.Errorf(basalt.EOVERLIMIT, "Not enough space on the backend for the copy."), err)
	}
	return err
}
