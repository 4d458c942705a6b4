package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
)

// pattern is a distinct block of bytes for a tag.
func pattern(tag string, n int) []byte {
	unit := []byte(fmt.Sprintf("%-32s", tag))
	return bytes.Repeat(unit, n/len(unit)+1)[:n]
}

var probes = []int64{0, 512 << 20, (1 << 30) - (64 << 10)} // start, middle, last 64 KiB of 1 GiB

func writeProbes(t *testing.T, path, tag string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range probes {
		if _, err := f.WriteAt(pattern(fmt.Sprintf("%s@%d", tag, off), 64<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// checkProbes asserts that every probe of path holds tag's pattern, and that a range never
// written reads as zeros.
func checkProbes(t *testing.T, what, path, tag string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for _, off := range probes {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("%s: read at %d: %v", what, off, err)
		}
		if want := pattern(fmt.Sprintf("%s@%d", tag, off), 64<<10); !bytes.Equal(buf, want) {
			t.Errorf("%s: bytes at %d are %q..., want %q...", what, off, buf[:16], want[:16])
		}
	}
	if _, err := f.ReadAt(buf, 256<<20); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("%s: a range never written is not zeros", what)
	}
}

// TestE2EDataSurvivesEveryOperation follows real bytes through snapshot, clone, volume from
// snapshot, extend and revert, on the file driver, through the API.
func TestE2EDataSurvivesEveryOperation(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addAgent(agents.Config{Host: "data", Backends: []agents.BackendConfig{fileBackend("b1")}})
	dir := filepath.Join(s.dir, "data", "data", "b1")
	file := func(id string) string { return filepath.Join(dir, "volume-"+id) }
	const tok = "alice:p1"
	mv := []string{"OpenStack-API-Version", "volume 3.42"}

	src := s.createVolume(tok, `{"volume":{"size":1,"name":"src"}}`)
	s.waitFinal(src, 20*time.Second)
	writeProbes(t, file(src), "original")

	snap := s.createSnapshot(tok, src)
	writeProbes(t, file(src), "overwritten")

	fromSnap := s.createVolume(tok, `{"volume":{"snapshot_id":"`+snap+`"}}`)
	clone := s.createVolume(tok, `{"volume":{"source_volid":"`+src+`","size":2}}`)
	for _, id := range []string{fromSnap, clone} {
		if v := s.waitFinal(id, 20*time.Second); v["status"] != "available" {
			t.Fatalf("volume %s = %v (%v), want available", id, v["status"], v["status_reason"])
		}
	}
	checkProbes(t, "volume from snapshot", file(fromSnap), "original")
	checkProbes(t, "clone of the overwritten source", file(clone), "overwritten")
	if fi, _ := os.Stat(file(clone)); fi.Size() != 2<<30 {
		t.Errorf("clone size = %d, want 2 GiB", fi.Size())
	}

	// Extend keeps the data.
	if r := s.do(tok, "POST", "/v3/volumes/"+fromSnap+"/action", `{"os-extend":{"new_size":3}}`, mv...); r.status != 202 {
		t.Fatalf("extend = %d %s", r.status, r.raw)
	}
	if v := s.waitFinal(fromSnap, 20*time.Second); v["status"] != "available" || v["size"].(float64) != 3 {
		t.Fatalf("extended volume = %v size %v (%v), want available size 3", v["status"], v["size"], v["status_reason"])
	}
	checkProbes(t, "extended volume", file(fromSnap), "original")

	// Revert restores the snapshot's bytes.
	if r := s.do(tok, "POST", "/v3/volumes/"+src+"/action", `{"revert":{"snapshot_id":"`+snap+`"}}`, mv...); r.status != 202 {
		t.Fatalf("revert = %d %s", r.status, r.raw)
	}
	if v := s.waitFinal(src, 20*time.Second); v["status"] != "available" {
		t.Fatalf("reverted volume = %v (%v), want available", v["status"], v["status_reason"])
	}
	checkProbes(t, "reverted volume", file(src), "original")
	if sn := s.snapshot(snap); sn["status"] != "available" {
		t.Errorf("snapshot after revert = %v, want available", sn["status"])
	}

	// A volume with snapshots is not deleted without cascade; with cascade, both go.
	if r := s.do(tok, "DELETE", "/v3/volumes/"+src, ""); r.status != 400 || !strings.Contains(r.raw, "have snapshots") {
		t.Errorf("delete with a snapshot = %d %s, want 400 naming snapshots", r.status, r.raw)
	}
	if r := s.do(tok, "DELETE", "/v3/volumes/"+src+"?cascade=true", ""); r.status != 202 {
		t.Fatalf("cascade delete = %d %s", r.status, r.raw)
	}
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do(tok, "GET", "/v3/snapshots/"+snap, "")
		return r.status == 404, r.raw
	}, "the cascade removes the snapshot")
	if _, err := os.Stat(filepath.Join(dir, "snapshot-"+snap)); !os.IsNotExist(err) {
		t.Errorf("snapshot file after cascade delete: %v, want gone", err)
	}
	if _, err := os.Stat(file(src)); !os.IsNotExist(err) {
		t.Errorf("volume file after cascade delete: %v, want gone", err)
	}
}

// createSnapshot snapshots volume id and waits until the snapshot is available.
func (s *stack) createSnapshot(token, volumeID string) string {
	s.t.Helper()
	r := s.do(token, "POST", "/v3/snapshots", `{"snapshot":{"volume_id":"`+volumeID+`","name":"snap"}}`)
	if r.status != 202 {
		s.t.Fatalf("create snapshot = %d %s", r.status, r.raw)
	}
	id := r.body["snapshot"].(map[string]any)["id"].(string)
	s.eventually(20*time.Second, func() (bool, string) {
		sn := s.snapshot(id)
		if sn["status"] == "error" {
			s.t.Fatalf("snapshot %s failed: %v", id, sn["status_reason"])
		}
		return sn["status"] == "available", fmt.Sprint(sn["status"])
	}, "snapshot "+id+" is available")
	return id
}

func (s *stack) snapshot(id string) map[string]any {
	s.t.Helper()
	r := s.do("admin:admin", "GET", "/v3/snapshots/"+id, "")
	if r.status != 200 {
		s.t.Fatalf("show snapshot %s = %d %s", id, r.status, r.raw)
	}
	return r.body["snapshot"].(map[string]any)
}

// TestE2EConcurrentDeletesOneWins sends 50 deletes of one volume at once.
func TestE2EConcurrentDeletesOneWins(t *testing.T) {
	s := newStack(t, stackOptions{})
	cfg := agents.Config{Host: "race", Backends: []agents.BackendConfig{fileBackend("b1")}}
	cfg.Backends[0].Delay = agents.Duration(time.Second) // every delete request arrives while it runs
	s.addAgent(cfg)
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	s.waitFinal(id, 20*time.Second)
	var mu sync.Mutex
	codes := map[int]int{}
	var faults []string
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.do("alice:p1", "DELETE", "/v3/volumes/"+id, "")
			mu.Lock()
			defer mu.Unlock()
			codes[r.status]++
			if r.status != 202 {
				faults = append(faults, r.raw)
			}
		}()
	}
	wg.Wait()
	if codes[202] != 1 || codes[202]+codes[400] != 50 {
		t.Errorf("50 concurrent deletes answered %v, want one 202 and 49 400", codes)
	}
	for _, f := range faults {
		if !strings.Contains(f, "badRequest") || !strings.Contains(f, "Invalid volume") {
			t.Errorf("losing delete answered %s, want a badRequest naming the volume's state", f)
			break
		}
	}
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("alice:p1", "GET", "/v3/volumes/"+id, "")
		return r.status == 404, r.raw
	}, "the volume is gone")
	log, _ := os.ReadFile(s.agents["race"].log)
	if n := strings.Count(string(log), `kind=delete_volume`); n != 1 {
		t.Errorf("the backend ran %d deletes, want 1", n)
	}
}

// TestE2EExtendOnlineAndFailures covers extend of an in-use volume (3.42) where the backend can
// and cannot do it online, and a driver failure ending in error_extending.
func TestE2EExtendOnlineAndFailures(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addAgent(agents.Config{Host: "offline", Backends: []agents.BackendConfig{fileBackend("b1")}})
	s.addAgent(agents.Config{Host: "online", Zone: "z2", Backends: []agents.BackendConfig{{Name: "b1", Driver: "fake"}}})
	s.addAgent(agents.Config{Host: "broken", Zone: "z3", Backends: []agents.BackendConfig{{Name: "b1", Driver: "fake",
		Options: []byte(`{"fail": {"extend": "disk on fire"}}`)}}})
	const tok = "alice:p1"
	inUse := func(zone string) string {
		id := s.createVolume(tok, `{"volume":{"size":1,"availability_zone":"`+zone+`"}}`)
		s.waitFinal(id, 20*time.Second)
		if r := s.do(tok, "POST", "/v3/volumes/"+id+"/action", `{"os-attach":{"instance_uuid":"inst-1","mountpoint":"/dev/vdb"}}`); r.status != 202 {
			t.Fatalf("os-attach = %d %s", r.status, r.raw)
		}
		return id
	}
	extend := func(id string, size int, mv string) response {
		return s.do(tok, "POST", "/v3/volumes/"+id+"/action", fmt.Sprintf(`{"os-extend":{"new_size":%d}}`, size), "OpenStack-API-Version", "volume "+mv)
	}

	online := inUse("z2")
	if r := extend(online, 2, "3.41"); r.status != 400 {
		t.Errorf("extend of an in-use volume at 3.41 = %d, want 400", r.status)
	}
	if r := extend(online, 2, "3.42"); r.status != 202 {
		t.Fatalf("online extend = %d %s", r.status, r.raw)
	}
	if v := s.waitFinal(online, 20*time.Second); v["status"] != "in-use" || v["size"].(float64) != 2 {
		t.Errorf("online extend ended %v size %v (%v), want in-use size 2", v["status"], v["size"], v["status_reason"])
	}

	offline := inUse("nova")
	if r := extend(offline, 2, "3.42"); r.status != 202 {
		t.Fatalf("extend on a backend without online extend = %d %s", r.status, r.raw)
	}
	if v := s.waitFinal(offline, 20*time.Second); v["status"] != "in-use" || v["size"].(float64) != 1 {
		t.Errorf("refused online extend ended %v size %v, want back to in-use size 1", v["status"], v["size"])
	}
	r := s.do(tok, "GET", "/v3/messages?resource_uuid="+offline, "", "OpenStack-API-Version", "volume 3.5")
	if !strings.Contains(r.raw, "VOLUME_VOLUME_007_003") || !strings.Contains(r.raw, "online_extend_support") {
		t.Errorf("messages about the refused extend = %s, want VOLUME_VOLUME_007_003 naming online_extend_support", r.raw)
	}

	broken := s.createVolume(tok, `{"volume":{"size":1,"availability_zone":"z3"}}`)
	s.waitFinal(broken, 20*time.Second)
	if r := extend(broken, 3, "3.0"); r.status != 202 {
		t.Fatalf("extend = %d %s", r.status, r.raw)
	}
	v := s.waitFinal(broken, 20*time.Second)
	if v["status"] != "error_extending" || !strings.Contains(fmt.Sprint(v["status_reason"]), "disk on fire") || v["size"].(float64) != 1 {
		t.Errorf("failed extend = %v size %v (%v), want error_extending size 1 with the driver's reason", v["status"], v["size"], v["status_reason"])
	}
	// The failed growth went back to the quota: usage is the volumes' sizes.
	r = s.do(tok, "GET", "/v3/os-quota-sets/p1?usage=true", "")
	if used := r.body["quota_set"].(map[string]any)["gigabytes"].(map[string]any)["in_use"]; used != float64(2+1+1) {
		t.Errorf("gigabytes in use = %v, want 4 (2 + 1 + 1)", used)
	}
}
