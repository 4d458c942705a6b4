package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

var _ drivers.Lister = (*Driver)(nil)

// ListVolumes returns every volume file in Dir, volume-<id>, as Stat reports it. Snapshots,
// their sidecars and the temporary files of creates in flight are not volumes; a file that Stat
// would refuse (not a regular file, or not a whole number of GiB) is left out too, since the
// driver cannot serve it as a volume. It is safe for concurrent use and changes nothing.
func (d *Driver) ListVolumes(ctx context.Context) ([]basalt.VolumeSpec, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(d.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("list volumes: read dir: %w", err)
	}
	var out []basalt.VolumeSpec
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), volumePrefix)
		if !ok || !drivers.ValidID(id) || !e.Type().IsRegular() {
			continue
		}
		size, err := d.size(id, filepath.Join(d.cfg.Dir, e.Name()))
		switch {
		case basalt.ErrorCode(err) == basalt.ENOTFOUND:
			continue // deleted since ReadDir
		case err != nil:
			d.logger.DebugContext(ctx, "file not listed as a volume", "file", e.Name(), "reason", err)
			continue
		}
		out = append(out, basalt.VolumeSpec{ID: id, SizeGB: size, Pool: d.cfg.Pool})
	}
	return out, nil
}
