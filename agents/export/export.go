// Package export serves volumes to remote initiators and produces the connection_info that
// OpenStack's os-brick reads to attach them. A storage driver hands over the local path of a
// volume's bytes (the file driver's sparse file); a Manager exports it over one protocol chosen
// per backend: iSCSI through tgt (a user-space tgtd) or NBD through nbdkit.
//
// # Design
//
// Every export is a Spec: an export id (an attachment id, or a legacy connection id), a volume,
// a path, a mode ("rw" or "ro") and the connector's initiator. The Manager persists each Spec
// as one JSON file in its state directory before it touches a target, with the values it
// chose on first export (the target IQN, the CHAP credentials, the NBD port). The persisted
// specs are the truth; the targets are derived from them. Reconcile makes the targets match the
// specs: it re-creates what is missing, with the same IQN, credentials and port, and removes
// what no spec names. This is Cinder's ensure_export on restart, and Start runs it.
//
// The target daemons are detached from the agent (their own session, reparented to init), so
// stopping or killing the agent leaves exports running and attached consumers keep working. A
// new agent finds them again: tgtd by its control port, nbdkit processes by the pidfile path in
// their command line. After a reboot (or a SIGKILL of the daemons) Start brings every export
// back.
//
// iSCSI: each volume has up to two targets, one per mode. The read-write exports of a volume
// share <IQNPrefix>volume-<volume_id>; the read-only ones share
// <IQNPrefix>volume-<volume_id>-ro, whose LUN 1 is read-only, so a read-only attachment of a
// multiattach volume cannot write while a read-write one can. LUN 1 of each is the volume's
// file (backing store rdwr). Logins are limited twice: by an ACL per export naming the
// connector's initiator (never ALL), and by CHAP with one incoming account per volume
// (volume-<volume_id>-<random tag>, a random 20-character secret), bound to both targets. tgt
// admits no initiator to a target without an ACL, but admits one without CHAP to a target
// with an ACL and no account; so a target is built in order (target, LUN, read-only flag,
// account, then ACLs) and torn down in reverse, and no half-built target is ever open.
//
// NBD: each export is one nbdkit process (file plugin, -r for read-only) on a port of its own,
// chosen on first export and kept. nbdkit serves writes through the page cache and honours
// NBD flush with fdatasync, so data is in the file as soon as it is written and durable once
// the client flushes (qemu flushes on close). NBD has no authentication here: NBDAddress must
// be reachable only by trusted initiators.
//
// A Manager owns its state directory (an exclusive lock, released by Close) and, for iSCSI, the
// tgtd on its control port: run one Manager per backend, each with its own StateDir and
// ControlPort (and Portal), and the managers never touch each other's targets.
package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
)

// Protocols and modes.
const (
	ProtocolISCSI = "iscsi"
	ProtocolNBD   = "nbd"

	ModeRW = "rw"
	ModeRO = "ro"
)

// Config configures a Manager.
type Config struct {
	// Protocol is "iscsi" or "nbd". Required.
	Protocol string
	// StateDir is where the manager persists its export specs (one JSON file per export under
	// exports/), the pidfiles and logs of the daemons it starts. Required; created if missing.
	StateDir string

	// Portal is the ip:port that tgtd listens on and that connection_info advertises.
	// Default "127.0.0.1:3260".
	Portal string
	// ControlPort is tgtd's management port (tgtd -C, tgtadm -C; the socket is
	// /var/run/tgtd/socket.<port>), so that several managers on one machine each have a tgtd
	// of their own. tgtd takes [0, 32767]. Default 0.
	ControlPort int
	// IQNPrefix starts every target name. Default "iqn.2010-10.org.openstack:".
	IQNPrefix string

	// NBDAddress is the IP address nbdkit listens on and connection_info advertises.
	// Default "127.0.0.1".
	NBDAddress string

	// Tgtadm, Tgtd and Nbdkit are the binaries; defaults are found in PATH, then /usr/sbin.
	Tgtadm string
	Tgtd   string
	Nbdkit string

	// StartTimeout bounds the wait for a daemon the manager started to answer. Default 10s.
	StartTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		if abs, err := filepath.Abs(c.StateDir); err == nil {
			c.StateDir = abs
		}
	}
	if c.StateDir != "" {
		c.StateDir = filepath.Clean(c.StateDir)
	}
	if c.Portal == "" {
		c.Portal = "127.0.0.1:3260"
	}
	if c.IQNPrefix == "" {
		c.IQNPrefix = "iqn.2010-10.org.openstack:"
	}
	if c.NBDAddress == "" {
		c.NBDAddress = "127.0.0.1"
	}
	if c.Tgtadm == "" {
		c.Tgtadm = lookBinary("tgtadm")
	}
	if c.Tgtd == "" {
		c.Tgtd = lookBinary("tgtd")
	}
	if c.Nbdkit == "" {
		c.Nbdkit = lookBinary("nbdkit")
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 10 * time.Second
	}
}

// lookBinary returns name's path in PATH, else /usr/sbin/name (tgt's binaries live there, and
// /usr/sbin is not in every PATH), else /usr/bin/name.
func lookBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	return name
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Validate reports the first problem with c as an EINVALID error. New calls it after filling
// defaults.
func (c Config) Validate() error {
	switch {
	case c.Protocol != ProtocolISCSI && c.Protocol != ProtocolNBD:
		return basalt.Errorf(basalt.EINVALID, "export: protocol %q is not \"iscsi\" or \"nbd\".", c.Protocol)
	case c.StateDir == "" || !filepath.IsAbs(c.StateDir):
		return basalt.Errorf(basalt.EINVALID, "export: state_dir %q must be an absolute path.", c.StateDir)
	case c.StartTimeout < 0:
		return basalt.Errorf(basalt.EINVALID, "export: start_timeout %v is negative.", c.StartTimeout)
	}
	if c.Protocol == ProtocolISCSI {
		host, port, err := net.SplitHostPort(c.Portal)
		switch {
		case err != nil || net.ParseIP(host) == nil || !validPort(port):
			return basalt.Errorf(basalt.EINVALID, "export: portal %q must be ip:port.", c.Portal)
		case c.ControlPort < 0 || c.ControlPort > maxControlPort:
			return basalt.Errorf(basalt.EINVALID, "export: control_port %d is not within [0, %d].", c.ControlPort, maxControlPort)
		case !validIQN.MatchString(c.IQNPrefix + "volume-x"):
			return basalt.Errorf(basalt.EINVALID, "export: iqn_prefix %q must start with \"iqn.\", \"eui.\" or \"naa.\" and hold no space or comma.", c.IQNPrefix)
		}
	}
	if c.Protocol == ProtocolNBD && net.ParseIP(c.NBDAddress) == nil {
		return basalt.Errorf(basalt.EINVALID, "export: nbd_address %q must be an IP address.", c.NBDAddress)
	}
	return nil
}

// maxControlPort is the largest control port tgtd accepts.
const maxControlPort = 32767

// validPort reports whether s is a TCP port number in [1, 65535], written plainly.
func validPort(s string) bool {
	var p int
	_, err := fmt.Sscanf(s, "%d", &p)
	return err == nil && fmt.Sprint(p) == s && p > 0 && p <= 65535
}

// validIQN admits iSCSI names (iqn., eui., naa.) of at most 223 bytes without spaces, commas or
// control characters, which tgtadm and tgt's show output could not carry.
var validIQN = regexp.MustCompile(`^(iqn|eui|naa)\.[^\s,\x00-\x1f\x7f]{1,219}$`)

// Spec is one export, as persisted. The caller sets ID, VolumeID, Path, Mode and Initiator; the
// manager fills in the rest on first export and keeps them for every re-export, so a client
// reconnecting after a crash finds the same target, credentials and port.
type Spec struct {
	// ID is the export id: an attachment id, or a legacy connection id (1 to 64 of
	// [A-Za-z0-9_-]).
	ID string `json:"id"`
	// VolumeID is the volume exported (same rule as ID).
	VolumeID string `json:"volume_id"`
	// Path is the absolute local path of the volume's bytes (a file or block device).
	Path string `json:"path"`
	// Mode is "rw" or "ro"; "" means "rw".
	Mode string `json:"mode"`
	// Initiator is the connector's initiator IQN, the only initiator the iSCSI target admits
	// for this export. Required for iSCSI; may be "" for NBD, where it is only recorded.
	Initiator string `json:"initiator,omitempty"`

	// Protocol is the manager's protocol when the export was made.
	Protocol string `json:"protocol"`
	// TargetIQN is the iSCSI target (shared by the volume's exports of the same mode).
	TargetIQN string `json:"target_iqn,omitempty"`
	// CHAPUser and CHAPSecret are the volume's incoming CHAP account (shared by every iSCSI
	// export of the volume).
	CHAPUser   string `json:"chap_user,omitempty"`
	CHAPSecret string `json:"chap_secret,omitempty"`
	// Port is the NBD export's TCP port.
	Port int `json:"port,omitempty"`
}

// same reports whether s and o ask for the same export (the caller's fields).
func (s Spec) same(o Spec) bool {
	return s.ID == o.ID && s.VolumeID == o.VolumeID && s.Path == o.Path && s.Mode == o.Mode && s.Initiator == o.Initiator
}

// request returns the caller's fields of s, the rest zero.
func (s Spec) request() Spec {
	return Spec{ID: s.ID, VolumeID: s.VolumeID, Path: s.Path, Mode: s.Mode, Initiator: s.Initiator}
}

// ConnectionInfo is what os-brick reads to attach an export: {"driver_volume_type": "iscsi" or
// "nbd", "data": {...}}, in JSON exactly Cinder's connection_info.
type ConnectionInfo struct {
	DriverVolumeType string         `json:"driver_volume_type"`
	Data             map[string]any `json:"data"`
}

// Inventory counts what really exists on the targets: the targets, LUNs (LUN 0, tgt's
// controller, not counted) and CHAP accounts of the manager's tgtd, and the live nbdkit
// processes of the manager.
type Inventory struct {
	Targets      int
	LUNs         int
	Accounts     int
	NBDProcesses int
}

// Manager exports volumes over one protocol. It is safe for concurrent use: every operation
// holds one lock (tgtadm calls and process starts take milliseconds), so operations on the
// same or different volumes never interleave.
type Manager struct {
	cfg    Config
	logger *slog.Logger
	store  *store
	iscsi  *tgt       // non-nil for ProtocolISCSI
	nbd    *nbdServer // always set: Stop and Inventory look for nbdkit processes too

	mu     sync.Mutex
	specs  map[string]Spec // the persisted specs, by export id
	closed bool
}

// New validates cfg, creates the state directory, takes its lock and loads the persisted
// specs. It starts nothing: call Start. Errors: EINVALID for a bad cfg, ECONFLICT when another
// Manager holds the state directory, and I/O errors.
func New(cfg Config, logger *slog.Logger) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("protocol", cfg.Protocol)
	st, err := openStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	specs, err := st.load()
	if err != nil {
		st.close()
		return nil, err
	}
	m := &Manager{
		cfg:    cfg,
		logger: logger,
		store:  st,
		specs:  specs,
		nbd:    newNBDServer(cfg, logger),
	}
	if cfg.Protocol == ProtocolISCSI {
		m.iscsi = newTgt(cfg, logger)
	}
	return m, nil
}

// Start makes the target daemon available and then calls Reconcile. For iSCSI, when no tgtd
// answers on ControlPort it starts one, detached (its own session, pidfile in StateDir) so
// that it outlives the agent, and waits until tgtadm answers and the portal is the configured
// one. NBD needs no daemon. Start is idempotent. Errors are those of Reconcile, or
// EUNAVAILABLE when tgtd cannot be started or listens elsewhere than Portal.
func (m *Manager) Start(ctx context.Context) error {
	return m.Reconcile(ctx)
}

// Export creates export spec, or confirms it when it exists, and returns its connection info.
// The spec is persisted before the target is touched, so an export interrupted by a crash is
// completed by Reconcile. Exporting an id that exists with the same volume, path, mode and
// initiator returns the same connection info and re-creates whatever of it is missing; with
// other values it is ECONFLICT. Other errors: EINVALID for a bad spec, ECONFLICT when the
// export was made by a manager of another protocol, and tgtadm or nbdkit failures (the spec
// then stays persisted: retry Export, or Unexport).
func (m *Manager) Export(ctx context.Context, spec Spec) (ConnectionInfo, error) {
	req, err := m.normalize(spec)
	if err != nil {
		return ConnectionInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ConnectionInfo{}, errClosed
	}
	s, ok := m.specs[req.ID]
	switch {
	case ok && !s.same(req):
		return ConnectionInfo{}, basalt.Errorf(basalt.ECONFLICT, "Export %s exists for volume %s (%s, %s, initiator %q).", s.ID, s.VolumeID, s.Path, s.Mode, s.Initiator)
	case ok && s.Protocol != m.cfg.Protocol:
		return ConnectionInfo{}, basalt.Errorf(basalt.ECONFLICT, "Export %s was made over %s, not %s.", s.ID, s.Protocol, m.cfg.Protocol)
	case !ok:
		s = req
		s.Protocol = m.cfg.Protocol
		if err := m.prepare(&s); err != nil {
			return ConnectionInfo{}, err
		}
		if err := m.save(s); err != nil {
			return ConnectionInfo{}, err
		}
	}
	log := m.logger.With("export_id", s.ID, "volume_id", s.VolumeID, "mode", s.Mode)
	switch m.cfg.Protocol {
	case ProtocolISCSI:
		err = m.iscsi.syncVolume(ctx, nil, s.VolumeID, m.volumeSpecs(s.VolumeID))
	case ProtocolNBD:
		err = m.nbd.ensure(ctx, nil, s)
		// A new export's port was free when chosen but may have been taken since: choose
		// another, which no client knows yet.
		for try := 0; !ok && errors.Is(err, errPortInUse) && try < 3; try++ {
			log.Warn("nbd port taken, choosing another", "port", s.Port)
			if err = m.prepare(&s); err == nil {
				if err = m.save(s); err == nil {
					err = m.nbd.ensure(ctx, nil, s)
				}
			}
		}
	}
	if err != nil {
		return ConnectionInfo{}, fmt.Errorf("export %s of volume %s: %w", s.ID, s.VolumeID, err)
	}
	if !ok && s.Protocol == ProtocolISCSI {
		log.Info("exported", "target_iqn", s.TargetIQN, "initiator", s.Initiator)
	} else if !ok {
		log.Info("exported", "port", s.Port)
	}
	return m.connectionInfo(s), nil
}

// Unexport removes export id and then its persisted spec; removing a missing export returns
// nil. For iSCSI it unbinds the export's initiator (unless another export of the same target
// has the same one); when the last export of a target goes, the target goes, and when the last
// export of the volume goes, the volume's CHAP account goes. For NBD it stops the export's
// nbdkit. Errors are tgtadm or process failures; the spec then stays, so a retry finishes.
func (m *Manager) Unexport(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	return m.unexport(ctx, id)
}

func (m *Manager) unexport(ctx context.Context, id string) error {
	s, ok := m.specs[id]
	if !ok {
		return nil
	}
	var err error
	switch s.Protocol {
	case ProtocolISCSI:
		if m.iscsi == nil {
			return basalt.Errorf(basalt.ECONFLICT, "Export %s was made over iscsi, not %s.", s.ID, m.cfg.Protocol)
		}
		rest := slices.DeleteFunc(m.volumeSpecs(s.VolumeID), func(o Spec) bool { return o.ID == id })
		err = m.iscsi.syncVolume(ctx, nil, s.VolumeID, rest)
	case ProtocolNBD:
		err = m.nbd.remove(ctx, nil, id)
	}
	if err != nil {
		return fmt.Errorf("unexport %s of volume %s: %w", id, s.VolumeID, err)
	}
	if err := m.store.remove(id); err != nil {
		return err
	}
	delete(m.specs, id)
	m.logger.Info("unexported", "export_id", id, "volume_id", s.VolumeID)
	return nil
}

// UnexportVolume removes every export of volumeID, as Unexport does; it is called before the
// volume is deleted. A volume without exports returns nil. It tries every export and returns
// the errors joined.
func (m *Manager) UnexportVolume(ctx context.Context, volumeID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	var errs []error
	for _, s := range m.volumeSpecs(volumeID) {
		errs = append(errs, m.unexport(ctx, s.ID))
	}
	return errors.Join(errs...)
}

// Reconcile makes the real targets match the persisted specs (Cinder's ensure_export): it
// starts tgtd when none answers (iSCSI), re-creates every missing or damaged target, LUN, CHAP
// account, ACL and nbdkit process, with the same IQN, credentials and port, and removes every
// target, account and nbdkit process of this manager that no spec names. An nbdkit is found
// by its pidfile path in its command line, so a dead one is restarted even when its pid now
// belongs to another program, which is left alone. Targets and accounts are this manager's
// when named <IQNPrefix>volume-... and volume-...; other ones on a shared tgtd are not touched.
// NBD exports made before the manager was switched to iSCSI stay served until unexported;
// iSCSI exports left under an NBD manager are logged and left alone. Reconcile is idempotent;
// it tries every export and returns the errors joined (EUNAVAILABLE when tgtd cannot run).
func (m *Manager) Reconcile(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	var iscsiSpecs, nbdSpecs []Spec
	for _, id := range slices.Sorted(maps.Keys(m.specs)) {
		switch s := m.specs[id]; s.Protocol {
		case ProtocolISCSI:
			iscsiSpecs = append(iscsiSpecs, s)
		case ProtocolNBD:
			nbdSpecs = append(nbdSpecs, s)
		}
	}
	var err error
	switch m.cfg.Protocol {
	case ProtocolISCSI:
		if err = m.iscsi.ensureDaemon(ctx); err == nil {
			err = m.iscsi.reconcile(ctx, iscsiSpecs)
		}
	case ProtocolNBD:
		for _, s := range iscsiSpecs {
			m.logger.Warn("iscsi export left alone by an nbd manager", "export_id", s.ID, "volume_id", s.VolumeID)
		}
	}
	// NBD exports need no daemon: they are served whatever the manager's protocol, so those
	// made before a switch to iSCSI keep working until they are unexported.
	err = errors.Join(err, m.nbd.reconcile(ctx, nbdSpecs))
	if err != nil {
		return fmt.Errorf("reconcile exports: %w", err)
	}
	return nil
}

// Inventory counts what really exists: the targets, LUNs and accounts that `tgtadm --op show`
// lists (iSCSI managers only) and the live nbdkit processes of this manager. Tests use it to
// check that nothing leaks. Errors are tgtadm failures (for iSCSI, tgtd must be running).
func (m *Manager) Inventory(ctx context.Context) (Inventory, error) {
	var inv Inventory
	if m.iscsi != nil {
		st, err := m.iscsi.show(ctx)
		if err != nil {
			return Inventory{}, fmt.Errorf("inventory: %w", err)
		}
		inv.Targets = len(st.targets)
		inv.Accounts = len(st.accounts)
		for _, t := range st.targets {
			for lun := range t.luns {
				if lun != 0 {
					inv.LUNs++
				}
			}
		}
	}
	ps, err := m.nbd.procs()
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	inv.NBDProcesses = len(ps)
	return inv, nil
}

// Specs returns the persisted specs, sorted by export id.
func (m *Manager) Specs() []Spec {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Spec, 0, len(m.specs))
	for _, id := range slices.Sorted(maps.Keys(m.specs)) {
		out = append(out, m.specs[id])
	}
	return out
}

// Stop stops everything this manager started: every nbdkit process of the manager, and the
// tgtd it started (after removing its targets); from a tgtd it did not start, it removes the
// targets and accounts its specs name. The specs stay persisted, so a later Start serves the
// exports again. Stop is for tests and for `basalt local` shutdown: an agent that stops
// normally leaves exports running so that attached consumers keep working. Stop is
// idempotent; it returns the errors of every step joined.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if m.iscsi != nil {
		err = m.iscsi.stop(ctx, slices.Collect(maps.Values(m.specs)))
	}
	err = errors.Join(err, m.nbd.stopAll(ctx))
	if err != nil {
		return fmt.Errorf("stop exports: %w", err)
	}
	m.logger.Info("stopped")
	return nil
}

// Close releases the state directory's lock, leaving exports and daemons running (what an
// agent's exit does). Export, Unexport, UnexportVolume, Reconcile and Start then return an
// error; Stop, Inventory and Specs still work. Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.store.close()
}

var errClosed = errors.New("export manager is closed")

// normalize validates the caller's fields of spec and returns them in canonical form.
func (m *Manager) normalize(spec Spec) (Spec, error) {
	s := spec.request()
	if s.Mode == "" {
		s.Mode = ModeRW
	}
	if err := drivers.CheckID("export", s.ID); err != nil {
		return Spec{}, err
	}
	if err := drivers.CheckID("volume", s.VolumeID); err != nil {
		return Spec{}, err
	}
	switch {
	case s.Mode != ModeRW && s.Mode != ModeRO:
		return Spec{}, basalt.Errorf(basalt.EINVALID, "Invalid access mode %q: use \"rw\" or \"ro\".", s.Mode)
	case !filepath.IsAbs(s.Path) || strings.ContainsAny(s.Path, ",\n\r\t\x00"):
		return Spec{}, basalt.Errorf(basalt.EINVALID, "Invalid path %q: it must be absolute, without commas or control characters.", s.Path)
	case m.cfg.Protocol == ProtocolISCSI && !validIQN.MatchString(s.Initiator):
		return Spec{}, basalt.Errorf(basalt.EINVALID, "Invalid initiator %q: an iSCSI export needs the connector's initiator name (iqn., eui. or naa.).", s.Initiator)
	case s.Initiator != "" && !validIQN.MatchString(s.Initiator):
		return Spec{}, basalt.Errorf(basalt.EINVALID, "Invalid initiator %q.", s.Initiator)
	}
	s.Path = filepath.Clean(s.Path)
	st, err := os.Stat(s.Path)
	if err != nil {
		return Spec{}, basalt.Errorf(basalt.EINVALID, "Volume path %s cannot be exported: %v.", s.Path, err)
	}
	if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
		return Spec{}, basalt.Errorf(basalt.EINVALID, "Volume path %s is neither a file nor a block device.", s.Path)
	}
	return s, nil
}

// prepare fills the manager's fields of a new spec s.
func (m *Manager) prepare(s *Spec) error {
	for _, o := range m.volumeSpecs(s.VolumeID) {
		if o.Path != s.Path && o.ID != s.ID {
			return basalt.Errorf(basalt.ECONFLICT, "Volume %s is exported from %s by export %s, not from %s.", s.VolumeID, o.Path, o.ID, s.Path)
		}
	}
	switch m.cfg.Protocol {
	case ProtocolISCSI:
		s.TargetIQN = m.iscsi.iqn(s.VolumeID, s.Mode)
		for _, o := range m.specs {
			if o.TargetIQN == s.TargetIQN && o.VolumeID != s.VolumeID {
				return basalt.Errorf(basalt.ECONFLICT, "Target %s of volume %s is already the target of volume %s.", s.TargetIQN, s.VolumeID, o.VolumeID)
			}
		}
		// One account per volume: the volume's other exports already have it.
		for _, o := range m.volumeSpecs(s.VolumeID) {
			if o.CHAPUser != "" && o.ID != s.ID {
				s.CHAPUser, s.CHAPSecret = o.CHAPUser, o.CHAPSecret
				return nil
			}
		}
		user, err := chapUser(s.VolumeID)
		if err != nil {
			return err
		}
		secret, err := randomSecret(chapSecretLen)
		if err != nil {
			return err
		}
		s.CHAPUser, s.CHAPSecret = user, secret
	case ProtocolNBD:
		used := map[int]bool{s.Port: true}
		for _, o := range m.specs {
			used[o.Port] = true
		}
		port, err := freePort(m.cfg.NBDAddress, used)
		if err != nil {
			return err
		}
		s.Port = port
	}
	return nil
}

// save persists s and records it.
func (m *Manager) save(s Spec) error {
	if err := m.store.write(s); err != nil {
		return err
	}
	m.specs[s.ID] = s
	return nil
}

// volumeSpecs returns the specs of volumeID, sorted by export id.
func (m *Manager) volumeSpecs(volumeID string) []Spec {
	var out []Spec
	for _, id := range slices.Sorted(maps.Keys(m.specs)) {
		if s := m.specs[id]; s.VolumeID == volumeID {
			out = append(out, s)
		}
	}
	return out
}

// connectionInfo returns os-brick's view of s.
func (m *Manager) connectionInfo(s Spec) ConnectionInfo {
	if s.Protocol == ProtocolNBD {
		hostPort := net.JoinHostPort(m.cfg.NBDAddress, fmt.Sprint(s.Port))
		return ConnectionInfo{DriverVolumeType: ProtocolNBD, Data: map[string]any{
			"host":        m.cfg.NBDAddress,
			"port":        s.Port,
			"export_name": "",
			"uri":         "nbd://" + hostPort,
			"volume_id":   s.VolumeID,
			"access_mode": s.Mode,
			"encrypted":   false,
		}}
	}
	return ConnectionInfo{DriverVolumeType: ProtocolISCSI, Data: map[string]any{
		"target_discovered": false,
		"target_iqn":        s.TargetIQN,
		"target_portal":     m.cfg.Portal,
		"target_lun":        1,
		"volume_id":         s.VolumeID,
		"auth_method":       "CHAP",
		"auth_username":     s.CHAPUser,
		"auth_password":     s.CHAPSecret,
		"access_mode":       s.Mode,
		"encrypted":         false,
	}}
}

// freePort returns a TCP port on addr that is free now and not in used.
func freePort(addr string, used map[int]bool) (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port on %s: %w", addr, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !used[port] {
			return port, nil
		}
	}
	return 0, fmt.Errorf("find a free port on %s: every port offered is taken by another export", addr)
}

// detach returns the process attributes of a daemon start: a session of its own, so that
// signals to the agent's process group (Ctrl-C, a service manager stopping the agent) do not
// reach it.
func detach() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// daemonEnv is the environment of tgtd and nbdkit: the agent's, with glibc's malloc told to
// keep freed buffers. Both daemons allocate a buffer per request; by default glibc returns its
// pages to the kernel on free, so every request faults them in again, which on a virtual
// machine costs more than moving the data (docs/benchmarks.md).
func daemonEnv() []string {
	return append(os.Environ(), "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824")
}
