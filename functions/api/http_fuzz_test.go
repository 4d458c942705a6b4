package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/store"
)

type nopPub struct{}

func (nopPub) PublishContext(context.Context, string, string, string, any) error { return nil }

// FuzzRequests sends client input through the real handler (a plane on a real Redis): the
// noauth X-Auth-Token and the OpenStack-API-Version header on a filtered, sorted listing
// (GET /v3/volumes/detail?...), then the body of POST /v3/volumes and of PUT
// /v3/volumes/{id}/metadata. No answer is a 500 or a panic, and every 4xx is a Cinder fault:
// {"<faultName>": {"code": <status>, "message": "..."}}.
func FuzzRequests(f *testing.F) {
	f.Add("admin:admin", "volume 3.54", "sort=name:asc&limit=2&metadata={'k':'v'}", `{"volume": {"size": 1, "name": "v"}}`)
	f.Add("u:p", "volume latest", "all_tenants=1&with_count=true", `{"volume": {"size": 1, "metadata": {"k": "v"}, "bootable": true}}`)
	f.Add("member", "", "sort_key=size&sort_dir=up", `{"metadata": {"a": "b"}}`)
	f.Add(":", "volume 3.999", "limit=-1", `{"volume": {"size": -1}}`)
	f.Add("a:b:c", "volume x", "offset=x", `{"volume": {"size": "1"}}`)
	f.Add("admin", "compute 2.1, volume 3.31", "foo=bar&size=01&bootable=maybe", `{"volume": {"size": 1e300, "volume_type": 7}}`)
	f.Add("admin:admin", "volume 3.45", "sort=created_at:desc,id&marker=nope", `{"metadata": {"": "x"}}`)
	f.Add("admin:admin", "volume 3.0", "", `{"volume": null}`)
	f.Add("admin:admin", "volume 3.0", "", `[]`)
	f.Add("admin:admin", "volume 3.0", "", `{"metadata": {"k": 1}}`)
	f.Add("admin:admin", "volume 3.0", "", `{"volume": {"size": 1, "source_volid": "../x", "snapshot_id": "", "consistencygroup_id": null}}`)
	f.Add("admin:admin", "volume 3.0", "", "{\"volume\": {\"size\": 1, \"name\": \"\\u0000\\ud800\"}}")

	rs := redistest.Start(f)
	plane := control.New(control.Config{}, store.New(rs.Client(), nil), nopPub{}, slog.New(slog.DiscardHandler))
	h := api.New(plane, slog.New(slog.DiscardHandler))
	serve := func(method, target, token, version, body string) *httptest.ResponseRecorder {
		req, err := http.NewRequest(method, "http://basalt"+target, strings.NewReader(body))
		if err != nil {
			return nil
		}
		req.Header["X-Auth-Token"] = []string{token}
		if version != "" {
			req.Header["Openstack-Api-Version"] = []string{version}
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	w := serve("POST", "/v3/volumes", "admin:admin", "", `{"volume": {"size": 1, "name": "fuzz"}}`)
	var created struct {
		Volume struct {
			ID string `json:"id"`
		} `json:"volume"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil || created.Volume.ID == "" {
		f.Fatalf("create a volume: %d %s", w.Code, w.Body)
	}
	meta := "/v3/volumes/" + created.Volume.ID + "/metadata"

	f.Fuzz(func(t *testing.T, token, version, query, body string) {
		for _, r := range []struct{ method, target, token, body string }{
			{"GET", "/v3/volumes/detail?" + query, token, ""},
			{"POST", "/v3/volumes", "admin:admin", body},
			{"PUT", meta, "admin:admin", body},
			{"POST", meta, token, body},
		} {
			w := serve(r.method, r.target, r.token, version, r.body)
			if w == nil {
				continue
			}
			what := r.method + " " + r.target + " (token " + r.token + ", version " + version + ", body " + r.body + ")"
			if w.Code >= 500 {
				t.Fatalf("%s = %d: %s", what, w.Code, w.Body)
			}
			if w.Code < 400 {
				continue
			}
			var fault map[string]struct {
				Code    *int    `json:"code"`
				Message *string `json:"message"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &fault); err != nil || len(fault) != 1 {
				t.Fatalf("%s = %d with a body that is no Cinder fault: %s", what, w.Code, w.Body)
			}
			for name, v := range fault {
				if name == "" || v.Code == nil || *v.Code != w.Code || v.Message == nil {
					t.Fatalf("%s = %d with a body that is no Cinder fault: %s", what, w.Code, w.Body)
				}
			}
		}
	})
}
