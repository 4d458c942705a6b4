package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/google/uuid"
)

// Tests of the microversions 3.43 to 3.53: each behaviour at the version before the one that
// brings it and at that version.

// serveUpTo54 makes the server accept microversions up to 3.54 for the test, whatever
// MaxVersion is, and serves the API. Call it before anything that starts a server.
func serveUpTo54(t *testing.T) (*httptest.Server, *control.Plane) {
	t.Helper()
	if old := api.MaxVersion; old.Major == 3 && old.Minor < 54 {
		api.MaxVersion = api.Version{Major: 3, Minor: 54}
		t.Cleanup(func() { api.MaxVersion = old }) // runs after the server has closed
	}
	return newPlaneServer(t, control.Config{}, &recordingPub{})
}

// mv returns the header arguments of do for microversion 3.minor.
func mv(minor int) []string {
	return []string{"OpenStack-API-Version", fmt.Sprintf("volume 3.%d", minor)}
}

func createVolume(t *testing.T, srv *httptest.Server, token, body string) string {
	t.Helper()
	r := do(t, srv, token, "POST", "/v3/volumes", body)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v3/volumes %s = %d %s", body, r.status, r.raw)
	}
	return r.body["volume"].(map[string]any)["id"].(string)
}

// place puts volume id on pool, available, as a finished create leaves it.
func place(t *testing.T, plane *control.Plane, id, pool string) {
	t.Helper()
	_, err := plane.Store().UpdateVolume(context.Background(), id, func(v *basalt.Volume) error {
		v.Host, v.Status, v.OpID = pool, basalt.StatusAvailable, ""
		return nil
	})
	if err != nil {
		t.Fatalf("place %s on %s: %v", id, pool, err)
	}
}

func TestWithCount(t *testing.T) {
	srv, plane := serveUpTo54(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, createVolume(t, srv, "alice:p1", fmt.Sprintf(`{"volume":{"size":1,"name":"v%d"}}`, i%2)))
	}
	createVolume(t, srv, "bob:p2", `{"volume":{"size":1}}`)

	for _, path := range []string{"/v3/volumes", "/v3/volumes/detail"} {
		// 3.45: the count of every matching volume, not of the page.
		r := do(t, srv, "alice:p1", "GET", path+"?with_count=true&limit=2", "", mv(45)...)
		if r.status != 200 || r.body["count"] != 5.0 || len(r.body["volumes"].([]any)) != 2 {
			t.Errorf("GET %s?with_count=true&limit=2 at 3.45 = %d %s, want 2 volumes and count 5", path, r.status, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=true&name=v1", "", mv(45)...)
		if r.status != 200 || r.body["count"] != 2.0 {
			t.Errorf("GET %s?with_count=true&name=v1 at 3.45 = %d %s, want count 2", path, r.status, r.raw)
		}
		r = do(t, srv, "admin:admin", "GET", path+"?with_count=1&all_tenants=1", "", mv(45)...)
		if r.status != 200 || r.body["count"] != 6.0 {
			t.Errorf("admin GET %s?with_count=1&all_tenants=1 at 3.45 = %d %s, want count 6", path, r.status, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=false", "", mv(45)...)
		if _, ok := r.body["count"]; r.status != 200 || ok {
			t.Errorf("GET %s?with_count=false at 3.45 = %d %s, want no count", path, r.status, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=maybe", "", mv(45)...)
		if _, msg := fault(r); r.status != 400 || msg != "Value 'maybe' for 'with_count' is not a boolean." {
			t.Errorf("GET %s?with_count=maybe at 3.45 = %d %s, want 400", path, r.status, r.raw)
		}
		// Before 3.45 with_count is a filter like any other: a member may not use it from
		// 3.31, and before 3.31 it is dropped.
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=true", "", mv(44)...)
		if _, msg := fault(r); r.status != 400 || msg != "Invalid filters with_count are found in query options." {
			t.Errorf("GET %s?with_count=true at 3.44 = %d %s, want 400 invalid filter", path, r.status, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=true", "", mv(30)...)
		if _, ok := r.body["count"]; r.status != 200 || ok || len(r.body["volumes"].([]any)) != 5 {
			t.Errorf("GET %s?with_count=true at 3.30 = %d %s, want 5 volumes and no count", path, r.status, r.raw)
		}
		r = do(t, srv, "admin:admin", "GET", path+"?with_count=true", "", mv(44)...)
		if _, ok := r.body["count"]; r.status != 200 || ok {
			t.Errorf("admin GET %s?with_count=true at 3.44 = %d %s, want no count", path, r.status, r.raw)
		}
	}

	// With a count, Cinder gives every non-empty page a next link when the limit does not
	// exceed the count: the last, short page too.
	r := do(t, srv, "alice:p1", "GET", "/v3/volumes?with_count=true&limit=2&offset=4", "", mv(45)...)
	if _, ok := r.body["volumes_links"]; len(r.body["volumes"].([]any)) != 1 || !ok {
		t.Errorf("last page with a count = %s, want one volume and a next link", r.raw)
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/volumes?limit=2&offset=4", "", mv(45)...)
	if _, ok := r.body["volumes_links"]; ok {
		t.Errorf("last page without a count = %s, want no next link", r.raw)
	}

	// Snapshots count from 3.45 too.
	for _, id := range ids[:3] {
		place(t, plane, id, "h1@lvm#pool")
		if r := do(t, srv, "alice:p1", "POST", "/v3/snapshots", `{"snapshot":{"volume_id":"`+id+`"}}`); r.status != 202 {
			t.Fatalf("create snapshot = %d %s", r.status, r.raw)
		}
	}
	for _, path := range []string{"/v3/snapshots", "/v3/snapshots/detail"} {
		r := do(t, srv, "alice:p1", "GET", path+"?with_count=true&limit=1", "", mv(45)...)
		if r.status != 200 || r.body["count"] != 3.0 || len(r.body["snapshots"].([]any)) != 1 {
			t.Errorf("GET %s?with_count=true&limit=1 at 3.45 = %d %s, want 1 snapshot and count 3", path, r.status, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=true&volume_id="+ids[0], "", mv(45)...)
		if r.status != 200 || r.body["count"] != 1.0 {
			t.Errorf("GET %s?with_count=true&volume_id= at 3.45 = %d %s, want count 1", path, r.status, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", path+"?with_count=true", "", mv(44)...)
		if r.status != 400 {
			t.Errorf("GET %s?with_count=true at 3.44 = %d %s, want 400 invalid filter", path, r.status, r.raw)
		}
	}
}

func TestSharedTargetsAndServiceUUID(t *testing.T) {
	srv, plane := serveUpTo54(t)
	r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1}}`, mv(47)...)
	v := r.body["volume"].(map[string]any)
	for _, k := range []string{"shared_targets", "service_uuid"} {
		if _, ok := v[k]; ok {
			t.Errorf("create response at 3.47 has %s: %s", k, r.raw)
		}
	}
	// An unplaced volume shows Cinder's defaults: shared targets (the column's default) and
	// no service. The create response shows them too.
	r = do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1}}`, mv(48)...)
	v = r.body["volume"].(map[string]any)
	if st, ok := v["shared_targets"]; !ok || st != true {
		t.Errorf("create response at 3.48: shared_targets = %v (present %v), want true", st, ok)
	}
	if su, ok := v["service_uuid"]; !ok || su != nil {
		t.Errorf("create response at 3.48: service_uuid = %v (present %v), want null", su, ok)
	}

	id := v["id"].(string)
	place(t, plane, id, "h1@lvm#pool")
	want := control.ServiceUUID("h1@lvm")
	if u, err := uuid.Parse(want); err != nil || u.Version() != 5 {
		t.Errorf("ServiceUUID(h1@lvm) = %q, want a version 5 UUID", want)
	}
	if other := control.ServiceUUID("h2@lvm"); other == want || control.ServiceUUID("h1@lvm") != want {
		t.Errorf("ServiceUUID is not one stable id per backend: %q, %q", want, other)
	}
	for _, c := range []struct {
		path string
		get  func(r resp) map[string]any
	}{
		{"/v3/volumes/" + id, func(r resp) map[string]any { return r.body["volume"].(map[string]any) }},
		{"/v3/volumes/detail", func(r resp) map[string]any { return r.body["volumes"].([]any)[0].(map[string]any) }},
	} {
		r := do(t, srv, "alice:p1", "GET", c.path, "", mv(47)...)
		v := c.get(r)
		if _, ok := v["shared_targets"]; ok {
			t.Errorf("GET %s at 3.47 has shared_targets: %s", c.path, r.raw)
		}
		if _, ok := v["service_uuid"]; ok {
			t.Errorf("GET %s at 3.47 has service_uuid: %s", c.path, r.raw)
		}
		r = do(t, srv, "alice:p1", "GET", c.path, "", mv(48)...)
		v = c.get(r)
		if v["id"] == id && (v["shared_targets"] != false || v["service_uuid"] != want) {
			t.Errorf("GET %s at 3.48: shared_targets %v service_uuid %v, want false %s", c.path, v["shared_targets"], v["service_uuid"], want)
		}
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/volumes", "", mv(48)...)
	if strings.Contains(r.raw, "service_uuid") {
		t.Errorf("the plain list at 3.48 has service_uuid: %s", r.raw)
	}
}

func TestBackendState(t *testing.T) {
	srv, plane := serveUpTo54(t)
	ctx := context.Background()
	pr := events.NewPresence(plane.Store().Redis(), nil)
	for _, host := range []string{"h1@up", "h2@down", "h3@silent"} {
		if err := pr.Heartbeat(ctx, basalt.BinaryVolume, host, "nova", 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := pr.Heartbeat(ctx, basalt.BinaryScheduler, "sched", "nova", 0); err != nil {
		t.Fatal(err)
	}
	// h1 reports no backend_state (Cinder reads it as up), h2 reports down, h3 reports nothing.
	reports := []events.CapabilityReport{
		{Backend: "h1@up", Zone: "nova", Pools: []basalt.Capabilities{{"pool_name": "p"}}},
		{Backend: "h2@down", Zone: "nova", Pools: []basalt.Capabilities{{"pool_name": "a", "backend_state": "up"}, {"pool_name": "b", "backend_state": "down"}}},
	}
	for _, rep := range reports {
		if err := pr.Report(ctx, rep); err != nil {
			t.Fatal(err)
		}
	}
	states := func(minor int) map[string]any {
		r := do(t, srv, "admin:admin", "GET", "/v3/os-services", "", mv(minor)...)
		if r.status != 200 {
			t.Fatalf("GET /v3/os-services at 3.%d = %d %s", minor, r.status, r.raw)
		}
		out := map[string]any{}
		for _, s := range r.body["services"].([]any) {
			s := s.(map[string]any)
			if st, ok := s["backend_state"]; ok {
				out[s["host"].(string)] = st
			}
		}
		return out
	}
	if got := states(48); len(got) != 0 {
		t.Errorf("backend_state at 3.48 = %v, want none", got)
	}
	want := map[string]any{"h1@up": "up", "h2@down": "down", "h3@silent": nil}
	got := states(49)
	if len(got) != len(want) {
		t.Errorf("backend_state at 3.49 = %v, want %v (and none for the scheduler)", got, want)
	}
	for h, w := range want {
		if st, ok := got[h]; !ok || st != w {
			t.Errorf("backend_state of %s at 3.49 = %v (present %v), want %v", h, st, ok, w)
		}
	}
	// A disabled service is no scheduler candidate: Cinder has no pools of it, so null.
	if r := do(t, srv, "admin:admin", "PUT", "/v3/os-services/disable", `{"host":"h1@up","binary":"cinder-volume"}`); r.status != 200 {
		t.Fatalf("disable h1@up = %d %s", r.status, r.raw)
	}
	if st, ok := states(49)["h1@up"]; !ok || st != nil {
		t.Errorf("backend_state of a disabled service = %v (present %v), want null", st, ok)
	}
}

func TestTypeExtraSpecsFilter(t *testing.T) {
	srv, _ := serveUpTo54(t)
	for _, body := range []string{
		`{"volume_type":{"name":"gold","extra_specs":{"multiattach":"<is> True","volume_backend_name":"lvm"}}}`,
		`{"volume_type":{"name":"silver","extra_specs":{"RESKEY:availability_zones":"az1, az2"}}}`,
		`{"volume_type":{"name":"bronze"}}`,
	} {
		if r := do(t, srv, "admin:admin", "POST", "/v3/types", body); r.status != 200 {
			t.Fatalf("create type %s = %d %s", body, r.status, r.raw)
		}
	}
	names := func(r resp) []string {
		var out []string
		for _, vt := range r.body["volume_types"].([]any) {
			out = append(out, vt.(map[string]any)["name"].(string))
		}
		slices.Sort(out)
		return out
	}
	all := []string{"__DEFAULT__", "bronze", "gold", "silver"}
	q := func(specs string) string { return "/v3/types?extra_specs=" + url.QueryEscape(specs) }
	for _, c := range []struct {
		token string
		minor int
		path  string
		want  []string
	}{
		// Members: the filter is new in 3.52; before, it is dropped.
		{"alice:p1", 51, q(`{'multiattach': '<is> True'}`), all},
		{"alice:p1", 52, q(`{'multiattach': '<is> True'}`), []string{"gold"}},
		{"alice:p1", 52, q(`{'multiattach':'<is> False'}`), nil},
		// The zones of a type need only contain the wanted one.
		{"alice:p1", 52, q(`{'RESKEY:availability_zones': 'az2'}`), []string{"silver"}},
		// A spec a member may not see filters everything out.
		{"alice:p1", 52, q(`{'volume_backend_name': 'lvm'}`), nil},
		{"alice:p1", 52, "/v3/types?is_public=true&all_tenants=1", all},
		// Admins could filter on extra_specs before 3.52 already.
		{"admin:admin", 51, q(`{'volume_backend_name': 'lvm'}`), []string{"gold"}},
		{"admin:admin", 52, q(`{"volume_backend_name": "lvm", "multiattach": "<is> True"}`), []string{"gold"}},
	} {
		r := do(t, srv, c.token, "GET", c.path, "", mv(c.minor)...)
		if got := names(r); r.status != 200 || !slices.Equal(got, c.want) {
			t.Errorf("%s GET %s at 3.%d = %d %v, want %v", c.token, c.path, c.minor, r.status, got, c.want)
		}
	}
	// From 3.52 a member's other filters are refused; before, dropped.
	r := do(t, srv, "alice:p1", "GET", "/v3/types?name=gold", "", mv(52)...)
	if _, msg := fault(r); r.status != 400 || msg != "Invalid filters name are found in query options." {
		t.Errorf("member GET /v3/types?name=gold at 3.52 = %d %s, want 400", r.status, r.raw)
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/types?name=gold", "", mv(51)...)
	if got := names(r); r.status != 200 || !slices.Equal(got, all) {
		t.Errorf("member GET /v3/types?name=gold at 3.51 = %d %v, want %v", r.status, got, all)
	}
}

func TestStrictVolumeSchema(t *testing.T) {
	srv, _ := serveUpTo54(t)
	// Create: unknown keys of "volume" are ignored before 3.53 and refused from 3.53. The
	// messages are those of Cinder's validator on the same bodies.
	for _, c := range []struct{ body, msg string }{
		{`{"volume":{"size":"1","foo":"bar"}}`,
			`Invalid input for field/attribute volume. Value: {'size': '1', 'foo': 'bar'}. Additional properties are not allowed ('foo' was unexpected)`},
		{`{"volume":{"size":1,"zzz":{"a":[1,2.5,true,null],"b":"it's"},"aaa":1e20,"name":"x"}}`,
			`Invalid input for field/attribute volume. Value: {'size': 1, 'zzz': {'a': [1, 2.5, True, None], 'b': "it's"}, 'aaa': 1e+20, 'name': 'x'}. Additional properties are not allowed ('aaa', 'zzz' were unexpected)`},
		{`{"volume":{"size":1,"weird":"tab\there \"q\" and 's' \u00e9 \u0001 \\","f":1.0,"g":0.00001,"h":-0,"i":1000000.0,"j":1e16,"k":123456789012345678901234567890}}`,
			`Invalid input for field/attribute volume. Value: {'size': 1, 'weird': 'tab\there "q" and \'s\' é \x01 \\', 'f': 1.0, 'g': 1e-05, 'h': 0, 'i': 1000000.0, 'j': 1e+16, 'k': 123456789012345678901234567890}. Additional properties are not allowed ('f', 'g', 'h', 'i', 'j', 'k', 'weird' were unexpected)`},
	} {
		if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", c.body, mv(52)...); r.status != 202 {
			t.Errorf("create %s at 3.52 = %d %s, want 202", c.body, r.status, r.raw)
		}
		r := do(t, srv, "alice:p1", "POST", "/v3/volumes", c.body, mv(53)...)
		if name, msg := fault(r); r.status != 400 || name != "badRequest" || msg != c.msg {
			t.Errorf("create %s at 3.53 = %d %s %q, want 400 badRequest %q", c.body, r.status, name, msg, c.msg)
		}
	}
	// Every key of Cinder's schema is allowed at 3.53, null included (cinderclient sends them all).
	full := `{"volume":{"size":1,"name":null,"description":null,"display_name":null,"display_description":null,` +
		`"volume_type":null,"metadata":{},"snapshot_id":null,"source_volid":null,"consistencygroup_id":null,` +
		`"availability_zone":null,"multiattach":false,"image_id":null,"imageRef":null,"group_id":null,"backup_id":null}}`
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", full, mv(53)...); r.status != 202 {
		t.Errorf("create with every key of the schema at 3.53 = %d %s, want 202", r.status, r.raw)
	}
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1,"image_id":"cirros"}}`, mv(53)...); r.status != 400 {
		t.Errorf("create from image_id = %d %s, want 400 (images are not served)", r.status, r.raw)
	}

	// Update: unknown keys are refused at every microversion; from 3.53 an update must name
	// at least one field.
	id := createVolume(t, srv, "alice:p1", `{"volume":{"size":1}}`)
	path := "/v3/volumes/" + id
	for _, c := range []struct {
		minor  int
		body   string
		status int
		msg    string
	}{
		{52, `{"volume":{}}`, 200, ""},
		{53, `{"volume":{}}`, 400, `Invalid input for field/attribute volume. Value: {}. {} is not valid under any of the given schemas`},
		{53, `{"volume":{"name":null}}`, 200, ""},
		{53, `{"volume":{"metadata":{"k":"v"}}}`, 200, ""},
		{0, `{"volume":{"name":"a","foo":true}}`, 400, `Invalid input for field/attribute volume. Value: {'name': 'a', 'foo': True}. Additional properties are not allowed ('foo' was unexpected)`},
		{52, `{"volume":{"foo":1}}`, 400, `Invalid input for field/attribute volume. Value: {'foo': 1}. Additional properties are not allowed ('foo' was unexpected)`},
		{53, `{"volume":{"foo":1}}`, 400, `Invalid input for field/attribute volume. Value: {'foo': 1}. Additional properties are not allowed ('foo' was unexpected)`},
	} {
		r := do(t, srv, "alice:p1", "PUT", path, c.body, mv(c.minor)...)
		if _, msg := fault(r); r.status != c.status || msg != c.msg {
			t.Errorf("update %s at 3.%d = %d %q, want %d %q", c.body, c.minor, r.status, msg, c.status, c.msg)
		}
	}
}
