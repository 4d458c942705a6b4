package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
)

// clusterStack is a stack on a Redis Cluster of three masters with a replica each, with two
// schedulers and two agent hosts of one file backend each.
func clusterStack(t *testing.T) (s *stack, data string, hosts []string) {
	s = newStack(t, stackOptions{cluster: true, schedulers: 2, env: []string{"BASALT_CHARGE_GRACE=3s"}})
	data = filepath.Join(s.dir, "data")
	for _, h := range []string{"c1", "c2"} {
		s.addAgent(agents.Config{Host: h, DataDir: data, Backends: []agents.BackendConfig{fileBackend("b1")}})
		hosts = append(hosts, h+"@b1")
	}
	return s, data, hosts
}

// TestClusterEndToEnd runs the stack on a real Redis Cluster: a volume's whole life through
// the API, then creates and deletes that go on while the Cluster moves the slots Basalt uses
// (a manual failover of the resource state's master, a live migration of its slot to another
// master, a failover of a host's slot). After each, every invariant holds: acknowledged work
// has its outcome, nothing is transitional, quota and pool ledgers equal the records, and
// every backend object has its record.
func TestClusterEndToEnd(t *testing.T) {
	s, data, hosts := clusterStack(t)
	l := newLedger()

	// The keys spread: the admin project's state in its partition's slot, each host's keys in
	// the host's.
	state := s.rcl.Slot(events.ShardPrefix(events.ShardOf("admin")) + "x")
	host1, host2 := s.rcl.Slot(events.HostPrefix("c1")+"x"), s.rcl.Slot(events.HostPrefix("c2")+"x")
	if state == host1 || state == host2 || host1 == host2 {
		t.Fatalf("slots: state %d, host c1 %d, host c2 %d; want three different slots", state, host1, host2)
	}
	rdb := s.rcl.Client()
	defer rdb.Close()
	if n, err := rdb.Exists(t.Context(), events.CapabilitiesKey("c1@b1")).Result(); err != nil || n != 1 {
		t.Fatalf("c1's capability report in its host's slot: exists %d, %v", n, err)
	}

	// Projects' volumes spread over the masters, and an administrator lists them all.
	var spread []string
	for i := range 12 {
		id := s.createVolume(fmt.Sprintf("u:tenant-%d", i), `{"volume":{"size":1}}`)
		spread = append(spread, id)
		l.mu.Lock()
		l.created[id] = true
		l.mu.Unlock()
	}
	for _, id := range spread {
		if v := s.waitFinal(id, 30*time.Second); v["status"] != "available" {
			t.Fatalf("volume %s of a tenant: %v, want available", id, v["status"])
		}
	}
	holders := 0
	for _, n := range s.rcl.Nodes() {
		if !n.IsMaster() {
			continue
		}
		keys, err := n.Client().Keys(t.Context(), "basalt:{s*}:vol:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 {
			holders++
		}
	}
	if holders < 2 {
		t.Errorf("the volume records of 12 projects are on %d master(s), want them spread over at least 2", holders)
	}
	r := s.do("admin:admin", "GET", "/v3/volumes?all_tenants=1&limit=5", "")
	page := r.body["volumes"].([]any)
	r2 := s.do("admin:admin", "GET", "/v3/volumes?all_tenants=1&limit=100&marker="+page[4].(map[string]any)["id"].(string), "")
	if got := len(page) + len(r2.body["volumes"].([]any)); got != 12 {
		t.Errorf("an administrator's listing in pages of 5 then 100 shows %d volumes, want the 12", got)
	}

	// A volume's life: create, snapshot, a volume from the snapshot, extend, delete.
	id := s.createVolume("admin:admin", `{"volume":{"size":1,"name":"on-cluster"}}`)
	if v := s.waitFinal(id, 30*time.Second); v["status"] != "available" {
		t.Fatalf("volume on a Cluster: %v, want available", v["status"])
	}
	l.mu.Lock()
	l.created[id] = true
	l.mu.Unlock()
	snap := s.createSnapshot("admin:admin", id)
	clone := s.createVolume("admin:admin", fmt.Sprintf(`{"volume":{"size":2,"snapshot_id":%q}}`, snap))
	if v := s.waitFinal(clone, 30*time.Second); v["status"] != "available" {
		t.Fatalf("volume from a snapshot on a Cluster: %v, want available", v["status"])
	}
	if r := s.do("admin:admin", "POST", "/v3/volumes/"+id+"/action", `{"os-extend":{"new_size":3}}`); r.status != http.StatusAccepted {
		t.Fatalf("extend: %d %s", r.status, r.raw)
	}
	s.eventually(30*time.Second, func() (bool, string) {
		v := s.volume(id)
		return v["status"] == "available" && v["size"] == 3.0, fmt.Sprint(v["status"], v["size"])
	}, "the extended volume is available with 3 GB")
	for _, del := range []string{"/v3/volumes/" + clone, "/v3/snapshots/" + snap} {
		if r := s.do("admin:admin", "DELETE", del, ""); r.status != http.StatusAccepted {
			t.Fatalf("DELETE %s: %d %s", del, r.status, r.raw)
		}
	}
	s.eventually(30*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/snapshots/"+snap, "")
		return r.status == http.StatusNotFound, r.raw
	}, "the snapshot is gone")
	l.delete(s, clone)
	s.checkInvariants("a volume's life on a Cluster", l, data, hosts, 30*time.Second)

	acked := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.created)
	}

	// burst creates n volumes and deletes every other one, while during runs.
	burst := func(name string, n int, during func()) {
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i) * 50 * time.Millisecond)
				if id, ok := l.create(s, fmt.Sprintf("%s-%d", name, i)); ok && i%2 == 1 {
					s.eventually(30*time.Second, func() (bool, string) {
						st := s.volume(id)["status"]
						return st != "creating", fmt.Sprint(st)
					}, "volume "+id+" leaves creating")
					l.mu.Lock()
					defer l.mu.Unlock()
					l.delete(s, id)
				}
			}()
		}
		before := acked()
		during()
		wg.Wait()
		t.Logf("%s: %d of %d creates acknowledged", name, acked()-before, n)
	}
	before := acked()
	burst("failover", 30, func() {
		time.Sleep(400 * time.Millisecond)
		s.rcl.Failover(state)
	})
	s.checkInvariants("a failover of the state's master", l, data, hosts, 60*time.Second)

	var target *redistest.Node
	for _, n := range s.rcl.Nodes() {
		if n.IsMaster() && n != s.rcl.MasterOf(state) {
			target = n
			break
		}
	}
	burst("migration", 30, func() {
		time.Sleep(400 * time.Millisecond)
		s.rcl.MigrateSlot(state, target)
	})
	if s.rcl.MasterOf(state) != target {
		t.Fatalf("the state's slot is on %s after its migration to %s", s.rcl.MasterOf(state).Addr, target.Addr)
	}
	s.checkInvariants("a live migration of the state's slot", l, data, hosts, 60*time.Second)

	burst("host-failover", 20, func() {
		time.Sleep(300 * time.Millisecond)
		s.rcl.Failover(host1)
	})
	s.checkInvariants("a failover of a host's master", l, data, hosts, 60*time.Second)

	// The drills are not vacuous: most creates were acknowledged while the slots moved.
	if got := acked() - before; got < 60 {
		t.Errorf("%d creates acknowledged during the drills, want most of the 80", got)
	}
	// And the services stayed up through it (heartbeats reached their moved slots).
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/os-services", "")
		up := 0
		for _, x := range r.body["services"].([]any) {
			m := x.(map[string]any)
			if m["binary"] == basalt.BinaryVolume && m["state"] == "up" {
				up++
			}
		}
		return up == 2, r.raw
	}, "both volume services are up")
}
