package main

// The fault suite: each failure that production Redis and production hosts have is injected
// deterministically into a running stack (a reply lost after its command ran, a process killed
// at a chosen point), and after each the invariants a user relies on are checked.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events/redistest"
)

// tryRequest sends one admin request and returns its answer, or the transport error of a
// process that died under it. It does not fail the test.
func (s *stack) tryRequest(method, path, body string, hdr ...string) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	req.Header.Set("X-Auth-Token", "admin:admin")
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, raw: string(raw), header: res.Header}
	_ = json.Unmarshal(raw, &r.body)
	return r, nil
}

// volumeStatus returns the status in a volume's show answer, or "".
func volumeStatus(r response) string {
	v, _ := r.body["volume"].(map[string]any)
	st, _ := v["status"].(string)
	return st
}

// ledger is what a fault test asked for and was told: an acknowledged create must end with its
// volume available, an acknowledged delete with its volume gone.
type ledger struct {
	mu      sync.Mutex
	created map[string]bool // volume id -> acknowledged (202)
	deleted map[string]bool
	// mayFail lists creates whose outcome may be error (with its reason) rather than
	// available: their backend was frozen past their lease.
	mayFail map[string]bool
}

func newLedger() *ledger {
	return &ledger{created: map[string]bool{}, deleted: map[string]bool{}, mayFail: map[string]bool{}}
}

// create asks for a 1 GB volume; it records the volume when the create was acknowledged.
func (l *ledger) create(s *stack, name string) (id string, acked bool) {
	r, err := s.tryRequest("POST", "/v3/volumes", fmt.Sprintf(`{"volume":{"size":1,"name":%q}}`, name))
	if err != nil || r.status != http.StatusAccepted {
		return "", false
	}
	id = r.body["volume"].(map[string]any)["id"].(string)
	l.mu.Lock()
	l.created[id] = true
	l.mu.Unlock()
	return id, true
}

// delete asks for volume id's delete; it records the delete when it was acknowledged.
func (l *ledger) delete(s *stack, id string) bool {
	r, err := s.tryRequest("DELETE", "/v3/volumes/"+id, "")
	if err != nil || r.status != http.StatusAccepted {
		return false
	}
	l.deleted[id] = true
	return true
}

// violations returns every invariant the stack breaks now:
//   - every acknowledged request has its outcome (created volumes available, deleted ones gone);
//   - no volume is in a transitional status;
//   - the quota in use of each project equals what its volume records hold;
//   - each pool's allocated capacity equals the volumes placed on it;
//   - every backend object has a record or is listed as manageable, and every placed volume
//     has its object.
func (s *stack) violations(l *ledger, data string, hosts []string) []string {
	var out []string
	r, err := s.tryRequest("GET", "/v3/volumes/detail?all_tenants=1&limit=1000", "")
	if err != nil || r.status != 200 {
		return []string{fmt.Sprintf("list volumes: %v %d %s", err, r.status, r.raw)}
	}
	type vol struct {
		ID, Status, Host, Project string
		Size                      float64
	}
	vols := map[string]vol{}
	for _, x := range r.body["volumes"].([]any) {
		m := x.(map[string]any)
		host, _ := m["os-vol-host-attr:host"].(string)
		project, _ := m["os-vol-tenant-attr:tenant_id"].(string)
		v := vol{ID: m["id"].(string), Status: m["status"].(string), Host: host, Project: project, Size: m["size"].(float64)}
		vols[v.ID] = v
		switch v.Status {
		case "creating", "deleting", "extending", "reverting", "attaching", "detaching", "managing", "unmanaging":
			out = append(out, fmt.Sprintf("volume %s is %s", v.ID, v.Status))
		}
	}
	for id := range l.created {
		v, ok := vols[id]
		switch {
		case l.deleted[id] && ok:
			out = append(out, fmt.Sprintf("acknowledged delete of %s: still there, %s", id, v.Status))
		case !l.deleted[id] && !ok:
			out = append(out, fmt.Sprintf("acknowledged create of %s: no volume", id))
		case !l.deleted[id] && v.Status != "available" && !(l.mayFail[id] && v.Status == "error"):
			out = append(out, fmt.Sprintf("acknowledged create of %s: %s, want available", id, v.Status))
		}
	}
	projects := map[string][2]float64{}
	alloc := map[string]float64{}
	for _, v := range vols {
		q := projects[v.Project]
		projects[v.Project] = [2]float64{q[0] + v.Size, q[1] + 1}
		if v.Host != "" {
			alloc[v.Host] += v.Size
		}
	}
	projects["admin"] = projects["admin"] // the project the tests use, even when it has nothing
	for p, want := range projects {
		r, err := s.tryRequest("GET", "/v3/os-quota-sets/"+p+"?usage=true", "")
		if err != nil || r.status != 200 {
			out = append(out, fmt.Sprintf("quota of %s: %v %d", p, err, r.status))
			continue
		}
		q := r.body["quota_set"].(map[string]any)
		gb := q["gigabytes"].(map[string]any)
		n := q["volumes"].(map[string]any)
		if gb["in_use"].(float64) != want[0] || n["in_use"].(float64) != want[1] || gb["reserved"].(float64) != 0 {
			out = append(out, fmt.Sprintf("quota of %s: %v GB and %v volumes in use (%v reserved), records hold %v GB in %v volumes",
				p, gb["in_use"], n["in_use"], gb["reserved"], want[0], want[1]))
		}
	}
	r, err = s.tryRequest("GET", "/v3/scheduler-stats/get_pools?detail=true", "")
	if err != nil || r.status != 200 {
		return append(out, fmt.Sprintf("get_pools: %v", err))
	}
	for _, x := range r.body["pools"].([]any) {
		p := x.(map[string]any)
		name := p["name"].(string)
		if got := p["capabilities"].(map[string]any)["allocated_capacity_gb"].(float64); got != alloc[name] {
			out = append(out, fmt.Sprintf("pool %s: allocated %v GB, its volumes hold %v", name, got, alloc[name]))
		}
	}
	for _, host := range hosts {
		manageable := map[string]bool{}
		r, err := s.tryRequest("GET", "/v3/manageable_volumes?host="+host, "", mv, "volume 3.8")
		if err == nil && r.status == 200 {
			for _, x := range r.body["manageable-volumes"].([]any) {
				ref := x.(map[string]any)["reference"].(map[string]any)
				manageable[fmt.Sprint(ref["source-name"])] = true
			}
		}
		files, _ := filepath.Glob(filepath.Join(data, strings.ReplaceAll(host, "@", "/"), "volume-*"))
		onDisk := map[string]bool{}
		for _, f := range files {
			name := filepath.Base(f)
			id := strings.TrimPrefix(name, "volume-")
			onDisk[id] = true
			if _, ok := vols[id]; !ok && !manageable[name] {
				out = append(out, fmt.Sprintf("backend object %s on %s has no record and is not listed as manageable", name, host))
			}
		}
		for _, v := range vols {
			if strings.HasPrefix(v.Host, host+"#") && v.Status == "available" && !onDisk[v.ID] {
				out = append(out, fmt.Sprintf("available volume %s has no object on %s", v.ID, host))
			}
		}
	}
	sort.Strings(out)
	return out
}

// checkInvariants waits until the stack holds every invariant, and fails the test with what
// it still breaks when it does not within d.
func (s *stack) checkInvariants(what string, l *ledger, data string, hosts []string, d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	var last []string
	for {
		if last = s.violations(l, data, hosts); len(last) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("after %s, %d invariants still broken after %v:\n  %s", what, len(last), d, strings.Join(last, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// faultStack is a stack behind a fault-injecting proxy with one agent of one file backend.
func faultStack(t *testing.T, env ...string) (s *stack, data string, hosts []string) {
	s = newStack(t, stackOptions{proxy: true, env: append([]string{"BASALT_CHARGE_GRACE=3s"}, env...)})
	data = filepath.Join(s.dir, "data")
	s.addAgent(agents.Config{Host: "h1", DataDir: data, Backends: []agents.BackendConfig{fileBackend("b1")}})
	return s, data, []string{"h1@b1"}
}

// TestFaultLostReplies loses, one at a time, the reply of each write whose repeat would do
// harm if it were not idempotent (the command runs, the connection breaks before its reply,
// the client retries on a new connection or gives up), while creates and deletes go on; after
// each, every invariant holds.
func TestFaultLostReplies(t *testing.T) {
	s, data, hosts := faultStack(t)
	l := newLedger()
	// One create first, so that every process has loaded its scripts: a lost reply must hit a
	// run of a script, not the NOSCRIPT answer that makes go-redis send it.
	if _, ok := l.create(s, "warm-up"); !ok {
		t.Fatal("warm-up create refused")
	}
	s.checkInvariants("warm-up", l, data, hosts, 20*time.Second)
	cases := []struct {
		name  string
		lose  int
		match func(redistest.Command) bool
		// mustAck: the request that hits the fault is still acknowledged (a retry succeeds).
		mustAck bool
		del     bool // the fault is on the delete path
	}{
		{"quota charge", 1, func(c redistest.Command) bool {
			return c.Mentions(":limits") && c.Mentions("charge:vol:")
		}, true, false},
		{"quota charge, every retry", 4, func(c redistest.Command) bool {
			return c.Mentions(":limits") && c.Mentions("charge:vol:")
		}, false, false},
		{"create transaction", 1, func(c redistest.Command) bool {
			return c.Name() == "EXEC" && c.Mentions("outbox") && c.Mentions(`"kind":"create_volume"`) && c.Mentions(`"owner":"scheduler"`) && c.Mentions(":vols")
		}, false, false},
		{"capacity reservation", 1, func(c redistest.Command) bool {
			return strings.HasPrefix(c.Name(), "EVAL") && c.Mentions("ledger:")
		}, true, false},
		{"placement and hand-off", 1, func(c redistest.Command) bool {
			return c.Name() == "EXEC" && c.Mentions("outbox") && c.Mentions(`"kind":"create_volume"`) && c.Mentions(`"owner":"h1@b1"`)
		}, true, false},
		{"agent journal", 1, func(c redistest.Command) bool {
			return c.Name() == "HSETNX" && c.Mentions(":inflight")
		}, true, false},
		{"result published", 1, func(c redistest.Command) bool {
			return c.Name() == "XADD" && c.Mentions("results")
		}, true, false},
		{"outcome applied", 1, func(c redistest.Command) bool {
			return c.Name() == "EXEC" && c.Mentions(`"kind":"create_volume"`) && c.Mentions(`"state":"done"`)
		}, true, false},
		{"delete transaction", 1, func(c redistest.Command) bool {
			return c.Name() == "EXEC" && c.Mentions(`"kind":"delete_volume"`) && c.Mentions("outbox")
		}, false, true},
		{"delete outcome and refund", 1, func(c redistest.Command) bool {
			return strings.HasPrefix(c.Name(), "EVAL") && c.Mentions("charge:vol:") && !c.Mentions(":limits")
		}, true, true},
	}
	for i, c := range cases {
		lost := s.proxy.LoseReplies(c.lose, c.match)
		if c.del {
			id, ok := l.create(s, fmt.Sprintf("victim-%d", i))
			if !ok {
				t.Fatalf("%s: create before the delete was refused", c.name)
			}
			s.checkInvariants(c.name+" (setup)", l, data, hosts, 20*time.Second)
			if ok := l.delete(s, id); !ok && c.mustAck {
				t.Fatalf("%s: the delete was not acknowledged", c.name)
			}
			if !l.deleted[id] {
				// Unacknowledged: the client does not know; it may have happened or not.
				s.eventually(20*time.Second, func() (bool, string) {
					r, _ := s.tryRequest("GET", "/v3/volumes/"+id, "")
					st := volumeStatus(r)
					return r.status == 404 || st == "available" || st == "error_deleting", fmt.Sprint(r.status, st)
				}, c.name+": an unacknowledged delete settles")
				if r, _ := s.tryRequest("GET", "/v3/volumes/"+id, ""); r.status == 404 {
					l.deleted[id] = true
				}
			}
		} else {
			_, ok := l.create(s, fmt.Sprintf("v-%d", i))
			if !ok && c.mustAck {
				t.Fatalf("%s: the create was not acknowledged", c.name)
			}
		}
		// Work around the fault goes on.
		if _, ok := l.create(s, fmt.Sprintf("after-%d", i)); !ok {
			t.Fatalf("%s: a create after the fault was refused", c.name)
		}
		s.eventually(20*time.Second, func() (bool, string) { return lost() == c.lose, fmt.Sprint(lost()) },
			c.name+": the proxy lost the replies asked for")
		s.checkInvariants(c.name, l, data, hosts, 25*time.Second)
	}

	// A compare-and-set whose reply is lost (here the one that adds an attachment) ran: the
	// request succeeds once, and the volume has one attachment, not a refusal or two.
	id, ok := l.create(s, "attach-target")
	if !ok {
		t.Fatal("create refused")
	}
	s.checkInvariants("create attach-target", l, data, hosts, 20*time.Second)
	lost := s.proxy.LoseReplies(1, func(c redistest.Command) bool {
		return c.Name() == "EXEC" && c.Mentions("instance-1") && c.Mentions(":atts")
	})
	r, err := s.tryRequest("POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"instance-1"}}`, id),
		mv, "volume 3.54")
	if err != nil || r.status != 200 || lost() != 1 {
		t.Fatalf("attachment create whose reply was lost (lost %d): %v %d %s, want 200", lost(), err, r.status, r.raw)
	}
	r, _ = s.tryRequest("GET", "/v3/attachments/detail?volume_id="+id, "", mv, "volume 3.54")
	atts, _ := r.body["attachments"].([]any)
	if v, _ := s.tryRequest("GET", "/v3/volumes/"+id, ""); volumeStatus(v) != "reserved" || len(atts) != 1 {
		t.Fatalf("volume after the attachment: %s with %d attachments (%s), want reserved with 1", volumeStatus(v), len(atts), r.raw)
	}
}

// crashAt restarts p with crash point point armed, runs trigger, waits for p to die at the
// point (SIGKILL, no cleanup), and starts it again as its supervisor would.
func (s *stack) crashAt(p *proc, point string, ready func(), trigger func()) {
	s.t.Helper()
	p.kill(syscall.SIGTERM)
	p.env = append(append([]string(nil), s.env...), "BASALT_CRASH_AT="+point)
	p.start()
	ready()
	done := make(chan error, 1)
	cmd := p.cmd
	go func() { done <- cmd.Wait() }()
	trigger()
	select {
	case err := <-done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			s.t.Fatalf("%s ended with %v at %s, want killed at the crash point", p.name, err, point)
		}
	case <-time.After(30 * time.Second):
		s.t.Fatalf("%s never reached crash point %s", p.name, point)
	}
	log, _ := os.ReadFile(p.log)
	if !strings.Contains(string(log), "crash point "+point) {
		s.t.Fatalf("%s died, but not at crash point %s", p.name, point)
	}
	p.cmd, p.env = nil, s.env
	p.start()
	ready()
}

// TestFaultCrashPoints kills each process with SIGKILL at each point where a crash would lose
// or duplicate work if a state change and the command it causes were not one transaction, or
// if a step were not idempotent: between the quota charge and the record, between the record
// and the publish, between a placement and its hand-off, between the agent's journal and its
// work, between the driver call and its result, between an outcome and its acknowledgement.
// The process is restarted as a supervisor would; every invariant then holds.
func TestFaultCrashPoints(t *testing.T) {
	s, data, hosts := faultStack(t)
	l := newLedger()
	procs := map[string]*proc{}
	for _, p := range s.procs {
		procs[p.name] = p
	}
	api, sched, agent := procs["api"], procs["scheduler-0"], s.agents["h1"]
	ready := map[*proc]func(){
		api:   s.waitHTTP,
		sched: func() { time.Sleep(500 * time.Millisecond) },
		agent: func() { s.waitPool("h1@b1") },
	}
	// One volume made before each delete point.
	victim := func(name string) string {
		id, ok := l.create(s, name)
		if !ok {
			t.Fatalf("create %s refused", name)
		}
		s.checkInvariants("create "+name, l, data, hosts, 20*time.Second)
		return id
	}
	for _, c := range []struct {
		point string
		p     *proc
		del   bool
	}{
		{"create.charged", api, false},
		{"create.committed", api, false},
		{"placement.placed", sched, false},
		{"agent.journaled", agent, false},
		{"agent.executed", agent, false},
		{"results.applied", sched, false},
		{"delete.committed", api, true},
		{"agent.executed", agent, true},
		{"results.applied", sched, true},
	} {
		what := c.point + " in " + c.p.name
		var id string
		if c.del {
			id = victim("victim-" + c.point)
		}
		s.crashAt(c.p, c.point, ready[c.p], func() {
			if c.del {
				l.delete(s, id)
			} else {
				l.create(s, "crash-"+c.point)
			}
		})
		if c.del && !l.deleted[id] {
			// The API died before it answered: the client would retry the delete.
			s.eventually(20*time.Second, func() (bool, string) {
				r, _ := s.tryRequest("GET", "/v3/volumes/"+id, "")
				st := volumeStatus(r)
				return r.status == 404 || st != "deleting", st
			}, what+": the unanswered delete settles")
			if r, _ := s.tryRequest("GET", "/v3/volumes/"+id, ""); r.status == 404 {
				l.deleted[id] = true
			} else if !l.delete(s, id) {
				t.Fatalf("%s: the retried delete was refused", what)
			}
		}
		if _, ok := l.create(s, "after-"+c.point); !ok {
			t.Fatalf("%s: a create after the restart was refused", what)
		}
		s.checkInvariants(what, l, data, hosts, 30*time.Second)
	}
}

// TestFaultRestartsAndFreezes: creates go on while redis-server is killed and restarted from
// its append-only file, while every Redis call is delayed, while Redis is unreachable (a
// frozen network path), and while the agent is frozen past its operations' leases. After
// each, every invariant holds; creates whose agent froze may end in error, never stuck, and
// leave no object without a record.
func TestFaultRestartsAndFreezes(t *testing.T) {
	s, data, hosts := faultStack(t)
	l := newLedger()
	fsyncAlways := func() {
		// Every acknowledged write reaches the file before its reply, as production runs it.
		if err := s.redis.Client().ConfigSet(context.Background(), "appendfsync", "always").Err(); err != nil {
			t.Fatal(err)
		}
	}
	fsyncAlways()
	burst := func(name string, n int, during func()) {
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i) * 40 * time.Millisecond)
				l.create(s, fmt.Sprintf("%s-%d", name, i))
			}()
		}
		during()
		wg.Wait()
	}

	burst("restart", 20, func() {
		time.Sleep(300 * time.Millisecond)
		s.redis.Stop() // SIGKILL
		time.Sleep(500 * time.Millisecond)
		s.redis.Restart()
		fsyncAlways()
	})
	s.checkInvariants("a Redis restart from its AOF", l, data, hosts, 30*time.Second)

	burst("delay", 10, func() {
		s.proxy.Delay(150 * time.Millisecond)
		time.Sleep(2 * time.Second)
		s.proxy.Delay(0)
	})
	s.checkInvariants("delayed Redis calls", l, data, hosts, 30*time.Second)

	burst("frozen-redis", 10, func() {
		time.Sleep(100 * time.Millisecond)
		s.proxy.Freeze()
		time.Sleep(3 * time.Second)
		s.proxy.Thaw()
	})
	s.checkInvariants("a frozen path to Redis", l, data, hosts, 30*time.Second)

	agent := s.agents["h1"]
	if err := agent.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if id, ok := l.create(s, fmt.Sprintf("frozen-agent-%d", i)); ok {
			l.mayFail[id] = true
		}
	}
	time.Sleep(5 * time.Second) // past the 3 s lease
	if err := agent.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.create(s, "after-thaw"); !ok {
		t.Fatal("a create after the agent thawed was refused")
	}
	s.checkInvariants("an agent frozen past its leases", l, data, hosts, 30*time.Second)
}
