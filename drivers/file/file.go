// Package file is a storage driver that keeps each volume as a sparse file in one directory. It
// stores real bytes, so exports (nbdkit, qemu-io) can serve the files as block devices.
//
// A volume id maps to <Dir>/volume-<id>, a file of exactly the volume's size in GiB made with
// truncate, never by writing zeros: space is used only where data is written. The backend has
// one pool; capacity comes from the filesystem holding Dir.
package file

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// Reported facts of the backend.
const (
	VendorName      = "Basalt"
	DriverVersion   = "1.0.0"
	StorageProtocol = "file"
)

const (
	gib = 1 << 30
	// maxSizeGB is the largest size whose byte count fits in an int64.
	maxSizeGB = math.MaxInt64 / gib

	volumePrefix = "volume-"
	// tempPrefix starts the names of files being created; New removes any it finds.
	tempPrefix = ".creating-"
	lockName   = ".lock"
)

// validID is the pattern of volume ids: it admits no separator, dot or NUL, so no id escapes Dir.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Config configures a file Driver.
type Config struct {
	// Dir holds the volume files. It is created if missing. Required.
	Dir string
	// Pool names the backend's single pool. Default "pool".
	Pool string
	// BackendName is reported as volume_backend_name.
	BackendName string
	// ReservedPercentage of the capacity the scheduler keeps free, in [0, 100]. Default 0.
	ReservedPercentage int
	// MaxOverSubscriptionRatio bounds thin provisioning, >= 1. Default 20.
	MaxOverSubscriptionRatio float64
}

func (c *Config) setDefaults() {
	if c.Pool == "" {
		c.Pool = "pool"
	}
	if c.MaxOverSubscriptionRatio == 0 {
		c.MaxOverSubscriptionRatio = 20
	}
}

// Validate reports the first problem with c as an EINVALID error. New calls it after filling
// defaults, so a zero Pool or MaxOverSubscriptionRatio passes there but not here.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return basalt.Errorf(basalt.EINVALID, "file driver: dir is required.")
	case strings.ContainsAny(c.Pool, "#@\x00") || strings.TrimSpace(c.Pool) != c.Pool || c.Pool == "":
		return basalt.Errorf(basalt.EINVALID, "file driver: invalid pool name %q.", c.Pool)
	case c.ReservedPercentage < 0 || c.ReservedPercentage > 100:
		return basalt.Errorf(basalt.EINVALID, "file driver: reserved_percentage %d is not within [0, 100].", c.ReservedPercentage)
	case !(c.MaxOverSubscriptionRatio >= 1) || math.IsInf(c.MaxOverSubscriptionRatio, 0):
		return basalt.Errorf(basalt.EINVALID, "file driver: max_over_subscription_ratio %v must be a number >= 1.", c.MaxOverSubscriptionRatio)
	}
	return nil
}

// Driver keeps volumes as sparse files in one directory. It is safe for concurrent use. One
// Driver owns its directory: New takes an exclusive lock on it, which Close releases.
type Driver struct {
	cfg    Config
	logger *slog.Logger
	lock   *os.File // holds the flock on Dir
	// locks serialize mutations of one id (striped by hash): create, extend and delete of the
	// same volume never interleave, while distinct volumes mostly proceed in parallel.
	locks [64]sync.Mutex
}

var (
	_ drivers.Driver   = (*Driver)(nil)
	_ drivers.Extender = (*Driver)(nil)
)

// New returns a driver on cfg.Dir, creating the directory if needed. It locks the directory
// against other processes (a second Driver on the same Dir fails with EUNAVAILABLE) and removes
// temporary files left by creates that crashed. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Driver, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("file driver: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("file driver: create dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("file driver: open lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, basalt.Errorf(basalt.EUNAVAILABLE, "file driver: directory %s is in use by another driver.", dir)
		}
		return nil, fmt.Errorf("file driver: lock %s: %w", dir, err)
	}
	d := &Driver{cfg: cfg, logger: logger.With("driver", "file"), lock: lock}
	if err := d.removeTemps(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the directory lock. The Driver must not be used afterwards.
func (d *Driver) Close() error {
	return d.lock.Close() // closing the descriptor releases the flock
}

// removeTemps deletes the temporary files of creates that did not finish.
func (d *Driver) removeTemps() error {
	entries, err := os.ReadDir(d.cfg.Dir)
	if err != nil {
		return fmt.Errorf("file driver: read dir: %w", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if err := os.Remove(filepath.Join(d.cfg.Dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file driver: remove leftover %s: %w", e.Name(), err)
		}
		d.logger.Warn("removed leftover of an unfinished create", "file", e.Name())
	}
	return nil
}

// Path returns the path of volume id's file, for exports. It returns EINVALID for an invalid id
// and ENOTFOUND when the volume does not exist. It is safe for concurrent use.
func (d *Driver) Path(id string) (string, error) {
	p, err := d.path(id)
	if err != nil {
		return "", err
	}
	if _, err := d.size(id, p); err != nil {
		return "", err
	}
	return p, nil
}

// path validates id and returns its volume file's path.
func (d *Driver) path(id string) (string, error) {
	if !validID.MatchString(id) {
		return "", basalt.Errorf(basalt.EINVALID, "Invalid volume id %+q: use 1 to 64 letters, digits, '-' or '_'.", id)
	}
	return filepath.Join(d.cfg.Dir, volumePrefix+id), nil
}

// size returns the size in GiB of the volume file at p, or ENOTFOUND.
func (d *Driver) size(id, p string) (int, error) {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, notFound(id)
	case err != nil:
		return 0, fmt.Errorf("stat volume %s: %w", id, err)
	case !fi.Mode().IsRegular():
		return 0, fmt.Errorf("stat volume %s: %s is not a regular file", id, p)
	case fi.Size()%gib != 0:
		return 0, fmt.Errorf("stat volume %s: file size %d is not a whole number of GiB", id, fi.Size())
	}
	return int(fi.Size() / gib), nil
}

func notFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", id)
}

// lockID locks the stripe of id and returns its unlock.
func (d *Driver) lockID(id string) (unlock func()) {
	h := fnv.New32a()
	h.Write([]byte(id))
	m := &d.locks[h.Sum32()%uint32(len(d.locks))]
	m.Lock()
	return m.Unlock
}

// checkSize returns EINVALID for a size below 1 GiB and EOVERLIMIT for one no file can have.
func checkSize(gb int) error {
	switch {
	case gb <= 0:
		return basalt.Errorf(basalt.EINVALID, "Invalid volume size %d: must be an integer (in GiB) greater than 0.", gb)
	case gb > maxSizeGB:
		return basalt.Errorf(basalt.EOVERLIMIT, "Requested volume size %d GiB is larger than a file can be.", gb)
	}
	return nil
}

// Capabilities reports the single pool: total and free capacity of the filesystem holding Dir
// (free as available to unprivileged users), rounded to 2 decimals; provisioned capacity and
// count of the volume files. It is safe for concurrent use and does not modify anything.
func (d *Driver) Capabilities(ctx context.Context) (basalt.BackendStats, error) {
	if err := ctx.Err(); err != nil {
		return basalt.BackendStats{}, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.cfg.Dir, &st); err != nil {
		return basalt.BackendStats{}, fmt.Errorf("capabilities: statfs %s: %w", d.cfg.Dir, err)
	}
	bsize := uint64(st.Bsize)
	entries, err := os.ReadDir(d.cfg.Dir)
	if err != nil {
		return basalt.BackendStats{}, fmt.Errorf("capabilities: read dir: %w", err)
	}
	var provisioned int64
	var count int
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), volumePrefix)
		if !ok || !validID.MatchString(id) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		} else if err != nil {
			return basalt.BackendStats{}, fmt.Errorf("capabilities: %w", err)
		}
		provisioned += fi.Size()
		count++
	}
	return basalt.BackendStats{
		VolumeBackendName: d.cfg.BackendName,
		VendorName:        VendorName,
		DriverVersion:     DriverVersion,
		StorageProtocol:   StorageProtocol,
		Pools: []basalt.PoolStats{{
			Name:                     d.cfg.Pool,
			TotalCapacityGB:          roundGB(float64(st.Blocks * bsize)),
			FreeCapacityGB:           roundGB(float64(st.Bavail * bsize)),
			ProvisionedCapacityGB:    float64(provisioned) / gib,
			ReservedPercentage:       d.cfg.ReservedPercentage,
			MaxOverSubscriptionRatio: d.cfg.MaxOverSubscriptionRatio,
			ThinProvisioningSupport:  true,
			ThickProvisioningSupport: false,
			TotalVolumes:             count,
		}},
	}, nil
}

// roundGB converts bytes to GiB rounded to 2 decimals.
func roundGB(bytes float64) float64 { return math.Round(bytes/gib*100) / 100 }

// CreateVolume creates v as a sparse file of v.SizeGB GiB. The file appears whole or not at all:
// it is made under a temporary name, sized, synced and renamed into place. Creating a volume that
// exists with the same size returns nil; with another size, ECONFLICT. It returns EINVALID for a
// bad id, size or pool, EOVERLIMIT for a size the filesystem cannot hold, and ctx.Err() if ctx
// is done before it starts. It is safe for concurrent use.
func (d *Driver) CreateVolume(ctx context.Context, v basalt.VolumeSpec) error {
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
	defer d.lockID(v.ID)()

	switch have, err := d.size(v.ID, p); {
	case err == nil && have == v.SizeGB:
		return nil
	case err == nil:
		return basalt.Errorf(basalt.ECONFLICT, "Volume %s exists with size %d GiB, not %d GiB.", v.ID, have, v.SizeGB)
	case basalt.ErrorCode(err) != basalt.ENOTFOUND:
		return fmt.Errorf("create volume: %w", err)
	}

	f, err := os.CreateTemp(d.cfg.Dir, tempPrefix+v.ID+"-*")
	if err != nil {
		return fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	tmp := f.Name()
	if err := fill(f, int64(v.SizeGB)*gib); err != nil {
		os.Remove(tmp)
		if errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EINVAL) {
			return basalt.Errorf(basalt.EOVERLIMIT, "Requested volume size %d GiB is larger than the filesystem allows for a file.", v.SizeGB)
		}
		return fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	if err := d.syncDir(); err != nil {
		return fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	d.logger.InfoContext(ctx, "volume created", "volume_id", v.ID, "size_gb", v.SizeGB)
	return nil
}

// fill sizes f to n bytes with a sparse truncate, syncs and closes it.
func fill(f *os.File, n int64) error {
	err := f.Truncate(n)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes renames and removals in Dir durable.
func (d *Driver) syncDir() error {
	dir, err := os.Open(d.cfg.Dir)
	if err != nil {
		return err
	}
	err = dir.Sync()
	if cerr := dir.Close(); err == nil {
		err = cerr
	}
	return err
}

// DeleteVolume removes volume id's file. Deleting a missing volume returns nil. It returns
// EINVALID for a bad id and ctx.Err() if ctx is done before it starts. It is safe for concurrent
// use.
func (d *Driver) DeleteVolume(ctx context.Context, id string) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockID(id)()
	switch err := os.Remove(p); {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	if err := d.syncDir(); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	d.logger.InfoContext(ctx, "volume deleted", "volume_id", id)
	return nil
}

// Stat returns volume id's spec. It returns EINVALID for a bad id and ENOTFOUND for a missing
// volume. It is safe for concurrent use.
func (d *Driver) Stat(ctx context.Context, id string) (basalt.VolumeSpec, error) {
	p, err := d.path(id)
	if err != nil {
		return basalt.VolumeSpec{}, err
	}
	if err := ctx.Err(); err != nil {
		return basalt.VolumeSpec{}, err
	}
	size, err := d.size(id, p)
	if err != nil {
		return basalt.VolumeSpec{}, err
	}
	return basalt.VolumeSpec{ID: id, SizeGB: size, Pool: d.cfg.Pool}, nil
}

// ExtendVolume grows volume id to newSizeGB GiB with a sparse truncate, keeping its data.
// Extending to the current size returns nil. It returns EINVALID for a bad id or a smaller size,
// ENOTFOUND for a missing volume, EOVERLIMIT for a size the filesystem cannot hold, and ctx.Err()
// if ctx is done before it starts. It is safe for concurrent use.
func (d *Driver) ExtendVolume(ctx context.Context, id string, newSizeGB int) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockID(id)()
	have, err := d.size(id, p)
	switch {
	case err != nil:
		return err
	case newSizeGB == have:
		return nil
	case newSizeGB < have:
		return basalt.Errorf(basalt.EINVALID, "New size for extend must be greater than current size. (current: %d, extended: %d).", have, newSizeGB)
	case newSizeGB > maxSizeGB:
		return checkSize(newSizeGB)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("extend volume %s: %w", id, err)
	}
	if err := fill(f, int64(newSizeGB)*gib); err != nil {
		if errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EINVAL) {
			return basalt.Errorf(basalt.EOVERLIMIT, "Requested volume size %d GiB is larger than the filesystem allows for a file.", newSizeGB)
		}
		return fmt.Errorf("extend volume %s: %w", id, err)
	}
	d.logger.InfoContext(ctx, "volume extended", "volume_id", id, "old_size_gb", have, "size_gb", newSizeGB)
	return nil
}
