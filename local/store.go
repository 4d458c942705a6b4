package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Store selects the Redis that Run starts for itself when Options.Process.RedisURL is empty.
type Store string

const (
	// StoreAuto (the default) is StoreRedisServer when redis-server is on the PATH, else
	// StoreEmbedded.
	StoreAuto Store = ""
	// StoreRedisServer runs redis-server as a child process on a free loopback port, with an
	// append-only file under DataDir/redis.
	StoreRedisServer Store = "redis-server"
	// StoreEmbedded runs miniredis in the process and snapshots it to
	// DataDir/redis/miniredis.snapshot every second and when Run returns.
	StoreEmbedded Store = "embedded"
	// StoreMemory runs miniredis in the process and keeps nothing (benchmarks, throwaway stacks).
	StoreMemory Store = "memory"
)

// Files under DataDir/redis.
const (
	storeDirName = "redis"
	lockName     = "lock"               // flock held by the basalt local that owns the directory
	snapshotName = "miniredis.snapshot" // StoreEmbedded's dataset
	pidName      = "redis-server.pid"   // StoreRedisServer's pidfile, written by redis-server
	logName      = "redis-server.log"
)

// aofNames are what redis-server's append-only persistence leaves in its dir: appendonlydir
// (Redis 7 and later) or appendonly.aof (before).
var aofNames = []string{"appendonlydir", "appendonly.aof"}

// A server is the Redis that basalt local started for itself. Run watches it until ctx ends
// (an embedded server also saves its snapshots there) and fails if it stops on its own; Close,
// called once after everything that uses the server has stopped, persists its dataset and stops
// it.
type server interface {
	URL() string
	// Note is the banner's line about the server.
	Note() string
	Run(ctx context.Context) error
	Close() error
}

// openStore starts the Redis that kind names, keeping its state under dataDir/redis. It holds
// an exclusive lock on that directory until Close, so two stacks never share one dataset; a
// second one gets an error at once.
func openStore(ctx context.Context, kind Store, dataDir string, logger *slog.Logger) (server, error) {
	if kind == StoreMemory {
		return startEmbedded(ctx, "", logger)
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, storeDirName))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	bin := ""
	switch kind {
	case StoreAuto:
		bin, _ = exec.LookPath("redis-server")
	case StoreRedisServer:
		if bin, err = exec.LookPath("redis-server"); err != nil {
			lock.Close()
			return nil, fmt.Errorf("redis-server is not on the PATH: %w", err)
		}
	case StoreEmbedded:
	default:
		lock.Close()
		return nil, fmt.Errorf("unknown store %q: want %q, %q, %q or %q", kind,
			StoreAuto, StoreRedisServer, StoreEmbedded, StoreMemory)
	}
	var s server
	if bin != "" {
		s, err = startRedisServer(ctx, bin, dir, logger)
	} else {
		s, err = startEmbedded(ctx, dir, logger)
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &locked{server: s, lock: lock}, nil
}

// lockDir takes an exclusive flock on dir's lock file. The kernel drops it when the process
// ends, however it ends, so a stale lock never blocks a restart.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the lock of %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another basalt local: stop it, or give this one another --data", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// locked is a server that releases the directory lock once it is closed.
type locked struct {
	server
	lock *os.File
}

func (l *locked) Close() error {
	err := l.server.Close()
	return errors.Join(err, l.lock.Close())
}

// hasAOF reports whether dir holds a redis-server's append-only files.
func hasAOF(dir string) bool {
	for _, n := range aofNames {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}
