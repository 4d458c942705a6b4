package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/agents/export"
	"github.com/basalt-storage/basalt/functions/process"
	"github.com/basalt-storage/basalt/local"
)

// The attach phase: attachment latency and I/O throughput through real iSCSI (tgt) and NBD
// (nbdkit) targets, on the production path: the HTTP API, Redis, the bus, the scheduler and
// results functions, and agents whose file backends export over iscsi and nbd.

// attachConfig is the attach phase's part of the command line.
type attachConfig struct {
	volumes  int           // attachments timed per protocol
	loopTime time.Duration // most time for the attach loop of one protocol
	ioMiB    int           // MiB written and read per throughput run
	rounds   int           // throughput rounds; the tables give the median
	ioTime   time.Duration // no throughput round starts after this
}

func (a *attachConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&a.volumes, "attach-volumes", 50, "attach: volumes attached and detached per protocol")
	fs.DurationVar(&a.loopTime, "attach-time", 20*time.Second, "attach: most time for the attach loop of one protocol")
	fs.IntVar(&a.ioMiB, "attach-io-mib", 256, "attach: MiB written and read per throughput run (a multiple of 4)")
	fs.IntVar(&a.rounds, "attach-io-rounds", 5, "attach: throughput rounds (the median is reported)")
	fs.DurationVar(&a.ioTime, "attach-io-time", 30*time.Second, "attach: no throughput round starts after this")
}

func (a *attachConfig) validate() error {
	switch {
	case a.volumes < 1 || a.volumes > 500:
		return errors.New("-attach-volumes must be in [1, 500]")
	case a.ioMiB < ioRequestMiB || a.ioMiB > 1024 || a.ioMiB%ioRequestMiB != 0:
		return fmt.Errorf("-attach-io-mib must be a multiple of %d in [%d, 1024]", ioRequestMiB, ioRequestMiB)
	case a.rounds < 1 || a.rounds > 20:
		return errors.New("-attach-io-rounds must be in [1, 20]")
	case a.loopTime <= 0 || a.ioTime <= 0:
		return errors.New("-attach-time and -attach-io-time must be positive")
	}
	return nil
}

const (
	// microversion is the one the attachment requests use: mode and the 3.44 os-complete.
	microversion = "volume 3.54"
	// benchInitiator is the connector's initiator, the one the iSCSI target admits.
	benchInitiator = "iqn.2004-10.org.basalt-storage:bench"
	// attachProject is the project that owns the phase's volumes.
	attachProject = "bench:attach"
)

// attachSite is one agent of the phase: one host with one file backend exporting over protocol.
type attachSite struct {
	protocol string // agents.TargetLocal (the baseline: no target), TargetISCSI or TargetNBD
	host     string
	backend  string
	dir      string        // the file driver's directory
	export   export.Config // the agent's export manager, as the agent configures it
}

func (s attachSite) agent(dataDir string) agents.Config {
	opts, _ := json.Marshal(map[string]any{"dir": s.dir})
	c := agents.Config{Host: s.host, DataDir: dataDir, Backends: []agents.BackendConfig{{Name: s.backend, Driver: "file",
		VolumeBackendName: s.host, TargetProtocol: s.protocol, Options: opts}}}
	switch s.protocol {
	case agents.TargetISCSI:
		c.ISCSI = agents.ISCSIConfig{Portal: s.export.Portal, ControlPort: s.export.ControlPort}
	case agents.TargetNBD:
		c.NBD = agents.NBDConfig{Address: s.export.NBDAddress}
	}
	return c
}

// attachTools are the programs the phase runs, and why a part of it is skipped.
type attachTools struct {
	tgtd, tgtadm, nbdkit, qemuIO            string // paths; "" when not found
	tgtdVersion, nbdkitVersion, qemuVersion string
	iscsiSkip, nbdSkip, throughputSkip      string // why that part is skipped; "" when it runs
}

// lookTool returns name's path in PATH, else in /usr/sbin or /usr/bin (tgt lives in /usr/sbin,
// which not every PATH holds), else "".
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func toolVersion(ctx context.Context, path string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func findAttachTools(ctx context.Context) attachTools {
	t := attachTools{tgtd: lookTool("tgtd"), tgtadm: lookTool("tgtadm"), nbdkit: lookTool("nbdkit"), qemuIO: lookTool("qemu-io")}
	switch {
	case t.tgtd == "" || t.tgtadm == "":
		t.iscsiSkip = "tgtd or tgtadm is not installed (package tgt)"
	case os.Geteuid() != 0:
		t.iscsiSkip = "tgtd needs root (it creates /var/run/tgtd)"
	default:
		t.tgtdVersion = "tgtd " + toolVersion(ctx, t.tgtd, "--version")
	}
	if t.nbdkit == "" {
		t.nbdSkip = "nbdkit is not installed"
	} else {
		t.nbdkitVersion = toolVersion(ctx, t.nbdkit, "--version")
	}
	if t.qemuIO == "" {
		t.throughputSkip = "qemu-io is not installed (package qemu-utils)"
	} else {
		t.qemuVersion = toolVersion(ctx, t.qemuIO, "--version")
	}
	return t
}

// controlPort returns a tgtd control port in [1024, 32767] that no tgtd has a socket for.
func controlPort() (int, error) {
	for range 200 {
		p := 1024 + rand.IntN(32767-1024+1)
		if _, err := os.Stat(tgtdSocket(p)); errors.Is(err, os.ErrNotExist) {
			return p, nil
		}
	}
	return 0, errors.New("no free tgtd control port")
}

// tgtdSocket is tgtd's management socket for control port p.
func tgtdSocket(p int) string { return "/var/run/tgtd/socket." + strconv.Itoa(p) }

// runAttach runs the attach phase: it starts its own Redis and a local stack of one agent per
// protocol, times attachments, measures throughput, and stops every target daemon the agents
// started.
func runAttach(ctx context.Context, cfg config, out, progress io.Writer) error {
	tools := findAttachTools(ctx)
	fmt.Fprintf(out, "## 5. Attach\n\n")
	if tools.iscsiSkip != "" && tools.nbdSkip != "" {
		fmt.Fprintf(out, "Skipped: %s; %s. The benchmark installs nothing.\n\n", tools.iscsiSkip, tools.nbdSkip)
		fmt.Fprintf(progress, "attach: skipped (%s; %s)\n", tools.iscsiSkip, tools.nbdSkip)
		return nil
	}
	dir, err := os.MkdirTemp("", "basalt-bench-attach-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "data")
	redisDir := filepath.Join(dir, "redis")
	if err := os.Mkdir(redisDir, 0o755); err != nil {
		return err
	}
	var redisURL, redisNote string
	rs, err := startRedis(ctx, redisDir)
	switch {
	case err == nil:
		defer rs.stop()
		redisURL = "redis://" + rs.addr + "/0"
		redisNote = "a real " + rs.version
	case errors.Is(err, exec.ErrNotFound):
		redisNote = "the embedded miniredis (redis-server is not installed)"
	default:
		return err
	}

	// The local protocol hands consumers the file's path and starts no target: its latency is
	// that of the control plane and the agent alone.
	sites := []attachSite{{protocol: agents.TargetLocal, host: "bench-local", backend: "file"}}
	if tools.iscsiSkip == "" {
		port, err := freePort()
		if err != nil {
			return err
		}
		cp, err := controlPort()
		if err != nil {
			return err
		}
		sites = append(sites, attachSite{protocol: export.ProtocolISCSI, host: "bench-iscsi", backend: "file"})
		sites[len(sites)-1].export = export.Config{Protocol: export.ProtocolISCSI,
			Portal: "127.0.0.1:" + strconv.Itoa(port), ControlPort: cp, Tgtd: tools.tgtd, Tgtadm: tools.tgtadm}
	}
	if tools.nbdSkip == "" {
		sites = append(sites, attachSite{protocol: export.ProtocolNBD, host: "bench-nbd", backend: "file",
			export: export.Config{Protocol: export.ProtocolNBD, NBDAddress: "127.0.0.1", Nbdkit: tools.nbdkit}})
	}
	var topo []agents.Config
	for i := range sites {
		s := &sites[i]
		s.dir = filepath.Join(dataDir, s.host, s.backend)
		if s.protocol != agents.TargetLocal {
			// The agent keeps each protocol's exports under data_dir/<host>/exports-<protocol>.
			s.export.StateDir = filepath.Join(dataDir, s.host, "exports-"+s.protocol)
		}
		topo = append(topo, s.agent(dataDir))
	}
	// Registered before the stack starts, so it runs after the stack has stopped (the agents
	// then no longer hold their export state dirs), on every way out.
	defer stopTargets(sites, dir, progress)

	logger := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: cfg.logLevel}))
	st, err := startTopology(ctx, redisURL, dataDir, topo, logger)
	if err != nil {
		return err
	}
	defer func() {
		// After a run cut short by -max-time, the stack returns the deadline: not news.
		if err := st.stop(); err != nil && ctx.Err() == nil {
			fmt.Fprintln(progress, "attach: stop the stack:", err)
		}
	}()
	fmt.Fprintf(progress, "attach: API on %s, redis: %s\n", st.addr, redisNote)
	hc := newHTTPClient(8)
	defer hc.CloseIdleConnections()
	env := &attachEnv{cfg: cfg.attach, tools: tools, sites: sites, dir: dir,
		user:  &client{base: "http://" + st.addr, token: attachProject, http: hc},
		admin: &client{base: "http://" + st.addr, token: "admin:admin", http: hc}}
	return env.run(ctx, out, progress, redisNote)
}

// startTopology runs local.Run with topo on dataDir, like startStack but with the caller's
// agents, and waits (up to 30 seconds) until the API is up and every backend reports.
func startTopology(ctx context.Context, redisURL, dataDir string, topo []agents.Config, logger *slog.Logger) (*stack, error) {
	pc, err := process.FromEnv()
	if err != nil {
		return nil, err
	}
	pc.RedisURL, pc.Listen = redisURL, "127.0.0.1:0"
	if pc.QuotaDefaults == nil {
		pc.QuotaDefaults = map[string]int{}
	}
	for _, res := range []string{"volumes", "gigabytes", "snapshots"} {
		if _, set := pc.QuotaDefaults[res]; !set {
			pc.QuotaDefaults[res] = -1
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	s := &stack{cancel: cancel, done: make(chan error, 1)}
	for _, a := range topo {
		for _, b := range a.Backends {
			s.backends = append(s.backends, a.Host+"@"+b.Name)
		}
	}
	go func() {
		s.done <- local.Run(sctx, local.Options{Process: pc, DataDir: dataDir, Topology: topo, Out: io.Discard, Store: local.StoreMemory,
			Ready: func(addr string) { ready <- addr }}, logger)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case s.addr = <-ready:
		return s, nil
	case err := <-s.done:
		cancel()
		return nil, fmt.Errorf("local stack: %w", err)
	case <-t.C:
		return nil, errors.Join(errors.New("local stack: not up after 30s"), s.stop())
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), s.stop())
	}
}

// stopTargets stops every tgtd and nbdkit of the sites, as `basalt local` does at shutdown:
// export.Manager.Stop on each agent's export state dir. It then kills, by pid, any tgtd or
// nbdkit whose command line still names dir (when Stop failed, or an agent still held its
// state dir), and removes the tgtd control sockets the phase used.
func stopTargets(sites []attachSite, dir string, progress io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range sites {
		if s.export.StateDir == "" {
			continue // no target
		}
		if _, err := os.Stat(s.export.StateDir); err != nil {
			continue // the agent never got as far as its exports
		}
		m, err := export.New(s.export, nil)
		if err != nil {
			fmt.Fprintf(progress, "attach: %s exports: %v\n", s.protocol, err)
			continue
		}
		if err := m.Stop(ctx); err != nil {
			fmt.Fprintf(progress, "attach: stop %s exports: %v\n", s.protocol, err)
		}
		m.Close()
	}
	if left := daemonsNaming(dir); len(left) > 0 {
		fmt.Fprintf(progress, "attach: killing %d target daemons left running: %v\n", len(left), left)
		for _, p := range left {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for len(daemonsNaming(dir)) > 0 {
			select {
			case <-ctx.Done():
				fmt.Fprintf(progress, "attach: target daemons still running: %v\n", daemonsNaming(dir))
				return
			case <-t.C:
			}
		}
	}
	for _, s := range sites {
		if s.protocol == export.ProtocolISCSI {
			// tgtd leaves its socket behind when it exits; ours is gone now.
			_ = os.Remove(tgtdSocket(s.export.ControlPort))
			_ = os.Remove(tgtdSocket(s.export.ControlPort) + ".lock")
		}
	}
}

// daemonProc is a live tgtd or nbdkit process.
type daemonProc struct {
	pid  int
	name string
}

func (p daemonProc) String() string { return fmt.Sprintf("%s[%d]", p.name, p.pid) }

// daemonsNaming returns the live (not zombie) tgtd and nbdkit processes whose command line
// contains s: those of the phase name its temporary directory in their pidfile argument.
func daemonsNaming(s string) []daemonProc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []daemonProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		name := filepath.Base(argv[0])
		if (name != "tgtd" && name != "nbdkit") || !strings.Contains(string(b), s) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); err != nil || i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
			continue
		}
		out = append(out, daemonProc{pid: pid, name: name})
	}
	return out
}

// attachEnv is what the attach phase's steps share.
type attachEnv struct {
	cfg         attachConfig
	tools       attachTools
	sites       []attachSite
	dir         string
	user, admin *client
}

// doAt sends one request at the attachments' microversion (see client.send).
func (c *client) doAt(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	return c.send(ctx, method, path, microversion, body, want)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// attachVolume is one volume of the phase.
type attachVolume struct {
	id   string
	site *attachSite
}

// path is the volume's file, written directly for the baseline.
func (v attachVolume) path() string { return filepath.Join(v.site.dir, "volume-"+v.id) }

// createVolumes makes one volume type per site (volume_backend_name = the site's host) and n
// volumes of 1 GiB of each type, and waits until they are available.
func (e *attachEnv) createVolumes(ctx context.Context, n int) (map[string][]attachVolume, error) {
	vols := map[string][]attachVolume{}
	for i := range e.sites {
		s := &e.sites[i]
		body := mustJSON(map[string]any{"volume_type": map[string]any{"name": s.host,
			"extra_specs": map[string]string{"volume_backend_name": s.host}}})
		if _, err := e.admin.doAt(ctx, http.MethodPost, "/v3/types", body, http.StatusOK); err != nil {
			return nil, fmt.Errorf("create volume type %s: %w", s.host, err)
		}
		for j := range n {
			body := mustJSON(map[string]any{"volume": map[string]any{"size": 1, "name": fmt.Sprintf("%s-%d", s.protocol, j),
				"volume_type": s.host}})
			b, err := e.user.doAt(ctx, http.MethodPost, "/v3/volumes", body, http.StatusAccepted)
			if err != nil {
				return nil, err
			}
			var r struct {
				Volume struct {
					ID string `json:"id"`
				} `json:"volume"`
			}
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("decode volume: %w", err)
			}
			vols[s.protocol] = append(vols[s.protocol], attachVolume{id: r.Volume.ID, site: s})
		}
	}
	if _, err := waitSettled(ctx, e.user, 60*time.Second); err != nil {
		return nil, err
	}
	all, err := listAll(ctx, e.user)
	if err != nil {
		return nil, err
	}
	for _, v := range all {
		if v.Status != "available" {
			return nil, fmt.Errorf("volume %s is %s, not available", v.ID, v.Status)
		}
	}
	return vols, nil
}

// connectionInfo is the flat connection_info of an attachment (3.27+).
type connectionInfo struct {
	DriverVolumeType string `json:"driver_volume_type"`
	// iSCSI
	TargetPortal string `json:"target_portal"`
	TargetIQN    string `json:"target_iqn"`
	TargetLUN    int    `json:"target_lun"`
	AuthUsername string `json:"auth_username"`
	AuthPassword string `json:"auth_password"`
	// NBD
	URI string `json:"uri"`
}

// attachTimes is one attachment's requests.
type attachTimes struct {
	create, update, complete time.Duration
}

func (t attachTimes) total() time.Duration { return t.create + t.update + t.complete }

// attach reserves v for an instance, connects it with the bench's connector and completes the
// attachment, as Nova does: three requests. It returns the attachment id and connection info.
func (e *attachEnv) attach(ctx context.Context, v attachVolume, instance string) (string, connectionInfo, attachTimes, error) {
	var t attachTimes
	var ci connectionInfo
	t0 := time.Now()
	b, err := e.user.doAt(ctx, http.MethodPost, "/v3/attachments",
		mustJSON(map[string]any{"attachment": map[string]any{"volume_uuid": v.id, "instance_uuid": instance}}), http.StatusOK)
	if err != nil {
		return "", ci, t, err
	}
	t1 := time.Now()
	var r struct {
		Attachment struct {
			ID             string         `json:"id"`
			Status         string         `json:"status"`
			ConnectionInfo connectionInfo `json:"connection_info"`
		} `json:"attachment"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", ci, t, fmt.Errorf("decode attachment: %w", err)
	}
	id := r.Attachment.ID
	connector := map[string]any{"initiator": benchInitiator, "host": "bench-compute", "ip": "127.0.0.1",
		"platform": "x86_64", "os_type": "linux", "multipath": false, "mountpoint": "/dev/vdb"}
	b, err = e.user.doAt(ctx, http.MethodPut, "/v3/attachments/"+id,
		mustJSON(map[string]any{"attachment": map[string]any{"connector": connector}}), http.StatusOK)
	if err != nil {
		return id, ci, t, err
	}
	t2 := time.Now()
	if err := json.Unmarshal(b, &r); err != nil {
		return id, ci, t, fmt.Errorf("decode attachment: %w", err)
	}
	ci = r.Attachment.ConnectionInfo
	if ci.DriverVolumeType != v.site.protocol {
		return id, ci, t, fmt.Errorf("attachment %s: driver_volume_type %q, want %q", id, ci.DriverVolumeType, v.site.protocol)
	}
	if _, err := e.user.doAt(ctx, http.MethodPost, "/v3/attachments/"+id+"/action", []byte(`{"os-complete":null}`),
		http.StatusNoContent); err != nil {
		return id, ci, t, err
	}
	t3 := time.Now()
	t.create, t.update, t.complete = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2)
	return id, ci, t, nil
}

// detach deletes attachment id; the answer comes once the agent has torn the export down.
func (e *attachEnv) detach(ctx context.Context, id string) (time.Duration, error) {
	t0 := time.Now()
	_, err := e.user.doAt(ctx, http.MethodDelete, "/v3/attachments/"+id, nil, http.StatusOK)
	return time.Since(t0), err
}

// latencyResult is one protocol's attach loop.
type latencyResult struct {
	protocol                         string
	attach, create, update, complete summary
	detach                           summary
	elapsed                          time.Duration
	left                             string // what remained on the target after the deletes
}

// latency attaches vols one at a time (all stay attached), then deletes the attachments one
// at a time. The attach loop stops early after cfg.loopTime.
func (e *attachEnv) latency(ctx context.Context, vols []attachVolume, progress io.Writer) (latencyResult, error) {
	res := latencyResult{protocol: vols[0].site.protocol}
	var all, creates, updates, completes, detaches []time.Duration
	var ids []string
	start := time.Now()
	deadline := start.Add(e.cfg.loopTime)
	for i, v := range vols {
		if time.Now().After(deadline) {
			fmt.Fprintf(progress, "attach: %s: stopped after %d attachments (-attach-time %s)\n", res.protocol, i, e.cfg.loopTime)
			break
		}
		id, _, t, err := e.attach(ctx, v, fmt.Sprintf("bench-instance-%d", i))
		if id != "" {
			ids = append(ids, id)
		}
		if err != nil {
			return res, fmt.Errorf("%s attachment %d: %w", res.protocol, i, err)
		}
		all, creates, updates, completes = append(all, t.total()), append(creates, t.create), append(updates, t.update), append(completes, t.complete)
	}
	for _, id := range ids {
		d, err := e.detach(ctx, id)
		if err != nil {
			return res, fmt.Errorf("%s: delete attachment %s: %w", res.protocol, id, err)
		}
		detaches = append(detaches, d)
	}
	res.elapsed = time.Since(start)
	res.attach, res.create, res.update, res.complete = summarize(all), summarize(creates), summarize(updates), summarize(completes)
	res.detach = summarize(detaches)
	res.left = e.leftOnTarget(ctx, vols[0].site)
	return res, nil
}

// leftOnTarget describes what the site's target still serves: the targets on its tgtd, or its
// nbdkit processes.
func (e *attachEnv) leftOnTarget(ctx context.Context, s *attachSite) string {
	switch s.protocol {
	case agents.TargetLocal:
		return "no target"
	case agents.TargetNBD:
		return fmt.Sprintf("%d nbdkit processes", len(daemonsNaming(filepath.Join(s.export.StateDir, "nbd")+"/")))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.tools.tgtadm, "-C", strconv.Itoa(s.export.ControlPort), "--lld", "iscsi",
		"--op", "show", "--mode", "target").Output()
	if err != nil {
		return "unknown (tgtadm: " + err.Error() + ")"
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Target ") {
			n++
		}
	}
	return fmt.Sprintf("%d targets on its tgtd", n)
}

// run runs the phase's steps and prints its tables.
func (e *attachEnv) run(ctx context.Context, out, progress io.Writer, redisNote string) error {
	n := e.cfg.volumes
	fmt.Fprintf(progress, "attach: creating %d volumes per protocol\n", n)
	vols, err := e.createVolumes(ctx, n)
	if err != nil {
		return err
	}
	var lats []latencyResult
	for _, s := range e.sites {
		fmt.Fprintf(progress, "attach: %s: %d attachments, then their deletes\n", s.protocol, n)
		r, err := e.latency(ctx, vols[s.protocol], progress)
		if err != nil {
			return err
		}
		lats = append(lats, r)
	}
	var tp *throughputResult
	if e.tools.throughputSkip == "" {
		if tp, err = e.throughput(ctx, vols, progress); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}

	fmt.Fprintf(out, "Through the production path: the HTTP API, %s, the bus, the scheduler and results functions, "+
		"and one agent per protocol (`local.Run`), each with one file backend whose `target_protocol` is the protocol, "+
		"on a data dir in a temporary directory. The agents start the targets as in production; the benchmark stops "+
		"them at the end (`export.Manager.Stop`).\n\n", redisNote)
	fmt.Fprintf(out, "| | |\n|---|---|\n")
	if e.tools.iscsiSkip == "" {
		fmt.Fprintf(out, "| iSCSI target | %s, own portal and control port |\n", e.tools.tgtdVersion)
	} else {
		fmt.Fprintf(out, "| iSCSI | skipped: %s |\n", e.tools.iscsiSkip)
	}
	if e.tools.nbdSkip == "" {
		fmt.Fprintf(out, "| NBD server | %s |\n", e.tools.nbdkitVersion)
	} else {
		fmt.Fprintf(out, "| NBD | skipped: %s |\n", e.tools.nbdSkip)
	}
	if e.tools.throughputSkip == "" {
		fmt.Fprintf(out, "| Client | %s |\n", e.tools.qemuVersion)
	}
	fmt.Fprintln(out)
	printAttachLatency(out, lats, n)
	if tp != nil {
		tp.print(out)
	} else {
		fmt.Fprintf(out, "Throughput skipped: %s. The benchmark installs nothing.\n\n", e.tools.throughputSkip)
	}
	return nil
}

func printAttachLatency(out io.Writer, lats []latencyResult, n int) {
	fmt.Fprintf(out, "### Attach and detach latency\n\n")
	fmt.Fprintf(out, "One request at a time, on %d volumes of 1 GiB per protocol. *attach* is Nova's three requests at "+
		"microversion 3.54: `POST /v3/attachments` (reserve), `PUT /v3/attachments/{id}` with a connector "+
		"(initiator and host: the agent exports the volume and answers with the connection info) and "+
		"`POST .../action {\"os-complete\": null}`. Every volume stays attached until all are, then each attachment is "+
		"deleted: `DELETE /v3/attachments/{id}` answers once the agent has torn the export down. *local* hands the "+
		"consumer the file's path and starts no target: the control plane, the bus and the agent alone.\n\n", n)
	fmt.Fprintf(out, "| protocol | request | samples | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|\n")
	for _, r := range lats {
		row := func(what string, s summary) {
			fmt.Fprintf(out, "| %s | %s | %d | %s | %s | %s |\n", r.protocol, what, s.n, dur(s.p50), dur(s.p99), dur(s.max))
		}
		row("attach (create + update + complete)", r.attach)
		row("… of which update (export)", r.update)
		row("delete (export teardown)", r.detach)
	}
	fmt.Fprintln(out)
	for _, r := range lats {
		fmt.Fprintf(out, "%s: create p50 %s, complete p50 %s; %s for the loop; after the deletes, %s.\n",
			r.protocol, dur(r.create.p50), dur(r.complete.p50), dur(r.elapsed), r.left)
	}
	fmt.Fprintln(out)
}
