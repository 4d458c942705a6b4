package export

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/basalt-storage/basalt"
)

const (
	volumeSize = 64 << 20
	mib        = 1 << 20
	iniA       = "iqn.1994-05.com.redhat:host-a"
	iniB       = "iqn.1994-05.com.redhat:host-b"
)

// requireTools skips the test when a binary it runs is missing, or fails it when
// BASALT_REQUIRE_TARGETS is set (CI installs them all).
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if isExecutable(lookBinary(name)) {
			continue
		}
		if os.Getenv("BASALT_REQUIRE_TARGETS") != "" {
			t.Fatalf("%s is not installed and BASALT_REQUIRE_TARGETS is set", name)
		}
		t.Skipf("%s is not installed", name)
	}
	if slices.Contains(names, "tgtd") && os.Geteuid() != 0 {
		if os.Getenv("BASALT_REQUIRE_TARGETS") != "" {
			t.Fatal("tgtd needs root (it creates /var/run/tgtd) and BASALT_REQUIRE_TARGETS is set")
		}
		t.Skip("tgtd needs root")
	}
}

// loopbackPort returns a loopback TCP port that is free now.
func loopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// controlPort returns a tgtd control port that no tgtd uses now.
func controlPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 1024 + rand.IntN(maxControlPort-1024)
		if _, err := os.Stat(filepath.Join(tgtdSocketDir, "socket."+strconv.Itoa(p))); os.IsNotExist(err) {
			return p
		}
	}
	t.Fatal("no free tgtd control port")
	return 0
}

// testConfig returns a configuration with its own state dir, portal and control port.
func testConfig(t *testing.T, protocol string) Config {
	return Config{
		Protocol:    protocol,
		StateDir:    t.TempDir(),
		Portal:      "127.0.0.1:" + strconv.Itoa(loopbackPort(t)),
		ControlPort: controlPort(t),
		NBDAddress:  "127.0.0.1",
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startManager makes a Manager on cfg and starts it. At cleanup it is stopped and closed, and
// no tgtd or nbdkit naming its state dir may be left.
func startManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		m.Close()
		if left := leftovers(t, cfg.StateDir); len(left) > 0 {
			t.Errorf("processes left after Stop: %v", left)
		}
	})
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return m
}

// leftovers returns the live tgtd and nbdkit processes whose command line names dir.
func leftovers(t *testing.T, dir string) []string {
	var out []string
	for _, name := range []string{"tgtd", "nbdkit"} {
		ps, err := listProcs(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if strings.Contains(strings.Join(p.argv, " "), dir) {
				out = append(out, fmt.Sprintf("%d %s", p.pid, strings.Join(p.argv, " ")))
			}
		}
	}
	return out
}

// makeVolume creates a 64 MiB sparse file.
func makeVolume(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "volume")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(volumeSize); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantBytes checks that the file at path holds n bytes of b at off.
func wantBytes(t *testing.T, path string, off, n int64, b byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, n)
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if want := bytes.Repeat([]byte{b}, int(n)); !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == b {
			i++
		}
		t.Fatalf("%s at %d: byte %d is %#x, want %#x", path, off, off+int64(i), got[i], b)
	}
}

// qemuIO runs qemu-io with args and returns its output; err is set when qemu-io fails or a
// pattern does not match.
func qemuIO(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, lookBinary("qemu-io"), args...).CombinedOutput()
	if err == nil && strings.Contains(string(out), "Pattern verification failed") {
		err = fmt.Errorf("pattern verification failed")
	}
	return string(out), err
}

// mustQemuIO is qemuIO that fails the test on error.
func mustQemuIO(t *testing.T, args ...string) {
	t.Helper()
	if out, err := qemuIO(t, args...); err != nil {
		t.Fatalf("qemu-io %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// iscsiImage returns qemu-io's --image-opts for the export described by info, logging in as
// initiator with password.
func iscsiImage(info ConnectionInfo, initiator, password string) string {
	d := info.Data
	return fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,user=%s,password=%s,initiator-name=%s",
		d["target_portal"], d["target_iqn"], d["target_lun"], d["auth_username"], password, initiator)
}

func secret(info ConnectionInfo) string { return info.Data["auth_password"].(string) }

func write(pattern string, off, n int) string {
	return fmt.Sprintf("write -P %s %d %d", pattern, off, n)
}

func read(pattern string, off, n int) string {
	return fmt.Sprintf("read -P %s %d %d", pattern, off, n)
}

func export(t *testing.T, m *Manager, s Spec) ConnectionInfo {
	t.Helper()
	info, err := m.Export(context.Background(), s)
	if err != nil {
		t.Fatalf("Export(%+v): %v", s, err)
	}
	return info
}

func wantInventory(t *testing.T, m *Manager, want Inventory) {
	t.Helper()
	got, err := m.Inventory(context.Background())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	if got != want {
		t.Fatalf("Inventory() = %+v, want %+v", got, want)
	}
}

func TestISCSI(t *testing.T) {
	requireTools(t, "tgtd", "tgtadm", "qemu-io")
	ctx := context.Background()
	cfg := testConfig(t, ProtocolISCSI)
	m := startManager(t, cfg)
	vol := makeVolume(t)
	rwSpec := Spec{ID: "att-rw", VolumeID: "vol1", Path: vol, Mode: ModeRW, Initiator: iniA}
	rw := export(t, m, rwSpec)

	iqn := "iqn.2010-10.org.openstack:volume-vol1"
	if rw.DriverVolumeType != "iscsi" {
		t.Errorf("driver_volume_type = %q, want iscsi", rw.DriverVolumeType)
	}
	for k, want := range map[string]any{"target_discovered": false, "target_iqn": iqn, "target_portal": cfg.Portal,
		"target_lun": 1, "volume_id": "vol1", "auth_method": "CHAP", "access_mode": "rw", "encrypted": false} {
		if got := rw.Data[k]; got != want {
			t.Errorf("data[%q] = %v, want %v", k, got, want)
		}
	}
	if user := rw.Data["auth_username"].(string); !strings.HasPrefix(user, "volume-vol1-") {
		t.Errorf("auth_username = %q, want volume-vol1-<tag>", user)
	}
	if len(secret(rw)) < 16 {
		t.Errorf("auth_password %q is shorter than 16", secret(rw))
	}

	t.Run("read-write", func(t *testing.T) {
		mustQemuIO(t, "--image-opts", iscsiImage(rw, iniA, secret(rw)), "-c", write("0xab", 0, mib), "-c", read("0xab", 0, mib))
		wantBytes(t, vol, 0, mib, 0xab)
	})
	t.Run("refused", func(t *testing.T) {
		for name, image := range map[string]string{
			"wrong secret":    iscsiImage(rw, iniA, "wrongwrongwrongwrong"),
			"wrong initiator": iscsiImage(rw, "iqn.1994-05.com.redhat:intruder", secret(rw)),
			"no chap": fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=1,initiator-name=%s",
				cfg.Portal, iqn, iniA),
		} {
			if out, err := qemuIO(t, "-r", "--image-opts", image, "-c", read("0xab", 0, mib)); err == nil {
				t.Errorf("%s: qemu-io read succeeded:\n%s", name, out)
			} else {
				t.Logf("%s: %s", name, strings.TrimSpace(out))
			}
		}
	})

	roSpec := Spec{ID: "att-ro", VolumeID: "vol1", Path: vol, Mode: ModeRO, Initiator: iniB}
	ro := export(t, m, roSpec)
	t.Run("read-only", func(t *testing.T) {
		if got, want := ro.Data["target_iqn"], iqn+"-ro"; got != want {
			t.Errorf("ro target_iqn = %v, want %v", got, want)
		}
		if ro.Data["auth_username"] != rw.Data["auth_username"] || secret(ro) != secret(rw) {
			t.Errorf("ro CHAP %v/%v differs from the volume's %v/%v", ro.Data["auth_username"], secret(ro), rw.Data["auth_username"], secret(rw))
		}
		if ro.Data["access_mode"] != "ro" {
			t.Errorf("ro access_mode = %v", ro.Data["access_mode"])
		}
		mustQemuIO(t, "-r", "--image-opts", iscsiImage(ro, iniB, secret(ro)), "-c", read("0xab", 0, mib))
		// The target reports the LUN write-protected, so qemu refuses to open it for writing.
		out, err := qemuIO(t, "--image-opts", iscsiImage(ro, iniB, secret(ro)), "-c", write("0xee", 0, mib))
		if err == nil {
			t.Fatalf("write through the read-only target succeeded:\n%s", out)
		}
		t.Logf("write through ro: %s", strings.TrimSpace(out))
		wantBytes(t, vol, 0, mib, 0xab)
		// The read-write initiator is not admitted to the read-only target.
		if out, err := qemuIO(t, "-r", "--image-opts", iscsiImage(ro, iniA, secret(ro)), "-c", read("0xab", 0, mib)); err == nil {
			t.Errorf("initiator A logged in to the read-only target:\n%s", out)
		}
		// The read-write export still writes, and the read-only one sees it.
		mustQemuIO(t, "--image-opts", iscsiImage(rw, iniA, secret(rw)), "-c", write("0xcd", mib, mib))
		wantBytes(t, vol, mib, mib, 0xcd)
		mustQemuIO(t, "-r", "--image-opts", iscsiImage(ro, iniB, secret(ro)), "-c", read("0xcd", mib, mib))
	})
	wantInventory(t, m, Inventory{Targets: 2, LUNs: 2, Accounts: 1})

	t.Run("idempotent", func(t *testing.T) {
		if again := export(t, m, rwSpec); !reflect.DeepEqual(again, rw) {
			t.Errorf("Export twice = %v, want %v", again, rw)
		}
		// A second attachment of the same host shares the target and the ACL entry.
		export(t, m, Spec{ID: "att-rw2", VolumeID: "vol1", Path: vol, Initiator: iniA})
		wantInventory(t, m, Inventory{Targets: 2, LUNs: 2, Accounts: 1})
		if err := m.Unexport(ctx, "att-rw2"); err != nil {
			t.Fatal(err)
		}
		mustQemuIO(t, "-r", "--image-opts", iscsiImage(rw, iniA, secret(rw)), "-c", read("0xab", 0, mib))
		conflict := rwSpec
		conflict.Mode = ModeRO
		if _, err := m.Export(ctx, conflict); basalt.ErrorCode(err) != basalt.ECONFLICT {
			t.Errorf("Export of %s with another mode = %v, want a conflict", conflict.ID, err)
		}
	})
	t.Run("unexport", func(t *testing.T) {
		for range 2 {
			if err := m.Unexport(ctx, "att-ro"); err != nil {
				t.Fatalf("Unexport(att-ro) = %v", err)
			}
		}
		wantInventory(t, m, Inventory{Targets: 1, LUNs: 1, Accounts: 1})
		if out, err := qemuIO(t, "-r", "--image-opts", iscsiImage(ro, iniB, secret(ro)), "-c", read("0xab", 0, mib)); err == nil {
			t.Errorf("read through an unexported target succeeded:\n%s", out)
		}
		if err := m.UnexportVolume(ctx, "vol1"); err != nil {
			t.Fatalf("UnexportVolume = %v", err)
		}
		wantInventory(t, m, Inventory{})
		if specs := m.Specs(); len(specs) != 0 {
			t.Errorf("Specs() = %v after UnexportVolume, want none", specs)
		}
		if err := m.Unexport(ctx, "att-rw"); err != nil {
			t.Errorf("Unexport of a removed export = %v", err)
		}
	})
}

func TestNBD(t *testing.T) {
	requireTools(t, "nbdkit", "qemu-io")
	ctx := context.Background()
	cfg := testConfig(t, ProtocolNBD)
	m := startManager(t, cfg)
	vol := makeVolume(t)
	rwSpec := Spec{ID: "att-rw", VolumeID: "vol1", Path: vol, Mode: ModeRW}
	rw := export(t, m, rwSpec)
	port, _ := rw.Data["port"].(int)
	uri := fmt.Sprintf("nbd://127.0.0.1:%d", port)
	if rw.DriverVolumeType != "nbd" {
		t.Errorf("driver_volume_type = %q, want nbd", rw.DriverVolumeType)
	}
	for k, want := range map[string]any{"host": "127.0.0.1", "export_name": "", "uri": uri, "volume_id": "vol1",
		"access_mode": "rw", "encrypted": false} {
		if got := rw.Data[k]; got != want {
			t.Errorf("data[%q] = %v, want %v", k, got, want)
		}
	}

	mustQemuIO(t, "-f", "raw", uri, "-c", write("0xab", 0, mib), "-c", read("0xab", 0, mib))
	wantBytes(t, vol, 0, mib, 0xab)

	ro := export(t, m, Spec{ID: "att-ro", VolumeID: "vol1", Path: vol, Mode: ModeRO, Initiator: iniB})
	roURI := ro.Data["uri"].(string)
	if roURI == uri {
		t.Fatalf("ro export shares the rw export's uri %s", uri)
	}
	mustQemuIO(t, "-r", "-f", "raw", roURI, "-c", read("0xab", 0, mib))
	if out, err := qemuIO(t, "-f", "raw", roURI, "-c", write("0xee", 0, mib)); err == nil {
		t.Fatalf("write through the read-only export succeeded:\n%s", out)
	} else {
		t.Logf("write through ro: %s", strings.TrimSpace(out))
	}
	wantBytes(t, vol, 0, mib, 0xab)
	mustQemuIO(t, "-f", "raw", uri, "-c", write("0xcd", mib, mib))
	wantBytes(t, vol, mib, mib, 0xcd)
	mustQemuIO(t, "-r", "-f", "raw", roURI, "-c", read("0xcd", mib, mib))
	wantInventory(t, m, Inventory{NBDProcesses: 2})

	if again := export(t, m, rwSpec); !reflect.DeepEqual(again, rw) {
		t.Errorf("Export twice = %v, want %v", again, rw)
	}
	wantInventory(t, m, Inventory{NBDProcesses: 2})
	other := Spec{ID: "att-other", VolumeID: "vol1", Path: makeVolume(t)}
	if _, err := m.Export(ctx, other); basalt.ErrorCode(err) != basalt.ECONFLICT {
		t.Errorf("Export of vol1 from another path = %v, want a conflict", err)
	}
	for range 2 {
		if err := m.Unexport(ctx, "att-ro"); err != nil {
			t.Fatalf("Unexport(att-ro) = %v", err)
		}
	}
	wantInventory(t, m, Inventory{NBDProcesses: 1})
	if err := m.UnexportVolume(ctx, "vol1"); err != nil {
		t.Fatalf("UnexportVolume = %v", err)
	}
	wantInventory(t, m, Inventory{})
	if ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "nbd")); len(ents) != 0 {
		t.Errorf("files left in the nbd state dir: %v", ents)
	}
}

// TestCrashRebuild kills tgtd and nbdkit as a reboot would and checks that a new manager on
// the same state dirs serves the same exports again, with the same IQN, CHAP and port.
func TestCrashRebuild(t *testing.T) {
	requireTools(t, "tgtd", "tgtadm", "nbdkit", "qemu-io")
	ctx := context.Background()
	icfg, ncfg := testConfig(t, ProtocolISCSI), testConfig(t, ProtocolNBD)
	mi, mn := startManager(t, icfg), startManager(t, ncfg)
	ivol, nvol := makeVolume(t), makeVolume(t)
	ispecs := []Spec{
		{ID: "i-rw", VolumeID: "vol-i", Path: ivol, Mode: ModeRW, Initiator: iniA},
		{ID: "i-ro", VolumeID: "vol-i", Path: ivol, Mode: ModeRO, Initiator: iniB},
	}
	nspecs := []Spec{
		{ID: "n-rw", VolumeID: "vol-n", Path: nvol, Mode: ModeRW},
		{ID: "n-ro", VolumeID: "vol-n", Path: nvol, Mode: ModeRO},
	}
	infos := map[string]ConnectionInfo{}
	for _, s := range ispecs {
		infos[s.ID] = export(t, mi, s)
	}
	for _, s := range nspecs {
		infos[s.ID] = export(t, mn, s)
	}
	irw, iro, nrw, nro := infos["i-rw"], infos["i-ro"], infos["n-rw"].Data["uri"].(string), infos["n-ro"].Data["uri"].(string)
	mustQemuIO(t, "--image-opts", iscsiImage(irw, iniA, secret(irw)), "-c", write("0x5a", 0, mib))
	mustQemuIO(t, "-f", "raw", nrw, "-c", write("0xa5", 0, mib))

	// The crash: SIGKILL every daemon, then the agent goes (its lock with it).
	own, err := mi.iscsi.ownDaemons()
	if err != nil || len(own) == 0 {
		t.Fatalf("tgtd of the manager: %v, %v", own, err)
	}
	ps, err := mn.nbd.procs()
	if err != nil || len(ps) != 2 {
		t.Fatalf("nbdkit of the manager: %v, %v", ps, err)
	}
	if err := terminate(ctx, append(pids(own), pids(ps)...), syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIO(t, "-r", "-f", "raw", nrw, "-c", read("0xa5", 0, mib)); err == nil {
		t.Fatalf("nbd export still answers after SIGKILL:\n%s", out)
	}
	mi.Close()
	mn.Close()

	mi2, mn2 := startManager(t, icfg), startManager(t, ncfg)
	// Start alone brought them back.
	mustQemuIO(t, "-r", "--image-opts", iscsiImage(irw, iniA, secret(irw)), "-c", read("0x5a", 0, mib))
	mustQemuIO(t, "-r", "--image-opts", iscsiImage(iro, iniB, secret(iro)), "-c", read("0x5a", 0, mib))
	mustQemuIO(t, "-r", "-f", "raw", nrw, "-c", read("0xa5", 0, mib))
	mustQemuIO(t, "-r", "-f", "raw", nro, "-c", read("0xa5", 0, mib))
	mustQemuIO(t, "--image-opts", iscsiImage(irw, iniA, secret(irw)), "-c", write("0x77", mib, mib))
	wantBytes(t, ivol, mib, mib, 0x77)
	wantInventory(t, mi2, Inventory{Targets: 2, LUNs: 2, Accounts: 1})
	wantInventory(t, mn2, Inventory{NBDProcesses: 2})
	for _, s := range append(ispecs, nspecs...) {
		m := mi2
		if strings.HasPrefix(s.ID, "n-") {
			m = mn2
		}
		if got := export(t, m, s); !reflect.DeepEqual(got, infos[s.ID]) {
			t.Errorf("Export(%s) after the crash = %v, want %v", s.ID, got, infos[s.ID])
		}
	}

	// An agent restart without a crash finds the daemons running and changes nothing.
	before, _ := mi2.iscsi.show(ctx)
	mi2.Close()
	mn2.Close()
	mi3, mn3 := startManager(t, icfg), startManager(t, ncfg)
	after, _ := mi3.iscsi.show(ctx)
	for iqn, tg := range before.targets {
		if a := after.targets[iqn]; a == nil || a.tid != tg.tid {
			t.Errorf("target %s was re-created by a restart: %+v, then %+v", iqn, tg, a)
		}
	}
	wantInventory(t, mn3, Inventory{NBDProcesses: 2})
	mustQemuIO(t, "-r", "--image-opts", iscsiImage(iro, iniB, secret(iro)), "-c", read("0x77", mib, mib))
	mustQemuIO(t, "-r", "-f", "raw", nro, "-c", read("0xa5", 0, mib))
}

// TestReconcile checks that Reconcile repairs damaged exports and removes what no spec names.
func TestReconcile(t *testing.T) {
	requireTools(t, "tgtd", "tgtadm", "nbdkit", "qemu-io")
	ctx := context.Background()

	t.Run("iscsi", func(t *testing.T) {
		m := startManager(t, testConfig(t, ProtocolISCSI))
		vol := makeVolume(t)
		info := export(t, m, Spec{ID: "att", VolumeID: "vol1", Path: vol, Initiator: iniA})
		st, err := m.iscsi.show(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tid := strconv.Itoa(st.targets[info.Data["target_iqn"].(string)].tid)
		// Damage: the export's ACL is gone; strays: a target, and an account, of no spec.
		for _, args := range [][]string{
			{"--op", "unbind", "--mode", "target", "--tid", tid, "--initiator-name", iniA},
			{"--op", "new", "--mode", "target", "--tid", "9", "--targetname", "iqn.2010-10.org.openstack:volume-stray"},
			{"--op", "new", "--mode", "logicalunit", "--tid", "9", "--lun", "1", "--backing-store", vol},
			{"--op", "new", "--mode", "account", "--user", "volume-stray-abcdefgh", "--password", "strayStraystray12345"},
		} {
			if _, err := m.iscsi.adm(ctx, args...); err != nil {
				t.Fatal(err)
			}
		}
		wantInventory(t, m, Inventory{Targets: 2, LUNs: 2, Accounts: 2})
		if err := m.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		wantInventory(t, m, Inventory{Targets: 1, LUNs: 1, Accounts: 1})
		mustQemuIO(t, "--image-opts", iscsiImage(info, iniA, secret(info)), "-c", write("0x11", 0, mib))
		wantBytes(t, vol, 0, mib, 0x11)
		if err := m.UnexportVolume(ctx, "vol1"); err != nil {
			t.Fatal(err)
		}
		wantInventory(t, m, Inventory{})
	})

	t.Run("nbd", func(t *testing.T) {
		cfg := testConfig(t, ProtocolNBD)
		m := startManager(t, cfg)
		vol := makeVolume(t)
		info := export(t, m, Spec{ID: "att", VolumeID: "vol1", Path: vol})
		uri := info.Data["uri"].(string)
		// A stray: an nbdkit of this manager whose spec is gone.
		stray := Spec{ID: "stray", VolumeID: "vol0", Path: vol, Mode: ModeRO, Port: loopbackPort(t)}
		if err := m.nbd.start(ctx, stray); err != nil {
			t.Fatal(err)
		}
		wantInventory(t, m, Inventory{NBDProcesses: 2})
		if err := m.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		wantInventory(t, m, Inventory{NBDProcesses: 1})

		// A dead nbdkit whose pid now belongs to another program is restarted, and the other
		// program is left alone.
		ps, err := m.nbd.procs()
		if err != nil || len(ps) != 1 {
			t.Fatalf("procs() = %v, %v", ps, err)
		}
		if err := terminate(ctx, pids(ps), syscall.SIGKILL, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		other := exec.Command("sleep", "60")
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Process.Kill(); other.Wait() })
		if err := os.WriteFile(m.nbd.pidfile("att"), []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := m.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		if !alive(other.Process.Pid) {
			t.Error("Reconcile killed the program that reused the pid")
		}
		wantInventory(t, m, Inventory{NBDProcesses: 1})
		mustQemuIO(t, "-f", "raw", uri, "-c", write("0x22", 0, mib))
		wantBytes(t, vol, 0, mib, 0x22)
		if err := m.Unexport(ctx, "att"); err != nil {
			t.Fatal(err)
		}
		wantInventory(t, m, Inventory{})
	})
}

// TestConcurrentExports exports and unexports several volumes at once: targets, tids and
// accounts must come out as if the calls had run one by one.
func TestConcurrentExports(t *testing.T) {
	requireTools(t, "tgtd", "tgtadm")
	ctx := context.Background()
	m := startManager(t, testConfig(t, ProtocolISCSI))
	vols := map[int]string{}
	for v := range 4 {
		vols[v] = makeVolume(t)
	}
	specs := make([]Spec, 12)
	for i := range specs {
		mode := ModeRW
		if i%3 == 2 {
			mode = ModeRO
		}
		specs[i] = Spec{ID: fmt.Sprintf("att%d", i), VolumeID: fmt.Sprintf("vol%d", i%4), Path: vols[i%4], Mode: mode,
			Initiator: fmt.Sprintf("iqn.2000-01.test:host%d", i)}
	}
	var g errgroup.Group
	for _, s := range specs {
		g.Go(func() error {
			_, err := m.Export(ctx, s)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Export: %v", err)
	}
	// Volumes 0..3 each have rw exports; ro exports (i = 2, 5, 8, 11) cover every volume.
	wantInventory(t, m, Inventory{Targets: 8, LUNs: 8, Accounts: 4})
	st, err := m.iscsi.show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acls := 0
	for _, tg := range st.targets {
		acls += len(tg.acls)
	}
	if acls != len(specs) {
		t.Errorf("targets admit %d initiators, want %d", acls, len(specs))
	}
	for _, s := range specs {
		g.Go(func() error { return m.Unexport(ctx, s.ID) })
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Unexport: %v", err)
	}
	wantInventory(t, m, Inventory{})
}

// TestPortalTaken checks that Start refuses a portal another program holds: tgtd would
// otherwise fall back to listening on 0.0.0.0:3260.
func TestPortalTaken(t *testing.T) {
	requireTools(t, "tgtd", "tgtadm")
	cfg := testConfig(t, ProtocolISCSI)
	ln, err := net.Listen("tcp", cfg.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(context.Background()); basalt.ErrorCode(err) != basalt.EUNAVAILABLE {
		t.Errorf("Start with portal %s taken = %v, want EUNAVAILABLE", cfg.Portal, err)
	}
	if left := leftovers(t, cfg.StateDir); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}

func TestExportValidation(t *testing.T) {
	vol := makeVolume(t)
	for _, protocol := range []string{ProtocolISCSI, ProtocolNBD} {
		m, err := New(testConfig(t, protocol), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		for _, s := range []Spec{
			{ID: "", VolumeID: "v", Path: vol, Initiator: iniA},
			{ID: "a/b", VolumeID: "v", Path: vol, Initiator: iniA},
			{ID: "a", VolumeID: "v.1", Path: vol, Initiator: iniA},
			{ID: "a", VolumeID: "v", Path: "volume", Initiator: iniA},
			{ID: "a", VolumeID: "v", Path: vol + ",x", Initiator: iniA},
			{ID: "a", VolumeID: "v", Path: vol + "-missing", Initiator: iniA},
			{ID: "a", VolumeID: "v", Path: vol, Mode: "wo", Initiator: iniA},
			{ID: "a", VolumeID: "v", Path: vol, Initiator: "host a"},
		} {
			if _, err := m.Export(context.Background(), s); basalt.ErrorCode(err) != basalt.EINVALID {
				t.Errorf("%s: Export(%+v) = %v, want EINVALID", protocol, s, err)
			}
		}
	}
	m, err := New(testConfig(t, ProtocolISCSI), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Export(context.Background(), Spec{ID: "a", VolumeID: "v", Path: vol}); basalt.ErrorCode(err) != basalt.EINVALID {
		t.Errorf("iscsi Export without an initiator = %v, want EINVALID", err)
	}
}

func TestStateDirLock(t *testing.T) {
	cfg := testConfig(t, ProtocolNBD)
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, nil); basalt.ErrorCode(err) != basalt.ECONFLICT {
		t.Errorf("second New on %s = %v, want ECONFLICT", cfg.StateDir, err)
	}
	m.Close()
	m2, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	m2.Close()
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"iscsi defaults", Config{Protocol: "iscsi", StateDir: "/tmp/x"}, true},
		{"nbd defaults", Config{Protocol: "nbd", StateDir: "/tmp/x"}, true},
		{"no protocol", Config{StateDir: "/tmp/x"}, false},
		{"no state dir", Config{Protocol: "nbd"}, false},
		{"bad portal", Config{Protocol: "iscsi", StateDir: "/tmp/x", Portal: "localhost"}, false},
		{"portal port 0", Config{Protocol: "iscsi", StateDir: "/tmp/x", Portal: "127.0.0.1:0"}, false},
		{"control port", Config{Protocol: "iscsi", StateDir: "/tmp/x", ControlPort: 32768}, false},
		{"iqn prefix", Config{Protocol: "iscsi", StateDir: "/tmp/x", IQNPrefix: "openstack:"}, false},
		{"nbd address", Config{Protocol: "nbd", StateDir: "/tmp/x", NBDAddress: "localhost"}, false},
	} {
		tc.cfg.setDefaults()
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate(%+v) = %v, want ok=%v", tc.name, tc.cfg, err, tc.ok)
		}
	}
}

func TestParseTargets(t *testing.T) {
	const out = `Target 1: iqn.2010-10.org.openstack:volume-v1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 1
            Initiator: iqn.1994-05.com.redhat:client1 alias: host
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            Size: 0 MB, Block size: 1
            Readonly: No
            Backing store type: null
            Backing store path: None
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            Size: 67 MB, Block size: 512
            Readonly: Yes
            Backing store type: rdwr
            Backing store path: /srv/volume-v1
            Backing store flags: 
    Account information:
        volume-v1-abcdefgh
        out (outgoing)
    ACL information:
        iqn.1994-05.com.redhat:client1
Target 3: iqn.2010-10.org.openstack:volume-v2
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
    Account information:
    ACL information:
`
	got, err := parseTargets(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*tgtTarget{
		"iqn.2010-10.org.openstack:volume-v1": {tid: 1, iqn: "iqn.2010-10.org.openstack:volume-v1",
			luns: map[int]tgtLUN{
				0: {typ: "controller", bsType: "null", path: "None"},
				1: {typ: "disk", bsType: "rdwr", path: "/srv/volume-v1", readOnly: true},
			},
			accounts: []string{"volume-v1-abcdefgh"}, acls: []string{"iqn.1994-05.com.redhat:client1"}, nexuses: 1},
		"iqn.2010-10.org.openstack:volume-v2": {tid: 3, iqn: "iqn.2010-10.org.openstack:volume-v2",
			luns: map[int]tgtLUN{0: {typ: "controller"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseTargets() =\n%#v\nwant\n%#v", got, want)
	}
	if tid := (&tgtState{targets: got}).freeTID(); tid != 2 {
		t.Errorf("freeTID() = %d, want 2", tid)
	}
	if _, err := parseTargets("garbage\n"); err == nil {
		t.Error("parseTargets(garbage) succeeded")
	}
	if got := parseAccounts("Account list:\n    b\n    a\n    o (outgoing)\n"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("parseAccounts() = %v", got)
	}
	if got := parsePortals("Portal: [::]:3260,1\nPortal: 0.0.0.0:3260,1\n"); !reflect.DeepEqual(got, []string{"[::]:3260", "0.0.0.0:3260"}) {
		t.Errorf("parsePortals() = %v", got)
	}
}
