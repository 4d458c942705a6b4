package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
)

// Debian's python3-cinderclient: its CLI and the python3 it is installed for (the python3
// first on PATH may be another install without it).
const (
	debianCinder  = "/usr/bin/cinder"
	debianPython3 = "/usr/bin/python3"
)

// TestE2ECinderclientAttach drives the attach flows of the real binary with python-cinderclient,
// against one file backend exporting with the local protocol: the attachments CLI at 3.54
// (create with and without a connector, list, show, update, complete, delete) and, through the
// Python API, the attachments manager and the legacy attach actions Nova used before 3.27.
// The two run side by side, each on its own volume. A python3 importing cinderclient takes
// seconds to start (more on a loaded machine), so one long-lived python3 serves the Python API
// and runs most CLI commands through the CLI's entry point; two commands run /usr/bin/cinder.
func TestE2ECinderclientAttach(t *testing.T) {
	for _, f := range []string{debianCinder, debianPython3} {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("BASALT_REQUIRE_CINDERCLIENT") != "" {
				t.Fatalf("python3-cinderclient not installed: %v", err)
			}
			t.Skipf("python3-cinderclient not installed: %v", err)
		}
	}
	// The Python API runs in one long-lived python3: it imports cinderclient while the stack
	// starts.
	py := startCinderPy(t)
	s := newStack(t, stackOptions{env: []string{"BASALT_CALL_TIMEOUT=10s"}})
	b := fileBackend("b1")
	b.TargetProtocol = "local"
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{b}})
	py.connect(t, s.base+"/v3", "alice", "p1")

	cliVol := s.createVolume("alice:p1", `{"volume":{"size":1,"name":"cc-attach-cli"}}`)
	pyVol := s.createVolume("alice:p1", `{"volume":{"size":1,"name":"cc-attach-py"}}`)
	for _, id := range []string{cliVol, pyVol} {
		if v := s.waitFinal(id, 20*time.Second); v["status"] != "available" {
			t.Fatalf("volume %s = %v (%v), want available", id, v["status"], v["status_reason"])
		}
	}
	t.Run("cli", func(t *testing.T) {
		t.Parallel()
		sc := *s
		sc.t = t
		cinderAttachCLI(t, &sc, py, cliVol)
	})
	t.Run("python", func(t *testing.T) {
		t.Parallel()
		sc := *s
		sc.t = t
		cinderAttachPython(t, &sc, py, pyVol)
	})
}

// cinderAttachCLI runs the attachments CLI at 3.54 on volume vid.
func cinderAttachCLI(t *testing.T, s *stack, py *cinderPy, vid string) {
	// cli runs cinder --os-volume-api-version 3.54 args in the python3 of py; exe runs the
	// same command with /usr/bin/cinder, in a python3 of its own.
	cli := func(args ...string) (string, error) {
		t.Helper()
		r := py.ok(t, "", "cli", anys(append([]string{"--os-volume-api-version", "3.54"}, args...))...).(map[string]any)
		out, _ := r["output"].(string)
		if code, _ := r["code"].(float64); code != 0 {
			return out, fmt.Errorf("exit status %v", code)
		}
		return out, nil
	}
	exe := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, debianCinder, append([]string{"--os-volume-api-version", "3.54"}, args...)...)
		cmd.Env = append(os.Environ(), "OS_AUTH_TYPE=noauth", "OS_USER_ID=alice", "OS_PROJECT_ID=p1",
			"CINDER_ENDPOINT="+s.base+"/v3")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", debianCinder, args, err, out)
		}
		return string(out)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("cinder %v: %v\n%s", args, err, out)
		}
		return out
	}
	status := func(want, when string) {
		t.Helper()
		if v := s.volume(vid); v["status"] != want {
			t.Fatalf("volume %s: status %v, want %s", when, v["status"], want)
		}
	}

	// attachment-create without a connector only reserves the volume.
	var aid string
	out, err := cli("attachment-create", vid, "inst-1")
	if err != nil {
		t.Errorf("cinder attachment-create %s inst-1 (no connector: the CLI sends \"connector\": {}): %v\n%s\nwant a reserved attachment, as Cinder makes for an empty connector", vid, err, out)
		// Go on with the reserve made the way the Python API makes it (connector None).
		a := py.ok(t, "3.54", "attachments.create", vid, nil, "inst-1").(map[string]any)
		aid, _ = a["id"].(string)
	} else {
		tabs := append(propTables(out), nil)
		a := tabs[0]
		aid = a["id"]
		if len(aid) != 36 || a["status"] != "reserved" || a["volume_id"] != vid || a["instance"] != "inst-1" || len(tabs) != 2 {
			t.Fatalf("cinder attachment-create %s inst-1 printed:\n%s\nwant one table: a reserved attachment of the volume for inst-1, and no connection_info", vid, out)
		}
	}
	if aid == "" {
		t.Fatal("no attachment reserved")
	}
	status("reserved", "after attachment-create without a connector")

	out = run("attachment-list")
	if r := tableRow(out, aid); r == nil || r["Volume ID"] != vid || r["Status"] != "reserved" || r["Server ID"] != "inst-1" {
		t.Errorf("cinder attachment-list:\n%s\nwant %s: reserved, of %s, for inst-1", out, aid, vid)
	}
	out = run("attachment-list", "--volume-id", vid)
	if r := tableRow(out, aid); r == nil || len(tableRows(out)) != 1 {
		t.Errorf("cinder attachment-list --volume-id %s:\n%s\nwant only %s", vid, out, aid)
	}

	// attachment-update connects it: the connection info comes back, the volume is attaching.
	out = run("attachment-update", aid, "--initiator", "iqn.1993-08.org.debian:01:cc", "--ip", "127.0.0.1",
		"--host", "compute-1", "--mountpoint", "/dev/vdb")
	tabs := propTables(out)
	if len(tabs) != 2 || tabs[0]["id"] != aid || tabs[0]["status"] != "attaching" {
		t.Fatalf("cinder attachment-update printed:\n%s\nwant the attaching attachment and its connection_info", out)
	}
	checkLocalConnInfo(t, "attachment-update", out, tabs[1], aid, vid, "rw")
	status("attaching", "after attachment-update")

	out = run("attachment-show", aid)
	tabs = propTables(out)
	if len(tabs) != 2 || tabs[0]["id"] != aid || tabs[0]["status"] != "attaching" || tabs[0]["volume_id"] != vid || tabs[0]["instance"] != "inst-1" {
		t.Fatalf("cinder attachment-show %s printed:\n%s\nwant the attaching attachment and its connection_info", aid, out)
	}
	checkLocalConnInfo(t, "attachment-show", out, tabs[1], aid, vid, "rw")

	// attachment-complete: attached, and the volume in-use.
	run("attachment-complete", aid)
	status("in-use", "after attachment-complete")
	out = run("show", vid)
	if p := tableProps(out); p["status"] != "in-use" || !strings.Contains(p["attachment_ids"], aid) || !strings.Contains(p["attached_servers"], "inst-1") {
		t.Errorf("cinder show %s after attachment-complete:\n%s\nwant in-use, attached to inst-1 by %s", vid, out, aid)
	}

	// attachment-delete: the volume is available again.
	run("attachment-delete", aid)
	status("available", "after attachment-delete")
	if v := s.volume(vid); len(v["attachments"].([]any)) != 0 {
		t.Errorf("volume after attachment-delete has attachments %v", v["attachments"])
	}

	// attachment-create with a connector (--connect True) and mode ro: connected at once. This
	// one, and the list after it, run /usr/bin/cinder itself.
	out = exe("attachment-create", vid, "inst-2", "--connect", "True", "--initiator", "iqn.1993-08.org.debian:01:cc",
		"--ip", "127.0.0.1", "--host", "compute-2", "--platform", "x86_64", "--ostype", "linux2",
		"--multipath", "False", "--mountpoint", "/dev/vdc", "--mode", "ro")
	tabs = propTables(out)
	if len(tabs) != 2 {
		t.Fatalf("cinder attachment-create --connect True printed:\n%s\nwant the attachment and its connection_info", out)
	}
	a := tabs[0]
	aid = a["id"]
	if len(aid) != 36 || a["status"] != "attaching" || a["volume_id"] != vid || a["instance"] != "inst-2" || a["attach_mode"] != "ro" {
		t.Fatalf("cinder attachment-create --connect True printed:\n%s\nwant an attaching ro attachment of the volume for inst-2", out)
	}
	checkLocalConnInfo(t, "attachment-create --connect True", out, tabs[1], aid, vid, "ro")
	status("attaching", "after attachment-create with a connector")
	run("attachment-complete", aid)
	status("in-use", "after the second attachment-complete")
	out = exe("attachment-list", "--volume-id", vid)
	if r := tableRow(out, aid); r == nil || r["Status"] != "attached" || r["Server ID"] != "inst-2" || len(tableRows(out)) != 1 {
		t.Errorf("cinder attachment-list --volume-id %s:\n%s\nwant only %s, attached, for inst-2", vid, out, aid)
	}
	run("attachment-delete", aid)
	status("available", "after the second attachment-delete")
	out, err = cli("attachment-show", aid)
	if err == nil || !strings.Contains(out, "HTTP 404") {
		t.Errorf("cinder attachment-show of a deleted attachment: err %v\n%s\nwant HTTP 404", err, out)
	}
}

// checkLocalConnInfo checks the connection_info table the CLI printed for attachment aid of
// volume vid: the local protocol's, with the device path.
func checkLocalConnInfo(t *testing.T, what, out string, ci map[string]string, aid, vid, mode string) {
	t.Helper()
	if ci["driver_volume_type"] != "local" || ci["attachment_id"] != aid || !strings.HasSuffix(ci["device_path"], vid) ||
		ci["access_mode"] != mode || ci["encrypted"] != "False" {
		t.Errorf("cinder %s printed the connection_info:\n%s\nwant driver_volume_type local, attachment_id %s, a device_path ending in the volume id, access_mode %s, encrypted False",
			what, out, aid, mode)
	}
}

// cinderAttachPython runs the attachments manager (3.54) and the legacy attach actions (3.0) of
// cinderclient's Python API on volume vid.
func cinderAttachPython(t *testing.T, s *stack, py *cinderPy, vid string) {
	volume := func(version string) map[string]any {
		t.Helper()
		return py.ok(t, version, "volumes.get", vid).(map[string]any)
	}
	status := func(version, want, when string) map[string]any {
		t.Helper()
		v := volume(version)
		if v["status"] != want {
			t.Fatalf("volumes.get %s: status %v, want %s", when, v["status"], want)
		}
		return v
	}
	connector := map[string]any{"initiator": "iqn.1993-08.org.debian:01:py", "ip": "127.0.0.1", "host": "compute-3",
		"platform": "x86_64", "os_type": "linux2", "multipath": false, "mountpoint": "/dev/vdd"}

	// The attachments manager: create with a connector, complete, list, show, delete.
	a := py.ok(t, "3.54", "attachments.create", vid, connector, "inst-py", "rw").(map[string]any)
	aid, _ := a["id"].(string)
	ci, _ := a["connection_info"].(map[string]any)
	if aid == "" || a["status"] != "attaching" || a["attach_mode"] != "rw" || a["instance"] != "inst-py" || ci == nil ||
		ci["driver_volume_type"] != "local" || ci["attachment_id"] != aid || !strings.HasSuffix(fmt.Sprint(ci["device_path"]), vid) ||
		ci["access_mode"] != "rw" {
		t.Fatalf("attachments.create = %v, want an attaching rw attachment for inst-py with the local connection_info", a)
	}
	status("3.54", "attaching", "after attachments.create")
	if r := py.ok(t, "3.54", "attachments.complete", aid).(map[string]any); r["status"] != float64(204) {
		t.Errorf("attachments.complete answered %v, want 204", r)
	}
	v := status("3.54", "in-use", "after attachments.complete")
	if atts, _ := v["attachments"].([]any); len(atts) != 1 || atts[0].(map[string]any)["attachment_id"] != aid ||
		atts[0].(map[string]any)["server_id"] != "inst-py" || atts[0].(map[string]any)["device"] != "/dev/vdd" {
		t.Errorf("volumes.get attachments = %v, want %s for inst-py at /dev/vdd", v["attachments"], aid)
	}
	checkHostName(t, s, v, vid, "compute-3")
	if a := py.ok(t, "3.54", "attachments.show", aid).(map[string]any); a["status"] != "attached" || a["attached_at"] == "" || a["volume_id"] != vid {
		t.Errorf("attachments.show = %v, want attached with attached_at", a)
	}
	list := py.ok(t, "3.54", "attachments.list", kwargs{"search_opts": map[string]any{"volume_id": vid}}).([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != aid || list[0].(map[string]any)["status"] != "attached" {
		t.Errorf("attachments.list(volume_id) = %v, want only %s, attached", list, aid)
	}
	list = py.ok(t, "3.54", "attachments.list", kwargs{"detailed": true, "search_opts": map[string]any{"volume_id": vid}}).([]any)
	if len(list) != 1 || list[0].(map[string]any)["attach_mode"] != "rw" {
		t.Errorf("attachments.list(detailed, volume_id) = %v, want %s, rw", list, aid)
	}
	py.ok(t, "3.54", "attachments.delete", aid)
	if v := status("3.54", "available", "after attachments.delete"); len(v["attachments"].([]any)) != 0 {
		t.Errorf("volume after attachments.delete has attachments %v", v["attachments"])
	}
	if r := py.call(t, "3.54", "attachments.show", aid); r.Code != 404 {
		t.Errorf("attachments.show of a deleted attachment = %+v, want a 404", r)
	}

	// The legacy flow, at 3.0: reserve and unreserve; reserve, initialize_connection, attach;
	// begin_detaching and roll_detaching; begin_detaching, terminate_connection, detach.
	action := func(name string, args ...any) {
		t.Helper()
		r, _ := py.ok(t, "3.0", "volumes."+name, append([]any{vid}, args...)...).(map[string]any)
		if r["status"] != float64(202) {
			t.Errorf("volumes.%s answered %v, want 202", name, r)
		}
	}
	action("reserve")
	status("3.0", "attaching", "after volumes.reserve")
	action("unreserve")
	status("3.0", "available", "after volumes.unreserve")
	action("reserve")
	status("3.0", "attaching", "after the second volumes.reserve")
	ci = py.ok(t, "3.0", "volumes.initialize_connection", vid, connector).(map[string]any)
	data, _ := ci["data"].(map[string]any)
	if ci["driver_volume_type"] != "local" || data == nil || !strings.HasSuffix(fmt.Sprint(data["device_path"]), vid) || data["access_mode"] != "rw" {
		t.Fatalf("volumes.initialize_connection = %v, want driver_volume_type local, data with the device_path and access_mode rw", ci)
	}
	status("3.0", "attaching", "after volumes.initialize_connection")
	action("attach", "inst-legacy", "/dev/vdb", kwargs{"mode": "rw", "host_name": "compute-1"})
	v = status("3.0", "in-use", "after volumes.attach")
	atts, _ := v["attachments"].([]any)
	if len(atts) != 1 {
		t.Fatalf("volumes.get attachments after volumes.attach = %v, want one", v["attachments"])
	}
	va := atts[0].(map[string]any)
	aid, _ = va["attachment_id"].(string)
	if aid == "" || va["server_id"] != "inst-legacy" || va["device"] != "/dev/vdb" || va["volume_id"] != vid {
		t.Errorf("volumes.get attachment after volumes.attach = %v, want inst-legacy at /dev/vdb", va)
	}
	checkHostName(t, s, v, vid, "compute-1")
	// The attachments API sees the legacy attachment.
	list = py.ok(t, "3.54", "attachments.list", kwargs{"search_opts": map[string]any{"volume_id": vid}}).([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != aid || list[0].(map[string]any)["status"] != "attached" {
		t.Errorf("attachments.list(volume_id) after volumes.attach = %v, want %s, attached", list, aid)
	}
	action("begin_detaching")
	status("3.0", "detaching", "after volumes.begin_detaching")
	action("roll_detaching")
	status("3.0", "in-use", "after volumes.roll_detaching")
	action("begin_detaching")
	status("3.0", "detaching", "after the second volumes.begin_detaching")
	action("terminate_connection", connector)
	action("detach", aid)
	v = status("3.0", "available", "after volumes.detach")
	if atts, _ := v["attachments"].([]any); len(atts) != 0 {
		t.Errorf("volumes.get attachments after volumes.detach = %v, want none", atts)
	}
	// Unreserve of an available volume changes nothing.
	action("unreserve")
	status("3.0", "available", "after volumes.unreserve of an available volume")
	if list := py.ok(t, "3.54", "attachments.list", kwargs{"search_opts": map[string]any{"volume_id": vid}}).([]any); len(list) != 0 {
		t.Errorf("attachments.list(volume_id) after volumes.detach = %v, want none", list)
	}
}

// checkHostName checks the host_name of volume vid's one attachment: null in v, the volume as
// its project's member sees it (Cinder shows it to administrators only), host to an admin.
func checkHostName(t *testing.T, s *stack, v map[string]any, vid, host string) {
	t.Helper()
	if atts, _ := v["attachments"].([]any); len(atts) != 1 || atts[0].(map[string]any)["host_name"] != nil {
		t.Errorf("the member's volumes.get attachments = %v, want one with host_name null", v["attachments"])
	}
	if atts, _ := s.volume(vid)["attachments"].([]any); len(atts) != 1 || atts[0].(map[string]any)["host_name"] != host {
		t.Errorf("the admin's attachments = %v, want one with host_name %s", atts, host)
	}
}

// cinderPyScript serves cinderclient's Python API (v3 Client, noauth) over stdin and stdout,
// one JSON line per call: {"version", "call": "manager.method", "args", "kwargs"} in,
// {"result"} or {"error", "code"} out. The first line in is {"endpoint", "user", "project"}.
// The call "cli" runs the cinder CLI's entry point (what /usr/bin/cinder runs) on args and
// answers its exit code and output: a CLI command without a python3 start of seconds.
const cinderPyScript = `
import contextlib, io, json, os, sys, traceback
import requests
from keystoneauth1 import session
from cinderclient import api_versions, base, exceptions, shell
from cinderclient.contrib import noauth
from cinderclient.v3 import client

def cli(argv):
    out, saved = io.StringIO(), sys.argv
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        sys.argv = ['cinder'] + argv
        try:
            shell.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        finally:
            sys.argv = saved
    return {'code': code, 'output': out.getvalue()}

def plain(x):
    if isinstance(x, base.Resource):
        return plain(x.to_dict())
    if isinstance(x, requests.Response):
        return {'status': x.status_code}
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], requests.Response):
        return {'status': x[0].status_code, 'body': plain(x[1])}
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x

cfg = json.loads(sys.stdin.readline())
os.environ.update({'OS_AUTH_TYPE': 'noauth', 'OS_USER_ID': cfg['user'], 'OS_PROJECT_ID': cfg['project'],
                   'CINDER_ENDPOINT': cfg['endpoint']})
sess = session.Session(auth=noauth.CinderNoAuthPlugin(cfg['user'], cfg['project'], endpoint=cfg['endpoint']))
clients = {}
print(json.dumps({'result': 'ready'}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req['call'] == 'cli':
        print(json.dumps({'result': cli(req['args'])}), flush=True)
        continue
    c = clients.get(req['version'])
    if c is None:
        c = clients[req['version']] = client.Client(session=sess, api_version=api_versions.APIVersion(req['version']))
    manager, method = req['call'].split('.')
    try:
        res = {'result': plain(getattr(getattr(c, manager), method)(*req['args'], **req['kwargs']))}
    except exceptions.ClientException as e:
        res = {'error': str(e), 'code': e.code}
    except Exception as e:
        res = {'error': traceback.format_exc(), 'code': 0}
    print(json.dumps(res, default=str), flush=True)
`

// cinderPy is a running cinderPyScript.
type cinderPy struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
}

type kwargs map[string]any

type cinderPyResult struct {
	Result any    `json:"result"`
	Error  string `json:"error"`
	Code   int    `json:"code"`
}

// startCinderPy starts debianPython3 on cinderPyScript; connect says where to send calls.
func startCinderPy(t *testing.T) *cinderPy {
	t.Helper()
	p := &cinderPy{cmd: exec.Command(debianPython3, "-c", cinderPyScript), stderr: &bytes.Buffer{}}
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewReaderSize(stdout, 1<<20)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", debianPython3, err)
	}
	t.Cleanup(func() {
		p.in.Close()
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// connect sends the endpoint; it skips the test (or fails it, with BASALT_REQUIRE_CINDERCLIENT)
// when python3 cannot import cinderclient.
func (p *cinderPy) connect(t *testing.T, endpoint, user, project string) {
	t.Helper()
	r, err := p.roundTrip(map[string]any{"endpoint": endpoint, "user": user, "project": project})
	if err != nil || r.Result != "ready" {
		msg := fmt.Sprintf("%s cannot drive cinderclient (%v, %+v); it printed:\n%s", debianPython3, err, r, p.stderrText())
		if os.Getenv("BASALT_REQUIRE_CINDERCLIENT") != "" || err == nil {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// roundTrip sends one line and reads the answer, within a minute.
func (p *cinderPy) roundTrip(req any) (cinderPyResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var r cinderPyResult
	b, err := json.Marshal(req)
	if err != nil {
		return r, err
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return r, fmt.Errorf("write to python3: %w", err)
	}
	type answer struct {
		line []byte
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := p.out.ReadBytes('\n')
		ch <- answer{line, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			return r, fmt.Errorf("read from python3: %w", a.err)
		}
		if err := json.Unmarshal(a.line, &r); err != nil {
			return r, fmt.Errorf("python3 answered %q: %w", a.line, err)
		}
		return r, nil
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		return r, fmt.Errorf("python3 did not answer %s within a minute", b)
	}
}

func (p *cinderPy) stderrText() string {
	w := p.cmd.Stderr.(*lockedWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return p.stderr.String()
}

// call runs manager.method(args...) at microversion version; a kwargs last argument gives
// the keyword arguments.
func (p *cinderPy) call(t *testing.T, version, fn string, args ...any) cinderPyResult {
	t.Helper()
	kw := kwargs{}
	if n := len(args); n > 0 {
		if k, ok := args[n-1].(kwargs); ok {
			kw, args = k, args[:n-1]
		}
	}
	if args == nil {
		args = []any{}
	}
	r, err := p.roundTrip(map[string]any{"version": version, "call": fn, "args": args, "kwargs": kw})
	if err != nil {
		t.Fatalf("cinderclient %s: %v\n%s", fn, err, p.stderrText())
	}
	return r
}

// ok is call for a call that must succeed; it returns the result.
func (p *cinderPy) ok(t *testing.T, version, fn string, args ...any) any {
	t.Helper()
	r := p.call(t, version, fn, args...)
	if r.Error != "" {
		t.Fatalf("cinderclient %s%v at %s failed (%d): %s", fn, args, version, r.Code, r.Error)
	}
	return r.Result
}

func anys(ss []string) []any {
	a := make([]any, len(ss))
	for i, s := range ss {
		a[i] = s
	}
	return a
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// propTables parses the Property | Value tables the cinder CLI printed, one map each.
func propTables(out string) []map[string]string {
	var tabs []map[string]string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 2 {
			continue
		}
		k, v := strings.TrimSpace(cells[0]), strings.TrimSpace(cells[1])
		if k == "Property" && v == "Value" {
			tabs = append(tabs, map[string]string{})
			continue
		}
		if len(tabs) > 0 {
			tabs[len(tabs)-1][k] = v
		}
	}
	return tabs
}
