package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

// Objects on backend h@b that the manage tests start from: two that no record owns, one a
// record owns.
const (
	strayA = "aaaaaaaa-0000-4000-8000-000000000001"
	strayB = "bbbbbbbb-0000-4000-8000-000000000002"
	owned  = "cccccccc-0000-4000-8000-000000000003"
)

type manageEnv struct {
	srv     *httptest.Server
	st      *store.Store
	pub     *recordingPub
	results *results.Function
}

// newManageEnv starts an API whose backend h@b (pool "pool") heartbeats and reports strayA (2
// GiB), strayB (1 GiB) and owned (1 GiB, the volume of a record).
func newManageEnv(t *testing.T) manageEnv {
	t.Helper()
	rs := redistest.Start(t)
	st := store.New(rs.Client(), nil)
	pub := &recordingPub{}
	logger := slog.New(slog.DiscardHandler)
	plane := control.New(control.Config{}, st, pub, logger)
	srv := httptest.NewServer(api.New(plane, logger))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	pr := events.NewPresence(rs.Client(), nil)
	if err := pr.Heartbeat(ctx, basalt.BinaryVolume, "h@b", "zone1", 0); err != nil {
		t.Fatal(err)
	}
	if err := pr.ReportInventory(ctx, events.Inventory{Backend: "h@b", Volumes: []basalt.VolumeSpec{
		{ID: owned, SizeGB: 1, Pool: "pool"}, {ID: strayA, SizeGB: 2, Pool: "pool"}, {ID: strayB, SizeGB: 1, Pool: "pool"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateVolume(ctx, &basalt.Volume{ID: owned, ProjectID: "p1", Size: 1, Status: basalt.StatusAvailable,
		Host: "h@b#pool", AttachStatus: basalt.AttachDetached}, nil); err != nil {
		t.Fatal(err)
	}
	return manageEnv{srv: srv, st: st, pub: pub, results: results.New(results.Config{}, st, pub, logger)}
}

func (e manageEnv) do(t *testing.T, token, mv, method, path, body string) resp {
	t.Helper()
	return do(t, e.srv, token, method, path, body, "OpenStack-API-Version", "volume "+mv)
}

// refs returns the source-names of a manageable-volumes list, in order.
func refs(r resp) []string {
	var out []string
	vs, _ := r.body["manageable-volumes"].([]any)
	for _, v := range vs {
		ref, _ := v.(map[string]any)["reference"].(map[string]any)
		name, _ := ref["source-name"].(string)
		out = append(out, strings.TrimPrefix(name, "volume-"))
	}
	return out
}

func TestManageableVolumesList(t *testing.T) {
	e := newManageEnv(t)
	list := "/v3/manageable_volumes/detail?host=" + url.QueryEscape("h@b#pool")
	if r := e.do(t, "admin:admin", "3.7", "GET", list, ""); r.status != http.StatusNotFound {
		t.Errorf("GET manageable_volumes at 3.7 = %d, want 404: %s", r.status, r.raw)
	}
	if r := e.do(t, "alice:p1", "3.8", "GET", list, ""); r.status != http.StatusForbidden {
		t.Errorf("GET manageable_volumes as a member = %d, want 403: %s", r.status, r.raw)
	}
	r := e.do(t, "admin:admin", "3.8", "GET", list, "")
	if r.status != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", list, r.status, r.raw)
	}
	// Cinder's default order: reference, descending.
	if got, want := strings.Join(refs(r), " "), strings.Join([]string{owned, strayB, strayA}, " "); got != want {
		t.Errorf("GET %s lists %s, want %s", list, got, want)
	}
	for _, v := range r.body["manageable-volumes"].([]any) {
		m := v.(map[string]any)
		ref := m["reference"].(map[string]any)["source-name"]
		switch ref {
		case "volume-" + owned:
			if m["safe_to_manage"] != false || m["reason_not_safe"] != "already managed" || m["cinder_id"] != owned || m["size"] != 1.0 {
				t.Errorf("the owned object is listed as %v, want not safe, already managed, cinder_id %s", m, owned)
			}
		case "volume-" + strayA:
			if m["safe_to_manage"] != true || m["reason_not_safe"] != nil || m["cinder_id"] != nil || m["size"] != 2.0 {
				t.Errorf("a stray object is listed as %v, want safe, 2 GiB", m)
			}
		}
		if _, ok := m["extra_info"]; !ok {
			t.Errorf("detail entry %v lacks extra_info", m)
		}
	}
	// The summary list has three fields per volume.
	r = e.do(t, "admin:admin", "3.8", "GET", "/v3/manageable_volumes?host=h@b", "")
	if m := r.body["manageable-volumes"].([]any)[0].(map[string]any); len(m) != 3 {
		t.Errorf("summary entry %v, want reference, size and safe_to_manage", m)
	}
	marker := url.QueryEscape(`{"source-name": "volume-` + strayB + `"}`)
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"sort=size:asc,reference:asc", []string{strayB, owned, strayA}},
		{"sort_key=size&sort_dir=desc", []string{strayA, owned, strayB}},
		{"sort=reference:asc&limit=2", []string{strayA, strayB}},
		{"sort=reference:asc&limit=1&offset=1", []string{strayB}},
		{"marker=" + marker, []string{strayA}},
		{"limit=0", nil},
	} {
		r := e.do(t, "admin:admin", "3.8", "GET", "/v3/manageable_volumes?host=h@b&"+c.query, "")
		if got := refs(r); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("GET manageable_volumes?%s lists %v, want %v (%d %s)", c.query, got, c.want, r.status, r.raw)
		}
	}
	for _, c := range []struct {
		mv, query string
		status    int
		msg       string
	}{
		{"3.8", "", 400, "Invalid input received: Host field is missing."},
		{"3.17", "", 400, "Invalid input received: One and only one of cluster and host must be set."},
		{"3.17", "host=h@b&cluster=c", 400, "Invalid input received: One and only one of cluster and host must be set."},
		{"3.17", "cluster=c", 404, ""},
		{"3.8", "host=nowhere@b", 404, "Service cinder-volume could not be found on host nowhere@b."},
		{"3.8", "host=h@b&sort=name", 400, "Invalid sort keys passed: name"},
		{"3.8", "host=h@b&sort=size:up", 400, "Invalid sort dirs passed: up"},
		{"3.8", "host=h@b&sort=size&sort_key=size", 400, ""},
		{"3.8", "host=h@b&limit=x", 400, "limit param must be an integer"},
		{"3.8", "host=h@b&limit=-1", 400, "limit param must be positive"},
		{"3.8", "host=h@b&marker=volume-x", 400, "Invalid input received: marker volume-x can not be analysed, please use json like format"},
		{"3.8", "host=h@b&marker=" + url.QueryEscape(`{"source-name": "volume-x"}`), 400, ""},
	} {
		r := e.do(t, "admin:admin", c.mv, "GET", "/v3/manageable_volumes?"+c.query, "")
		_, msg := fault(r)
		if r.status != c.status || (c.msg != "" && msg != c.msg) {
			t.Errorf("GET manageable_volumes?%s at %s = %d %q, want %d %q", c.query, c.mv, r.status, msg, c.status, c.msg)
		}
	}
	// The os-volume-manage extension serves the listing at every microversion, with a project.
	r = e.do(t, "admin:admin", "3.0", "GET", "/v3/admin/os-volume-manage/detail?host=h@b", "")
	if r.status != http.StatusOK || len(refs(r)) != 3 {
		t.Errorf("GET os-volume-manage/detail at 3.0 = %d %s, want the three volumes", r.status, r.raw)
	}
	// A backend that is down lists nothing.
	if err := e.st.SetServiceDisabled(context.Background(), basalt.BinaryVolume, "h@b", true, nil); err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, "admin:admin", "3.8", "GET", list, ""); r.status != 400 {
		t.Errorf("GET manageable_volumes of a disabled service = %d, want 400: %s", r.status, r.raw)
	}
}

func TestManageVolumeRequests(t *testing.T) {
	e := newManageEnv(t)
	body := func(v string) string { return `{"volume": {` + v + `}}` }
	ref := `"ref": {"source-name": "volume-` + strayA + `"}`
	for _, c := range []struct {
		mv, token, path, body string
		status                int
		msg                   string
	}{
		{"3.7", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", ` + ref), 404, ""},
		{"3.8", "alice:p1", "/v3/manageable_volumes", body(`"host": "h@b", ` + ref), 403, "Policy doesn't allow volume_extension:volume_manage to be performed."},
		{"3.8", "admin:admin", "/v3/manageable_volumes", `{"x": 1, "volume": {"host": "h@b", ` + ref + `}}`, 400, "Additional properties are not allowed ('x' was unexpected)"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", `{}`, 400, "'volume' is a required property"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "size": 1, ` + ref), 400,
			`Invalid input for field/attribute volume. Value: {'host': 'h@b', 'size': 1, 'ref': {'source-name': 'volume-` + strayA + `'}}. Additional properties are not allowed ('size' was unexpected)`},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "cluster": "c", ` + ref), 400, ""}, // cluster from 3.16
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b"`), 400, "Invalid input for field/attribute volume. Value: {'host': 'h@b'}. 'ref' is a required property"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(ref), 400, "Invalid input received: Host field is missing."},
		{"3.16", "admin:admin", "/v3/manageable_volumes", body(`"cluster": "c", ` + ref), 400, "Cluster 'c' not found"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "x@y", ` + ref), 400, "Host 'x@y' not found"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "ref": "volume-x"`), 400, ""},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "ref": {"source-name": "lv-1"}`), 400, ""},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "ref": {"source-name": "volume-` + owned + `"}`), 400,
			"Invalid volume: Unable to manage existing volume. The volume is already managed"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "ref": {"source-id": "dddd"}`), 400, ""},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b#other", ` + ref), 400, ""},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "volume_type": "gold", ` + ref), 400, "Invalid volume type: Cannot find requested 'gold' volume type"},
		{"3.8", "admin:admin", "/v3/manageable_volumes", body(`"host": "h@b", "bootable": "maybe", ` + ref), 400, ""},
	} {
		r := e.do(t, c.token, c.mv, "POST", c.path, c.body)
		_, msg := fault(r)
		if r.status != c.status || (c.msg != "" && msg != c.msg) {
			t.Errorf("POST %s %s at %s = %d %q, want %d %q", c.path, c.body, c.mv, r.status, msg, c.status, c.msg)
		}
	}
	if len(e.pub.msgs) != 0 {
		t.Errorf("refused adoptions published %v", e.pub.msgs)
	}
	if v, err := e.st.Volume(context.Background(), strayA); err == nil {
		t.Errorf("refused adoptions left volume %+v", v)
	}
}

// TestManageUnmanage adopts a stray object, confirms it as its agent would, lets it go and
// adopts it again; and fails an adoption, whose record then goes without touching the backend.
func TestManageUnmanage(t *testing.T) {
	e := newManageEnv(t)
	ctx := context.Background()
	// What cinderclient's manage sends (through os-volume-manage, at any microversion).
	r := e.do(t, "admin:admin", "3.0", "POST", "/v3/admin/os-volume-manage", `{"volume": {"host": "h@b#pool",
		"ref": {"source-name": "volume-`+strayA+`"}, "name": " adopted ", "description": null, "volume_type": null,
		"availability_zone": null, "metadata": {"k": "v"}, "bootable": false}}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST os-volume-manage = %d: %s", r.status, r.raw)
	}
	v := r.body["volume"].(map[string]any)
	if v["id"] != strayA || v["status"] != "creating" || v["size"] != 2.0 || v["name"] != "adopted" ||
		v["availability_zone"] != "zone1" || v["metadata"].(map[string]any)["k"] != "v" {
		t.Errorf("adopted volume = %v, want id %s, creating, 2 GiB, named adopted, in zone1", v, strayA)
	}
	if got := strings.Join(e.pub.msgs, " "); got != events.BackendTopic("h@b") {
		t.Errorf("the adoption published to %q, want the backend's topic", got)
	}
	rec, _ := e.st.Volume(ctx, strayA)
	apply := func(kind string, ok bool, msg string) {
		t.Helper()
		if err := e.results.Apply(ctx, events.Result{OpID: rec.OpID, Kind: kind, VolumeID: strayA, Backend: "h@b",
			Host: "h@b#pool", OK: ok, Error: msg}); err != nil {
			t.Fatalf("Apply(%s ok=%v) = %v", kind, ok, err)
		}
	}
	apply(events.KindManageVolume, true, "")
	apply(events.KindManageVolume, true, "") // a redelivery changes nothing
	r = e.do(t, "admin:admin", "3.8", "GET", "/v3/volumes/"+strayA, "")
	if v := r.body["volume"].(map[string]any); v["status"] != "available" || v["os-vol-host-attr:host"] != "h@b#pool" {
		t.Errorf("adopted volume after its backend confirmed it = %v, want available on h@b#pool", v)
	}
	wantAccounting := func(what string, gb int, ledger float64) {
		t.Helper()
		usage, _ := e.st.QuotaUsage(ctx, "admin")
		if usage["gigabytes"] != gb || usage["volumes"] != gb/2 {
			t.Errorf("%s: quota usage %v, want %d volumes and %d GiB", what, usage, gb/2, gb)
		}
		if l, _ := e.st.Ledger(ctx, "h@b#pool"); l != ledger {
			t.Errorf("%s: ledger of h@b#pool = %v, want %v", what, l, ledger)
		}
	}
	wantAccounting("adopted", 2, 2)
	r = e.do(t, "admin:admin", "3.8", "GET", "/v3/manageable_volumes/detail?host=h@b", "")
	for _, m := range r.body["manageable-volumes"].([]any) {
		if m := m.(map[string]any); m["cinder_id"] == strayA && m["reason_not_safe"] != "already managed" {
			t.Errorf("the adopted object is listed as %v, want already managed", m)
		}
	}

	// Unmanage: admin only; the record goes when the backend has removed its exports.
	if r := e.do(t, "alice:p1", "3.8", "POST", "/v3/volumes/"+strayA+"/action", `{"os-unmanage": {}}`); r.status != http.StatusNotFound && r.status != http.StatusForbidden {
		t.Errorf("os-unmanage by a member = %d, want 403 or 404: %s", r.status, r.raw)
	}
	if r := e.do(t, "admin:admin", "3.8", "POST", "/v3/volumes/"+strayA+"/action", `{"os-unmanage": {}}`); r.status != http.StatusAccepted {
		t.Fatalf("os-unmanage = %d: %s", r.status, r.raw)
	}
	rec, _ = e.st.Volume(ctx, strayA)
	if rec.Status != basalt.StatusUnmanaging {
		t.Errorf("after os-unmanage the volume is %s, want unmanaging", rec.Status)
	}
	apply(events.KindUnmanageVolume, true, "")
	if _, err := e.st.Volume(ctx, strayA); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("after the unmanage the record is still there (%v)", err)
	}
	wantAccounting("unmanaged", 0, 0)
	r = e.do(t, "admin:admin", "3.8", "GET", "/v3/manageable_volumes/detail?host=h@b&sort=reference:asc", "")
	if m := r.body["manageable-volumes"].([]any)[0].(map[string]any); m["safe_to_manage"] != true {
		t.Errorf("after the unmanage the object is listed as %v, want safe to manage again", m)
	}

	// Adopted again (gophercloud's shape, at 3.8), then a failure from the backend.
	r = e.do(t, "admin:admin", "3.8", "POST", "/v3/manageable_volumes", `{"volume": {"host": "h@b", "ref": {"source-id": "`+strayA+`"}}}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST manageable_volumes = %d: %s", r.status, r.raw)
	}
	rec, _ = e.st.Volume(ctx, strayA)
	wantAccounting("adopting again", 2, 0)
	apply(events.KindManageVolume, false, "Volume "+strayA+" could not be found.")
	r = e.do(t, "admin:admin", "3.8", "GET", "/v3/volumes/"+strayA, "")
	if v := r.body["volume"].(map[string]any); v["status"] != "error" || !strings.Contains(v["status_reason"].(string), "could not be found") {
		t.Errorf("volume after a failed adoption = %v, want error with the reason", v)
	}
	rec, _ = e.st.Volume(ctx, strayA)
	if rec.Status != basalt.StatusErrorManaging || rec.Host != "" {
		t.Errorf("record after a failed adoption: %s on %q, want error_managing on no pool", rec.Status, rec.Host)
	}
	wantAccounting("failed adoption", 0, 0)
	sent := len(e.pub.msgs)
	if r := e.do(t, "admin:admin", "3.8", "DELETE", "/v3/volumes/"+strayA, ""); r.status != http.StatusAccepted {
		t.Fatalf("DELETE of the failed adoption = %d: %s", r.status, r.raw)
	}
	if _, err := e.st.Volume(ctx, strayA); basalt.ErrorCode(err) != basalt.ENOTFOUND || len(e.pub.msgs) != sent {
		t.Errorf("deleting a failed adoption: record %v, commands %v; want it gone with no command to the backend", err, e.pub.msgs[sent:])
	}
}
