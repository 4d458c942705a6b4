package export

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// errPortInUse reports that nbdkit could not bind its port.
var errPortInUse = errors.New("port in use")

// nbdServer runs one nbdkit process per NBD export. A process belongs to export id of this
// manager when its command line names the pidfile <StateDir>/nbd/<id>.pid: that is how a new
// agent finds the processes an earlier one started, and why a pid reused by another program
// is never mistaken for an export. Its methods are called with the Manager's lock held,
// except procs.
type nbdServer struct {
	cfg    Config
	logger *slog.Logger
	dir    string // <StateDir>/nbd: pidfiles and start logs
}

func newNBDServer(cfg Config, logger *slog.Logger) *nbdServer {
	return &nbdServer{cfg: cfg, logger: logger, dir: filepath.Join(cfg.StateDir, "nbd")}
}

func (n *nbdServer) pidfile(id string) string { return filepath.Join(n.dir, id+".pid") }
func (n *nbdServer) logfile(id string) string { return filepath.Join(n.dir, id+".log") }

// argv is the command line that serves s. nbdkit without -f forks into the background once it
// listens, writes its pidfile when ready and is then a child of init, so it outlives the
// agent and nothing here has to reap it. The file plugin writes through the page cache and
// turns NBD flush into fdatasync: written data is in the file at once, durable once flushed.
func (n *nbdServer) argv(s Spec) []string {
	a := []string{n.cfg.Nbdkit}
	if s.Mode == ModeRO {
		a = append(a, "-r")
	}
	return append(a, "--ipaddr", n.cfg.NBDAddress, "--port", strconv.Itoa(s.Port),
		"--pidfile", n.pidfile(s.ID), "file", "file="+s.Path)
}

// exportOf returns the export id that process p serves, "" when p is not one of this
// manager's.
func (n *nbdServer) exportOf(p proc) string {
	pf := p.arg("--pidfile")
	if filepath.Dir(pf) != n.dir {
		return ""
	}
	id, ok := strings.CutSuffix(filepath.Base(pf), ".pid")
	if !ok {
		return ""
	}
	return id
}

// procs returns the live nbdkit processes of this manager.
func (n *nbdServer) procs() ([]proc, error) {
	ps, err := listProcs("nbdkit")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ps, func(p proc) bool { return n.exportOf(p) == "" }), nil
}

// ensure makes exactly one nbdkit serve s: it keeps a live process with s's command line,
// stops any other process of s's export id (a changed address or mode), and starts one when
// none is left. ps are the manager's processes, read when nil.
func (n *nbdServer) ensure(ctx context.Context, ps []proc, s Spec) error {
	if ps == nil {
		var err error
		if ps, err = n.procs(); err != nil {
			return err
		}
	}
	want := n.argv(s)
	serving := false
	var stale []int
	for _, p := range ps {
		if n.exportOf(p) != s.ID {
			continue
		}
		if !serving && slices.Equal(p.argv[1:], want[1:]) && alive(p.pid) {
			serving = true
			continue
		}
		stale = append(stale, p.pid)
	}
	if len(stale) > 0 {
		n.logger.Warn("stopping nbdkit with another command line", "export_id", s.ID, "pids", stale)
		if err := terminate(ctx, stale, syscall.SIGTERM, stopGrace); err != nil {
			return fmt.Errorf("stop stale nbdkit of %s: %w", s.ID, err)
		}
	}
	if serving {
		return nil
	}
	return n.start(ctx, s)
}

// start starts nbdkit for s and waits until it has written its pidfile.
func (n *nbdServer) start(ctx context.Context, s Spec) error {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return fmt.Errorf("nbd state dir: %w", err)
	}
	pidfile, logfile := n.pidfile(s.ID), n.logfile(s.ID)
	if err := os.Remove(pidfile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale nbdkit pidfile: %w", err)
	}
	logf, err := os.OpenFile(logfile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("nbdkit log: %w", err)
	}
	argv := n.argv(s)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Dir, cmd.SysProcAttr = logf, logf, "/", detach()
	cmd.Env = daemonEnv()
	err = cmd.Run()
	logf.Close()
	if err != nil {
		msg := tail(logfile, 1024)
		if strings.Contains(msg, "Address already in use") {
			return fmt.Errorf("nbdkit on %s port %d: %w: %s", n.cfg.NBDAddress, s.Port, errPortInUse, msg)
		}
		return fmt.Errorf("start nbdkit: %w: %s", err, msg)
	}
	var pid int
	err = poll(ctx, n.cfg.StartTimeout, func() (bool, error) {
		var err error
		if pid, err = readPIDFile(pidfile); err != nil {
			return false, err
		}
		if p, ok := readProc(pid); ok && slices.Equal(p.argv[1:], argv[1:]) {
			return true, nil
		}
		ps, err := n.procs()
		if err == nil && !slices.ContainsFunc(ps, func(p proc) bool { return n.exportOf(p) == s.ID }) {
			err = fmt.Errorf("nbdkit exited at start: %s", tail(logfile, 1024))
		}
		return false, err
	}, func() error {
		return fmt.Errorf("nbdkit wrote no pidfile within %v: %s", n.cfg.StartTimeout, tail(logfile, 1024))
	})
	if err != nil {
		return err
	}
	n.logger.Info("nbdkit started", "export_id", s.ID, "volume_id", s.VolumeID, "port", s.Port, "pid", pid, "read_only", s.Mode == ModeRO)
	return nil
}

// remove stops the nbdkit of export id and deletes its files. ps are the manager's
// processes, read when nil.
func (n *nbdServer) remove(ctx context.Context, ps []proc, id string) error {
	if ps == nil {
		var err error
		if ps, err = n.procs(); err != nil {
			return err
		}
	}
	var mine []int
	for _, p := range ps {
		if n.exportOf(p) == id {
			mine = append(mine, p.pid)
		}
	}
	if err := terminate(ctx, mine, syscall.SIGTERM, stopGrace); err != nil {
		return fmt.Errorf("stop nbdkit of %s: %w", id, err)
	}
	if len(mine) > 0 {
		n.logger.Info("nbdkit stopped", "export_id", id, "pids", mine)
	}
	for _, p := range []string{n.pidfile(id), n.logfile(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	return nil
}

// reconcile makes the nbdkit processes match specs, the NBD specs of the manager: each served
// by one live process, and no process or file for another export id.
func (n *nbdServer) reconcile(ctx context.Context, specs []Spec) error {
	ps, err := n.procs()
	if err != nil {
		return err
	}
	want := map[string]bool{}
	var errs []error
	for _, s := range specs {
		want[s.ID] = true
		if err := n.ensure(ctx, ps, s); err != nil {
			errs = append(errs, fmt.Errorf("export %s: %w", s.ID, err))
		}
	}
	strays := map[string]bool{}
	for _, p := range ps {
		if id := n.exportOf(p); !want[id] {
			strays[id] = true
		}
	}
	if ents, err := os.ReadDir(n.dir); err == nil {
		for _, e := range ents {
			id := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".pid"), ".log")
			if !want[id] {
				strays[id] = true
			}
		}
	}
	for id := range strays {
		n.logger.Warn("removing nbdkit without export", "export_id", id)
		errs = append(errs, n.remove(ctx, ps, id))
	}
	return errors.Join(errs...)
}

// stopAll stops every nbdkit process of the manager; their pidfiles and logs are kept until
// the exports are removed.
func (n *nbdServer) stopAll(ctx context.Context) error {
	ps, err := n.procs()
	if err != nil {
		return err
	}
	if err := terminate(ctx, pids(ps), syscall.SIGTERM, stopGrace); err != nil {
		return fmt.Errorf("stop nbdkit: %w", err)
	}
	if len(ps) > 0 {
		n.logger.Info("nbdkit stopped", "pids", pids(ps))
	}
	return nil
}
