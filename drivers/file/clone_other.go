//go:build !linux

package file

import (
	"errors"
	"os"
)

// ficlone is not available outside Linux; the driver makes sparse copies instead.
func ficlone(dst, src *os.File) error { return errors.ErrUnsupported }
