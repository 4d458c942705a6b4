package main

// End-to-end tests of the volume lifecycle operations (snapshots, clones, extend, bootable,
// admin actions, revert, cascade delete, quotas and limits) driven with gophercloud v2
// against the real binary.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/limits"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/snapshots"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// opsWait is how long an operation may take to settle on the file driver.
const opsWait = 30 * time.Second

// opsFault returns the body of gophercloud's unexpected-response-code error, or "".
func opsFault(err error) string {
	var uerr gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &uerr) {
		return string(uerr.Body)
	}
	return ""
}

// opsWantFault is wantCode that also wants the fault body to contain every one of texts.
func opsWantFault(t *testing.T, err error, code int, call string, texts ...string) {
	t.Helper()
	if err == nil || !gophercloud.ResponseCodeIs(err, code) {
		wantCode(t, err, code, call)
		return
	}
	body := opsFault(err)
	for _, want := range texts {
		if !strings.Contains(body, want) {
			t.Errorf("%s: HTTP %d body %s, want it to contain %q", call, code, body, want)
		}
	}
}

// opsVolume creates a volume with opts and waits until it is available.
func opsVolume(t *testing.T, c *gophercloud.ServiceClient, opts volumes.CreateOpts) *volumes.Volume {
	t.Helper()
	v, err := volumes.Create(t.Context(), c, opts, nil).Extract()
	if err != nil {
		t.Fatalf("volumes.Create(%+v): %v", opts, err)
	}
	waitAvailable(t, c, v.ID)
	got, err := volumes.Get(t.Context(), c, v.ID).Extract()
	if err != nil {
		t.Fatalf("volumes.Get(%s): %v", v.ID, err)
	}
	return got
}

// opsWaitVolume polls volumes.Get until ok holds and returns the volume.
func opsWaitVolume(t *testing.T, c *gophercloud.ServiceClient, id, what string, ok func(v *volumes.Volume) bool) *volumes.Volume {
	t.Helper()
	deadline := time.Now().Add(opsWait)
	var last *volumes.Volume
	var lastErr error
	for time.Now().Before(deadline) {
		v, err := volumes.Get(t.Context(), c, id).Extract()
		if err == nil && ok(v) {
			return v
		}
		last, lastErr = v, err
		time.Sleep(100 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("volumes.Get(%s) never showed %s; last: status %s size %d", id, what, last.Status, last.Size)
	}
	t.Fatalf("volumes.Get(%s) never showed %s; last error: %v", id, what, lastErr)
	return nil
}

// opsSnapshot creates a snapshot with opts and waits until it is available.
func opsSnapshot(t *testing.T, c *gophercloud.ServiceClient, opts snapshots.CreateOpts) *snapshots.Snapshot {
	t.Helper()
	sn, err := snapshots.Create(t.Context(), c, opts).Extract()
	if err != nil {
		t.Fatalf("snapshots.Create(%+v): %v", opts, err)
	}
	return opsWaitSnapshot(t, c, sn.ID, "available")
}

// opsWaitSnapshot waits with snapshots.WaitForStatus until snapshot id has status.
func opsWaitSnapshot(t *testing.T, c *gophercloud.ServiceClient, id, status string) *snapshots.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opsWait)
	defer cancel()
	if err := snapshots.WaitForStatus(ctx, c, id, status); err != nil {
		sn, gerr := snapshots.Get(t.Context(), c, id).Extract()
		if gerr == nil {
			t.Fatalf("snapshots.WaitForStatus(%s, %s): %v; snapshot is %s", id, status, err, sn.Status)
		}
		t.Fatalf("snapshots.WaitForStatus(%s, %s): %v", id, status, err)
	}
	sn, err := snapshots.Get(t.Context(), c, id).Extract()
	if err != nil {
		t.Fatalf("snapshots.Get(%s): %v", id, err)
	}
	return sn
}

// opsWaitSnapshotGone waits until snapshots.Get of id answers 404.
func opsWaitSnapshotGone(t *testing.T, c *gophercloud.ServiceClient, id string) {
	t.Helper()
	deadline := time.Now().Add(opsWait)
	var last error
	for time.Now().Before(deadline) {
		_, err := snapshots.Get(t.Context(), c, id).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			if body := opsFault(err); !strings.Contains(body, "itemNotFound") {
				t.Errorf("snapshots.Get(%s) after delete: 404 body %s, want an itemNotFound fault", id, body)
			}
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("snapshots.Get(%s) never answered 404; last error: %v", id, last)
}

// opsListSnapshots lists snapshots (detail: with the extended attributes) page by page.
func opsListSnapshots(t *testing.T, c *gophercloud.ServiceClient, opts snapshots.ListOpts, detail bool) ([]snapshots.Snapshot, int) {
	t.Helper()
	pager := snapshots.List(c, opts)
	call := "snapshots.List"
	if detail {
		pager, call = snapshots.ListDetail(c, opts), "snapshots.ListDetail"
	}
	var all []snapshots.Snapshot
	pages := 0
	err := pager.EachPage(t.Context(), func(_ context.Context, p pagination.Page) (bool, error) {
		ss, err := snapshots.ExtractSnapshots(p)
		if err != nil {
			return false, err
		}
		if opts.Limit > 0 && len(ss) > opts.Limit {
			return false, fmt.Errorf("page %d holds %d snapshots, more than limit %d", pages+1, len(ss), opts.Limit)
		}
		pages++
		all = append(all, ss...)
		return true, nil
	})
	if err != nil {
		t.Fatalf("%s(%+v): %v", call, opts, err)
	}
	return all, pages
}

func snapIDs(ss []snapshots.Snapshot) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.ID)
	}
	slices.Sort(out)
	return out
}

// opsRaw sends a request gophercloud has no helper for and decodes the answer into out.
func opsRaw(t *testing.T, c *gophercloud.ServiceClient, method, url string, body, out any, ok int) (*http.Response, error) {
	t.Helper()
	opts := &gophercloud.RequestOpts{JSONBody: body, OkCodes: []int{ok}}
	if out != nil {
		opts.JSONResponse = out
	}
	return c.Request(t.Context(), method, url, opts)
}

// opsMetadata is a {"metadata": {...}} body.
type opsMetadata struct {
	Metadata map[string]string `json:"metadata"`
}

// opsMeta is a {"meta": {...}} body.
type opsMeta struct {
	Meta map[string]string `json:"meta"`
}

func TestE2EGophercloudOperations(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{
		"BASALT_QUOTA_VOLUMES=20", "BASALT_QUOTA_SNAPSHOTS=15", "BASALT_QUOTA_GIGABYTES=200",
	}})
	s.addTopology()
	admin := gcClient(t, s, "admin", "admin")
	alice := gcClient(t, s, "alice", "p1")

	t.Run("Snapshots", func(t *testing.T) {
		ctx := t.Context()
		vol := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "snap-source"})
		other := opsVolume(t, alice, volumes.CreateOpts{Size: 2, Name: "snap-other"})

		created, err := snapshots.Create(ctx, alice, snapshots.CreateOpts{VolumeID: vol.ID, Name: "gc-snap",
			Description: "first snapshot", Metadata: map[string]string{"purpose": "backup", "owner": "gc"}}).Extract()
		if err != nil {
			t.Fatalf("snapshots.Create: %v", err)
		}
		if created.ID == "" || created.Status != "creating" || created.VolumeID != vol.ID || created.Size != 1 ||
			created.Name != "gc-snap" || created.Description != "first snapshot" || created.Metadata["purpose"] != "backup" ||
			created.Metadata["owner"] != "gc" || created.CreatedAt.IsZero() {
			t.Errorf("snapshots.Create = %+v, want creating, of %s, size 1, with name, description, metadata, created_at", created, vol.ID)
		}
		sn := opsWaitSnapshot(t, alice, created.ID, "available")
		if sn.Name != "gc-snap" || sn.Description != "first snapshot" || sn.Size != 1 || sn.VolumeID != vol.ID ||
			len(sn.Metadata) != 2 || sn.Metadata["purpose"] != "backup" || sn.Progress != "100%" || sn.ProjectID != "p1" ||
			sn.CreatedAt.IsZero() {
			t.Errorf("snapshots.Get = %+v, want available gc-snap of %s, 1 GiB, progress 100%%, project p1, 2 metadata items", sn, vol.ID)
		}
		if v, err := volumes.Get(ctx, alice, vol.ID).Extract(); err != nil || v.Status != "available" {
			t.Errorf("volumes.Get of the snapshotted volume = %+v, %v; want still available", v, err)
		}

		// More snapshots of both volumes, then list in pages and by volume.
		ofVol := []string{sn.ID}
		for i := 0; i < 4; i++ {
			ofVol = append(ofVol, opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: vol.ID, Name: fmt.Sprintf("gc-snap-%d", i)}).ID)
		}
		ofOther := opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: other.ID, Name: "gc-snap-other"})
		if ofOther.Size != 2 {
			t.Errorf("snapshots.Get of a 2 GiB volume's snapshot: size %d, want 2", ofOther.Size)
		}
		every := append(slices.Clone(ofVol), ofOther.ID)
		slices.Sort(every)
		slices.Sort(ofVol)

		paged, pages := opsListSnapshots(t, alice, snapshots.ListOpts{Limit: 2}, false)
		if got := snapIDs(paged); !slices.Equal(got, every) {
			t.Errorf("snapshots.List(limit 2) = %v, want each of %v exactly once", got, every)
		}
		if pages < 3 {
			t.Errorf("snapshots.List(limit 2) of 6 snapshots took %d pages, want at least 3", pages)
		}
		byVol, _ := opsListSnapshots(t, alice, snapshots.ListOpts{VolumeID: vol.ID}, false)
		if got := snapIDs(byVol); !slices.Equal(got, ofVol) {
			t.Errorf("snapshots.List(volume_id %s) = %v, want %v", vol.ID, got, ofVol)
		}
		byVolPaged, _ := opsListSnapshots(t, alice, snapshots.ListOpts{VolumeID: vol.ID, Limit: 3}, true)
		if got := snapIDs(byVolPaged); !slices.Equal(got, ofVol) {
			t.Errorf("snapshots.ListDetail(volume_id %s, limit 3) = %v, want %v", vol.ID, got, ofVol)
		}
		detail, _ := opsListSnapshots(t, alice, snapshots.ListOpts{VolumeID: other.ID}, true)
		if len(detail) != 1 || detail[0].ID != ofOther.ID || detail[0].ProjectID != "p1" || detail[0].Progress != "100%" ||
			detail[0].Status != "available" {
			t.Errorf("snapshots.ListDetail(volume_id %s) = %+v, want only %s, available, with project and progress", other.ID, detail, ofOther.ID)
		}
		if named, _ := opsListSnapshots(t, alice, snapshots.ListOpts{Name: "gc-snap-2"}, false); len(named) != 1 || named[0].Name != "gc-snap-2" {
			t.Errorf("snapshots.List(name gc-snap-2) = %+v, want that one snapshot", named)
		}
		if none, _ := opsListSnapshots(t, alice, snapshots.ListOpts{Status: "error"}, false); len(none) != 0 {
			t.Errorf("snapshots.List(status error) = %v, want none", snapIDs(none))
		}
		// Another project sees none of them.
		bob := gcClient(t, s, "bob", "p2")
		if theirs, _ := opsListSnapshots(t, bob, snapshots.ListOpts{}, false); len(theirs) != 0 {
			t.Errorf("snapshots.List as another project = %v, want none", snapIDs(theirs))
		}
		_, err = snapshots.Get(ctx, bob, sn.ID).Extract()
		wantCode(t, err, 404, "snapshots.Get of alice's snapshot as bob")
		_, err = snapshots.Create(ctx, bob, snapshots.CreateOpts{VolumeID: vol.ID}).Extract()
		wantCode(t, err, 404, "snapshots.Create of alice's volume as bob")
		_, err = snapshots.Create(ctx, alice, snapshots.CreateOpts{VolumeID: "00000000-0000-0000-0000-000000000000"}).Extract()
		wantCode(t, err, 404, "snapshots.Create of an unknown volume")

		// Update.
		name, desc := "gc-snap-renamed", "renamed snapshot"
		upd, err := snapshots.Update(ctx, alice, sn.ID, snapshots.UpdateOpts{Name: &name, Description: &desc}).Extract()
		if err != nil {
			t.Fatalf("snapshots.Update: %v", err)
		}
		if upd.ID != sn.ID || upd.Name != name || upd.Description != desc || upd.Status != "available" {
			t.Errorf("snapshots.Update = %+v, want name %q description %q", upd, name, desc)
		}
		got, err := snapshots.Get(ctx, alice, sn.ID).Extract()
		if err != nil || got.Name != name || got.Description != desc || !got.UpdatedAt.After(got.CreatedAt) {
			t.Errorf("snapshots.Get after update = %+v, %v; want the new name and description, updated_at after created_at", got, err)
		}

		// Metadata: show, replace (gophercloud's UpdateMetadata), merge, and the item routes.
		mdURL := alice.ServiceURL("snapshots", sn.ID, "metadata")
		var md opsMetadata
		if _, err := opsRaw(t, alice, "GET", mdURL, nil, &md, 200); err != nil {
			t.Fatalf("GET snapshot metadata: %v", err)
		}
		if fmt.Sprint(md.Metadata) != "map[owner:gc purpose:backup]" {
			t.Errorf("GET snapshot metadata = %v, want owner=gc purpose=backup", md.Metadata)
		}
		replaced, err := snapshots.UpdateMetadata(ctx, alice, sn.ID, snapshots.UpdateMetadataOpts{
			Metadata: map[string]any{"a": "1", "b": "2"}}).ExtractMetadata()
		if err != nil {
			t.Fatalf("snapshots.UpdateMetadata: %v", err)
		}
		if fmt.Sprint(replaced) != "map[a:1 b:2]" {
			t.Errorf("snapshots.UpdateMetadata = %v, want exactly a=1 b=2 (replace)", replaced)
		}
		md = opsMetadata{}
		if _, err := opsRaw(t, alice, "POST", mdURL, opsMetadata{Metadata: map[string]string{"c": "3", "a": "10"}}, &md, 200); err != nil {
			t.Fatalf("POST snapshot metadata (merge): %v", err)
		}
		if fmt.Sprint(md.Metadata) != "map[a:10 b:2 c:3]" {
			t.Errorf("POST snapshot metadata (merge) = %v, want a=10 b=2 c=3", md.Metadata)
		}
		var item opsMeta
		if _, err := opsRaw(t, alice, "GET", mdURL+"/b", nil, &item, 200); err != nil || fmt.Sprint(item.Meta) != "map[b:2]" {
			t.Errorf("GET snapshot metadata item b = %v, %v; want {b: 2}", item.Meta, err)
		}
		item = opsMeta{}
		if _, err := opsRaw(t, alice, "PUT", mdURL+"/b", opsMeta{Meta: map[string]string{"b": "20"}}, &item, 200); err != nil || fmt.Sprint(item.Meta) != "map[b:20]" {
			t.Errorf("PUT snapshot metadata item b = %v, %v; want {b: 20}", item.Meta, err)
		}
		_, err = opsRaw(t, alice, "PUT", mdURL+"/b", opsMeta{Meta: map[string]string{"x": "1"}}, nil, 200)
		wantCode(t, err, 400, "PUT snapshot metadata item b with a body naming x")
		if _, err := opsRaw(t, alice, "DELETE", mdURL+"/c", nil, nil, 200); err != nil {
			t.Errorf("DELETE snapshot metadata item c: %v", err)
		}
		_, err = opsRaw(t, alice, "GET", mdURL+"/c", nil, nil, 200)
		wantCode(t, err, 404, "GET snapshot metadata item c after its delete")
		if got, err := snapshots.Get(ctx, alice, sn.ID).Extract(); err != nil || fmt.Sprint(got.Metadata) != "map[a:10 b:20]" {
			t.Errorf("snapshots.Get metadata after the metadata calls = %v, %v; want a=10 b=20", got.Metadata, err)
		}

		// A volume with snapshots is not deleted without cascade.
		opsWantFault(t, volumes.Delete(ctx, alice, vol.ID, volumes.DeleteOpts{}).ExtractErr(), 400,
			"volumes.Delete of a volume with snapshots", "badRequest", "snapshots")

		// Delete every snapshot and wait for each to be gone.
		for _, id := range every {
			if err := snapshots.Delete(ctx, alice, id).ExtractErr(); err != nil {
				t.Fatalf("snapshots.Delete(%s): %v", id, err)
			}
		}
		for _, id := range every {
			opsWaitSnapshotGone(t, alice, id)
		}
		wantCode(t, snapshots.Delete(ctx, alice, sn.ID).ExtractErr(), 404, "snapshots.Delete of a deleted snapshot")
		if left, _ := opsListSnapshots(t, alice, snapshots.ListOpts{}, false); len(left) != 0 {
			t.Errorf("snapshots.List after deleting all = %v, want none", snapIDs(left))
		}
		// Now the volumes go without cascade.
		for _, id := range []string{vol.ID, other.ID} {
			if err := volumes.Delete(ctx, alice, id, volumes.DeleteOpts{}).ExtractErr(); err != nil {
				t.Fatalf("volumes.Delete(%s) after its snapshots are gone: %v", id, err)
			}
			waitGone(t, alice, id)
		}
	})

	t.Run("VolumeFromSnapshotAndClone", func(t *testing.T) {
		ctx := t.Context()
		src := opsVolume(t, alice, volumes.CreateOpts{Size: 2, Name: "clone-source", Metadata: map[string]string{"k": "v"}})
		sn := opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: src.ID, Name: "clone-snap"})
		srcHost := func() string {
			v, err := volumes.Get(ctx, admin, src.ID).Extract()
			if err != nil {
				t.Fatalf("volumes.Get(%s) as admin: %v", src.ID, err)
			}
			return v.Host
		}()

		cases := []struct {
			name string
			opts volumes.CreateOpts
			size int
		}{
			{"from snapshot", volumes.CreateOpts{Name: "from-snap", SnapshotID: sn.ID}, 2},
			{"from snapshot, larger", volumes.CreateOpts{Name: "from-snap-3", SnapshotID: sn.ID, Size: 3}, 3},
			{"clone", volumes.CreateOpts{Name: "clone", SourceVolID: src.ID}, 2},
			{"clone, larger", volumes.CreateOpts{Name: "clone-4", SourceVolID: src.ID, Size: 4}, 4},
		}
		var made []string
		for _, c := range cases {
			v, err := volumes.Create(ctx, alice, c.opts, nil).Extract()
			if err != nil {
				t.Fatalf("volumes.Create(%s): %v", c.name, err)
			}
			if v.Status != "creating" || v.Size != c.size {
				t.Errorf("volumes.Create(%s) = status %s size %d, want creating size %d", c.name, v.Status, v.Size, c.size)
			}
			made = append(made, v.ID)
		}
		for i, c := range cases {
			waitAvailable(t, alice, made[i])
			v, err := volumes.Get(ctx, admin, made[i]).Extract()
			if err != nil {
				t.Fatalf("volumes.Get(%s): %v", c.name, err)
			}
			if v.Status != "available" || v.Size != c.size || v.SnapshotID != c.opts.SnapshotID || v.SourceVolID != c.opts.SourceVolID {
				t.Errorf("volumes.Get(%s) = status %s size %d snapshot_id %q source_volid %q, want available, size %d, snapshot_id %q source_volid %q",
					c.name, v.Status, v.Size, v.SnapshotID, v.SourceVolID, c.size, c.opts.SnapshotID, c.opts.SourceVolID)
			}
			if v.Host != srcHost {
				t.Errorf("volumes.Get(%s) host %q, want the source's pool %q", c.name, v.Host, srcHost)
			}
			if v.VolumeType != src.VolumeType || v.AvailabilityZone != src.AvailabilityZone {
				t.Errorf("volumes.Get(%s) type %q zone %q, want the source's %q %q", c.name, v.VolumeType, v.AvailabilityZone, src.VolumeType, src.AvailabilityZone)
			}
		}
		// Smaller than the source is refused.
		_, err := volumes.Create(ctx, alice, volumes.CreateOpts{SnapshotID: sn.ID, Size: 1}, nil).Extract()
		opsWantFault(t, err, 400, "volumes.Create(1 GiB from a 2 GiB snapshot)", "cannot be smaller")
		_, err = volumes.Create(ctx, alice, volumes.CreateOpts{SourceVolID: src.ID, Size: 1}, nil).Extract()
		opsWantFault(t, err, 400, "volumes.Create(1 GiB clone of a 2 GiB volume)", "cannot be smaller")
		_, err = volumes.Create(ctx, alice, volumes.CreateOpts{SnapshotID: "00000000-0000-0000-0000-000000000000"}, nil).Extract()
		wantCode(t, err, 404, "volumes.Create from an unknown snapshot")
		_, err = volumes.Create(ctx, alice, volumes.CreateOpts{SourceVolID: "00000000-0000-0000-0000-000000000000"}, nil).Extract()
		wantCode(t, err, 404, "volumes.Create from an unknown source volume")

		for _, id := range made {
			if err := volumes.Delete(ctx, alice, id, volumes.DeleteOpts{}).ExtractErr(); err != nil {
				t.Fatalf("volumes.Delete(%s): %v", id, err)
			}
		}
		for _, id := range made {
			waitGone(t, alice, id)
		}
		if err := volumes.Delete(ctx, alice, src.ID, volumes.DeleteOpts{Cascade: true}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete(cascade) of the source: %v", err)
		}
		waitGone(t, alice, src.ID)
	})

	t.Run("Extend", func(t *testing.T) {
		ctx := t.Context()
		v := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "grow-me"})
		if err := volumes.ExtendSize(ctx, alice, v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ExtendSize(1 -> 2): %v", err)
		}
		got := opsWaitVolume(t, alice, v.ID, "size 2 and available", func(v *volumes.Volume) bool {
			return v.Size == 2 && v.Status == "available"
		})
		if !got.UpdatedAt.After(got.CreatedAt) {
			t.Errorf("volumes.Get after extend: updated_at %v not after created_at %v", got.UpdatedAt, got.CreatedAt)
		}
		// At 3.42 (online extend) an available volume still extends.
		mv := gcClient(t, s, "alice", "p1")
		mv.Microversion = "3.42"
		if err := volumes.ExtendSize(ctx, mv, v.ID, volumes.ExtendSizeOpts{NewSize: 3}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ExtendSize(2 -> 3) at 3.42: %v", err)
		}
		opsWaitVolume(t, alice, v.ID, "size 3 and available", func(v *volumes.Volume) bool {
			return v.Size == 3 && v.Status == "available"
		})

		for _, n := range []int{3, 2} {
			err := volumes.ExtendSize(ctx, alice, v.ID, volumes.ExtendSizeOpts{NewSize: n}).ExtractErr()
			opsWantFault(t, err, 400, fmt.Sprintf("volumes.ExtendSize(3 -> %d)", n), "badRequest",
				"New size for extend must be greater than current size")
		}
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || got.Size != 3 || got.Status != "available" {
			t.Errorf("volumes.Get after refused extends = %+v, %v; want size 3, available", got, err)
		}
		err := volumes.ExtendSize(ctx, alice, "00000000-0000-0000-0000-000000000000", volumes.ExtendSizeOpts{NewSize: 5}).ExtractErr()
		wantCode(t, err, 404, "volumes.ExtendSize of an unknown volume")

		// A volume not available cannot be extended.
		if err := volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "error"}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ResetStatus(error) as admin: %v", err)
		}
		err = volumes.ExtendSize(ctx, alice, v.ID, volumes.ExtendSizeOpts{NewSize: 4}).ExtractErr()
		opsWantFault(t, err, 400, "volumes.ExtendSize of a volume in error", "status must be available")

		if err := volumes.Delete(ctx, alice, v.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete of the extended volume in error: %v", err)
		}
		waitGone(t, alice, v.ID)
	})

	t.Run("Bootable", func(t *testing.T) {
		ctx := t.Context()
		v := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "boot-me"})
		if v.Bootable != "false" {
			t.Errorf("new volume bootable = %q, want \"false\"", v.Bootable)
		}
		if err := volumes.SetBootable(ctx, alice, v.ID, volumes.BootableOpts{Bootable: true}).ExtractErr(); err != nil {
			t.Fatalf("volumes.SetBootable(true): %v", err)
		}
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || got.Bootable != "true" || got.Status != "available" {
			t.Errorf("volumes.Get after SetBootable(true) = %+v, %v; want bootable \"true\", available", got, err)
		}
		// A clone of a bootable volume is bootable.
		clone := opsVolume(t, alice, volumes.CreateOpts{SourceVolID: v.ID, Name: "boot-clone"})
		if clone.Bootable != "true" {
			t.Errorf("clone of a bootable volume: bootable %q, want \"true\"", clone.Bootable)
		}
		if err := volumes.SetBootable(ctx, alice, v.ID, volumes.BootableOpts{Bootable: false}).ExtractErr(); err != nil {
			t.Fatalf("volumes.SetBootable(false): %v", err)
		}
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || got.Bootable != "false" {
			t.Errorf("volumes.Get after SetBootable(false) = %+v, %v; want bootable \"false\"", got, err)
		}
		_, err := opsRaw(t, alice, "POST", alice.ServiceURL("volumes", v.ID, "action"),
			map[string]any{"os-set_bootable": map[string]any{"bootable": "maybe"}}, nil, 200)
		opsWantFault(t, err, 400, "os-set_bootable with bootable \"maybe\"", "bootable")
		for _, id := range []string{clone.ID, v.ID} {
			if err := volumes.Delete(ctx, alice, id, volumes.DeleteOpts{}).ExtractErr(); err != nil {
				t.Fatalf("volumes.Delete(%s): %v", id, err)
			}
			waitGone(t, alice, id)
		}
	})

	t.Run("VolumeMetadata", func(t *testing.T) {
		ctx := t.Context()
		v := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "meta", Metadata: map[string]string{"tier": "gold"}})
		mdURL := alice.ServiceURL("volumes", v.ID, "metadata")
		var md opsMetadata
		if _, err := opsRaw(t, alice, "GET", mdURL, nil, &md, 200); err != nil || fmt.Sprint(md.Metadata) != "map[tier:gold]" {
			t.Errorf("GET volume metadata = %v, %v; want tier=gold", md.Metadata, err)
		}
		md = opsMetadata{}
		if _, err := opsRaw(t, alice, "POST", mdURL, opsMetadata{Metadata: map[string]string{"zone": "a"}}, &md, 200); err != nil ||
			fmt.Sprint(md.Metadata) != "map[tier:gold zone:a]" {
			t.Errorf("POST volume metadata (merge) = %v, %v; want tier=gold zone=a", md.Metadata, err)
		}
		md = opsMetadata{}
		if _, err := opsRaw(t, alice, "PUT", mdURL, opsMetadata{Metadata: map[string]string{"x": "1", "y": "2"}}, &md, 200); err != nil ||
			fmt.Sprint(md.Metadata) != "map[x:1 y:2]" {
			t.Errorf("PUT volume metadata (replace) = %v, %v; want exactly x=1 y=2", md.Metadata, err)
		}
		var item opsMeta
		if _, err := opsRaw(t, alice, "PUT", mdURL+"/x", opsMeta{Meta: map[string]string{"x": "10"}}, &item, 200); err != nil || fmt.Sprint(item.Meta) != "map[x:10]" {
			t.Errorf("PUT volume metadata item x = %v, %v; want {x: 10}", item.Meta, err)
		}
		item = opsMeta{}
		if _, err := opsRaw(t, alice, "GET", mdURL+"/x", nil, &item, 200); err != nil || fmt.Sprint(item.Meta) != "map[x:10]" {
			t.Errorf("GET volume metadata item x = %v, %v; want {x: 10}", item.Meta, err)
		}
		if _, err := opsRaw(t, alice, "DELETE", mdURL+"/y", nil, nil, 200); err != nil {
			t.Errorf("DELETE volume metadata item y: %v", err)
		}
		_, err := opsRaw(t, alice, "DELETE", mdURL+"/y", nil, nil, 200)
		wantCode(t, err, 404, "DELETE volume metadata item y twice")
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || fmt.Sprint(got.Metadata) != "map[x:10]" {
			t.Errorf("volumes.Get metadata after the metadata calls = %v, %v; want x=10", got.Metadata, err)
		}
		// Volumes listed by metadata see the change.
		if found, _ := listAll(t, alice, volumes.ListOpts{Metadata: map[string]string{"x": "10"}}); len(found) != 1 || found[0].ID != v.ID {
			t.Errorf("volumes.List(metadata x=10) = %v, want only %s", ids(found), v.ID)
		}
		if err := volumes.Delete(ctx, alice, v.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete: %v", err)
		}
		waitGone(t, alice, v.ID)
	})

	t.Run("ResetStatusAndForceDelete", func(t *testing.T) {
		ctx := t.Context()
		v := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "admin-actions"})
		opsWantFault(t, volumes.ResetStatus(ctx, alice, v.ID, volumes.ResetStatusOpts{Status: "error"}).ExtractErr(), 403,
			"volumes.ResetStatus as the owning member", "forbidden")
		if got, _ := volumes.Get(ctx, alice, v.ID).Extract(); got == nil || got.Status != "available" {
			t.Errorf("volume after a member's reset-status = %+v, want still available", got)
		}
		if err := volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "error"}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ResetStatus(error) as admin: %v", err)
		}
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || got.Status != "error" {
			t.Errorf("volumes.Get after ResetStatus(error) = %+v, %v; want error", got, err)
		}
		if err := volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "available"}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ResetStatus(available) as admin: %v", err)
		}
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || got.Status != "available" {
			t.Errorf("volumes.Get after ResetStatus(available) = %+v, %v; want available", got, err)
		}
		wantCode(t, volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "bogus"}).ExtractErr(), 400,
			"volumes.ResetStatus(bogus)")
		wantCode(t, volumes.ResetStatus(ctx, admin, "00000000-0000-0000-0000-000000000000", volumes.ResetStatusOpts{Status: "error"}).ExtractErr(), 404,
			"volumes.ResetStatus of an unknown volume")

		// A volume in maintenance is not deleted normally; the admin force-deletes it.
		if err := volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "maintenance"}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ResetStatus(maintenance): %v", err)
		}
		opsWantFault(t, volumes.Delete(ctx, alice, v.ID, volumes.DeleteOpts{}).ExtractErr(), 400,
			"volumes.Delete of a volume in maintenance", "Volume status must be available")
		opsWantFault(t, volumes.ForceDelete(ctx, alice, v.ID).ExtractErr(), 403, "volumes.ForceDelete as a member", "forbidden")
		if err := volumes.ForceDelete(ctx, admin, v.ID).ExtractErr(); err != nil {
			t.Fatalf("volumes.ForceDelete as admin: %v", err)
		}
		waitGone(t, alice, v.ID)

		// Snapshots have the same admin actions.
		v2 := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "snap-admin-actions"})
		sn := opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: v2.ID})
		wantCode(t, snapshots.ResetStatus(ctx, alice, sn.ID, snapshots.ResetStatusOpts{Status: "error"}).ExtractErr(), 403,
			"snapshots.ResetStatus as a member")
		if err := snapshots.ResetStatus(ctx, admin, sn.ID, snapshots.ResetStatusOpts{Status: "creating"}).ExtractErr(); err != nil {
			t.Fatalf("snapshots.ResetStatus(creating) as admin: %v", err)
		}
		if got, err := snapshots.Get(ctx, alice, sn.ID).Extract(); err != nil || got.Status != "creating" {
			t.Errorf("snapshots.Get after ResetStatus(creating) = %+v, %v; want creating", got, err)
		}
		opsWantFault(t, snapshots.Delete(ctx, alice, sn.ID).ExtractErr(), 400, "snapshots.Delete of a creating snapshot", "Snapshot status must be available or error")
		wantCode(t, snapshots.ForceDelete(ctx, alice, sn.ID).ExtractErr(), 403, "snapshots.ForceDelete as a member")
		if err := snapshots.ForceDelete(ctx, admin, sn.ID).ExtractErr(); err != nil {
			t.Fatalf("snapshots.ForceDelete as admin: %v", err)
		}
		opsWaitSnapshotGone(t, alice, sn.ID)
		if err := volumes.Delete(ctx, alice, v2.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete after its snapshot was force-deleted: %v", err)
		}
		waitGone(t, alice, v2.ID)
	})

	t.Run("Revert", func(t *testing.T) {
		ctx := t.Context()
		mv := gcClient(t, s, "alice", "p1")
		mv.Microversion = "3.40"
		revert := func(c *gophercloud.ServiceClient, volID, snapID string) (*http.Response, error) {
			return opsRaw(t, c, "POST", c.ServiceURL("volumes", volID, "action"),
				map[string]any{"revert": map[string]any{"snapshot_id": snapID}}, nil, 202)
		}
		v := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "revert-me"})
		first := opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: v.ID, Name: "first"})
		latest := opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: v.ID, Name: "latest"})

		// Before 3.40 there is no revert action.
		if _, err := revert(alice, v.ID, latest.ID); err == nil || !(gophercloud.ResponseCodeIs(err, 400) || gophercloud.ResponseCodeIs(err, 404)) {
			t.Errorf("revert at microversion 3.0: %v, want HTTP 400 or 404", err)
		}
		_, err := revert(mv, v.ID, first.ID)
		opsWantFault(t, err, 400, "revert to a snapshot that is not the latest", "badRequest", "latest")

		res, err := revert(mv, v.ID, latest.ID)
		if err != nil {
			t.Fatalf("revert to the latest snapshot at 3.40: %v", err)
		}
		if got := res.Header.Get("OpenStack-API-Version"); got != "volume 3.40" {
			t.Errorf("revert answered OpenStack-API-Version %q, want volume 3.40", got)
		}
		opsWaitVolume(t, alice, v.ID, "available after the revert", func(v *volumes.Volume) bool { return v.Status == "available" })
		opsWaitSnapshot(t, alice, latest.ID, "available")

		// A volume not available: 409.
		if err := volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "error"}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ResetStatus(error): %v", err)
		}
		_, err = revert(mv, v.ID, latest.ID)
		opsWantFault(t, err, 409, "revert of a volume in error", "conflictingRequest")
		if err := volumes.ResetStatus(ctx, admin, v.ID, volumes.ResetStatusOpts{Status: "available"}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ResetStatus(available): %v", err)
		}

		// A snapshot of another volume: 400.
		w := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "revert-other"})
		ws := opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: w.ID})
		_, err = revert(mv, v.ID, ws.ID)
		wantCode(t, err, 400, "revert to another volume's snapshot")

		// Size mismatch after an extend: 400, and the volume stays available and extended.
		if err := volumes.ExtendSize(ctx, alice, v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ExtendSize(1 -> 2): %v", err)
		}
		opsWaitVolume(t, alice, v.ID, "size 2 and available", func(v *volumes.Volume) bool { return v.Size == 2 && v.Status == "available" })
		_, err = revert(mv, v.ID, latest.ID)
		opsWantFault(t, err, 400, "revert of a 2 GiB volume to a 1 GiB snapshot", "badRequest", "size")
		if got, err := volumes.Get(ctx, alice, v.ID).Extract(); err != nil || got.Size != 2 || got.Status != "available" {
			t.Errorf("volumes.Get after the refused revert = %+v, %v; want 2 GiB, available", got, err)
		}

		// Cascade removes the volumes' snapshots.
		for _, x := range []struct {
			vol   string
			snaps []string
		}{{v.ID, []string{first.ID, latest.ID}}, {w.ID, []string{ws.ID}}} {
			if err := volumes.Delete(ctx, alice, x.vol, volumes.DeleteOpts{Cascade: true}).ExtractErr(); err != nil {
				t.Fatalf("volumes.Delete(%s, cascade): %v", x.vol, err)
			}
			waitGone(t, alice, x.vol)
			for _, id := range x.snaps {
				opsWaitSnapshotGone(t, alice, id)
			}
		}
	})

	t.Run("CascadeDelete", func(t *testing.T) {
		ctx := t.Context()
		v := opsVolume(t, alice, volumes.CreateOpts{Size: 1, Name: "cascade"})
		var snaps []string
		for i := 0; i < 3; i++ {
			snaps = append(snaps, opsSnapshot(t, alice, snapshots.CreateOpts{VolumeID: v.ID, Name: fmt.Sprintf("cascade-%d", i)}).ID)
		}
		opsWantFault(t, volumes.Delete(ctx, alice, v.ID, volumes.DeleteOpts{}).ExtractErr(), 400,
			"volumes.Delete without cascade of a volume with 3 snapshots", "snapshots")
		if err := volumes.Delete(ctx, alice, v.ID, volumes.DeleteOpts{Cascade: true}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete(cascade): %v", err)
		}
		waitGone(t, alice, v.ID)
		for _, id := range snaps {
			opsWaitSnapshotGone(t, alice, id)
		}
		if left, _ := opsListSnapshots(t, alice, snapshots.ListOpts{VolumeID: v.ID}, false); len(left) != 0 {
			t.Errorf("snapshots.List(volume_id) after the cascade = %v, want none", snapIDs(left))
		}
	})

	t.Run("QuotasAndLimits", func(t *testing.T) {
		ctx := t.Context()
		const project = "quota-proj"
		carol := gcClient(t, s, "carol", project)

		qs, err := quotasets.Get(ctx, carol, project).Extract()
		if err != nil {
			t.Fatalf("quotasets.Get as the project's member: %v", err)
		}
		if qs.ID != project || qs.Volumes != 20 || qs.Snapshots != 15 || qs.Gigabytes != 200 || qs.Backups != 10 ||
			qs.PerVolumeGigabytes != -1 || qs.Groups != 10 {
			t.Errorf("quotasets.Get = %+v, want id %s, volumes 20, snapshots 15, gigabytes 200 (BASALT_QUOTA_*), backups 10, groups 10, per_volume_gigabytes -1", qs, project)
		}
		if qs.Extra["volumes___DEFAULT__"] != float64(-1) {
			t.Errorf("quotasets.Get extra = %v, want volumes___DEFAULT__ = -1", qs.Extra)
		}
		defs, err := quotasets.GetDefaults(ctx, carol, project).Extract()
		if err != nil || defs.Volumes != 20 || defs.Gigabytes != 200 {
			t.Errorf("quotasets.GetDefaults = %+v, %v; want volumes 20 gigabytes 200", defs, err)
		}
		_, err = quotasets.Get(ctx, carol, "p1").Extract()
		wantCode(t, err, 403, "quotasets.Get of another project as a member")

		// Usage follows volumes, snapshots and extends.
		v := opsVolume(t, carol, volumes.CreateOpts{Size: 2, Name: "quota-vol"})
		sn := opsSnapshot(t, carol, snapshots.CreateOpts{VolumeID: v.ID})
		if err := volumes.ExtendSize(ctx, carol, v.ID, volumes.ExtendSizeOpts{NewSize: 3}).ExtractErr(); err != nil {
			t.Fatalf("volumes.ExtendSize(2 -> 3): %v", err)
		}
		opsWaitVolume(t, carol, v.ID, "size 3 and available", func(v *volumes.Volume) bool { return v.Size == 3 && v.Status == "available" })
		usage, err := quotasets.GetUsage(ctx, carol, project).Extract()
		if err != nil {
			t.Fatalf("quotasets.GetUsage: %v", err)
		}
		if usage.ID != project || usage.Volumes != (quotasets.QuotaUsage{Limit: 20, InUse: 1}) ||
			usage.Snapshots != (quotasets.QuotaUsage{Limit: 15, InUse: 1}) || usage.Gigabytes != (quotasets.QuotaUsage{Limit: 200, InUse: 5}) {
			t.Errorf("quotasets.GetUsage = %+v, want volumes 1/20, snapshots 1/15, gigabytes 5/200 (3 GiB volume + 2 GiB snapshot)", usage)
		}
		lim, err := limits.Get(ctx, carol).Extract()
		if err != nil {
			t.Fatalf("limits.Get: %v", err)
		}
		wantAbs := limits.Absolute{MaxTotalVolumes: 20, MaxTotalSnapshots: 15, MaxTotalVolumeGigabytes: 200, MaxTotalBackups: 10,
			MaxTotalBackupGigabytes: 1000, TotalVolumesUsed: 1, TotalGigabytesUsed: 5, TotalSnapshotsUsed: 1}
		if lim.Absolute != wantAbs {
			t.Errorf("limits.Get absolute = %+v, want %+v", lim.Absolute, wantAbs)
		}

		// Only an admin updates quotas.
		one := 1
		_, err = quotasets.Update(ctx, carol, project, quotasets.UpdateOpts{Volumes: &one}).Extract()
		wantCode(t, err, 403, "quotasets.Update as a member")
		upd, err := quotasets.Update(ctx, admin, project, quotasets.UpdateOpts{Volumes: &one,
			Extra: map[string]any{"gigabytes___DEFAULT__": 50}}).Extract()
		if err != nil {
			t.Fatalf("quotasets.Update as admin: %v", err)
		}
		if upd.Volumes != 1 || upd.Snapshots != 15 || upd.Gigabytes != 200 || upd.Extra["gigabytes___DEFAULT__"] != float64(50) {
			t.Errorf("quotasets.Update = %+v, want volumes 1, gigabytes___DEFAULT__ 50, the others unchanged", upd)
		}
		if qs, err := quotasets.Get(ctx, carol, project).Extract(); err != nil || qs.Volumes != 1 {
			t.Errorf("quotasets.Get after the update = %+v, %v; want volumes 1", qs, err)
		}
		bad := -2
		_, err = quotasets.Update(ctx, admin, project, quotasets.UpdateOpts{Snapshots: &bad}).Extract()
		wantCode(t, err, 400, "quotasets.Update(snapshots -2)")
		_, err = quotasets.Update(ctx, admin, project, quotasets.UpdateOpts{Extra: map[string]any{"no_such_resource": 3}}).Extract()
		opsWantFault(t, err, 400, "quotasets.Update(no_such_resource)", "Bad key(s) in quota set: no_such_resource")

		// The member is now at its volumes quota.
		_, err = volumes.Create(ctx, carol, volumes.CreateOpts{Size: 1, Name: "one-too-many"}, nil).Extract()
		opsWantFault(t, err, 413, "volumes.Create beyond the volumes quota", `"overLimit"`,
			"VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'.")
		var uerr gophercloud.ErrUnexpectedResponseCode
		if errors.As(err, &uerr) && uerr.ResponseHeader.Get("Retry-After") != "0" {
			t.Errorf("volumes.Create beyond the volumes quota: Retry-After header %q (body %s), want \"0\" as Cinder's QuotaError sends",
				uerr.ResponseHeader.Get("Retry-After"), uerr.Body)
		}
		if lim, err := limits.Get(ctx, carol).Extract(); err != nil || lim.Absolute.MaxTotalVolumes != 1 || lim.Absolute.TotalVolumesUsed != 1 {
			t.Errorf("limits.Get after the update = %+v, %v; want maxTotalVolumes 1, totalVolumesUsed 1", lim, err)
		}
		// A refused create takes nothing.
		if usage, err := quotasets.GetUsage(ctx, carol, project).Extract(); err != nil || usage.Volumes.InUse != 1 || usage.Gigabytes.InUse != 5 {
			t.Errorf("quotasets.GetUsage after the refused create = %+v, %v; want 1 volume, 5 GiB", usage, err)
		}
		// The per-type gigabytes quota refuses an extend beyond it.
		err = volumes.ExtendSize(ctx, carol, v.ID, volumes.ExtendSizeOpts{NewSize: 60}).ExtractErr()
		opsWantFault(t, err, 413, "volumes.ExtendSize beyond gigabytes___DEFAULT__", "VolumeSizeExceedsAvailableQuota", "gigabytes___DEFAULT__")
		if got, err := volumes.Get(ctx, carol, v.ID).Extract(); err != nil || got.Size != 3 || got.Status != "available" {
			t.Errorf("volumes.Get after the refused extend = %+v, %v; want 3 GiB, available", got, err)
		}

		// Delete resets to the defaults.
		wantCode(t, quotasets.Delete(ctx, carol, project).ExtractErr(), 403, "quotasets.Delete as a member")
		if err := quotasets.Delete(ctx, admin, project).ExtractErr(); err != nil {
			t.Fatalf("quotasets.Delete as admin: %v", err)
		}
		qs, err = quotasets.Get(ctx, carol, project).Extract()
		if err != nil || qs.Volumes != 20 || qs.Extra["gigabytes___DEFAULT__"] != float64(-1) {
			t.Errorf("quotasets.Get after quotasets.Delete = %+v, %v; want volumes 20, gigabytes___DEFAULT__ -1 (defaults)", qs, err)
		}
		v2 := opsVolume(t, carol, volumes.CreateOpts{Size: 1, Name: "after-reset"})

		// Deleting gives everything back.
		if err := volumes.Delete(ctx, carol, v.ID, volumes.DeleteOpts{Cascade: true}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete(cascade): %v", err)
		}
		if err := volumes.Delete(ctx, carol, v2.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete: %v", err)
		}
		waitGone(t, carol, v.ID)
		waitGone(t, carol, v2.ID)
		opsWaitSnapshotGone(t, carol, sn.ID)
		s.eventually(opsWait, func() (bool, string) {
			lim, err := limits.Get(ctx, carol).Extract()
			if err != nil {
				return false, err.Error()
			}
			a := lim.Absolute
			return a.TotalVolumesUsed == 0 && a.TotalSnapshotsUsed == 0 && a.TotalGigabytesUsed == 0, fmt.Sprintf("%+v", a)
		}, "limits.Get shows nothing used after every delete")
	})
}
