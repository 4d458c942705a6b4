package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/store"
)

// newPlaneServer serves the API over a plane with cfg and pub, and returns the plane too.
func newPlaneServer(t *testing.T, cfg control.Config, pub control.Publisher) (*httptest.Server, *control.Plane) {
	t.Helper()
	rs := redistest.Start(t)
	plane := control.New(cfg, store.New(rs.Client(), nil), pub, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(api.New(plane, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv, plane
}

func asProject(project string) context.Context {
	return control.WithCaller(context.Background(), control.Caller{UserID: "u", ProjectID: project})
}

func quotaSet(t *testing.T, r resp) map[string]any {
	t.Helper()
	qs, ok := r.body["quota_set"].(map[string]any)
	if !ok {
		t.Fatalf("response has no quota_set: %d %s", r.status, r.raw)
	}
	return qs
}

func TestQuotaSetShow(t *testing.T) {
	srv, plane := newPlaneServer(t, control.Config{QuotaDefaults: map[string]int{"volumes": 20}}, &recordingPub{})
	for _, path := range []string{"/v3/os-quota-sets/p1", "/v3/p1/os-quota-sets/p1"} {
		r := do(t, srv, "alice:p1", "GET", path, "")
		if r.status != 200 {
			t.Fatalf("GET %s = %d %s", path, r.status, r.raw)
		}
		qs := quotaSet(t, r)
		want := map[string]any{"id": "p1", "volumes": 20.0, "snapshots": 10.0, "gigabytes": 1000.0, "backups": 10.0,
			"backup_gigabytes": 1000.0, "groups": 10.0, "per_volume_gigabytes": -1.0,
			"volumes___DEFAULT__": -1.0, "snapshots___DEFAULT__": -1.0, "gigabytes___DEFAULT__": -1.0}
		for k, v := range want {
			if qs[k] != v {
				t.Errorf("GET %s: %s = %v, want %v", path, k, qs[k], v)
			}
		}
		if len(qs) != len(want) {
			t.Errorf("GET %s = %v, want exactly the keys of %v", path, qs, want)
		}
	}
	if r := do(t, srv, "bob:p2", "GET", "/v3/os-quota-sets/p1", ""); r.status != 403 {
		t.Errorf("GET another project's quota set = %d, want 403", r.status)
	}
	if r := do(t, srv, "bob:p2", "GET", "/v3/os-quota-sets/p1/defaults", ""); r.status != 403 {
		t.Errorf("GET another project's defaults = %d, want 403", r.status)
	}
	if r := do(t, srv, "admin:admin", "GET", "/v3/os-quota-sets/p1", ""); r.status != 200 {
		t.Errorf("admin GET p1's quota set = %d, want 200", r.status)
	}

	// Usage.
	if err := plane.ChargeQuota(asProject("p1"), "p1", "vol:a", control.QuotaRequest{Volumes: 2, Gigabytes: 7,
		TypeName: basalt.DefaultTypeName, VolumeSizeGB: 7}); err != nil {
		t.Fatal(err)
	}
	r := do(t, srv, "alice:p1", "GET", "/v3/os-quota-sets/p1?usage=true", "")
	qs := quotaSet(t, r)
	if qs["id"] != "p1" {
		t.Errorf("usage=true id = %v, want the string p1", qs["id"])
	}
	for k, want := range map[string][3]float64{"volumes": {20, 2, 0}, "gigabytes": {1000, 7, 0},
		"gigabytes___DEFAULT__": {-1, 7, 0}, "snapshots": {10, 0, 0}, "per_volume_gigabytes": {-1, 0, 0}} {
		v, _ := qs[k].(map[string]any)
		if v["limit"] != want[0] || v["in_use"] != want[1] || v["reserved"] != want[2] {
			t.Errorf("usage=true %s = %v, want limit %v in_use %v reserved %v", k, qs[k], want[0], want[1], want[2])
		}
	}
	if r := do(t, srv, "alice:p1", "GET", "/v3/os-quota-sets/p1?usage=maybe", ""); r.status != 400 {
		t.Errorf("usage=maybe = %d, want 400", r.status)
	}

	// Limits.
	r = do(t, srv, "alice:p1", "GET", "/v3/p1/limits", "")
	if r.status != 200 {
		t.Fatalf("GET limits = %d %s", r.status, r.raw)
	}
	lim := r.body["limits"].(map[string]any)
	if rate, ok := lim["rate"].([]any); !ok || len(rate) != 0 {
		t.Errorf("limits rate = %v, want []", lim["rate"])
	}
	abs := lim["absolute"].(map[string]any)
	for k, v := range map[string]float64{"maxTotalVolumes": 20, "maxTotalSnapshots": 10, "maxTotalVolumeGigabytes": 1000,
		"maxTotalBackups": 10, "maxTotalBackupGigabytes": 1000, "totalVolumesUsed": 2, "totalGigabytesUsed": 7,
		"totalSnapshotsUsed": 0, "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0} {
		if abs[k] != v {
			t.Errorf("limits absolute %s = %v, want %v", k, abs[k], v)
		}
	}
	if len(abs) != 10 {
		t.Errorf("limits absolute = %v, want 10 keys", abs)
	}
}

func TestQuotaSetUpdate(t *testing.T) {
	srv, plane := newPlaneServer(t, control.Config{}, &recordingPub{})
	if r := do(t, srv, "admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"gold"}}`); r.status != 200 {
		t.Fatalf("create type = %d %s", r.status, r.raw)
	}
	if err := plane.ChargeQuota(asProject("p1"), "p1", "vol:a", control.QuotaRequest{Volumes: 3, Gigabytes: 30}); err != nil {
		t.Fatal(err)
	}
	const path = "/v3/os-quota-sets/p1"
	if r := do(t, srv, "alice:p1", "PUT", path, `{"quota_set":{"volumes":50}}`); r.status != 403 {
		t.Errorf("member PUT = %d, want 403", r.status)
	}
	if r := do(t, srv, "alice:p1", "DELETE", path, ""); r.status != 403 {
		t.Errorf("member DELETE = %d, want 403", r.status)
	}
	r := do(t, srv, "admin:admin", "PUT", path, `{"quota_set":{"volumes":5,"gigabytes":"30","per_volume_gigabytes":0,"gigabytes_gold":-1,"snapshots_gold":3,"id":"ignored"}}`)
	if r.status != 200 {
		t.Fatalf("PUT = %d %s", r.status, r.raw)
	}
	qs := quotaSet(t, r)
	if _, ok := qs["id"]; ok {
		t.Errorf("PUT response has an id: %v", qs)
	}
	for k, v := range map[string]float64{"volumes": 5, "gigabytes": 30, "per_volume_gigabytes": 0, "snapshots_gold": 3,
		"gigabytes_gold": -1, "snapshots": 10} {
		if qs[k] != v {
			t.Errorf("PUT response %s = %v, want %v", k, qs[k], v)
		}
	}
	if qs := quotaSet(t, do(t, srv, "alice:p1", "GET", path, "")); qs["volumes"] != 5.0 || qs["snapshots_gold"] != 3.0 {
		t.Errorf("GET after PUT = %v", qs)
	}
	if qs := quotaSet(t, do(t, srv, "alice:p1", "GET", path+"/defaults", "")); qs["volumes"] != 10.0 || qs["snapshots_gold"] != -1.0 || qs["id"] != "p1" {
		t.Errorf("defaults after PUT = %v, want the defaults", qs)
	}

	for _, c := range []struct{ body, msg string }{
		{`{"quota_set":{"volumes":2}}`, "Quota volumes limit must be equal or greater than existing resources. Current usage is 3 and the requested limit is 2."},
		{`{"quota_set":{"nope":1,"volumes_silver":1}}`, "Bad key(s) in quota set: nope, volumes_silver"},
		{`{"quota_set":{"volumes":"abc"}}`, "volumes must be an integer"},
		{`{"quota_set":{"volumes":1.5}}`, "volumes must be an integer"},
		{`{"quota_set":{"volumes":null}}`, "volumes must be an integer"},
		{`{"quota_set":{"volumes":true}}`, ""},
		{`{"quota_set":{"volumes":-2}}`, "volumes must be >= -1"},
		{`{"quota_set":{"volumes":2147483648}}`, "volumes must be <= 2147483647"},
		{`{"quota_set":{}}`, "quota_set"},
		{`{"volumes":1}`, ""},
		{`{"quota_set":{"volumes":1},"extra":1}`, ""},
	} {
		r := do(t, srv, "admin:admin", "PUT", path, c.body)
		if name, msg := fault(r); r.status != 400 || name != "badRequest" || !strings.Contains(msg, c.msg) {
			t.Errorf("PUT %s = %d %s %q, want 400 badRequest containing %q", c.body, r.status, name, msg, c.msg)
		}
	}
	// A refused update changes nothing.
	if qs := quotaSet(t, do(t, srv, "alice:p1", "GET", path, "")); qs["volumes"] != 5.0 {
		t.Errorf("volumes after refused updates = %v, want 5", qs["volumes"])
	}
	if r := do(t, srv, "admin:admin", "PUT", path, `{"quota_set":{"volumes":-1}}`); r.status != 200 {
		t.Errorf("PUT volumes -1 below usage = %d, want 200 (unlimited)", r.status)
	}

	r = do(t, srv, "admin:admin", "DELETE", "/v3/admin/os-quota-sets/p1", "")
	if r.status != http.StatusOK {
		t.Errorf("DELETE = %d %s, want 200", r.status, r.raw)
	}
	if qs := quotaSet(t, do(t, srv, "alice:p1", "GET", path, "")); qs["volumes"] != 10.0 || qs["per_volume_gigabytes"] != -1.0 {
		t.Errorf("GET after DELETE = %v, want the defaults", qs)
	}
}

func TestQuotaChargeAndRefund(t *testing.T) {
	srv, plane := newPlaneServer(t, control.Config{}, &recordingPub{})
	if r := do(t, srv, "admin:admin", "PUT", "/v3/os-quota-sets/p1", `{"quota_set":{"volumes":1}}`); r.status != 200 {
		t.Fatalf("PUT = %d %s", r.status, r.raw)
	}
	ctx := asProject("p1")
	if err := plane.ChargeQuota(ctx, "p1", "vol:a", control.QuotaRequest{Volumes: 1}); err != nil {
		t.Fatal(err)
	}
	err := plane.ChargeQuota(ctx, "p1", "vol:b", control.QuotaRequest{Volumes: 1})
	const want = "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'."
	if basalt.ErrorCode(err) != basalt.EOVERLIMIT || basalt.ErrorMessage(err) != want {
		t.Fatalf("ChargeQuota over the limit = %v, want EOVERLIMIT %q", err, want)
	}
	for range 2 {
		if err := plane.RefundQuota(ctx, "vol:a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := plane.ChargeQuota(ctx, "p1", "vol:b", control.QuotaRequest{Volumes: 1}); err != nil {
		t.Errorf("ChargeQuota after a refund = %v, want nil", err)
	}
}
