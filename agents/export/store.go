package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// store persists specs as <StateDir>/exports/<id>.json, each written whole (temporary file,
// fsync, rename, fsync of the directory) so that a crash leaves the old spec or the new one,
// never a torn one. The files hold CHAP secrets: they are readable by their owner only.
type store struct {
	dir  string   // <StateDir>/exports
	lock *os.File // holds the flock on <StateDir>/.lock
}

const (
	exportsDir = "exports"
	lockFile   = ".lock"
	specSuffix = ".json"
	tempPrefix = ".tmp-"
)

// openStore creates stateDir and its exports directory and takes stateDir's lock.
func openStore(stateDir string) (*store, error) {
	dir := filepath.Join(stateDir, exportsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("export state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(stateDir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("export state dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, basalt.Errorf(basalt.ECONFLICT, "Export state dir %s is used by another export manager.", stateDir)
		}
		return nil, fmt.Errorf("lock export state dir %s: %w", stateDir, err)
	}
	return &store{dir: dir, lock: f}, nil
}

// close releases the lock.
func (s *store) close() error { return s.lock.Close() }

func (s *store) path(id string) string { return filepath.Join(s.dir, id+specSuffix) }

// load reads every spec, removing temporary files a crash left behind.
func (s *store) load() (map[string]Spec, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read export specs: %w", err)
	}
	specs := map[string]Spec{}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("remove %s: %w", name, err)
			}
			continue
		}
		id, ok := strings.CutSuffix(name, specSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("read export spec: %w", err)
		}
		var sp Spec
		if err := json.Unmarshal(b, &sp); err != nil {
			return nil, fmt.Errorf("export spec %s: %w", filepath.Join(s.dir, name), err)
		}
		if sp.ID != id || !drivers.ValidID(sp.ID) || !drivers.ValidID(sp.VolumeID) {
			return nil, fmt.Errorf("export spec %s: id %q or volume id %q is invalid", filepath.Join(s.dir, name), sp.ID, sp.VolumeID)
		}
		specs[id] = sp
	}
	return specs, nil
}

// write persists sp durably.
func (s *store) write(sp Spec) error {
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return fmt.Errorf("encode export spec %s: %w", sp.ID, err)
	}
	f, err := os.CreateTemp(s.dir, tempPrefix+sp.ID+"-*")
	if err != nil {
		return fmt.Errorf("persist export spec %s: %w", sp.ID, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path(sp.ID))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("persist export spec %s: %w", sp.ID, err)
	}
	return nil
}

// remove deletes spec id durably; a missing spec is not an error.
func (s *store) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove export spec %s: %w", id, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("remove export spec %s: %w", id, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
