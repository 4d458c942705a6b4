package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
)

// TestE2ESourcesOfCopiesAreHeld: while a clone or a volume from a snapshot is being copied, its
// source is neither deleted nor reverted (400, naming the copy); once the copy ends it is.
func TestE2ESourcesOfCopiesAreHeld(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := fileBackend("b1")
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{b}})
	src := s.availableVolume("alice:p1", `{"volume":{"size":1}}`)
	r := s.do("alice:p1", "POST", "/v3/snapshots", fmt.Sprintf(`{"snapshot":{"volume_id":%q}}`, src))
	if r.status != 202 {
		t.Fatalf("snapshot = %d %s", r.status, r.raw)
	}
	snap := r.body["snapshot"].(map[string]any)["id"].(string)
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("alice:p1", "GET", "/v3/snapshots/"+snap, "")
		return r.body["snapshot"].(map[string]any)["status"] == "available", r.raw
	}, "snapshot available")

	// Slow the backend down so the copies stay in flight for a while.
	s.agents["h1"].kill(15)
	b.Delay = agents.Duration(3 * time.Second)
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{b}})

	clone := s.createVolume("alice:p1", fmt.Sprintf(`{"volume":{"source_volid":%q}}`, src))
	fromSnap := s.createVolume("alice:p1", fmt.Sprintf(`{"volume":{"snapshot_id":%q}}`, snap))
	if r := s.do("alice:p1", "DELETE", "/v3/volumes/"+src+"?cascade=true", ""); r.status != 400 || !strings.Contains(r.raw, "being copied") {
		t.Errorf("delete the source of a clone in flight = %d %s, want 400 naming the copy", r.status, r.raw)
	}
	if r := s.do("alice:p1", "DELETE", "/v3/snapshots/"+snap, ""); r.status != 400 || !strings.Contains(r.raw, "being copied") {
		t.Errorf("delete the source snapshot of a copy in flight = %d %s, want 400", r.status, r.raw)
	}
	if r := s.do("alice:p1", "POST", "/v3/volumes/"+src+"/action", fmt.Sprintf(`{"revert":{"snapshot_id":%q}}`, snap), mv, "volume 3.40"); r.status != 400 || !strings.Contains(r.raw, "being copied") {
		t.Errorf("revert the source of a clone in flight = %d %s, want 400", r.status, r.raw)
	}
	for _, id := range []string{clone, fromSnap} {
		if v := s.waitFinal(id, 30*time.Second); v["status"] != "available" {
			t.Fatalf("copy %s = %v (%v)", id, v["status"], v["status_reason"])
		}
	}
	// The copies ended: the sources are free again.
	if r := s.do("alice:p1", "DELETE", "/v3/snapshots/"+snap, ""); r.status != 202 {
		t.Errorf("delete the snapshot after its copy = %d %s", r.status, r.raw)
	}
}
