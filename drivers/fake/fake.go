// Package fake is an in-memory storage driver for tests and the local stack. It keeps volume
// and snapshot records and the bytes written to them (sparsely: only the 1 MiB chunks written
// hold memory), provisions thick (a volume or snapshot uses its whole size at once), and can be
// made slow (Latency) or failing (Fail) to exercise the agent's timeouts, retries and
// rescheduling.
package fake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// Reported facts of the backend.
const (
	VendorName      = "Basalt"
	DriverVersion   = "1.0.0"
	StorageProtocol = "fake"
)

// Operations passed to Config.Fail.
const (
	OpCreate         = "create"
	OpDelete         = "delete"
	OpExtend         = "extend"
	OpSnapshot       = "snapshot"        // CreateSnapshot; Fail gets the snapshot id
	OpDeleteSnapshot = "delete_snapshot" // DeleteSnapshot; Fail gets the snapshot id
	OpClone          = "clone"           // CloneVolume and CreateVolumeFromSnapshot; Fail gets the new volume's id
	OpRevert         = "revert"          // RevertToSnapshot; Fail gets the volume id
)

const (
	gib = 1 << 30
	// chunkSize is the unit in which volume bytes are stored: a chunk is allocated on the
	// first write into it.
	chunkSize = 1 << 20
)

// Config configures a fake Driver.
type Config struct {
	// Pools names the backend's pools. Default ["pool"].
	Pools []string
	// TotalCapacityGB is the capacity of each pool, > 0. Default 1000.
	TotalCapacityGB float64
	// BackendName is reported as volume_backend_name.
	BackendName string
	// Latency is how long every mutating call (create, delete, extend, snapshot, delete
	// snapshot, clone, revert) waits before acting. The wait ends early, with ctx.Err(), when
	// ctx is done. Reads (Capabilities, Stat, StatSnapshot, OpenVolume, device I/O) do not wait.
	Latency time.Duration
	// Fail, if set, is called by every mutating call after its arguments are checked and its
	// latency has passed, with the operation (one of the Op constants) and the id it acts on:
	// the volume's, or the snapshot's for OpSnapshot and OpDeleteSnapshot. A non-nil error is
	// returned as is and the call changes nothing. Fail is called from many goroutines at once
	// and must be safe for concurrent use.
	Fail func(op, id string) error
	// Stats, if set, is the report Capabilities returns instead of its own, as a Cinder
	// driver's get_volume_stats() would return it: backend-level keys and, under "pools", a
	// list of pool dictionaries (absent or null: a driver that reports no pools). Keys and
	// values are reported as they are, whatever they say ("infinite", null, "10", missing
	// keys), and do not follow the volumes created: scheduler and report-path tests use it.
	// It must be JSON. Pools defaults to its pools' names.
	Stats map[string]any
}

func (c *Config) setDefaults() {
	if len(c.Pools) == 0 && c.Stats != nil {
		l, _ := c.Stats["pools"].([]any)
		for _, p := range l {
			if m, ok := p.(map[string]any); ok {
				if name, ok := m["pool_name"].(string); ok && name != "" && !slices.Contains(c.Pools, name) {
					c.Pools = append(c.Pools, name)
				}
			}
		}
	}
	if len(c.Pools) == 0 {
		c.Pools = []string{"pool"}
	}
	if c.TotalCapacityGB == 0 {
		c.TotalCapacityGB = 1000
	}
}

// Validate reports the first problem with c as an EINVALID error. New calls it after filling
// defaults, so empty Pools or a zero TotalCapacityGB pass there but not here.
func (c Config) Validate() error {
	if len(c.Pools) == 0 {
		return basalt.Errorf(basalt.EINVALID, "fake driver: at least one pool is required.")
	}
	seen := make(map[string]bool, len(c.Pools))
	for _, p := range c.Pools {
		if p == "" || seen[p] || strings.ContainsAny(p, "#@\x00") {
			return basalt.Errorf(basalt.EINVALID, "fake driver: pool names must be distinct, non-empty and free of '#' and '@', got %q.", c.Pools)
		}
		seen[p] = true
	}
	switch {
	case !(c.TotalCapacityGB > 0):
		return basalt.Errorf(basalt.EINVALID, "fake driver: total_capacity_gb %v must be > 0.", c.TotalCapacityGB)
	case c.Latency < 0:
		return basalt.Errorf(basalt.EINVALID, "fake driver: latency %v must not be negative.", c.Latency)
	}
	return nil
}

// Driver keeps volumes and snapshots in memory. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	logger *slog.Logger

	stats []byte // Config.Stats as JSON, decoded afresh for every report

	mu    sync.Mutex
	vols  map[string]*volume   // by id
	snaps map[string]*snapshot // by id
	conns map[string]string    // export id → volume id
}

// A volume is a volume's record and bytes.
type volume struct {
	spec basalt.VolumeSpec
	data chunks
}

// A snapshot is a copy of a volume's bytes when it was taken.
type snapshot struct {
	volumeID string
	pool     string
	sizeGB   int
	data     chunks
}

// chunks holds bytes sparsely: chunk i holds bytes [i*chunkSize, (i+1)*chunkSize), and a
// missing chunk reads as zeros.
type chunks map[int64][]byte

// clone returns a deep copy of c.
func (c chunks) clone() chunks {
	out := make(chunks, len(c))
	for i, b := range c {
		out[i] = slices.Clone(b)
	}
	return out
}

var (
	_ drivers.Driver      = (*Driver)(nil)
	_ drivers.Extender    = (*Driver)(nil)
	_ drivers.Snapshotter = (*Driver)(nil)
	_ drivers.Cloner      = (*Driver)(nil)
	_ drivers.Reverter    = (*Driver)(nil)
	_ drivers.Accessor    = (*Driver)(nil)
)

// New returns an empty fake driver. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Driver, error) {
	cfg.Pools = append([]string(nil), cfg.Pools...) // the caller may reuse its slice
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, logger: logger.With("driver", "fake"), vols: map[string]*volume{}, snaps: map[string]*snapshot{}}
	if cfg.Stats != nil {
		b, err := json.Marshal(cfg.Stats)
		if err == nil {
			_, err = decodeStats(b)
		}
		if err != nil {
			return nil, basalt.Errorf(basalt.EINVALID, "fake driver: stats: %v.", err)
		}
		d.stats = b
	}
	return d, nil
}

// decodeStats decodes a raw report: backend-level keys, and pools from "pools".
func decodeStats(b []byte) (basalt.BackendStats, error) {
	var raw struct {
		Pools []basalt.Capabilities `json:"pools"`
	}
	var backend basalt.Capabilities
	if err := json.Unmarshal(b, &raw); err != nil {
		return basalt.BackendStats{}, fmt.Errorf(`"pools" must be a list of objects: %w`, err)
	}
	if err := json.Unmarshal(b, &backend); err != nil {
		return basalt.BackendStats{}, err
	}
	delete(backend, "pools")
	return basalt.BackendStats{Backend: backend, Pools: raw.Pools}, nil
}

// Capabilities reports every pool: provisioned capacity is the sizes of its volumes and
// snapshots together, free capacity is total minus provisioned (thick provisioning), and
// total_volumes counts volumes only; online extend is supported, multiattach and QoS are not.
// With Config.Stats it reports that instead. It is safe for concurrent use and does not wait
// for Latency.
func (d *Driver) Capabilities(ctx context.Context) (basalt.BackendStats, error) {
	if err := ctx.Err(); err != nil {
		return basalt.BackendStats{}, err
	}
	if d.stats != nil {
		return decodeStats(d.stats)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pools := make([]basalt.Capabilities, 0, len(d.cfg.Pools))
	for _, name := range d.cfg.Pools {
		used, n := d.usage(name)
		pools = append(pools, basalt.Capabilities{
			"pool_name":                   name,
			"total_capacity_gb":           d.cfg.TotalCapacityGB,
			"free_capacity_gb":            max(d.cfg.TotalCapacityGB-float64(used), 0),
			"provisioned_capacity_gb":     float64(used),
			"reserved_percentage":         0,
			"max_over_subscription_ratio": 1.0,
			"thin_provisioning_support":   false,
			"thick_provisioning_support":  true,
			"total_volumes":               n,
			"multiattach":                 false,
			"QoS_support":                 false,
			"online_extend_support":       true,
			"backend_state":               "up",
		})
	}
	backend := basalt.Capabilities{
		"vendor_name":      VendorName,
		"driver_version":   DriverVersion,
		"storage_protocol": StorageProtocol,
	}
	if d.cfg.BackendName != "" {
		backend["volume_backend_name"] = d.cfg.BackendName
	}
	return basalt.BackendStats{Backend: backend, Pools: pools}, nil
}

// usage returns the GiB provisioned in pool (volumes and snapshots) and its number of volumes.
// d.mu must be held.
func (d *Driver) usage(pool string) (gb, n int) {
	for _, v := range d.vols {
		if v.spec.Pool == pool {
			gb += v.spec.SizeGB
			n++
		}
	}
	for _, s := range d.snaps {
		if s.pool == pool {
			gb += s.sizeGB
		}
	}
	return gb, n
}

// free returns the GiB left in pool. d.mu must be held.
func (d *Driver) free(pool string) float64 {
	used, _ := d.usage(pool)
	return d.cfg.TotalCapacityGB - float64(used)
}

// CreateVolume records volume v. Creating a volume that exists with the same size and pool
// returns nil; with another size or pool, ECONFLICT. It returns EINVALID for a bad id, size or
// pool, EOVERLIMIT when the pool's free capacity is less than v.SizeGB, ctx.Err() if ctx is done
// before Latency has passed, and Fail's error if it fails. It is safe for concurrent use.
func (d *Driver) CreateVolume(ctx context.Context, v basalt.VolumeSpec) error {
	if err := d.checkSpec(v); err != nil {
		return err
	}
	if err := d.act(ctx, OpCreate, v.ID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if done, err := d.checkCreate(v); done || err != nil {
		return err
	}
	d.vols[v.ID] = &volume{spec: v, data: chunks{}}
	d.logger.InfoContext(ctx, "volume created", "volume_id", v.ID, "size_gb", v.SizeGB, "pool", v.Pool)
	return nil
}

// checkCreate returns done for a volume v that exists as v, ECONFLICT for one that exists
// otherwise, and EOVERLIMIT when v's pool lacks v.SizeGB. d.mu must be held.
func (d *Driver) checkCreate(v basalt.VolumeSpec) (done bool, err error) {
	if have, ok := d.vols[v.ID]; ok {
		if have.spec != v {
			return false, basalt.Errorf(basalt.ECONFLICT, "Volume %s exists with size %d GiB in pool %q, not %d GiB in pool %q.",
				v.ID, have.spec.SizeGB, have.spec.Pool, v.SizeGB, v.Pool)
		}
		return true, nil
	}
	if free := d.free(v.Pool); float64(v.SizeGB) > free {
		return false, basalt.Errorf(basalt.EOVERLIMIT, "Requested volume size %d GiB exceeds the %.2f GiB free in pool %q.", v.SizeGB, free, v.Pool)
	}
	return false, nil
}

// checkSpec returns EINVALID for a bad id, size or pool.
func (d *Driver) checkSpec(v basalt.VolumeSpec) error {
	if err := checkID(v.ID); err != nil {
		return err
	}
	if v.SizeGB <= 0 {
		return basalt.Errorf(basalt.EINVALID, "Invalid volume size %d: must be an integer (in GiB) greater than 0.", v.SizeGB)
	}
	if !d.hasPool(v.Pool) {
		return basalt.Errorf(basalt.EINVALID, "Invalid pool %q: backend %q has pools %q.", v.Pool, d.cfg.BackendName, d.cfg.Pools)
	}
	return nil
}

// DeleteVolume forgets volume id and its bytes. Deleting a missing volume returns nil. The
// volume's snapshots are independent copies and stay. It returns EINVALID for a bad id, ctx.Err() if ctx is done before Latency has passed, and Fail's error if it fails. It
// is safe for concurrent use.
func (d *Driver) DeleteVolume(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.act(ctx, OpDelete, id); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.vols[id]; ok {
		delete(d.vols, id)
		d.logger.InfoContext(ctx, "volume deleted", "volume_id", id)
	}
	return nil
}

// Stat returns volume id's spec. It returns EINVALID for a bad id and ENOTFOUND for a missing
// volume. It is safe for concurrent use and does not wait for Latency.
func (d *Driver) Stat(ctx context.Context, id string) (basalt.VolumeSpec, error) {
	if err := checkID(id); err != nil {
		return basalt.VolumeSpec{}, err
	}
	if err := ctx.Err(); err != nil {
		return basalt.VolumeSpec{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[id]
	if !ok {
		return basalt.VolumeSpec{}, notFound(id)
	}
	return v.spec, nil
}

// ExtendVolume grows volume id to newSizeGB GiB, keeping its bytes. Extending to the current size returns nil. It
// returns EINVALID for a bad id or a smaller size, ENOTFOUND for a missing volume, EOVERLIMIT
// when the pool lacks the added capacity, ctx.Err() if ctx is done before Latency has passed,
// and Fail's error if it fails. It is safe for concurrent use.
func (d *Driver) ExtendVolume(ctx context.Context, id string, newSizeGB int) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.act(ctx, OpExtend, id); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[id]
	switch {
	case !ok:
		return notFound(id)
	case newSizeGB == v.spec.SizeGB:
		return nil
	case newSizeGB < v.spec.SizeGB:
		return basalt.Errorf(basalt.EINVALID, "New size for extend must be greater than current size. (current: %d, extended: %d).", v.spec.SizeGB, newSizeGB)
	}
	if free := d.free(v.spec.Pool); float64(newSizeGB-v.spec.SizeGB) > free {
		return basalt.Errorf(basalt.EOVERLIMIT, "Extending volume %s by %d GiB exceeds the %.2f GiB free in pool %q.",
			id, newSizeGB-v.spec.SizeGB, free, v.spec.Pool)
	}
	old := v.spec.SizeGB
	v.spec.SizeGB = newSizeGB
	d.logger.InfoContext(ctx, "volume extended", "volume_id", id, "old_size_gb", old, "size_gb", newSizeGB)
	return nil
}

// act waits for the configured latency, or returns ctx.Err() if ctx is done first, then asks
// Fail whether op on id fails.
func (d *Driver) act(ctx context.Context, op, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.cfg.Latency > 0 {
		t := time.NewTimer(d.cfg.Latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if d.cfg.Fail != nil {
		if err := d.cfg.Fail(op, id); err != nil {
			d.logger.InfoContext(ctx, "injected failure", "op", op, "volume_id", id, "error", err)
			return err
		}
	}
	return nil
}

func (d *Driver) hasPool(name string) bool { return slices.Contains(d.cfg.Pools, name) }

func checkID(id string) error { return drivers.CheckID("volume", id) }

func checkSnapshotID(id string) error { return drivers.CheckID("snapshot", id) }

func notFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", id)
}

func snapshotNotFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Snapshot %s could not be found.", id)
}

// ErrInjected is the error FailOn injects when given none.
var ErrInjected = errors.New("fake: injected failure")

// FailOn returns a Config.Fail that fails op on the volumes in ids, or on every volume if ids is
// empty, with err (ErrInjected if err is nil). It is safe for concurrent use.
func FailOn(op string, err error, ids ...string) func(op, id string) error {
	if err == nil {
		err = ErrInjected
	}
	return func(o, id string) error {
		if o == op && (len(ids) == 0 || slices.Contains(ids, id)) {
			return err
		}
		return nil
	}
}
