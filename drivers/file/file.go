// Package file is a storage driver that keeps each volume as a sparse file in one directory. It
// stores real bytes, so exports (nbdkit, qemu-io) can serve the files as block devices.
//
// A volume id maps to <Dir>/volume-<id>, a file of exactly the volume's size in GiB made with
// truncate, never by writing zeros: space is used only where data is written. The backend has
// one pool; capacity comes from the filesystem holding Dir.
//
// A snapshot id maps to <Dir>/snapshot-<id>, an independent copy of the volume's file, and
// <Dir>/snapshot-<id>.json, a sidecar naming the volume it was taken from. Snapshots and clones
// share extents with their source (reflink, FICLONE) where the filesystem can (btrfs, xfs with
// reflink=1), which is instant and takes no space until either file is written; elsewhere they
// are sparse copies that copy only the data ranges and leave holes as holes. See
// docs/drivers.md.
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

	volumePrefix   = "volume-"
	snapshotPrefix = "snapshot-"
	// sidecarSuffix ends the name of a snapshot's sidecar, snapshot-<id>.json. validID admits
	// no dot, so a sidecar's name is never that of a volume or a snapshot.
	sidecarSuffix = ".json"
	// tempPrefix starts the names of files being created; New removes any it finds.
	tempPrefix = ".creating-"
	lockName   = ".lock"
)

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
	// DisableReflink makes snapshots and clones sparse copies of the data even on a filesystem
	// that can share extents. Shared extents make a copy instant and free until either file is
	// written, but a damaged extent then damages every file that shares it. Default false:
	// reflink where the filesystem supports it.
	DisableReflink bool
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
	// reflink reports that New found the filesystem able to clone files (FICLONE) and
	// cfg.DisableReflink is false.
	reflink bool
	// copied counts the bytes that snapshots, clones and reverts copied (reflinks copy none).
	copied atomic.Int64
	// locks serialize mutations of one file name (striped by hash): create, extend and delete
	// of the same volume never interleave, and the source of a copy (a snapshot's volume, a
	// clone's source) is read-locked so that it does not change while it is copied. Distinct
	// volumes mostly proceed in parallel.
	locks [64]sync.RWMutex
}

var (
	_ drivers.Driver      = (*Driver)(nil)
	_ drivers.Extender    = (*Driver)(nil)
	_ drivers.Snapshotter = (*Driver)(nil)
	_ drivers.Cloner      = (*Driver)(nil)
	_ drivers.Reverter    = (*Driver)(nil)
	_ drivers.Accessor    = (*Driver)(nil)
)

// New returns a driver on cfg.Dir, creating the directory if needed. It locks the directory
// against other processes (a second Driver on the same Dir fails with EUNAVAILABLE), removes
// temporary files left by creates that crashed and sidecars of snapshots that never appeared,
// and tries to clone a small file to learn whether the filesystem supports reflink (logged, and
// reported as the capability "reflink"). A nil logger discards logs.
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
	if cfg.DisableReflink {
		d.logger.Info("reflink disabled: snapshots and clones are sparse copies", "dir", dir)
	} else if err := d.probeReflink(); err != nil {
		d.logger.Info("reflink unavailable: snapshots and clones are sparse copies", "dir", dir, "reason", err)
	} else {
		d.reflink = true
		d.logger.Info("reflink available: snapshots and clones share extents", "dir", dir)
	}
	return d, nil
}

// Close releases the directory lock. The Driver must not be used afterwards.
func (d *Driver) Close() error {
	return d.lock.Close() // closing the descriptor releases the flock
}

// removeTemps deletes the temporary files of creates that did not finish, and the sidecars of
// snapshots whose create did not finish or whose delete did not.
func (d *Driver) removeTemps() error {
	entries, err := os.ReadDir(d.cfg.Dir)
	if err != nil {
		return fmt.Errorf("file driver: read dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, tempPrefix) && !d.orphanSidecar(name) {
			continue
		}
		if err := os.Remove(filepath.Join(d.cfg.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file driver: remove leftover %s: %w", name, err)
		}
		d.logger.Warn("removed leftover of an unfinished create or delete", "file", name)
	}
	return nil
}

// orphanSidecar reports whether name is the sidecar of a snapshot whose file does not exist.
func (d *Driver) orphanSidecar(name string) bool {
	id, ok := strings.CutPrefix(name, snapshotPrefix)
	if !ok {
		return false
	}
	if id, ok = strings.CutSuffix(id, sidecarSuffix); !ok || !drivers.ValidID(id) {
		return false
	}
	_, err := os.Lstat(filepath.Join(d.cfg.Dir, snapshotPrefix+id))
	return errors.Is(err, fs.ErrNotExist)
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
	if err := drivers.CheckID("volume", id); err != nil {
		return "", err
	}
	return filepath.Join(d.cfg.Dir, volumePrefix+id), nil
}

// size returns the size in GiB of the volume file at p, or ENOTFOUND.
func (d *Driver) size(id, p string) (int, error) { return fileSize("Volume", id, p) }

// fileSize returns the size in GiB of the volume or snapshot file at p, or ENOTFOUND naming
// kind ("Volume" or "Snapshot") and id.
func fileSize(kind, id, p string) (int, error) {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, basalt.Errorf(basalt.ENOTFOUND, "%s %s could not be found.", kind, id)
	case err != nil:
		return 0, fmt.Errorf("stat %s %s: %w", strings.ToLower(kind), id, err)
	case !fi.Mode().IsRegular():
		return 0, fmt.Errorf("stat %s %s: %s is not a regular file", strings.ToLower(kind), id, p)
	case fi.Size()%gib != 0:
		return 0, fmt.Errorf("stat %s %s: file size %d is not a whole number of GiB", strings.ToLower(kind), id, fi.Size())
	}
	return int(fi.Size() / gib), nil
}

// lockFiles locks the stripes of the named files, exclusively for the names in write and shared
// for those in read, and returns the unlock. It takes the stripes in order and each once, so
// callers locking several names never deadlock; a stripe that any write name maps to is
// exclusive.
func (d *Driver) lockFiles(write []string, read ...string) (unlock func()) {
	type stripe struct {
		i         int
		exclusive bool
	}
	stripes := make([]stripe, 0, len(write)+len(read))
	add := func(name string, exclusive bool) {
		h := fnv.New32a()
		h.Write([]byte(name))
		stripes = append(stripes, stripe{int(h.Sum32() % uint32(len(d.locks))), exclusive})
	}
	for _, name := range write {
		add(name, true)
	}
	for _, name := range read {
		add(name, false)
	}
	// Sort by stripe, exclusive first, and keep the first of each stripe.
	slices.SortFunc(stripes, func(a, b stripe) int {
		if a.i != b.i {
			return a.i - b.i
		}
		if a.exclusive == b.exclusive {
			return 0
		}
		if a.exclusive {
			return -1
		}
		return 1
	})
	stripes = slices.CompactFunc(stripes, func(a, b stripe) bool { return a.i == b.i })
	for _, s := range stripes {
		if s.exclusive {
			d.locks[s.i].Lock()
		} else {
			d.locks[s.i].RLock()
		}
	}
	return func() {
		for _, s := range slices.Backward(stripes) {
			if s.exclusive {
				d.locks[s.i].Unlock()
			} else {
				d.locks[s.i].RUnlock()
			}
		}
	}
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
// (free as available to unprivileged users, so it counts the space snapshots use), rounded to 2
// decimals; provisioned capacity as the sizes of the volume and snapshot files together; the
// count of volume files (snapshots are not volumes); online_extend_support false, in the pool
// where Cinder's scheduler reads it; and "reflink": whether snapshots and clones share extents. It is safe for concurrent use and does not modify anything.
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
		id, isVolume := strings.CutPrefix(e.Name(), volumePrefix)
		if !isVolume {
			id, _ = strings.CutPrefix(e.Name(), snapshotPrefix)
		}
		if id == e.Name() || !drivers.ValidID(id) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		} else if err != nil {
			return basalt.BackendStats{}, fmt.Errorf("capabilities: %w", err)
		}
		provisioned += fi.Size()
		if isVolume {
			count++
		}
	}
	backend := basalt.Capabilities{
		"vendor_name":      VendorName,
		"driver_version":   DriverVersion,
		"storage_protocol": StorageProtocol,
	}
	if d.cfg.BackendName != "" {
		backend["volume_backend_name"] = d.cfg.BackendName
	}
	return basalt.BackendStats{Backend: backend, Pools: []basalt.Capabilities{{
		"pool_name":                   d.cfg.Pool,
		"total_capacity_gb":           roundGB(float64(st.Blocks * bsize)),
		"free_capacity_gb":            roundGB(float64(st.Bavail * bsize)),
		"provisioned_capacity_gb":     float64(provisioned) / gib,
		"reserved_percentage":         d.cfg.ReservedPercentage,
		"max_over_subscription_ratio": d.cfg.MaxOverSubscriptionRatio,
		"thin_provisioning_support":   true,
		"thick_provisioning_support":  false,
		"total_volumes":               count,
		"multiattach":                 false,
		"QoS_support":                 false,
		"online_extend_support":       false,
		"backend_state":               "up",
		"reflink":                     d.reflink,
	}}}, nil
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
	defer d.lockFiles([]string{volumePrefix + v.ID})()

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

// DeleteVolume removes volume id's file. Deleting a missing volume returns nil. The volume's
// snapshots are independent files and stay: they can still be cloned from or deleted (refusing
// to delete a volume that has snapshots is the control plane's policy, not the driver's). It
// returns EINVALID for a bad id and ctx.Err() if ctx is done before it starts. It is safe for
// concurrent use.
func (d *Driver) DeleteVolume(ctx context.Context, id string) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer d.lockFiles([]string{volumePrefix + id})()
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
	defer d.lockFiles([]string{volumePrefix + id})()
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

var _ drivers.Pather = (*Driver)(nil)
