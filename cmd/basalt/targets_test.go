package main

// Attach for real: gophercloud attaches volumes of the real binary, and qemu-io (Debian's
// qemu-utils, with libiscsi from qemu-block-extra) reads and writes them through the iSCSI target
// (tgt) and the NBD server (nbdkit) that the agent runs.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/agents/export"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

const (
	iniA = "iqn.1993-08.org.debian:01:host-a"
	iniB = "iqn.1994-05.com.redhat:host-b"
	mib  = 1 << 20
)

// requireTargets skips the test when tgtd, nbdkit or qemu-io is missing, or fails it when
// BASALT_REQUIRE_TARGETS is set (CI installs them).
func requireTargets(t *testing.T) {
	t.Helper()
	for _, name := range []string{"tgtd", "tgtadm", "nbdkit", "qemu-io"} {
		if _, err := exec.LookPath(name); err == nil {
			continue
		}
		if _, err := os.Stat("/usr/sbin/" + name); err == nil {
			continue
		}
		if os.Getenv("BASALT_REQUIRE_TARGETS") != "" {
			t.Fatalf("%s is not installed and BASALT_REQUIRE_TARGETS is set", name)
		}
		t.Skipf("%s is not installed; set BASALT_REQUIRE_TARGETS=1 to make this a failure", name)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("BASALT_REQUIRE_TARGETS") != "" {
			t.Fatal("tgtd needs root and BASALT_REQUIRE_TARGETS is set")
		}
		t.Skip("tgtd needs root")
	}
}

// targetHost is an agent whose one file backend exports over protocol, with its own tgtd.
type targetHost struct {
	s        *stack
	cfg      agents.Config
	protocol string
}

// addTargetHost starts agent host with backend b1 exporting over protocol. At cleanup the
// agent stops and every daemon it started (tgtd, nbdkit) is stopped: none may be left.
func (s *stack) addTargetHost(host, protocol string) *targetHost {
	s.t.Helper()
	b := fileBackend("b1")
	b.TargetProtocol = protocol
	cfg := agents.Config{Host: host, DataDir: filepath.Join(s.dir, "data"), Backends: []agents.BackendConfig{b},
		ISCSI: agents.ISCSIConfig{Portal: "127.0.0.1:" + strconv.Itoa(freePort(s.t)), ControlPort: 1024 + rand.IntN(30000)},
		NBD:   agents.NBDConfig{Address: "127.0.0.1"}}
	h := &targetHost{s: s, cfg: cfg, protocol: protocol}
	s.t.Cleanup(h.stopTargets)
	s.addAgent(cfg)
	return h
}

func (h *targetHost) exportConfig() export.Config {
	return export.Config{Protocol: h.protocol, StateDir: filepath.Join(h.cfg.DataDir, h.cfg.Host, "exports-"+h.protocol),
		Portal: h.cfg.ISCSI.Portal, ControlPort: h.cfg.ISCSI.ControlPort, NBDAddress: h.cfg.NBD.Address}
}

// stopTargets stops the agent, then the daemons it left running (what a host shutdown does).
func (h *targetHost) stopTargets() {
	if p := h.s.agents[h.cfg.Host]; p != nil {
		p.kill(syscall.SIGTERM)
	}
	m, err := export.New(h.exportConfig(), nil)
	if err != nil {
		h.s.t.Errorf("open the exports of %s to stop them: %v", h.cfg.Host, err)
		return
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		h.s.t.Errorf("stop the targets of %s: %v", h.cfg.Host, err)
	}
	if left := daemons(h.s.t, h.exportConfig().StateDir); len(left) > 0 {
		h.s.t.Errorf("daemons left running: %v", left)
	}
}

// daemons returns the live tgtd and nbdkit processes whose command line names dir.
func daemons(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(raw) == 0 {
			continue
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			continue // a zombie waiting to be reaped is gone
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		name := filepath.Base(argv[0])
		if (name == "tgtd" || name == "nbdkit") && strings.Contains(string(raw), dir) {
			out = append(out, fmt.Sprintf("%d %s", pid, strings.Join(argv, " ")))
		}
	}
	return out
}

// exports counts what is really exported: tgt targets and live nbdkit processes.
func (h *targetHost) exports() (targets, nbdkits int) {
	h.s.t.Helper()
	if h.protocol == export.ProtocolISCSI {
		out, err := exec.Command("tgtadm", "-C", strconv.Itoa(h.cfg.ISCSI.ControlPort), "--lld", "iscsi",
			"--op", "show", "--mode", "target").CombinedOutput()
		if err != nil {
			h.s.t.Fatalf("tgtadm show: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "Target ") {
				targets++
			}
		}
	}
	for _, d := range daemons(h.s.t, h.exportConfig().StateDir) {
		if strings.Contains(strings.Fields(d)[1], "nbdkit") {
			nbdkits++
		}
	}
	return targets, nbdkits
}

func (h *targetHost) wantExports(targets, nbdkits int) {
	h.s.t.Helper()
	h.s.eventually(15*time.Second, func() (bool, string) {
		tg, nb := h.exports()
		return tg == targets && nb == nbdkits, fmt.Sprintf("%d targets, %d nbdkit processes", tg, nb)
	}, fmt.Sprintf("%d targets and %d nbdkit processes", targets, nbdkits))
}

// qemuIO runs qemu-io on image (an nbd:// URL, or --image-opts for iSCSI) with one command.
func qemuIO(t *testing.T, readOnly bool, image, command string) (string, error) {
	t.Helper()
	args := []string{}
	if readOnly {
		args = append(args, "-r")
	}
	if strings.HasPrefix(image, "driver=") {
		args = append(args, "--image-opts", image)
	} else {
		args = append(args, "-f", "raw", image)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-io", append(args, "-c", command)...).CombinedOutput()
	if err == nil && strings.Contains(string(out), "failed") {
		err = fmt.Errorf("qemu-io reported a failure")
	}
	return string(out), err
}

// image returns how qemu-io reaches the export connection_info (flat, as the attachments API
// answers) describes, logging in as initiator with password when it is iSCSI.
func image(ci map[string]any, initiator, password string) string {
	if ci["driver_volume_type"] == "nbd" {
		return fmt.Sprint(ci["uri"])
	}
	return fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%v,user=%s,password=%s,initiator-name=%s",
		ci["target_portal"], ci["target_iqn"], ci["target_lun"], ci["auth_username"], password, initiator)
}

func password(ci map[string]any) string { s, _ := ci["auth_password"].(string); return s }

// attach creates, connects and completes an attachment of volume vid for initiator in mode, as
// Nova does, and returns it.
func attach(t *testing.T, c *gophercloud.ServiceClient, vid, instance, initiator, mode string) *attachments.Attachment {
	t.Helper()
	ctx := context.Background()
	a, err := attachments.Create(ctx, c, attachments.CreateOpts{VolumeUUID: vid, InstanceUUID: instance, Mode: mode,
		Connector: map[string]any{"initiator": initiator, "host": instance + "-host", "ip": "127.0.0.1",
			"platform": "x86_64", "os_type": "linux", "multipath": false, "mountpoint": "/dev/vdb"}}).Extract()
	if err != nil {
		t.Fatalf("attachments.Create(%s, %s): %v", vid, mode, err)
	}
	if err := attachments.Complete(ctx, c, a.ID).ExtractErr(); err != nil {
		t.Fatalf("attachments.Complete(%s): %v", a.ID, err)
	}
	if a, err = attachments.Get(ctx, c, a.ID).Extract(); err != nil || a.Status != "attached" {
		t.Fatalf("attachments.Get after complete = %+v, %v; want attached", a, err)
	}
	return a
}

func detach(t *testing.T, c *gophercloud.ServiceClient, id string) {
	t.Helper()
	if err := attachments.Delete(context.Background(), c, id).ExtractErr(); err != nil {
		t.Fatalf("attachments.Delete(%s): %v", id, err)
	}
}

// newAttachVolume creates a 1 GiB volume through gophercloud and waits until it is available.
func newAttachVolume(t *testing.T, c *gophercloud.ServiceClient, opts volumes.CreateOpts) string {
	t.Helper()
	if opts.Size == 0 {
		opts.Size = 1
	}
	v, err := volumes.Create(context.Background(), c, opts, nil).Extract()
	if err != nil {
		t.Fatalf("volumes.Create: %v", err)
	}
	waitAvailable(t, c, v.ID)
	return v.ID
}

func TestE2EAttachISCSI(t *testing.T) { testAttachTarget(t, export.ProtocolISCSI) }
func TestE2EAttachNBD(t *testing.T)   { testAttachTarget(t, export.ProtocolNBD) }

func testAttachTarget(t *testing.T, protocol string) {
	requireTargets(t)
	s := newStack(t, stackOptions{})
	h := s.addTargetHost("h1", protocol)
	c := gcClient(t, s, "alice", "p1")
	c.Microversion = "3.54"
	vid := newAttachVolume(t, c, volumes.CreateOpts{Name: "data"})

	// Attach read-write from host A and write a pattern through the target.
	a := attach(t, c, vid, "inst-a", iniA, "rw")
	ci := a.ConnectionInfo
	if ci["driver_volume_type"] != protocol || ci["access_mode"] != "rw" || ci["attachment_id"] != a.ID {
		t.Fatalf("connection_info = %v, want %s rw for %s", ci, protocol, a.ID)
	}
	if protocol == export.ProtocolISCSI {
		if ci["target_iqn"] != "iqn.2010-10.org.openstack:volume-"+vid || ci["target_lun"] != float64(1) ||
			ci["auth_method"] != "CHAP" || ci["target_portal"] != h.cfg.ISCSI.Portal || ci["target_discovered"] != false {
			t.Errorf("iSCSI connection_info = %v, want os-brick's keys for volume-%s on %s", ci, vid, h.cfg.ISCSI.Portal)
		}
	}
	img := image(ci, iniA, password(ci))
	if out, err := qemuIO(t, false, img, fmt.Sprintf("write -P 0xab 0 %d", mib)); err != nil {
		t.Fatalf("write through %s: %v\n%s", protocol, err, out)
	}
	if out, err := qemuIO(t, true, img, fmt.Sprintf("read -P 0xab 0 %d", mib)); err != nil {
		t.Fatalf("read back through %s: %v\n%s", protocol, err, out)
	}
	if protocol == export.ProtocolISCSI {
		// The target refuses a wrong secret and an initiator it was not told about.
		if out, err := qemuIO(t, true, image(ci, iniA, "wrong-secret-0000"), "read 0 512"); err == nil {
			t.Errorf("a wrong CHAP secret was let in:\n%s", out)
		}
		if out, err := qemuIO(t, true, image(ci, "iqn.2000-01.com.example:intruder", password(ci)), "read 0 512"); err == nil {
			t.Errorf("an unknown initiator was let in:\n%s", out)
		}
	}
	if v, err := volumes.Get(context.Background(), c, vid).Extract(); err != nil || v.Status != "in-use" || len(v.Attachments) != 1 {
		t.Errorf("attached volume = %+v, %v; want in-use with one attachment", v, err)
	}

	// Detach: the export goes, and the old connection no longer reaches the volume.
	detach(t, c, a.ID)
	h.wantExports(0, 0)
	if out, err := qemuIO(t, true, img, "read 0 512"); err == nil {
		t.Errorf("the detached export still answers:\n%s", out)
	}

	// A read-only attachment from another host reads the same bytes; its writes fail.
	ro := attach(t, c, vid, "inst-b", iniB, "ro")
	if ro.AttachMode != "ro" || ro.ConnectionInfo["access_mode"] != "ro" {
		t.Errorf("read-only attachment = %+v", ro)
	}
	roImg := image(ro.ConnectionInfo, iniB, password(ro.ConnectionInfo))
	if out, err := qemuIO(t, true, roImg, fmt.Sprintf("read -P 0xab 0 %d", mib)); err != nil {
		t.Errorf("read through the read-only export: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, false, roImg, "write -P 0xcd 0 4096"); err == nil {
		t.Errorf("a write through the read-only export succeeded:\n%s", out)
	}
	detach(t, c, ro.ID)
	h.wantExports(0, 0)

	// Deleting a volume takes any export of it along.
	a = attach(t, c, vid, "inst-c", iniA, "rw")
	if protocol == export.ProtocolISCSI {
		h.wantExports(1, 0)
	} else {
		h.wantExports(0, 1)
	}
	if r := s.do("admin:admin", "POST", "/v3/volumes/"+vid+"/action", `{"os-reset_status":{"status":"available","attach_status":"detached"}}`); r.status != 202 {
		t.Fatalf("reset to detached = %d %s", r.status, r.raw)
	}
	h.wantExports(0, 0)
	if r := s.do("alice:p1", "DELETE", "/v3/volumes/"+vid, ""); r.status != 202 {
		t.Fatalf("delete = %d %s", r.status, r.raw)
	}
	waitGone(t, c, vid)
}

// TestE2EAttachSurvivesAgentCrash kills the agent and its target daemons (a host crash) while a
// volume is attached: the restarted agent exports it again with the same credentials, and a
// detach sent while the agent is away completes when it returns.
func TestE2EAttachSurvivesAgentCrash(t *testing.T) {
	requireTargets(t)
	for _, protocol := range []string{export.ProtocolISCSI, export.ProtocolNBD} {
		t.Run(protocol, func(t *testing.T) {
			s := newStack(t, stackOptions{env: []string{"BASALT_CALL_TIMEOUT=3s"}})
			h := s.addTargetHost("h1", protocol)
			c := gcClient(t, s, "alice", "p1")
			c.Microversion = "3.54"
			vid := newAttachVolume(t, c, volumes.CreateOpts{})
			a := attach(t, c, vid, "inst-a", iniA, "rw")
			img := image(a.ConnectionInfo, iniA, password(a.ConnectionInfo))
			if out, err := qemuIO(t, false, img, fmt.Sprintf("write -P 0x5c %d %d", 3*mib, mib)); err != nil {
				t.Fatalf("write: %v\n%s", err, out)
			}

			// The host crashes: the agent and every target daemon die at once.
			agent := s.agents["h1"]
			agent.kill(syscall.SIGKILL)
			for _, d := range daemons(t, h.exportConfig().StateDir) {
				pid, _ := strconv.Atoi(strings.Fields(d)[0])
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if _, err := qemuIO(t, true, img, "read 0 512"); err == nil {
				t.Fatal("the export still answers after its daemons were killed")
			}
			agent.start()
			s.eventually(20*time.Second, func() (bool, string) {
				out, err := qemuIO(t, true, img, fmt.Sprintf("read -P 0x5c %d %d", 3*mib, mib))
				return err == nil, out
			}, "the restarted agent exports the volume again with the same credentials and bytes")

			// A detach while the agent is away answers, and completes when the agent returns.
			agent.kill(syscall.SIGKILL)
			detach(t, c, a.ID)
			if v, err := volumes.Get(context.Background(), c, vid).Extract(); err != nil || v.Status != "available" {
				t.Errorf("volume after a detach with the agent away = %+v, %v; want available", v, err)
			}
			if _, err := qemuIO(t, true, img, "read 0 512"); err != nil {
				t.Fatal("the export went before its agent returned: the test proves nothing")
			}
			agent.start()
			h.wantExports(0, 0)
			if _, err := qemuIO(t, true, img, "read 0 512"); err == nil {
				t.Error("the export still answers after the agent returned and ran the detach")
			}
		})
	}
}

// TestE2EMultiattachISCSI attaches one multiattach volume read-write to two hosts at once
// through one iSCSI target: each writes its half, and each reads the other's.
func TestE2EMultiattachISCSI(t *testing.T) {
	requireTargets(t)
	s := newStack(t, stackOptions{})
	h := s.addTargetHost("h1", export.ProtocolISCSI)
	if r := s.do("admin:admin", "GET", "/v3/scheduler-stats/get_pools?detail=true", ""); !strings.Contains(r.raw, `"storage_protocol":"iSCSI"`) ||
		!strings.Contains(r.raw, `"multiattach":true`) {
		t.Errorf("an iSCSI backend's pools = %s, want storage_protocol iSCSI and multiattach", r.raw)
	}
	if r := s.do("admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"shared-iscsi","extra_specs":{"multiattach":"<is> True","storage_protocol":"<in> iSCSI"}}}`); r.status != 200 {
		t.Fatalf("create type = %d %s", r.status, r.raw)
	}
	c := gcClient(t, s, "alice", "p1")
	c.Microversion = "3.54"
	vid := newAttachVolume(t, c, volumes.CreateOpts{VolumeType: "shared-iscsi"})
	a := attach(t, c, vid, "inst-a", iniA, "rw")
	b := attach(t, c, vid, "inst-b", iniB, "rw")
	if a.ConnectionInfo["target_iqn"] != b.ConnectionInfo["target_iqn"] {
		t.Errorf("two rw attachments on two targets: %v and %v", a.ConnectionInfo["target_iqn"], b.ConnectionInfo["target_iqn"])
	}
	imgA := image(a.ConnectionInfo, iniA, password(a.ConnectionInfo))
	imgB := image(b.ConnectionInfo, iniB, password(b.ConnectionInfo))
	if out, err := qemuIO(t, false, imgA, fmt.Sprintf("write -P 0xa1 0 %d", mib)); err != nil {
		t.Fatalf("host A writes: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, false, imgB, fmt.Sprintf("write -P 0xb2 %d %d", mib, mib)); err != nil {
		t.Fatalf("host B writes: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, true, imgA, fmt.Sprintf("read -P 0xb2 %d %d", mib, mib)); err != nil {
		t.Errorf("host A reads B's bytes: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, true, imgB, fmt.Sprintf("read -P 0xa1 0 %d", mib)); err != nil {
		t.Errorf("host B reads A's bytes: %v\n%s", err, out)
	}
	if v, err := volumes.Get(context.Background(), c, vid).Extract(); err != nil || v.Status != "in-use" || len(v.Attachments) != 2 {
		t.Errorf("multiattached volume = %+v, %v; want in-use with two attachments", v, err)
	}
	// A's detach unbinds A only: B keeps working.
	detach(t, c, a.ID)
	if out, err := qemuIO(t, true, imgA, "read 0 512"); err == nil {
		t.Errorf("host A still reads after its detach:\n%s", out)
	}
	if out, err := qemuIO(t, true, imgB, fmt.Sprintf("read -P 0xa1 0 %d", mib)); err != nil {
		t.Errorf("host B lost the volume when A detached: %v\n%s", err, out)
	}
	h.wantExports(1, 0)
	detach(t, c, b.ID)
	h.wantExports(0, 0)
}
