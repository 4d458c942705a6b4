package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
)

// TestE2ELeaseOutlivesOperationTimeout: a driver call that takes longer than the operation
// timeout ends available, because its agent renews the operation's lease while it runs.
func TestE2ELeaseOutlivesOperationTimeout(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_OPERATION_TIMEOUT=2s", "BASALT_OPERATION_LEASE=1s"}})
	cfg := agents.Config{Host: "slow", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(5 * time.Second)
	s.addAgent(cfg)
	start := time.Now()
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	v := s.waitFinal(id, 30*time.Second)
	if v["status"] != "available" {
		t.Fatalf("volume of a 5s call with a 2s operation timeout = %v (%v), want available", v["status"], v["status_reason"])
	}
	if d := time.Since(start); d < 5*time.Second {
		t.Errorf("volume available after %v, before the 5s driver call could end", d)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "data", "slow", "b1", "volume-"+id)); err != nil {
		t.Errorf("volume file: %v", err)
	}
}

// TestE2EFrozenAgentLateOutcomes freezes an agent (SIGSTOP) while it holds a create and a
// delete. Past the lease the reconciler ends both: the create in error, the delete in
// error_deleting, although the operation timeout is far away. After SIGCONT the driver calls
// finish late: the created file is removed (the volume stays error, as the user was told), and
// the deleted volume's record goes. No file is left without a record.
func TestE2EFrozenAgentLateOutcomes(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_OPERATION_LEASE=1s"}}) // operation timeout: 10m
	cfg := agents.Config{Host: "frosty", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(3 * time.Second)
	agent := s.addAgent(cfg)
	file := func(id string) string { return filepath.Join(s.dir, "data", "frosty", "b1", "volume-"+id) }

	doomed := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	if v := s.waitFinal(doomed, 30*time.Second); v["status"] != "available" {
		t.Fatalf("volume to delete = %v (%v), want available", v["status"], v["status_reason"])
	}
	if r := s.do("alice:p1", "DELETE", "/v3/volumes/"+doomed, ""); r.status != http.StatusAccepted {
		t.Fatalf("delete = %d %s", r.status, r.raw)
	}
	late := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	// Both commands are in the agent's hands (journaled), their driver calls held by the delay.
	s.eventually(10*time.Second, func() (bool, string) {
		n, _ := s.redis.Client().HLen(t.Context(), agents.JournalKey("frosty@b1")).Result()
		return n == 2, "journal entries"
	}, "the agent takes both commands")
	if err := agent.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = agent.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	frozenAt := time.Now()

	if v := s.waitFinal(late, 15*time.Second); v["status"] != "error" || !strings.Contains(v["status_reason"].(string), "deadline") {
		t.Errorf("create held by a frozen agent = %v (%v), want error with a deadline reason", v["status"], v["status_reason"])
	}
	if v := s.waitFinal(doomed, 15*time.Second); v["status"] != "error_deleting" {
		t.Errorf("delete held by a frozen agent = %v (%v), want error_deleting", v["status"], v["status_reason"])
	}
	if d := time.Since(frozenAt); d > 10*time.Second {
		t.Errorf("the reconciler took %v to end a frozen agent's operations, with a 1s lease", d)
	}
	if _, err := os.Stat(file(late)); !os.IsNotExist(err) {
		t.Fatalf("the frozen agent's create made its file already (stat: %v); the test needs it to come late", err)
	}
	thaw()

	// The late delete completes: the record goes.
	s.eventually(30*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/volumes/"+doomed, "")
		return r.status == http.StatusNotFound, r.raw
	}, "the record of the late-deleted volume is removed")
	if _, err := os.Stat(file(doomed)); !os.IsNotExist(err) {
		t.Errorf("file of the deleted volume: stat = %v, want gone", err)
	}
	// The late create completes, then its volume is removed from the backend.
	s.eventually(30*time.Second, func() (bool, string) {
		created, undone := s.lateOutcomes(late)
		return created && undone, "late create and its undo"
	}, "the late create succeeds and its volume is removed")
	if _, err := os.Stat(file(late)); !os.IsNotExist(err) {
		t.Errorf("file of the volume whose create ended in error: stat = %v, want removed", err)
	}
	if v := s.volume(late); v["status"] != "error" {
		t.Errorf("volume whose create succeeded late = %v, want error (as the user was told)", v["status"])
	}
	// The user deletes the failed volume as usual.
	if r := s.do("alice:p1", "DELETE", "/v3/volumes/"+late, ""); r.status != http.StatusAccepted {
		t.Fatalf("delete the failed volume = %d %s", r.status, r.raw)
	}
	s.eventually(30*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/volumes/"+late, "")
		return r.status == http.StatusNotFound, r.raw
	}, "the failed volume is deleted")
	files, _ := filepath.Glob(filepath.Join(s.dir, "data", "frosty", "b1", "volume-*"))
	if len(files) != 0 {
		t.Errorf("backend files left: %v, want none", files)
	}
}

// lateOutcomes reads the results stream: whether a create of volume id succeeded, and whether
// the delete that undoes it (operation <op>-undo) succeeded.
func (s *stack) lateOutcomes(id string) (created, undone bool) {
	msgs, err := s.redis.Client().XRange(s.t.Context(), events.TopicResults, "-", "+").Result()
	if err != nil {
		s.t.Fatalf("read %s: %v", events.TopicResults, err)
	}
	for _, m := range msgs {
		var r events.Result
		payload, _ := m.Values["payload"].(string)
		if json.Unmarshal([]byte(payload), &r) != nil || r.VolumeID != id || !r.OK {
			continue
		}
		switch {
		case r.Kind == events.KindCreateVolume:
			created = true
		case r.Kind == events.KindDeleteVolume && strings.HasSuffix(r.OpID, "-undo"):
			undone = true
		}
	}
	return created, undone
}
