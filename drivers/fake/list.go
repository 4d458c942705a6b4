package fake

import (
	"context"
	"sort"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

var _ drivers.Lister = (*Driver)(nil)

// ListVolumes returns every volume the driver holds, by id. It is safe for concurrent use and
// does not wait for Latency.
func (d *Driver) ListVolumes(ctx context.Context) ([]basalt.VolumeSpec, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]basalt.VolumeSpec, 0, len(d.vols))
	for _, v := range d.vols {
		out = append(out, v.spec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
