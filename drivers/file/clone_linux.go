package file

import (
	"os"

	"golang.org/x/sys/unix"
)

// ficlone makes dst share all of src's extents (ioctl FICLONE): dst's bytes become src's,
// without copying. It fails with EOPNOTSUPP or EXDEV, among others, where the filesystem
// cannot do it (ext4, tmpfs, or two filesystems).
func ficlone(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}
