package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/manageablevolumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

// manageable returns the detailed manageable-volumes entry of object id on host, or nil.
func (s *stack) manageable(host, id string) map[string]any {
	s.t.Helper()
	r := s.do("admin:admin", "GET", "/v3/manageable_volumes/detail?host="+url.QueryEscape(host), "",
		"OpenStack-API-Version", "volume 3.8")
	if r.status != 200 {
		s.t.Fatalf("GET manageable_volumes/detail?host=%s = %d %s", host, r.status, r.raw)
	}
	for _, v := range r.body["manageable-volumes"].([]any) {
		m := v.(map[string]any)
		if m["reference"].(map[string]any)["source-name"] == "volume-"+id {
			return m
		}
	}
	return nil
}

// waitManageable waits until the manageable-volumes listing of host shows object id with
// safe_to_manage safe (the agent reports its inventory on its capability timer).
func (s *stack) waitManageable(host, id string, safe bool) map[string]any {
	s.t.Helper()
	var m map[string]any
	s.eventually(20*time.Second, func() (bool, string) {
		m = s.manageable(host, id)
		return m != nil && m["safe_to_manage"] == safe, fmt.Sprintf("entry %s: %v", id, m)
	}, "the manageable volumes list "+id)
	return m
}

// inUse returns what project has in use of the gigabytes and volumes quotas.
func (s *stack) inUse(project string) (gigabytes, vols float64) {
	s.t.Helper()
	r := s.do("admin:admin", "GET", "/v3/os-quota-sets/"+project+"?usage=true", "")
	q := r.body["quota_set"].(map[string]any)
	return q["gigabytes"].(map[string]any)["in_use"].(float64), q["volumes"].(map[string]any)["in_use"].(float64)
}

// allocated returns the allocated_capacity_gb that get_pools reports for pool.
func (s *stack) allocated(pool string) float64 {
	s.t.Helper()
	r := s.do("admin:admin", "GET", "/v3/scheduler-stats/get_pools?detail=true", "")
	for _, p := range r.body["pools"].([]any) {
		p := p.(map[string]any)
		if p["name"] == pool {
			return p["capabilities"].(map[string]any)["allocated_capacity_gb"].(float64)
		}
	}
	s.t.Fatalf("get_pools has no pool %s: %s", pool, r.raw)
	return 0
}

// TestE2EManageVolumes: a file that no record owns appears in a file backend's directory (a
// volume whose record was lost); the agent reports it, the manageable-volumes API lists it, an
// admin adopts it (gophercloud, microversion 3.8) and it becomes available with its bytes,
// quota and capacity; os-unmanage drops the record and keeps the file, which is manageable
// again. An object that vanished before its adoption ends in error and its record goes without
// touching the backend.
func TestE2EManageVolumes(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addAgent(agents.Config{Host: "mgr", Backends: []agents.BackendConfig{fileBackend("b1")}})
	const host, pool = "mgr@b1", "mgr@b1#pool"
	dir := filepath.Join(s.dir, "data", "mgr", "b1")
	file := func(id string) string { return filepath.Join(dir, "volume-"+id) }

	// A stray object: a sparse 1 GiB file named as a volume, with known bytes.
	stray := uuid.NewString()
	f, err := os.Create(file(stray))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeProbes(t, file(stray), "stray")

	// A volume made through the API is listed too, as already managed.
	owned := s.createVolume("alice:p1", `{"volume":{"size":1,"name":"owned"}}`)
	s.waitFinal(owned, 20*time.Second)
	m := s.waitManageable(pool, stray, true)
	if m["size"] != 1.0 || m["reason_not_safe"] != nil || m["cinder_id"] != nil {
		t.Errorf("the stray object is listed as %v, want 1 GiB, safe to manage", m)
	}
	m = s.waitManageable(pool, owned, false)
	if m["reason_not_safe"] != "already managed" || m["cinder_id"] != owned {
		t.Errorf("the API's volume is listed as %v, want already managed by %s", m, owned)
	}
	if r := s.do("alice:p1", "GET", "/v3/manageable_volumes?host="+host, "", "OpenStack-API-Version", "volume 3.8"); r.status != 403 {
		t.Errorf("a member's manageable-volumes list = %d, want 403", r.status)
	}
	gbBefore, volsBefore := s.inUse("admin")

	// Adopt it with gophercloud at 3.8: 202 with the volume creating, then available.
	admin := gcClient(t, s, "admin", "admin")
	admin.Microversion = "3.8"
	ctx := context.Background()
	v, err := manageablevolumes.ManageExisting(ctx, admin, manageablevolumes.ManageExistingOpts{Host: pool,
		Ref: map[string]string{"source-name": "volume-" + stray}, Name: "adopted", Bootable: true,
		Metadata: map[string]string{"origin": "stray"}}).Extract()
	if err != nil {
		t.Fatalf("manageablevolumes.ManageExisting: %v", err)
	}
	if v.ID != stray || v.Status != "creating" || v.Size != 1 || v.Name != "adopted" {
		t.Errorf("ManageExisting = id %s status %s size %d name %q, want %s creating 1 GiB adopted", v.ID, v.Status, v.Size, v.Name, stray)
	}
	got := s.waitFinal(stray, 20*time.Second)
	if got["status"] != "available" || got["os-vol-host-attr:host"] != pool || got["bootable"] != "true" ||
		got["metadata"].(map[string]any)["origin"] != "stray" {
		t.Fatalf("adopted volume = %v, want available on %s, bootable, with its metadata", got, pool)
	}
	checkProbes(t, "adopted volume", file(stray), "stray")
	if gb, vols := s.inUse("admin"); gb != gbBefore+1 || vols != volsBefore+1 {
		t.Errorf("admin's quota in use after the adoption: %v GiB in %v volumes, want %v in %v", gb, vols, gbBefore+1, volsBefore+1)
	}
	if a := s.allocated(pool); a != 2 {
		t.Errorf("allocated_capacity_gb of %s = %v, want 2 (the API's volume and the adopted one)", pool, a)
	}
	if m := s.manageable(pool, stray); m["safe_to_manage"] != false || m["cinder_id"] != stray {
		t.Errorf("the adopted object is listed as %v, want already managed", m)
	}
	// Adopting it twice is refused.
	_, err = manageablevolumes.ManageExisting(ctx, admin, manageablevolumes.ManageExistingOpts{Host: pool,
		Ref: map[string]string{"source-name": "volume-" + stray}}).Extract()
	wantCode(t, err, 400, "a second ManageExisting")

	// Unmanage: the record goes, the file and its bytes stay, and it is manageable again.
	if err := volumes.Unmanage(ctx, admin, stray).ExtractErr(); err != nil {
		t.Fatalf("volumes.Unmanage: %v", err)
	}
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/volumes/"+stray, "")
		return r.status == 404, r.raw
	}, "the unmanaged volume's record is gone")
	checkProbes(t, "unmanaged volume's file", file(stray), "stray")
	s.waitManageable(pool, stray, true)
	if gb, vols := s.inUse("admin"); gb != gbBefore || vols != volsBefore {
		t.Errorf("admin's quota in use after the unmanage: %v GiB in %v volumes, want %v in %v", gb, vols, gbBefore, volsBefore)
	}
	if a := s.allocated(pool); a != 1 {
		t.Errorf("allocated_capacity_gb of %s after the unmanage = %v, want 1", pool, a)
	}

	// An object that vanishes between the listing and the adoption: the backend cannot confirm
	// it, the volume ends in error, and deleting the record sends nothing to the backend.
	gone := uuid.NewString()
	if err := os.WriteFile(file(gone), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file(gone), 1<<30); err != nil {
		t.Fatal(err)
	}
	s.waitManageable(pool, gone, true)
	if err := os.Remove(file(gone)); err != nil {
		t.Fatal(err)
	}
	r := s.do("admin:admin", "POST", "/v3/manageable_volumes", `{"volume":{"host":"`+host+`","ref":{"source-id":"`+gone+`"}}}`,
		"OpenStack-API-Version", "volume 3.8")
	if r.status != 202 {
		t.Fatalf("adopt a vanished object = %d %s", r.status, r.raw)
	}
	got = s.waitFinal(gone, 20*time.Second)
	if got["status"] != "error" || !strings.Contains(got["status_reason"].(string), "could not be found") {
		t.Errorf("adoption of a vanished object = %v (%v), want error saying it could not be found", got["status"], got["status_reason"])
	}
	if gb, _ := s.inUse("admin"); gb != gbBefore {
		t.Errorf("admin's gigabytes in use after a failed adoption = %v, want %v", gb, gbBefore)
	}
	if r := s.do("admin:admin", "DELETE", "/v3/volumes/"+gone, ""); r.status != 202 {
		t.Fatalf("delete the failed adoption = %d %s", r.status, r.raw)
	}
	if r := s.do("admin:admin", "GET", "/v3/volumes/"+gone, ""); r.status != 404 {
		t.Errorf("the failed adoption's record after its delete = %d %s, want 404", r.status, r.raw)
	}
	if _, err := os.Stat(file(stray)); err != nil {
		t.Errorf("the unmanaged file: %v", err)
	}
}

// TestE2EManageCinderclient drives manageable-list, manage and unmanage with python-cinderclient:
// a volume made through the API is unmanaged (its file stays), listed as manageable, and
// managed again under its old id with its bytes.
func TestE2EManageCinderclient(t *testing.T) {
	cinder := requireCinder(t)
	s := newStack(t, stackOptions{})
	s.addAgent(agents.Config{Host: "mgr", Backends: []agents.BackendConfig{fileBackend("b1")}})
	const pool = "mgr@b1#pool"
	dir := filepath.Join(s.dir, "data", "mgr", "b1")
	run := s.cinderRunner(cinder, "admin", "admin")
	id := s.createVolume("admin:admin", `{"volume":{"size":1,"name":"first-life"}}`)
	s.waitFinal(id, 20*time.Second)
	writeProbes(t, filepath.Join(dir, "volume-"+id), "first-life")

	run("unmanage", id)
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/volumes/"+id, "")
		return r.status == 404, r.raw
	}, "the unmanaged volume's record is gone")
	s.waitManageable(pool, id, true)

	out := run("--os-volume-api-version", "3.8", "manageable-list", pool)
	var row map[string]string
	for _, r := range tableRows(out) {
		if strings.Contains(r["reference"], "volume-"+id) {
			row = r
		}
	}
	if row == nil || row["safe_to_manage"] != "True" || row["size"] != "1" {
		t.Fatalf("cinder manageable-list printed:\n%s\nwant volume-%s, 1 GiB, safe to manage", out, id)
	}

	out = run("manage", "--name", "second-life", pool, "volume-"+id)
	props := tableProps(out)
	if props["id"] != id || props["name"] != "second-life" {
		t.Errorf("cinder manage printed:\n%s\nwant the volume %s named second-life", out, id)
	}
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("show", id)
		return regexp.MustCompile(`\|\s+status\s+\|\s+available`).MatchString(out), out
	}, "cinder show says the managed volume is available")
	checkProbes(t, "managed again", filepath.Join(dir, "volume-"+id), "first-life")
	out = run("--os-volume-api-version", "3.8", "manageable-list", "--detailed", "true", pool)
	for _, r := range tableRows(out) {
		if strings.Contains(r["reference"], "volume-"+id) && (r["safe_to_manage"] != "False" || r["reason_not_safe"] != "already managed" || r["cinder_id"] != id) {
			t.Errorf("cinder manageable-list after manage: %v, want already managed by %s", r, id)
		}
	}
}
