package export

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/basalt-storage/basalt"
)

const (
	// volumePrefix starts every target name after IQNPrefix and every CHAP user name: the
	// targets and accounts that Reconcile may remove when no spec names them.
	volumePrefix = "volume-"
	roSuffix     = "-ro"
	// chapSecretLen is the length of CHAP secrets, letters and digits (about 119 bits).
	chapSecretLen = 20
	// chapTagLen is the length of the random tag that ends a CHAP user name.
	chapTagLen = 8
	// admTimeout bounds one tgtadm call.
	admTimeout = 15 * time.Second
	// stopGrace is how long a daemon asked to leave may take before it is killed.
	stopGrace = 3 * time.Second
	// tgtdSocketDir holds tgtd's management sockets, socket.<control port>; tgtd creates it.
	tgtdSocketDir = "/var/run/tgtd"
	// exitNotConnected is tgtadm's exit status when no tgtd listens on the control port
	// (ENOTCONN).
	exitNotConnected = 107
)

// tgt drives one tgtd through tgtadm. Its methods are called with the Manager's lock held.
type tgt struct {
	cfg     Config
	logger  *slog.Logger
	pidfile string // <StateDir>/tgtd.pid, also how the manager recognizes the tgtd it started
	logfile string // <StateDir>/tgtd.log: what tgtd prints before it daemonizes
}

func newTgt(cfg Config, logger *slog.Logger) *tgt {
	return &tgt{
		cfg:     cfg,
		logger:  logger.With("control_port", cfg.ControlPort),
		pidfile: filepath.Join(cfg.StateDir, "tgtd.pid"),
		logfile: filepath.Join(cfg.StateDir, "tgtd.log"),
	}
}

// iqn returns the target of volumeID's exports of mode.
func (t *tgt) iqn(volumeID, mode string) string {
	if mode == ModeRO {
		return t.cfg.IQNPrefix + volumePrefix + volumeID + roSuffix
	}
	return t.cfg.IQNPrefix + volumePrefix + volumeID
}

// chapUser returns a new CHAP user name for volumeID: the volume's name and a random tag. The
// tag makes each account a new one: tgtadm neither shows nor changes a secret, so an account of
// that name that exists is the one created with the persisted secret, and never one that an
// earlier export of the volume left behind with another.
func chapUser(volumeID string) (string, error) {
	tag, err := randomSecret(chapTagLen)
	if err != nil {
		return "", err
	}
	return volumePrefix + volumeID + "-" + strings.ToLower(tag), nil
}

// isChapUserOf reports whether a is a CHAP user name that chapUser made for volumeID.
func isChapUserOf(a, volumeID string) bool {
	tag, ok := strings.CutPrefix(a, volumePrefix+volumeID+"-")
	return ok && len(tag) == chapTagLen && strings.Trim(tag, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
}

const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomSecret returns n random letters and digits from crypto/rand.
func randomSecret(n int) (string, error) {
	b := make([]byte, n)
	max := big.NewInt(int64(len(secretAlphabet)))
	for i := range b {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", fmt.Errorf("random secret: %w", err)
		}
		b[i] = secretAlphabet[k.Int64()]
	}
	return string(b), nil
}

// admError is a failed tgtadm call, with its arguments (secrets hidden) and its message.
type admError struct {
	args   []string
	err    error
	stderr string
}

func (e *admError) Error() string {
	return fmt.Sprintf("tgtadm %s: %v: %s", strings.Join(e.args, " "), e.err, e.stderr)
}

func (e *admError) Unwrap() error { return e.err }

// notConnected reports whether err says that no tgtd answers on the control port.
func notConnected(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == exitNotConnected
}

// adm runs tgtadm on the manager's control port and returns its standard output.
func (t *tgt) adm(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, admTimeout)
	defer cancel()
	full := append([]string{"-C", strconv.Itoa(t.cfg.ControlPort), "--lld", "iscsi"}, args...)
	cmd := exec.CommandContext(ctx, t.cfg.Tgtadm, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		shown := slices.Clone(args)
		for i := range shown {
			if i > 0 && shown[i-1] == "--password" {
				shown[i] = "***"
			}
		}
		return "", &admError{args: shown, err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.String(), nil
}

// answers reports whether a tgtd answers on the control port.
func (t *tgt) answers(ctx context.Context) bool {
	_, err := t.adm(ctx, "--op", "show", "--mode", "system")
	return err == nil
}

// show reads the targets and accounts of the tgtd.
func (t *tgt) show(ctx context.Context) (*tgtState, error) {
	out, err := t.adm(ctx, "--op", "show", "--mode", "target")
	if err != nil {
		if notConnected(err) {
			return nil, basalt.Errorf(basalt.EUNAVAILABLE, "No tgtd answers on control port %d: %v", t.cfg.ControlPort, err)
		}
		return nil, err
	}
	targets, err := parseTargets(out)
	if err != nil {
		return nil, err
	}
	out, err = t.adm(ctx, "--op", "show", "--mode", "account")
	if err != nil {
		return nil, err
	}
	return &tgtState{targets: targets, accounts: parseAccounts(out)}, nil
}

// ownDaemons returns the live tgtd processes that this manager started (the daemon and its
// logger process), recognized by the pidfile path in their command line.
func (t *tgt) ownDaemons() ([]proc, error) {
	ps, err := listProcs("tgtd")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ps, func(p proc) bool { return p.arg("-p") != t.pidfile }), nil
}

// ensureDaemon makes a tgtd answer on the control port, starting one when none does, and
// checks that it listens on Portal.
func (t *tgt) ensureDaemon(ctx context.Context) error {
	if t.answers(ctx) {
		return t.checkPortal(ctx, false)
	}
	// A tgtd of ours that does not answer is wedged (or still starting after a crash of the
	// agent that started it): replace it.
	own, err := t.ownDaemons()
	if err != nil {
		return err
	}
	if len(own) > 0 {
		t.logger.Warn("tgtd does not answer; killing it", "pids", pids(own))
		if err := terminate(ctx, pids(own), syscall.SIGKILL, stopGrace); err != nil {
			return fmt.Errorf("kill unresponsive tgtd: %w", err)
		}
	}
	// tgtd that cannot bind its portal falls back to 0.0.0.0:3260 and [::]:3260 without a
	// word, so a portal taken by another program is refused here, and checked again after.
	ln, err := net.Listen("tcp", t.cfg.Portal)
	if err != nil {
		return basalt.Errorf(basalt.EUNAVAILABLE, "iSCSI portal %s is not free for tgtd: %v", t.cfg.Portal, err)
	}
	ln.Close()

	logf, err := os.OpenFile(t.logfile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("tgtd log: %w", err)
	}
	defer logf.Close()
	if err := os.Remove(t.pidfile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale tgtd pidfile: %w", err)
	}
	// Without -f tgtd daemonizes: its first process exits once the daemon is forked, so the
	// daemon is a child of init, not of the agent, and nothing here has to reap it.
	cmd := exec.CommandContext(ctx, t.cfg.Tgtd, "-C", strconv.Itoa(t.cfg.ControlPort), "--iscsi", "portal="+t.cfg.Portal, "-p", t.pidfile)
	cmd.Stdout, cmd.Stderr, cmd.Dir, cmd.SysProcAttr = logf, logf, "/", detach()
	cmd.Env = daemonEnv()
	if err := cmd.Run(); err != nil {
		return basalt.Errorf(basalt.EUNAVAILABLE, "Start tgtd: %v: %s", err, tail(t.logfile, 1024))
	}
	err = poll(ctx, t.cfg.StartTimeout, func() (bool, error) {
		if t.answers(ctx) {
			return true, nil
		}
		if own, err := t.ownDaemons(); err != nil || len(own) == 0 {
			return false, basalt.Errorf(basalt.EUNAVAILABLE, "tgtd exited at start: %s", tail(t.logfile, 1024))
		}
		return false, nil
	}, func() error {
		return basalt.Errorf(basalt.EUNAVAILABLE, "tgtd does not answer on control port %d after %v: %s", t.cfg.ControlPort, t.cfg.StartTimeout, tail(t.logfile, 1024))
	})
	if err != nil {
		return err
	}
	pid, _ := readPIDFile(t.pidfile)
	t.logger.Info("tgtd started", "pid", pid, "portal", t.cfg.Portal)
	return t.checkPortal(ctx, true)
}

// checkPortal verifies that the tgtd listens on Portal. A tgtd this manager just started must
// listen there only; one it found may listen elsewhere too.
func (t *tgt) checkPortal(ctx context.Context, started bool) error {
	out, err := t.adm(ctx, "--op", "show", "--mode", "portal")
	if err != nil {
		return err
	}
	portals := parsePortals(out)
	if started && slices.Equal(portals, []string{t.cfg.Portal}) || !started && slices.Contains(portals, t.cfg.Portal) {
		return nil
	}
	err = basalt.Errorf(basalt.EUNAVAILABLE, "tgtd on control port %d listens on %v, not on portal %s.", t.cfg.ControlPort, portals, t.cfg.Portal)
	if started {
		if own, lerr := t.ownDaemons(); lerr == nil {
			err = errors.Join(err, terminate(ctx, pids(own), syscall.SIGKILL, stopGrace))
		}
	}
	return err
}

// targetWant is what one target must be: its LUN 1, its account and its ACL.
type targetWant struct {
	path       string
	readOnly   bool
	user       string
	initiators map[string]bool
}

// serves reports whether tg's LUN 1 is the one w asks for.
func (tg *tgtTarget) serves(w *targetWant) bool {
	l, ok := tg.luns[1]
	return ok && l.path == w.path && l.readOnly == w.readOnly && l.bsType == "rdwr"
}

// syncVolume makes the targets and the account of volumeID match specs, all of which are
// exports of that volume: one target per mode in use, each with its LUN, the volume's account
// and the initiators of its exports; no target for a mode without exports; no account when
// specs is empty. st is the tgtd's state, read when nil and kept up to date.
func (t *tgt) syncVolume(ctx context.Context, st *tgtState, volumeID string, specs []Spec) error {
	if st == nil {
		var err error
		if st, err = t.show(ctx); err != nil {
			return err
		}
	}
	wants := map[string]*targetWant{}
	candidates := map[string]bool{t.iqn(volumeID, ModeRW): true, t.iqn(volumeID, ModeRO): true}
	var user, secret string
	for _, s := range specs {
		w := wants[s.TargetIQN]
		if w == nil {
			w = &targetWant{path: s.Path, readOnly: s.Mode == ModeRO, user: s.CHAPUser, initiators: map[string]bool{}}
			wants[s.TargetIQN] = w
			candidates[s.TargetIQN] = true
		}
		w.initiators[s.Initiator] = true
		user, secret = s.CHAPUser, s.CHAPSecret
	}
	log := t.logger.With("volume_id", volumeID)
	if user != "" && !slices.Contains(st.accounts, user) {
		if _, err := t.adm(ctx, "--op", "new", "--mode", "account", "--user", user, "--password", secret); err != nil {
			return err
		}
		st.accounts = append(st.accounts, user)
		log.Info("chap account created", "chap_user", user)
	}
	for _, iqn := range slices.Sorted(maps.Keys(candidates)) {
		var err error
		if w := wants[iqn]; w != nil {
			err = t.syncTarget(ctx, st, iqn, w, log)
		} else if tg := st.targets[iqn]; tg != nil {
			err = t.deleteTarget(ctx, st, tg, log)
		}
		if err != nil {
			return err
		}
	}
	// Accounts of the volume that no target uses any more: the volume's whole account when
	// its last export went, or one an interrupted export left behind.
	for _, a := range slices.Clone(st.accounts) {
		if a != user && isChapUserOf(a, volumeID) {
			if err := t.deleteAccount(ctx, st, a, log); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncTarget makes target iqn what w asks for. A missing target is created with its LUN
// before anything may log in to it: the account is bound before the first ACL, and a target
// with no ACL admits nobody. A target whose LUN is wrong is deleted and created again.
func (t *tgt) syncTarget(ctx context.Context, st *tgtState, iqn string, w *targetWant, log *slog.Logger) error {
	tg := st.targets[iqn]
	if tg != nil && !tg.serves(w) {
		log.Warn("target serves another LUN; re-creating it", "target_iqn", iqn, "tid", tg.tid)
		if err := t.deleteTarget(ctx, st, tg, log); err != nil {
			return err
		}
		tg = nil
	}
	if tg == nil {
		tid := st.freeTID()
		tids := strconv.Itoa(tid)
		if _, err := t.adm(ctx, "--op", "new", "--mode", "target", "--tid", tids, "--targetname", iqn); err != nil {
			return err
		}
		tg = &tgtTarget{tid: tid, iqn: iqn, luns: map[int]tgtLUN{}}
		st.targets[iqn] = tg
		_, err := t.adm(ctx, "--op", "new", "--mode", "logicalunit", "--tid", tids, "--lun", "1", "--backing-store", w.path, "--bstype", "rdwr")
		if err == nil && w.readOnly {
			// tgtadm takes no --params with --op new in logicalunit mode: the LUN is made
			// read-only right after, before any ACL lets an initiator in.
			_, err = t.adm(ctx, "--op", "update", "--mode", "logicalunit", "--tid", tids, "--lun", "1", "--params", "readonly=1")
		}
		// tgt's defaults move data in 8 KiB PDUs with an R2T every 256 KiB; larger ones let a
		// sequential stream run several times faster (docs/benchmarks.md).
		for _, p := range sessionParams {
			if err != nil {
				break
			}
			_, err = t.adm(ctx, "--op", "update", "--mode", "target", "--tid", tids, "--name", p[0], "--value", p[1])
		}
		if err != nil {
			return errors.Join(err, t.deleteTarget(ctx, st, tg, log))
		}
		tg.luns[1] = tgtLUN{typ: "disk", bsType: "rdwr", path: w.path, readOnly: w.readOnly}
		log.Info("target created", "target_iqn", iqn, "tid", tid, "read_only", w.readOnly)
	}
	tids := strconv.Itoa(tg.tid)
	if !slices.Contains(tg.accounts, w.user) {
		if _, err := t.adm(ctx, "--op", "bind", "--mode", "account", "--tid", tids, "--user", w.user); err != nil {
			return err
		}
		tg.accounts = append(tg.accounts, w.user)
	}
	for _, a := range slices.Clone(tg.accounts) {
		if a != w.user {
			if _, err := t.adm(ctx, "--op", "unbind", "--mode", "account", "--tid", tids, "--user", a); err != nil {
				return err
			}
			tg.accounts = slices.DeleteFunc(tg.accounts, func(x string) bool { return x == a })
		}
	}
	for _, ini := range slices.Sorted(maps.Keys(w.initiators)) {
		if !slices.Contains(tg.acls, ini) {
			if _, err := t.adm(ctx, "--op", "bind", "--mode", "target", "--tid", tids, "--initiator-name", ini); err != nil {
				return err
			}
			tg.acls = append(tg.acls, ini)
			log.Info("initiator allowed", "target_iqn", iqn, "initiator", ini)
		}
	}
	for _, acl := range slices.Clone(tg.acls) {
		if !w.initiators[acl] {
			if err := t.unbindACL(ctx, tg, acl); err != nil {
				return err
			}
			log.Info("initiator removed", "target_iqn", iqn, "initiator", acl)
		}
	}
	return nil
}

// unbindACL removes acl, an initiator name or address, from tg.
func (t *tgt) unbindACL(ctx context.Context, tg *tgtTarget, acl string) error {
	flag := "--initiator-name"
	if net.ParseIP(acl) != nil || strings.Contains(acl, "/") || acl == "ALL" {
		flag = "--initiator-address"
	}
	if _, err := t.adm(ctx, "--op", "unbind", "--mode", "target", "--tid", strconv.Itoa(tg.tid), flag, acl); err != nil {
		return err
	}
	tg.acls = slices.DeleteFunc(tg.acls, func(x string) bool { return x == acl })
	return nil
}

// deleteTarget deletes tg, ending its sessions.
func (t *tgt) deleteTarget(ctx context.Context, st *tgtState, tg *tgtTarget, log *slog.Logger) error {
	if _, err := t.adm(ctx, "--op", "delete", "--force", "--mode", "target", "--tid", strconv.Itoa(tg.tid)); err != nil {
		return err
	}
	delete(st.targets, tg.iqn)
	log.Info("target deleted", "target_iqn", tg.iqn, "tid", tg.tid)
	return nil
}

// deleteAccount deletes account user; tgtd unbinds it from every target.
func (t *tgt) deleteAccount(ctx context.Context, st *tgtState, user string, log *slog.Logger) error {
	if _, err := t.adm(ctx, "--op", "delete", "--mode", "account", "--user", user); err != nil {
		return err
	}
	st.accounts = slices.DeleteFunc(st.accounts, func(a string) bool { return a == user })
	for _, tg := range st.targets {
		tg.accounts = slices.DeleteFunc(tg.accounts, func(a string) bool { return a == user })
	}
	log.Info("chap account deleted", "chap_user", user)
	return nil
}

// reconcile makes the tgtd match specs, the manager's iSCSI specs: every volume's targets and
// account as syncVolume makes them, and no other target or account under the manager's
// names.
func (t *tgt) reconcile(ctx context.Context, specs []Spec) error {
	st, err := t.show(ctx)
	if err != nil {
		return err
	}
	byVolume := map[string][]Spec{}
	wantTargets, wantUsers := map[string]bool{}, map[string]bool{}
	for _, s := range specs {
		byVolume[s.VolumeID] = append(byVolume[s.VolumeID], s)
		wantTargets[s.TargetIQN] = true
		wantUsers[s.CHAPUser] = true
	}
	var errs []error
	for _, v := range slices.Sorted(maps.Keys(byVolume)) {
		if err := t.syncVolume(ctx, st, v, byVolume[v]); err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", v, err))
		}
	}
	for _, iqn := range slices.Sorted(maps.Keys(st.targets)) {
		if !wantTargets[iqn] && strings.HasPrefix(iqn, t.cfg.IQNPrefix+volumePrefix) {
			t.logger.Warn("removing target without export", "target_iqn", iqn)
			errs = append(errs, t.deleteTarget(ctx, st, st.targets[iqn], t.logger))
		}
	}
	for _, a := range slices.Clone(st.accounts) {
		if !wantUsers[a] && strings.HasPrefix(a, volumePrefix) {
			t.logger.Warn("removing chap account without export", "chap_user", a)
			errs = append(errs, t.deleteAccount(ctx, st, a, t.logger))
		}
	}
	return errors.Join(errs...)
}

// stop shuts down the tgtd this manager started: its targets are deleted (ending sessions),
// it is asked to leave, and killed when it does not. From a tgtd the manager did not start it
// removes only the targets and accounts that specs name.
func (t *tgt) stop(ctx context.Context, specs []Spec) error {
	own, err := t.ownDaemons()
	if err != nil {
		return err
	}
	if len(own) == 0 {
		if !t.answers(ctx) {
			return nil
		}
		var want []Spec
		for _, s := range specs {
			if s.Protocol == ProtocolISCSI {
				want = append(want, s)
			}
		}
		st, err := t.show(ctx)
		if err != nil {
			return err
		}
		var errs []error
		for _, s := range want {
			if tg := st.targets[s.TargetIQN]; tg != nil {
				errs = append(errs, t.deleteTarget(ctx, st, tg, t.logger))
			}
			if slices.Contains(st.accounts, s.CHAPUser) {
				errs = append(errs, t.deleteAccount(ctx, st, s.CHAPUser, t.logger))
			}
		}
		return errors.Join(errs...)
	}
	// tgtd ignores SIGTERM, and leaves on `--op delete --mode system` only without targets.
	if st, err := t.show(ctx); err == nil {
		for _, tg := range st.targets {
			if err := t.deleteTarget(ctx, st, tg, t.logger); err != nil {
				t.logger.Warn("delete target at stop", "tid", tg.tid, "error", err)
			}
		}
		if _, err := t.adm(ctx, "--op", "delete", "--mode", "system"); err != nil {
			t.logger.Warn("ask tgtd to leave", "error", err)
		}
	}
	if waitGone(ctx, pids(own), stopGrace) != nil {
		if err := terminate(ctx, pids(own), syscall.SIGKILL, stopGrace); err != nil {
			return fmt.Errorf("stop tgtd: %w", err)
		}
	}
	// tgtd leaves its management socket and lock file behind; they are this manager's.
	sock := filepath.Join(tgtdSocketDir, "socket."+strconv.Itoa(t.cfg.ControlPort))
	for _, p := range []string{sock, sock + ".lock", t.pidfile} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.logger.Warn("remove tgtd file", "path", p, "error", err)
		}
	}
	t.logger.Info("tgtd stopped", "pids", pids(own))
	return nil
}

// sessionParams are the iSCSI session parameters every target offers: 256 KiB PDUs and 4 MiB
// bursts instead of tgt's 8 KiB and 256 KiB.
var sessionParams = [][2]string{
	{"MaxRecvDataSegmentLength", "262144"},
	{"MaxXmitDataSegmentLength", "262144"},
	{"FirstBurstLength", "262144"},
	{"MaxBurstLength", "4194304"},
}
