package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/redis/go-redis/v9"
)

// addTopology starts the example topology of DESIGN.md on file drivers.
func (s *stack) addTopology() {
	s.addAgent(agents.Config{Host: "block1", Backends: []agents.BackendConfig{fileBackend("lvmdriver-b1")}})
	s.addAgent(agents.Config{Host: "block2", Zone: "az1",
		Backends: []agents.BackendConfig{fileBackend("lvmdriver-b21"), fileBackend("lvmdriver-b22")}})
	s.addAgent(agents.Config{Host: "network", Backends: []agents.BackendConfig{fileBackend("lvmdriver-network")}})
}

func TestE2ETypeSteersPlacementToZone(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addTopology()
	r := s.do("admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"az1-only","extra_specs":{"volume_backend_name":"lvmbackend","RESKEY:availability_zones":"az1"}}}`)
	if r.status != 200 {
		t.Fatalf("create type = %d %s", r.status, r.raw)
	}
	for i := 0; i < 6; i++ {
		id := s.createVolume("alice:p1", `{"volume":{"size":1,"volume_type":"az1-only"}}`)
		v := s.waitFinal(id, 20*time.Second)
		host, _ := v["os-vol-host-attr:host"].(string)
		if v["status"] != "available" || !strings.HasPrefix(host, "block2@") || v["availability_zone"] != "az1" {
			t.Errorf("volume %d of type az1-only: status %v host %q zone %v, want available on block2 in az1", i, v["status"], host, v["availability_zone"])
		}
	}
	// A type that matches no backend's capabilities fails with the reason.
	s.do("admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"nowhere","extra_specs":{"volume_backend_name":"ceph"}}}`)
	id := s.createVolume("alice:p1", `{"volume":{"size":1,"volume_type":"nowhere"}}`)
	if v := s.waitFinal(id, 20*time.Second); v["status"] != "error" || !strings.Contains(v["status_reason"].(string), "CapabilitiesFilter") {
		t.Errorf("volume of type nowhere = %v (%v), want error naming CapabilitiesFilter", v["status"], v["status_reason"])
	}
}

func TestE2EImpossibleSizeIsExplained(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addTopology()
	id := s.createVolume("alice:p1", `{"volume":{"size":60000,"name":"huge"}}`)
	v := s.waitFinal(id, 20*time.Second)
	if v["status"] != "error" {
		t.Fatalf("60000 GiB volume status = %v, want error", v["status"])
	}
	r := s.do("alice:p1", "GET", "/v3/messages", "", "OpenStack-API-Version", "volume 3.3")
	if r.status != 200 {
		t.Fatalf("list messages = %d %s", r.status, r.raw)
	}
	msgs := r.body["messages"].([]any)
	if len(msgs) != 1 {
		t.Fatalf("messages = %s, want one", r.raw)
	}
	m := msgs[0].(map[string]any)
	text := m["user_message"].(string)
	if m["event_id"] != "VOLUME_VOLUME_001_003" || m["resource_uuid"] != id {
		t.Errorf("message = %v, want event VOLUME_VOLUME_001_003 for %s", m, id)
	}
	for _, pool := range []string{"block1@lvmdriver-b1#pool", "block2@lvmdriver-b21#pool", "block2@lvmdriver-b22#pool", "network@lvmdriver-network#pool"} {
		if !strings.Contains(text, pool+": CapacityFilter: ") || !strings.Contains(text, "< 60000 GiB requested") {
			t.Errorf("message %q does not explain pool %s with numbers", text, pool)
		}
	}
	// Another project does not see the message.
	if r := s.do("bob:p2", "GET", "/v3/messages", "", "OpenStack-API-Version", "volume 3.3"); len(r.body["messages"].([]any)) != 0 {
		t.Errorf("another project sees messages: %s", r.raw)
	}
	// Before 3.3 the messages API does not exist.
	if r := s.do("alice:p1", "GET", "/v3/messages", ""); r.status != 404 {
		t.Errorf("messages at 3.0 = %d, want 404", r.status)
	}
}

func TestE2EDeadAgentIsDownAndAvoided(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addTopology()
	s.agents["block1"].kill(syscall.SIGKILL)
	s.eventually(10*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/os-services?host=block1@lvmdriver-b1", "")
		svcs := r.body["services"].([]any)
		return len(svcs) == 1 && svcs[0].(map[string]any)["state"] == "down", r.raw
	}, "block1's service is down")
	for i := 0; i < 8; i++ {
		id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
		v := s.waitFinal(id, 20*time.Second)
		if host, _ := v["os-vol-host-attr:host"].(string); v["status"] != "available" || strings.HasPrefix(host, "block1@") {
			t.Errorf("volume %d: %v on %q, want available and not on block1", i, v["status"], host)
		}
	}
	// The others stay up.
	r := s.do("admin:admin", "GET", "/v3/os-services?binary=cinder-volume", "")
	for _, sv := range r.body["services"].([]any) {
		m := sv.(map[string]any)
		if m["host"] != "block1@lvmdriver-b1" && m["state"] != "up" {
			t.Errorf("service %v is %v, want up", m["host"], m["state"])
		}
	}
	// A disabled service is avoided too.
	if r := s.do("admin:admin", "PUT", "/v3/os-services/disable-log-reason", `{"host":"network@lvmdriver-network","binary":"cinder-volume","disabled_reason":"maintenance"}`); r.status != 200 || r.body["disabled"] != true {
		t.Fatalf("disable = %d %s", r.status, r.raw)
	}
	for i := 0; i < 4; i++ {
		id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
		if v := s.waitFinal(id, 20*time.Second); !strings.HasPrefix(v["os-vol-host-attr:host"].(string), "block2@") {
			t.Errorf("with block1 down and network disabled, volume went to %v", v["os-vol-host-attr:host"])
		}
	}
}

func TestE2EKilledAgentMidCreateNeverStuckNeverTwice(t *testing.T) {
	s := newStack(t, stackOptions{})
	cfg := agents.Config{Host: "slow", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(3 * time.Second)
	agent := s.addAgent(cfg)
	id := s.createVolume("alice:p1", `{"volume":{"size":2}}`)
	// Wait until the agent has the command in hand, then kill it hard.
	s.eventually(10*time.Second, func() (bool, string) {
		n, _ := s.redis.Client().HLen(t.Context(), agents.JournalKey("slow@b1")).Result()
		return n == 1, fmt.Sprint(n)
	}, "the agent journals the create")
	agent.kill(syscall.SIGKILL)
	if v := s.volume(id); v["status"] != "creating" {
		t.Fatalf("volume after the kill = %v, want still creating", v["status"])
	}
	agent.start()
	v := s.waitFinal(id, 30*time.Second)
	if v["status"] != "available" {
		t.Errorf("volume after restart = %v (%v), want available", v["status"], v["status_reason"])
	}
	files, _ := filepath.Glob(filepath.Join(s.dir, "data", "slow", "b1", "volume-*"))
	if len(files) != 1 {
		t.Errorf("backend holds %d volume files %v, want exactly 1", len(files), files)
	}
	if fi, err := os.Stat(filepath.Join(s.dir, "data", "slow", "b1", "volume-"+id)); err != nil || fi.Size() != 2<<30 {
		t.Errorf("volume file: %v size %v, want 2 GiB", err, fi)
	}
}

func TestE2EOverdueOperationEndsInError(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_OPERATION_TIMEOUT=2s"}})
	cfg := agents.Config{Host: "doomed", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(time.Minute)
	agent := s.addAgent(cfg)
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	time.Sleep(300 * time.Millisecond)
	agent.kill(syscall.SIGKILL) // and it never comes back
	v := s.waitFinal(id, 20*time.Second)
	if v["status"] != "error" || !strings.Contains(fmt.Sprint(v["status_reason"]), "deadline") {
		t.Errorf("volume whose agent died = %v (%v), want error with a deadline reason", v["status"], v["status_reason"])
	}
}

func TestE2EConcurrentSchedulersNeverOvercommit(t *testing.T) {
	if testing.Short() {
		t.Skip("places 1,000 volumes")
	}
	s := newStack(t, stackOptions{schedulers: 8, env: []string{"BASALT_CONSUMERS=1"}})
	const perPool = 100 // GiB of each fake pool
	for _, h := range []string{"h1", "h2"} {
		cfg := agents.Config{Host: h, Backends: []agents.BackendConfig{
			{Name: "a", Driver: "fake", Options: []byte(fmt.Sprintf(`{"total_capacity_gb": %d}`, perPool))},
			{Name: "b", Driver: "fake", Options: []byte(fmt.Sprintf(`{"total_capacity_gb": %d}`, perPool))},
		}}
		s.addAgent(cfg)
	}
	const n = 1000
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ids[i] = s.createVolume("alice:p1", `{"volume":{"size":1}}`)
		}()
	}
	wg.Wait()
	perHost := map[string]int{}
	errored := 0
	s.eventually(120*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/volumes/detail?all_tenants=1&status=creating&limit=1", "")
		return len(r.body["volumes"].([]any)) == 0, "volumes still creating"
	}, "every volume is placed or failed")
	r := s.do("admin:admin", "GET", "/v3/volumes/detail?all_tenants=1", "")
	for _, x := range r.body["volumes"].([]any) {
		v := x.(map[string]any)
		switch v["status"] {
		case "available":
			perHost[v["os-vol-host-attr:host"].(string)] += int(v["size"].(float64))
		case "error":
			errored++
			if reason := fmt.Sprint(v["status_reason"]); !strings.Contains(reason, "No valid backend") {
				t.Errorf("volume %v failed with %q, want only No valid backend (no driver-side overflow)", v["id"], reason)
			}
		default:
			t.Errorf("volume %v is %v", v["id"], v["status"])
		}
	}
	total := 0
	for pool, gb := range perHost {
		total += gb
		if gb > perPool {
			t.Errorf("pool %s holds %d GiB, capacity %d", pool, gb, perPool)
		}
	}
	if len(perHost) != 4 || total != 4*perPool || errored != n-4*perPool {
		t.Errorf("placed %d GiB on %d pools and failed %d, want %d GiB on 4 pools and %d failures (%v)", total, len(perHost), errored, 4*perPool, n-4*perPool, perHost)
	}
}

func TestE2ELongDriverCallKeepsServiceUp(t *testing.T) {
	s := newStack(t, stackOptions{})
	cfg := agents.Config{Host: "busy", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(5 * time.Second) // more than three times the down time
	s.addAgent(cfg)
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	deadline := time.Now().Add(4 * time.Second)
	sawBusy := false
	for time.Now().Before(deadline) {
		r := s.do("admin:admin", "GET", "/v3/os-services?host=busy@b1", "")
		svc := r.body["services"].([]any)[0].(map[string]any)
		if svc["state"] != "up" {
			t.Fatalf("service during a long driver call = %v, want up", svc)
		}
		sawBusy = sawBusy || svc["busy"].(float64) == 1
		time.Sleep(200 * time.Millisecond)
	}
	if !sawBusy {
		t.Errorf("os-services never showed the backend busy during its driver call")
	}
	if v := s.waitFinal(id, 20*time.Second); v["status"] != "available" {
		t.Errorf("volume = %v, want available", v["status"])
	}
}

func TestE2EAgentStopsGracefully(t *testing.T) {
	s := newStack(t, stackOptions{})
	cfg := agents.Config{Host: "graceful", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(1500 * time.Millisecond)
	agent := s.addAgent(cfg)
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	s.eventually(10*time.Second, func() (bool, string) {
		n, _ := s.redis.Client().HLen(t.Context(), agents.JournalKey("graceful@b1")).Result()
		return n == 1, fmt.Sprint(n)
	}, "the agent journals the create")
	agent.kill(syscall.SIGTERM) // returns once the process has exited
	if v := s.volume(id); v["status"] != "available" {
		t.Errorf("volume after SIGTERM = %v, want available: the agent finishes its call before exiting", v["status"])
	}
	if n, _ := s.redis.Client().HLen(t.Context(), agents.JournalKey("graceful@b1")).Result(); n != 0 {
		t.Errorf("journal holds %d entries after a graceful stop, want 0", n)
	}
}

func TestE2EPoisonMessageReachesDeadLetters(t *testing.T) {
	s := newStack(t, stackOptions{})
	// A command nobody can decode: it fails every retry and must not block the stream.
	if err := s.redis.Client().XAdd(t.Context(), &redis.XAddArgs{Stream: "basalt.scheduler",
		Values: map[string]any{"_watermill_message_uuid": "poison-1", "payload": "not json", "metadata": ""}}).Err(); err != nil {
		t.Fatal(err)
	}
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/os-deadletters", "")
		dl, _ := r.body["dead_letters"].([]any)
		return len(dl) == 1 && strings.Contains(r.raw, "basalt.scheduler") && strings.Contains(r.raw, "undecodable"), r.raw
	}, "the poisoned command is listed with its topic and reason")
	if r := s.do("alice:p1", "GET", "/v3/os-deadletters", ""); r.status != 403 {
		t.Errorf("member lists dead letters = %d, want 403", r.status)
	}
	// The stream still works.
	s.addAgent(agents.Config{Host: "after", Backends: []agents.BackendConfig{fileBackend("b1")}})
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	if v := s.waitFinal(id, 20*time.Second); v["status"] != "available" {
		t.Errorf("volume after a poison message = %v, want available", v["status"])
	}
}

// TestE2EFailedCreateIsRescheduled makes the backend the scheduler prefers fail every create:
// the create moves to the other backend; when every backend fails, the volume ends in error
// after scheduler_max_attempts placements, with the driver's reason.
func TestE2EFailedCreateIsRescheduled(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_SCHEDULER_MAX_ATTEMPTS=3"}})
	// CapacityWeigher prefers the most free space: the failing backend is the roomier one.
	s.addAgent(agents.Config{Host: "flaky", Backends: []agents.BackendConfig{{Name: "b1", Driver: "fake",
		Options: []byte(`{"total_capacity_gb": 5000, "fail": {"create": "controller offline"}}`)}}})
	s.addAgent(agents.Config{Host: "steady", Backends: []agents.BackendConfig{{Name: "b1", Driver: "fake",
		Options: []byte(`{"total_capacity_gb": 100}`)}}})
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	v := s.waitFinal(id, 20*time.Second)
	if v["status"] != "available" || !strings.HasPrefix(fmt.Sprint(v["os-vol-host-attr:host"]), "steady@") {
		t.Errorf("volume = %v on %v, want available on steady after a reschedule", v["status"], v["os-vol-host-attr:host"])
	}
	log, _ := os.ReadFile(s.agents["flaky"].log)
	if !strings.Contains(string(log), "controller offline") {
		t.Errorf("the flaky backend was never tried; the test proves nothing")
	}

	// With the steady backend disabled, only the failing one is left: error, with the reason.
	s.do("admin:admin", "PUT", "/v3/os-services/disable", `{"host":"steady@b1","binary":"cinder-volume"}`)
	id = s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	v = s.waitFinal(id, 20*time.Second)
	// The second placement skips the backend that already failed (IgnoreAttemptedHostsFilter):
	// the reason names it, and the driver's failure that caused the reschedule.
	reason := fmt.Sprint(v["status_reason"])
	if v["status"] != "error" || !strings.Contains(reason, "No valid backend") || !strings.Contains(reason, "flaky@b1#pool: IgnoreAttemptedHostsFilter") ||
		!strings.Contains(reason, "controller offline") {
		t.Errorf("volume with only a failing backend = %v (%s), want error naming the attempted backend", v["status"], reason)
	}
}
