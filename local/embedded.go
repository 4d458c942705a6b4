package local

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// saveInterval is how often the embedded Redis saves its snapshot: what a basalt local killed
// with SIGKILL (or a crash of the machine) can lose at most.
const saveInterval = time.Second

// embedded is basalt local's Redis when redis-server is not installed: miniredis, in this
// process. With a directory it starts from the snapshot there, saves a new one every second
// (or less often, see Run) and a last one on Close; without one it keeps nothing.
//
// A snapshot is one moment's dataset (see capture), so a restart after a kill resumes from a
// consistent earlier state, as a Redis restarted from an RDB file does: an operation the
// snapshot shows in flight is redelivered to its agent, whose drivers are idempotent, or ended
// by the reconciler at its deadline. A volume created after the last snapshot has a file and
// no record; the agents see it as a backend object no record owns.
type embedded struct {
	m      *miniredis.Miniredis
	rdb    *redis.Client // the snapshots' own connection
	dir    string
	path   string // the snapshot; "" keeps nothing
	logger *slog.Logger

	mu   sync.Mutex // serializes saves
	last [sha256.Size]byte
}

func startEmbedded(ctx context.Context, dir string, logger *slog.Logger) (*embedded, error) {
	m := miniredis.NewMiniRedis()
	// Keys expire on the wall clock, as in Redis. (Without this miniredis never expires a key,
	// and a snapshotted store would keep every idempotency record and reply forever.)
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start the embedded Redis: %w", err)
	}
	e := &embedded{m: m, dir: dir, logger: logger,
		rdb: redis.NewClient(&redis.Options{Addr: m.Addr(), ReadTimeout: time.Minute, WriteTimeout: time.Minute})}
	if dir == "" {
		return e, nil
	}
	e.path = filepath.Join(dir, snapshotName)
	if err := e.load(ctx); err != nil {
		e.rdb.Close()
		m.Close()
		return nil, err
	}
	return e, nil
}

// load restores the snapshot, if there is one, and removes the temporary files of a save that
// was cut short.
func (e *embedded) load(ctx context.Context) error {
	temps, _ := filepath.Glob(filepath.Join(e.dir, snapshotName+".tmp-*"))
	for _, t := range temps {
		_ = os.Remove(t)
	}
	f, err := os.Open(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		if hasAOF(e.dir) {
			return fmt.Errorf("%s holds the append-only files of a redis-server, and redis-server is not on the PATH: "+
				"install redis-server to go on with that state, or start fresh with `make clean` (rm -rf the data directory)", e.dir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := decodeSnapshot(f)
	if err != nil {
		return fmt.Errorf("%s: %w (move it away to start with an empty Redis)", e.path, err)
	}
	n, err := s.restore(ctx, e.rdb, time.Now())
	if err != nil {
		return fmt.Errorf("restore %s: %w", e.path, err)
	}
	e.logger.Info("embedded Redis: restored the snapshot", "path", e.path, "keys", n, "taken_at", s.TakenAt)
	return nil
}

func (e *embedded) URL() string { return "redis://" + e.m.Addr() + "/0" }

func (e *embedded) Note() string {
	if e.path == "" {
		return "embedded Redis-compatible server (miniredis) at " + e.m.Addr() +
			"; nothing is kept when basalt local stops"
	}
	return "embedded Redis-compatible server (miniredis) at " + e.m.Addr() + ", saved every second to " + e.path +
		" (install redis-server to have basalt local run a real Redis)"
}

// Run saves the snapshot every saveInterval until ctx ends. A copy holds miniredis' lock, so
// when copying a large dataset takes long, Run waits twenty times as long as the copy took,
// keeping the copies under 5% of the time.
func (e *embedded) Run(ctx context.Context) error {
	if e.path == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(saveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := time.Now()
		if err := e.save(ctx); err != nil && ctx.Err() == nil {
			e.logger.Error("embedded Redis: save the snapshot", "path", e.path, "err", err)
		}
		t.Reset(max(saveInterval, 20*time.Since(start)))
	}
}

// Close saves a last snapshot and stops miniredis.
func (e *embedded) Close() error {
	var err error
	if e.path != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = e.save(ctx)
		cancel()
	}
	e.rdb.Close()
	e.m.Close()
	return err
}

// save writes a snapshot unless the dataset is the one saved last. It replaces the file
// atomically: a save cut short leaves the previous snapshot.
func (e *embedded) save(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := capture(ctx, e.rdb, e.logger)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(s.content())
	if sum == e.last {
		return nil
	}
	if err := writeAtomic(e.path, s.encode); err != nil {
		return err
	}
	e.last = sum
	return nil
}

// writeAtomic writes path through a temporary file in its directory: written, synced, renamed
// over path, and the directory synced.
func writeAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := write(w); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
