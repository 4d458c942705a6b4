package main

// End-to-end tests that drive the real basalt binary with gophercloud v2, the Go SDK real
// OpenStack users script against, in its noauth mode.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/apiversions"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/noauth"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/availabilityzones"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/schedulerstats"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/services"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/openstack/utils"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// gcClient returns a gophercloud noauth block-storage v3 client acting as user in project.
func gcClient(t *testing.T, s *stack, user, project string) *gophercloud.ServiceClient {
	t.Helper()
	provider, err := noauth.NewClient(gophercloud.AuthOptions{Username: user, TenantName: project})
	if err != nil {
		t.Fatalf("noauth.NewClient(%s:%s): %v", user, project, err)
	}
	c, err := noauth.NewBlockStorageNoAuthV3(provider, noauth.EndpointOpts{CinderEndpoint: s.base + "/v3"})
	if err != nil {
		t.Fatalf("noauth.NewBlockStorageNoAuthV3(%s:%s): %v", user, project, err)
	}
	return c
}

// wantCode fails unless err is gophercloud's unexpected-response-code error with status code.
func wantCode(t *testing.T, err error, code int, call string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want HTTP %d", call, code)
		return
	}
	var uerr gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &uerr) || !gophercloud.ResponseCodeIs(err, code) {
		t.Errorf("%s: %v, want HTTP %d", call, err, code)
	}
}

// waitAvailable waits with volumes.WaitForStatus until volume id is available.
func waitAvailable(t *testing.T, c *gophercloud.ServiceClient, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := volumes.WaitForStatus(ctx, c, id, "available"); err != nil {
		v, gerr := volumes.Get(t.Context(), c, id).Extract()
		if gerr == nil {
			t.Fatalf("volumes.WaitForStatus(%s, available): %v; volume is %s", id, err, v.Status)
		}
		t.Fatalf("volumes.WaitForStatus(%s, available): %v", id, err)
	}
}

// waitGone waits until volumes.Get of id answers 404.
func waitGone(t *testing.T, c *gophercloud.ServiceClient, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		_, err := volumes.Get(t.Context(), c, id).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			var uerr gophercloud.ErrUnexpectedResponseCode
			if errors.As(err, &uerr) && !strings.Contains(string(uerr.Body), "itemNotFound") {
				t.Errorf("volumes.Get(%s) after delete: 404 body %s, want an itemNotFound fault", id, uerr.Body)
			}
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("volumes.Get(%s) never answered 404 after volumes.Delete; last error: %v", id, last)
}

// listAll lists volumes with opts and returns them with the number of pages.
func listAll(t *testing.T, c *gophercloud.ServiceClient, opts volumes.ListOpts) ([]volumes.Volume, int) {
	t.Helper()
	var all []volumes.Volume
	pages := 0
	err := volumes.List(c, opts).EachPage(t.Context(), func(_ context.Context, p pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(p)
		if err != nil {
			return false, err
		}
		if opts.Limit > 0 && len(vs) > opts.Limit {
			return false, fmt.Errorf("page %d holds %d volumes, more than limit %d", pages+1, len(vs), opts.Limit)
		}
		pages++
		all = append(all, vs...)
		return true, nil
	})
	if err != nil {
		t.Fatalf("volumes.List(%+v): %v", opts, err)
	}
	return all, pages
}

func ids(vs []volumes.Volume) []string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.ID)
	}
	return out
}

func TestE2EGophercloud(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addTopology()
	admin := gcClient(t, s, "admin", "admin")
	alice := gcClient(t, s, "alice", "p1")

	t.Run("Versions", func(t *testing.T) {
		ctx := t.Context()
		pages, err := apiversions.List(admin).AllPages(ctx)
		if err != nil {
			t.Fatalf("apiversions.List: %v", err)
		}
		vs, err := apiversions.ExtractAPIVersions(pages)
		if err != nil {
			t.Fatalf("apiversions.ExtractAPIVersions: %v", err)
		}
		v3, err := apiversions.ExtractAPIVersion(pages, "v3.0")
		if err != nil {
			t.Fatalf("apiversions.ExtractAPIVersion(v3.0) of %+v: %v", vs, err)
		}
		if v3.Status != "CURRENT" || v3.MinVersion != "3.0" || v3.Version == "" {
			t.Errorf("apiversions v3.0 = %+v, want CURRENT from 3.0", v3)
		}
		mv, err := utils.GetSupportedMicroversions(ctx, admin)
		if err != nil {
			t.Fatalf("utils.GetSupportedMicroversions: %v", err)
		}
		if mv.MinMajor != 3 || mv.MinMinor != 0 || mv.MaxMajor != 3 || mv.MaxMinor < 3 {
			t.Errorf("utils.GetSupportedMicroversions = %+v, want 3.0 up to at least 3.3", mv)
		}
	})

	t.Run("VolumeTypes", func(t *testing.T) {
		ctx := t.Context()
		isPublic := true
		created, err := volumetypes.Create(ctx, admin, volumetypes.CreateOpts{
			Name: "gc-gold", Description: "gold tier", IsPublic: &isPublic,
			ExtraSpecs: map[string]string{"volume_backend_name": "lvmbackend", "tier": "gold"},
		}).Extract()
		if err != nil {
			t.Fatalf("volumetypes.Create: %v", err)
		}
		if created.ID == "" || created.Name != "gc-gold" || created.Description != "gold tier" || !created.IsPublic ||
			!created.PublicAccess || created.ExtraSpecs["volume_backend_name"] != "lvmbackend" || created.ExtraSpecs["tier"] != "gold" {
			t.Errorf("volumetypes.Create = %+v, want gc-gold, public, with its extra specs echoed", created)
		}
		id := created.ID

		got, err := volumetypes.Get(ctx, admin, id).Extract()
		if err != nil {
			t.Fatalf("volumetypes.Get: %v", err)
		}
		if got.ID != id || got.Name != "gc-gold" || len(got.ExtraSpecs) != 2 {
			t.Errorf("volumetypes.Get = %+v, want gc-gold with 2 extra specs", got)
		}

		pages, err := volumetypes.List(admin, volumetypes.ListOpts{}).AllPages(ctx)
		if err != nil {
			t.Fatalf("volumetypes.List: %v", err)
		}
		types, err := volumetypes.ExtractVolumeTypes(pages)
		if err != nil {
			t.Fatalf("volumetypes.ExtractVolumeTypes: %v", err)
		}
		var names []string
		for _, ty := range types {
			names = append(names, ty.Name)
		}
		if !slices.Contains(names, "gc-gold") || !slices.Contains(names, "__DEFAULT__") {
			t.Errorf("volumetypes.List names = %v, want gc-gold and __DEFAULT__", names)
		}

		newName, newDesc := "gc-platinum", "platinum tier"
		upd, err := volumetypes.Update(ctx, admin, id, volumetypes.UpdateOpts{Name: &newName, Description: &newDesc}).Extract()
		if err != nil {
			t.Fatalf("volumetypes.Update: %v", err)
		}
		if upd.ID != id || upd.Name != newName || upd.Description != newDesc {
			t.Errorf("volumetypes.Update = %+v, want name %s description %q", upd, newName, newDesc)
		}
		if got, err := volumetypes.Get(ctx, admin, id).Extract(); err != nil || got.Name != newName || got.Description != newDesc {
			t.Errorf("volumetypes.Get after update = %+v, %v; want name %s description %q", got, err, newName, newDesc)
		}

		// Extra specs.
		specs, err := volumetypes.ListExtraSpecs(ctx, admin, id).Extract()
		if err != nil {
			t.Fatalf("volumetypes.ListExtraSpecs: %v", err)
		}
		if len(specs) != 2 || specs["tier"] != "gold" || specs["volume_backend_name"] != "lvmbackend" {
			t.Errorf("volumetypes.ListExtraSpecs = %v, want tier=gold volume_backend_name=lvmbackend", specs)
		}
		one, err := volumetypes.GetExtraSpec(ctx, admin, id, "tier").Extract()
		if err != nil {
			t.Fatalf("volumetypes.GetExtraSpec(tier): %v", err)
		}
		if len(one) != 1 || one["tier"] != "gold" {
			t.Errorf("volumetypes.GetExtraSpec(tier) = %v, want {tier: gold}", one)
		}
		_, err = volumetypes.GetExtraSpec(ctx, admin, id, "nope").Extract()
		wantCode(t, err, 404, "volumetypes.GetExtraSpec(nope)")

		added, err := volumetypes.CreateExtraSpecs(ctx, admin, id, volumetypes.ExtraSpecsOpts{"capabilities:thin": "<is> True", "color": "blue"}).Extract()
		if err != nil {
			t.Fatalf("volumetypes.CreateExtraSpecs: %v", err)
		}
		if added["capabilities:thin"] != "<is> True" || added["color"] != "blue" {
			t.Errorf("volumetypes.CreateExtraSpecs = %v, want the two specs echoed", added)
		}
		changed, err := volumetypes.UpdateExtraSpec(ctx, admin, id, volumetypes.ExtraSpecsOpts{"color": "red"}).Extract()
		if err != nil {
			t.Fatalf("volumetypes.UpdateExtraSpec(color): %v", err)
		}
		if len(changed) != 1 || changed["color"] != "red" {
			t.Errorf("volumetypes.UpdateExtraSpec(color) = %v, want {color: red}", changed)
		}
		if err := volumetypes.DeleteExtraSpec(ctx, admin, id, "tier").ExtractErr(); err != nil {
			t.Fatalf("volumetypes.DeleteExtraSpec(tier): %v", err)
		}
		specs, err = volumetypes.ListExtraSpecs(ctx, admin, id).Extract()
		if err != nil {
			t.Fatalf("volumetypes.ListExtraSpecs after changes: %v", err)
		}
		want := map[string]string{"volume_backend_name": "lvmbackend", "capabilities:thin": "<is> True", "color": "red"}
		if fmt.Sprint(specs) != fmt.Sprint(want) {
			t.Errorf("volumetypes.ListExtraSpecs after create/update/delete = %v, want %v", specs, want)
		}
		if got, err := volumetypes.Get(ctx, admin, id).Extract(); err != nil || fmt.Sprint(got.ExtraSpecs) != fmt.Sprint(want) {
			t.Errorf("volumetypes.Get extra_specs after changes = %+v, %v; want %v", got, err, want)
		}
		err = volumetypes.DeleteExtraSpec(ctx, admin, id, "tier").ExtractErr()
		wantCode(t, err, 404, "volumetypes.DeleteExtraSpec(tier) twice")

		// A member sees the public type but not the admin-only extra specs, and cannot change it.
		if got, err := volumetypes.Get(ctx, alice, id).Extract(); err != nil {
			t.Errorf("volumetypes.Get as member: %v", err)
		} else if _, ok := got.ExtraSpecs["volume_backend_name"]; ok {
			t.Errorf("volumetypes.Get as member shows admin extra specs %v", got.ExtraSpecs)
		}
		_, err = volumetypes.Create(ctx, alice, volumetypes.CreateOpts{Name: "gc-alice"}).Extract()
		wantCode(t, err, 403, "volumetypes.Create as member")
		_, err = volumetypes.CreateExtraSpecs(ctx, alice, id, volumetypes.ExtraSpecsOpts{"color": "green"}).Extract()
		wantCode(t, err, 403, "volumetypes.CreateExtraSpecs as member")
		wantCode(t, volumetypes.Delete(ctx, alice, id).ExtractErr(), 403, "volumetypes.Delete as member")

		if err := volumetypes.Delete(ctx, admin, id).ExtractErr(); err != nil {
			t.Fatalf("volumetypes.Delete: %v", err)
		}
		_, err = volumetypes.Get(ctx, admin, id).Extract()
		wantCode(t, err, 404, "volumetypes.Get after delete")
	})

	t.Run("Volumes", func(t *testing.T) {
		ctx := t.Context()
		fast, err := volumetypes.Create(ctx, admin, volumetypes.CreateOpts{Name: "gc-fast",
			ExtraSpecs: map[string]string{"volume_backend_name": "lvmbackend", "RESKEY:availability_zones": "az1"}}).Extract()
		if err != nil {
			t.Fatalf("volumetypes.Create(gc-fast): %v", err)
		}

		// A volume with name, description and metadata.
		v1, err := volumes.Create(ctx, admin, volumes.CreateOpts{Size: 1, Name: "gc-one", Description: "first volume",
			Metadata: map[string]string{"tier": "gold", "owner": "gc"}}, nil).Extract()
		if err != nil {
			t.Fatalf("volumes.Create(gc-one): %v", err)
		}
		if v1.ID == "" || v1.Status != "creating" || v1.Size != 1 || v1.Name != "gc-one" || v1.Description != "first volume" ||
			v1.Metadata["tier"] != "gold" || v1.Metadata["owner"] != "gc" || v1.CreatedAt.IsZero() {
			t.Errorf("volumes.Create(gc-one) = %+v, want creating, size 1, name, description, metadata, created_at", v1)
		}
		// A volume of a type.
		v2, err := volumes.Create(ctx, admin, volumes.CreateOpts{Size: 2, Name: "gc-two", VolumeType: "gc-fast"}, nil).Extract()
		if err != nil {
			t.Fatalf("volumes.Create(gc-two, type gc-fast): %v", err)
		}
		if v2.VolumeType != "gc-fast" {
			t.Errorf("volumes.Create(gc-two) volume_type = %q, want gc-fast", v2.VolumeType)
		}
		waitAvailable(t, admin, v1.ID)
		waitAvailable(t, admin, v2.ID)

		g1, err := volumes.Get(ctx, admin, v1.ID).Extract()
		if err != nil {
			t.Fatalf("volumes.Get(gc-one): %v", err)
		}
		if g1.Status != "available" || g1.Name != "gc-one" || g1.Description != "first volume" || g1.Size != 1 ||
			g1.Metadata["tier"] != "gold" || g1.VolumeType != "__DEFAULT__" || g1.TenantID != "admin" || g1.UserID != "admin" ||
			!strings.Contains(g1.Host, "@") || !strings.Contains(g1.Host, "#") || g1.Bootable != "false" ||
			g1.AvailabilityZone == "" || g1.CreatedAt.IsZero() || len(g1.Attachments) != 0 {
			t.Errorf("volumes.Get(gc-one) = %+v, want an available placed __DEFAULT__ volume of admin with its fields", g1)
		}
		g2, err := volumes.Get(ctx, admin, v2.ID).Extract()
		if err != nil {
			t.Fatalf("volumes.Get(gc-two): %v", err)
		}
		if g2.VolumeType != "gc-fast" || g2.Size != 2 || !strings.HasPrefix(g2.Host, "block2@") || g2.AvailabilityZone != "az1" {
			t.Errorf("volumes.Get(gc-two) = type %q size %d host %q zone %q, want gc-fast, 2 GiB on block2 in az1",
				g2.VolumeType, g2.Size, g2.Host, g2.AvailabilityZone)
		}

		// A type in use can be neither changed nor deleted.
		_, err = volumetypes.CreateExtraSpecs(ctx, admin, fast.ID, volumetypes.ExtraSpecsOpts{"color": "red"}).Extract()
		wantCode(t, err, 400, "volumetypes.CreateExtraSpecs on a type in use")
		wantCode(t, volumetypes.Delete(ctx, admin, fast.ID).ExtractErr(), 400, "volumetypes.Delete of a type in use")

		// More volumes, then list in small pages.
		created := []string{v1.ID, v2.ID}
		for i := 0; i < 7; i++ {
			md := map[string]string{"batch": "page"}
			if i%2 == 0 {
				md["tier"] = "gold"
			}
			v, err := volumes.Create(ctx, admin, volumes.CreateOpts{Size: 1, Name: fmt.Sprintf("gc-page-%d", i), Metadata: md}, nil).Extract()
			if err != nil {
				t.Fatalf("volumes.Create(gc-page-%d): %v", i, err)
			}
			created = append(created, v.ID)
		}
		for _, id := range created[2:] {
			waitAvailable(t, admin, id)
		}

		listed, pages := listAll(t, admin, volumes.ListOpts{Limit: 2})
		if pages < 5 {
			t.Errorf("volumes.List(limit 2) of %d volumes took %d pages, want at least 5", len(created), pages)
		}
		seen := map[string]int{}
		for _, v := range listed {
			seen[v.ID]++
		}
		for _, id := range created {
			if seen[id] != 1 {
				t.Errorf("volumes.List(limit 2) shows volume %s %d times, want exactly once", id, seen[id])
			}
		}
		if len(listed) != len(created) {
			t.Errorf("volumes.List(limit 2) = %d volumes %v, want the %d created", len(listed), ids(listed), len(created))
		}
		// The same through AllPages.
		all, err := volumes.List(admin, volumes.ListOpts{Limit: 4}).AllPages(ctx)
		if err != nil {
			t.Fatalf("volumes.List(limit 4).AllPages: %v", err)
		}
		allVols, err := volumes.ExtractVolumes(all)
		if err != nil {
			t.Fatalf("volumes.ExtractVolumes(limit 4): %v", err)
		}
		got := ids(allVols)
		slices.Sort(got)
		want := slices.Clone(created)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("volumes.List(limit 4).AllPages = %v, want exactly the created %v", got, want)
		}

		// Filters.
		byName, _ := listAll(t, admin, volumes.ListOpts{Name: "gc-page-3"})
		if len(byName) != 1 || byName[0].ID != created[5] || byName[0].Name != "gc-page-3" {
			t.Errorf("volumes.List(name gc-page-3) = %v, want only %s", ids(byName), created[5])
		}
		avail, _ := listAll(t, admin, volumes.ListOpts{Status: "available"})
		for _, v := range avail {
			if v.Status != "available" {
				t.Errorf("volumes.List(status available) returned %s in status %s", v.ID, v.Status)
			}
		}
		if len(avail) != len(created) {
			t.Errorf("volumes.List(status available) = %d volumes, want %d", len(avail), len(created))
		}
		if errored, _ := listAll(t, admin, volumes.ListOpts{Status: "error"}); len(errored) != 0 {
			t.Errorf("volumes.List(status error) = %v, want none", ids(errored))
		}
		gold, _ := listAll(t, admin, volumes.ListOpts{Metadata: map[string]string{"tier": "gold"}})
		wantGold := []string{created[0], created[2], created[4], created[6], created[8]}
		if got := ids(gold); len(got) != len(wantGold) {
			t.Errorf("volumes.List(metadata tier=gold) = %v, want %v", got, wantGold)
		} else {
			for _, id := range wantGold {
				if !slices.Contains(got, id) {
					t.Errorf("volumes.List(metadata tier=gold) = %v, misses %s", got, id)
				}
			}
		}
		// Sorted by name ascending.
		sorted, _ := listAll(t, admin, volumes.ListOpts{Sort: "name:asc", Limit: 3})
		for i := 1; i < len(sorted); i++ {
			if sorted[i-1].Name > sorted[i].Name {
				t.Errorf("volumes.List(sort name:asc) out of order: %q before %q", sorted[i-1].Name, sorted[i].Name)
			}
		}

		// Update name, description and metadata.
		name, desc := "gc-one-renamed", "renamed volume"
		upd, err := volumes.Update(ctx, admin, v1.ID, volumes.UpdateOpts{Name: &name, Description: &desc,
			Metadata: map[string]string{"tier": "silver"}}).Extract()
		if err != nil {
			t.Fatalf("volumes.Update(gc-one): %v", err)
		}
		if upd.Name != name || upd.Description != desc || len(upd.Metadata) != 1 || upd.Metadata["tier"] != "silver" || upd.Status != "available" {
			t.Errorf("volumes.Update(gc-one) = %+v, want name %q description %q metadata {tier: silver}", upd, name, desc)
		}
		g1, err = volumes.Get(ctx, admin, v1.ID).Extract()
		if err != nil || g1.Name != name || g1.Description != desc || fmt.Sprint(g1.Metadata) != "map[tier:silver]" {
			t.Errorf("volumes.Get after update = %+v, %v; want the new name, description and metadata", g1, err)
		}
		if g1 != nil && !g1.UpdatedAt.After(g1.CreatedAt) {
			t.Errorf("volumes.Get after update: updated_at %v not after created_at %v", g1.UpdatedAt, g1.CreatedAt)
		}
		if old, _ := listAll(t, admin, volumes.ListOpts{Name: "gc-one"}); len(old) != 0 {
			t.Errorf("volumes.List(name gc-one) after rename = %v, want none", ids(old))
		}

		// Errors a user meets.
		_, err = volumes.Get(ctx, admin, "00000000-0000-0000-0000-000000000000").Extract()
		wantCode(t, err, 404, "volumes.Get(unknown id)")
		_, err = volumes.Create(ctx, admin, volumes.CreateOpts{Size: 1, VolumeType: "no-such-type"}, nil).Extract()
		wantCode(t, err, 404, "volumes.Create(type no-such-type)")

		// Delete everything and wait until each is gone.
		for _, id := range created {
			if err := volumes.Delete(ctx, admin, id, volumes.DeleteOpts{}).ExtractErr(); err != nil {
				t.Fatalf("volumes.Delete(%s): %v", id, err)
			}
		}
		for _, id := range created {
			waitGone(t, admin, id)
		}
		wantCode(t, volumes.Delete(ctx, admin, v1.ID, volumes.DeleteOpts{}).ExtractErr(), 404, "volumes.Delete of a deleted volume")
		if left, _ := listAll(t, admin, volumes.ListOpts{}); len(left) != 0 {
			t.Errorf("volumes.List after deleting all = %v, want none", ids(left))
		}
		// Now the type is free and can go.
		if err := volumetypes.Delete(ctx, admin, fast.ID).ExtractErr(); err != nil {
			t.Errorf("volumetypes.Delete(gc-fast) after its volumes are gone: %v", err)
		}
	})

	t.Run("Services", func(t *testing.T) {
		ctx := t.Context()
		pages, err := services.List(admin, services.ListOpts{}).AllPages(ctx)
		if err != nil {
			t.Fatalf("services.List: %v", err)
		}
		svcs, err := services.ExtractServices(pages)
		if err != nil {
			t.Fatalf("services.ExtractServices: %v", err)
		}
		byBinary := map[string][]string{}
		for _, sv := range svcs {
			byBinary[sv.Binary] = append(byBinary[sv.Binary], sv.Host)
			if (sv.Binary == "cinder-volume" || sv.Binary == "cinder-scheduler") && (sv.State != "up" || sv.Status != "enabled") {
				t.Errorf("services.List: %s on %s is %s/%s, want up/enabled", sv.Binary, sv.Host, sv.State, sv.Status)
			}
			if sv.UpdatedAt.IsZero() || sv.Zone == "" {
				t.Errorf("services.List: %s on %s has updated_at %v zone %q, want both set", sv.Binary, sv.Host, sv.UpdatedAt, sv.Zone)
			}
		}
		wantVolume := []string{"block1@lvmdriver-b1", "block2@lvmdriver-b21", "block2@lvmdriver-b22", "network@lvmdriver-network"}
		for _, h := range wantVolume {
			if !slices.Contains(byBinary["cinder-volume"], h) {
				t.Errorf("services.List cinder-volume hosts = %v, want %s", byBinary["cinder-volume"], h)
			}
		}
		if len(byBinary["cinder-scheduler"]) == 0 {
			t.Errorf("services.List = %v, want a cinder-scheduler", byBinary)
		}
		// Filters.
		pages, err = services.List(admin, services.ListOpts{Binary: "cinder-volume", Host: "block2@lvmdriver-b21"}).AllPages(ctx)
		if err != nil {
			t.Fatalf("services.List(binary, host): %v", err)
		}
		one, err := services.ExtractServices(pages)
		if err != nil || len(one) != 1 || one[0].Host != "block2@lvmdriver-b21" || one[0].Zone != "az1" {
			t.Errorf("services.List(cinder-volume on block2@lvmdriver-b21) = %+v, %v; want that one service in az1", one, err)
		}
	})

	t.Run("SchedulerPools", func(t *testing.T) {
		ctx := t.Context()
		pages, err := schedulerstats.List(admin, schedulerstats.ListOpts{Detail: true}).AllPages(ctx)
		if err != nil {
			t.Fatalf("schedulerstats.List(detail): %v", err)
		}
		pools, err := schedulerstats.ExtractStoragePools(pages)
		if err != nil {
			t.Fatalf("schedulerstats.ExtractStoragePools: %v", err)
		}
		var names []string
		for _, p := range pools {
			names = append(names, p.Name)
			c := p.Capabilities
			if c.VolumeBackendName != "lvmbackend" {
				t.Errorf("pool %s volume_backend_name = %q, want lvmbackend", p.Name, c.VolumeBackendName)
			}
			if c.TotalCapacityGB <= 0 || math.IsInf(c.TotalCapacityGB, 0) || c.FreeCapacityGB <= 0 || c.FreeCapacityGB > c.TotalCapacityGB {
				t.Errorf("pool %s capacity total %v free %v, want 0 < free <= total, finite", p.Name, c.TotalCapacityGB, c.FreeCapacityGB)
			}
			if c.StorageProtocol == "" || c.DriverVersion == "" || c.VendorName == "" {
				t.Errorf("pool %s capabilities %+v, want storage_protocol, driver_version and vendor_name", p.Name, c)
			}
		}
		for _, want := range []string{"block1@lvmdriver-b1#pool", "block2@lvmdriver-b21#pool", "block2@lvmdriver-b22#pool", "network@lvmdriver-network#pool"} {
			if !slices.Contains(names, want) {
				t.Errorf("schedulerstats.List pools = %v, want %s", names, want)
			}
		}
		// Without detail: names only.
		pages, err = schedulerstats.List(admin, schedulerstats.ListOpts{}).AllPages(ctx)
		if err != nil {
			t.Fatalf("schedulerstats.List: %v", err)
		}
		plain, err := schedulerstats.ExtractStoragePools(pages)
		if err != nil || len(plain) != len(pools) {
			t.Fatalf("schedulerstats.List without detail = %d pools, %v; want %d", len(plain), err, len(pools))
		}
		for _, p := range plain {
			if p.Capabilities.VolumeBackendName != "" || p.Capabilities.TotalCapacityGB != 0 {
				t.Errorf("schedulerstats.List without detail: pool %s carries capabilities %+v", p.Name, p.Capabilities)
			}
		}
	})

	t.Run("AvailabilityZones", func(t *testing.T) {
		pages, err := availabilityzones.List(alice).AllPages(t.Context())
		if err != nil {
			t.Fatalf("availabilityzones.List: %v", err)
		}
		zones, err := availabilityzones.ExtractAvailabilityZones(pages)
		if err != nil {
			t.Fatalf("availabilityzones.ExtractAvailabilityZones: %v", err)
		}
		avail := map[string]bool{}
		for _, z := range zones {
			avail[z.ZoneName] = z.ZoneState.Available
		}
		if !avail["az1"] || len(avail) < 2 {
			t.Errorf("availabilityzones.List = %+v, want az1 and the default zone, available", zones)
		}
	})

	t.Run("MemberIsolation", func(t *testing.T) {
		ctx := t.Context()
		mine, err := volumes.Create(ctx, admin, volumes.CreateOpts{Size: 1, Name: "admin-private"}, nil).Extract()
		if err != nil {
			t.Fatalf("volumes.Create as admin: %v", err)
		}
		hers, err := volumes.Create(ctx, alice, volumes.CreateOpts{Size: 1, Name: "alice-vol"}, nil).Extract()
		if err != nil {
			t.Fatalf("volumes.Create as alice: %v", err)
		}
		waitAvailable(t, admin, mine.ID)
		waitAvailable(t, alice, hers.ID)

		got, err := volumes.Get(ctx, alice, hers.ID).Extract()
		if err != nil {
			t.Fatalf("volumes.Get of her own volume as alice: %v", err)
		}
		if got.TenantID != "p1" || got.UserID != "alice" || got.Host != "" {
			t.Errorf("volumes.Get as alice = tenant %q user %q host %q, want p1, alice and no host (admin-only)", got.TenantID, got.UserID, got.Host)
		}
		aliceSees, _ := listAll(t, alice, volumes.ListOpts{})
		if got := ids(aliceSees); len(got) != 1 || got[0] != hers.ID {
			t.Errorf("volumes.List as alice = %v, want only her %s", got, hers.ID)
		}
		// all_tenants from a member does not widen the listing.
		if wide, _ := listAll(t, alice, volumes.ListOpts{AllTenants: true}); len(wide) != 1 {
			t.Errorf("volumes.List(all_tenants) as alice = %v, want only her own", ids(wide))
		}
		_, err = volumes.Get(ctx, alice, mine.ID).Extract()
		wantCode(t, err, 404, "volumes.Get of the admin's volume as alice")
		name := "stolen"
		_, err = volumes.Update(ctx, alice, mine.ID, volumes.UpdateOpts{Name: &name}).Extract()
		wantCode(t, err, 404, "volumes.Update of the admin's volume as alice")
		wantCode(t, volumes.Delete(ctx, alice, mine.ID, volumes.DeleteOpts{}).ExtractErr(), 404, "volumes.Delete of the admin's volume as alice")
		if v, err := volumes.Get(ctx, admin, mine.ID).Extract(); err != nil || v.Name != "admin-private" || v.Status != "available" {
			t.Errorf("admin's volume after alice's attempts = %+v, %v; want unchanged and available", v, err)
		}

		// The admin sees both with all_tenants, only its own without.
		adminOwn, _ := listAll(t, admin, volumes.ListOpts{})
		if got := ids(adminOwn); len(got) != 1 || got[0] != mine.ID {
			t.Errorf("volumes.List as admin = %v, want only %s", got, mine.ID)
		}
		every, _ := listAll(t, admin, volumes.ListOpts{AllTenants: true})
		if got := ids(every); len(got) != 2 || !slices.Contains(got, hers.ID) || !slices.Contains(got, mine.ID) {
			t.Errorf("volumes.List(all_tenants) as admin = %v, want %s and %s", got, mine.ID, hers.ID)
		}
		byProject, _ := listAll(t, admin, volumes.ListOpts{AllTenants: true, TenantID: "p1"})
		if got := ids(byProject); len(got) != 1 || got[0] != hers.ID {
			t.Errorf("volumes.List(all_tenants, project_id p1) as admin = %v, want only %s", got, hers.ID)
		}

		// Admin-only APIs.
		_, err = services.List(alice, nil).AllPages(ctx)
		wantCode(t, err, 403, "services.List as alice")
		_, err = schedulerstats.List(alice, schedulerstats.ListOpts{Detail: true}).AllPages(ctx)
		wantCode(t, err, 403, "schedulerstats.List as alice")

		for _, c := range []struct {
			client *gophercloud.ServiceClient
			id     string
		}{{admin, mine.ID}, {alice, hers.ID}} {
			if err := volumes.Delete(ctx, c.client, c.id, volumes.DeleteOpts{}).ExtractErr(); err != nil {
				t.Fatalf("volumes.Delete(%s): %v", c.id, err)
			}
			waitGone(t, c.client, c.id)
		}
	})

	t.Run("Messages", func(t *testing.T) {
		// gophercloud has no messages package; its ServiceClient still sends the microversion.
		ctx := t.Context()
		c := gcClient(t, s, "alice", "p1")
		v, err := volumes.Create(ctx, c, volumes.CreateOpts{Size: 60000, Name: "too-big"}, nil).Extract()
		if err != nil {
			t.Fatalf("volumes.Create(60000 GiB): %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := volumes.WaitForStatus(wctx, c, v.ID, "error"); err != nil {
			t.Fatalf("volumes.WaitForStatus(%s, error) of an impossible volume: %v", v.ID, err)
		}
		var body struct {
			Messages []struct {
				ID           string `json:"id"`
				EventID      string `json:"event_id"`
				ResourceUUID string `json:"resource_uuid"`
				UserMessage  string `json:"user_message"`
			} `json:"messages"`
		}
		_, err = c.Get(ctx, c.ServiceURL("messages"), &body, nil)
		wantCode(t, err, 404, "GET messages at microversion 3.0")
		c.Microversion = "3.3"
		res, err := c.Get(ctx, c.ServiceURL("messages"), &body, nil)
		if err != nil {
			t.Fatalf("GET messages at microversion 3.3: %v", err)
		}
		if got := res.Header.Get("OpenStack-API-Version"); got != "volume 3.3" {
			t.Errorf("GET messages at 3.3 answered OpenStack-API-Version %q, want volume 3.3", got)
		}
		if len(body.Messages) != 1 || body.Messages[0].ResourceUUID != v.ID || !strings.Contains(body.Messages[0].UserMessage, "CapacityFilter") {
			t.Errorf("GET messages at 3.3 = %+v, want one message about %s naming CapacityFilter", body.Messages, v.ID)
		}
		// The volume in error can still be deleted by its owner.
		c.Microversion = ""
		if err := volumes.Delete(ctx, c, v.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
			t.Fatalf("volumes.Delete of the volume in error: %v", err)
		}
		waitGone(t, c, v.ID)
	})
}
