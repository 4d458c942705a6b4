package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/store"
)

type recordingPub struct {
	mu   sync.Mutex
	msgs []string
}

func (p *recordingPub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, topic)
	return nil
}

func newServer(t *testing.T) (*httptest.Server, *recordingPub) {
	t.Helper()
	rs := redistest.Start(t)
	pub := &recordingPub{}
	plane := control.New(control.Config{}, store.New(rs.Client(), nil), pub, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(api.New(plane, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv, pub
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func do(t *testing.T, srv *httptest.Server, token, method, path, body string, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, srv.URL+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// fault returns the fault name and message of a Cinder fault body.
func fault(r resp) (string, string) {
	for k, v := range r.body {
		m, _ := v.(map[string]any)
		msg, _ := m["message"].(string)
		return k, msg
	}
	return "", ""
}

func TestVersions(t *testing.T) {
	srv, _ := newServer(t)
	r := do(t, srv, "", "GET", "/", "")
	if r.status != http.StatusMultipleChoices {
		t.Fatalf("GET / = %d, want 300: %s", r.status, r.raw)
	}
	v := r.body["versions"].([]any)[0].(map[string]any)
	if v["version"] != api.MaxVersion.String() || v["min_version"] != "3.0" || v["id"] != "v3.0" {
		t.Errorf("GET / version entry = %v", v)
	}
	r = do(t, srv, "admin:admin", "GET", "/v3/", "")
	if r.status != 200 {
		t.Errorf("GET /v3/ = %d, want 200", r.status)
	}
	r = do(t, srv, "", "GET", "/v3/volumes", "")
	if r.status != http.StatusNoContent || r.header.Get("X-Auth-Token") != "admin:admin" {
		t.Errorf("GET /v3/volumes without token = %d token %q, want 204 admin:admin", r.status, r.header.Get("X-Auth-Token"))
	}
}

func TestMicroversionNegotiation(t *testing.T) {
	srv, _ := newServer(t)
	for _, c := range []struct {
		hdr    string
		status int
		echo   string
	}{
		{"", 200, "volume 3.0"},
		{"volume 3.3", 200, "volume 3.3"},
		{"volume latest", 200, "volume " + api.MaxVersion.String()},
		{"compute 2.1, volume 3.1", 200, "volume 3.1"},
		{"volume 3.999", 406, ""},
		{"volume 2.0", 406, ""},
		{"volume three", 400, ""},
	} {
		var r resp
		if c.hdr == "" {
			r = do(t, srv, "admin:admin", "GET", "/v3/types", "")
		} else {
			r = do(t, srv, "admin:admin", "GET", "/v3/types", "", "OpenStack-API-Version", c.hdr)
		}
		if r.status != c.status {
			t.Errorf("GET /v3/types with %q = %d, want %d: %s", c.hdr, r.status, c.status, r.raw)
		}
		if c.echo != "" && r.header.Get("OpenStack-API-Version") != c.echo {
			t.Errorf("GET /v3/types with %q echoed %q, want %q", c.hdr, r.header.Get("OpenStack-API-Version"), c.echo)
		}
		if r.header.Get("X-Openstack-Request-Id") == "" {
			t.Errorf("GET /v3/types with %q: no x-openstack-request-id", c.hdr)
		}
	}
}

func TestCreateAndShowVolume(t *testing.T) {
	srv, pub := newServer(t)
	r := do(t, srv, "alice:p1", "POST", "/v3/p1/volumes", `{"volume":{"size":1,"name":"v1","description":null,"metadata":{"k":"v"},"imageRef":null,"consistencygroup_id":null}}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("create = %d, want 202: %s", r.status, r.raw)
	}
	v := r.body["volume"].(map[string]any)
	if v["status"] != "creating" || v["name"] != "v1" || v["bootable"] != "false" || v["volume_type"] != "__DEFAULT__" {
		t.Errorf("create response = %v", v)
	}
	if _, ok := v["os-vol-host-attr:host"]; ok {
		t.Errorf("create response has os-vol-host-attr:host")
	}
	if strings.HasSuffix(v["created_at"].(string), "Z") {
		t.Errorf("created_at %q ends in Z", v["created_at"])
	}
	if len(pub.msgs) != 1 || pub.msgs[0] != "basalt.scheduler" {
		t.Errorf("published %v, want one message to basalt.scheduler", pub.msgs)
	}
	id := v["id"].(string)
	links := v["links"].([]any)
	if href := links[0].(map[string]any)["href"].(string); !strings.HasSuffix(href, "/v3/p1/volumes/"+id) {
		t.Errorf("self link %q", href)
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/volumes/"+id, "")
	if r.status != 200 || r.body["volume"].(map[string]any)["os-vol-tenant-attr:tenant_id"] != "p1" {
		t.Errorf("show = %d %s", r.status, r.raw)
	}
	// Another project sees nothing.
	if r := do(t, srv, "bob:p2", "GET", "/v3/volumes/"+id, ""); r.status != 404 {
		t.Errorf("show by another project = %d, want 404", r.status)
	}
	if r := do(t, srv, "bob:p2", "GET", "/v3/p1/volumes/"+id, ""); r.status != 400 {
		t.Errorf("show with another project's URL = %d, want 400", r.status)
	}
	if r := do(t, srv, "bob:p2", "GET", "/v3/volumes/detail", ""); len(r.body["volumes"].([]any)) != 0 {
		t.Errorf("list by another project = %s, want no volumes", r.raw)
	}
	if r := do(t, srv, "admin:admin", "GET", "/v3/volumes/detail?all_tenants=1", ""); len(r.body["volumes"].([]any)) != 1 {
		t.Errorf("admin all_tenants list = %s, want one volume", r.raw)
	}
}

func TestBadInput(t *testing.T) {
	srv, _ := newServer(t)
	big := `{"volume":{"size":1,"name":"` + strings.Repeat("x", 2<<20) + `"}}`
	cases := []struct {
		name, method, path, body string
		status                   int
		faultName, msg           string
	}{
		{"malformed JSON", "POST", "/v3/volumes", `{"volume": {"size": 1`, 400, "badRequest", "Malformed"},
		{"size 0", "POST", "/v3/volumes", `{"volume":{"size":0}}`, 400, "badRequest", "Invalid volume size"},
		{"size -1", "POST", "/v3/volumes", `{"volume":{"size":-1}}`, 400, "badRequest", "Invalid volume size"},
		{"size abc", "POST", "/v3/volumes", `{"volume":{"size":"abc"}}`, 400, "badRequest", "abc"},
		{"size 10^12", "POST", "/v3/volumes", `{"volume":{"size":1000000000000}}`, 413, "overLimit", "larger than maximum"},
		{"unknown type", "POST", "/v3/volumes", `{"volume":{"size":1,"volume_type":"nope"}}`, 404, "itemNotFound", "nope"},
		{"unknown zone", "POST", "/v3/volumes", `{"volume":{"size":1,"availability_zone":"mars"}}`, 400, "badRequest", "Availability zone 'mars' is invalid."},
		{"2 MiB body", "POST", "/v3/volumes", big, 413, "overLimit", "too large"},
		{"unknown action", "POST", "/v3/volumes/x/action", `{"os-fly":{}}`, 400, "badRequest", "There is no such action: os-fly"},
		{"unknown volume", "GET", "/v3/volumes/nope", "", 404, "itemNotFound", "Volume nope could not be found."},
		{"unknown path", "GET", "/v3/p1/nothing/here/at/all", "", 404, "itemNotFound", ""},
		{"foreign project path", "GET", "/v3/p2/volumes", "", 400, "badRequest", "Malformed request url"},
		{"wrong method", "PATCH", "/v3/volumes", "", 405, "badMethod", ""},
		{"bad limit", "GET", "/v3/volumes?limit=abc", "", 400, "badRequest", "limit"},
		{"bad marker", "GET", "/v3/volumes?marker=zzz", "", 404, "itemNotFound", "zzz"},
		{"member filter", "GET", "/v3/volumes?host=x", "", 400, "badRequest", "Invalid filters host"}, // at 3.31+
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			token := "alice:p1"
			r := do(t, srv, token, c.method, c.path, c.body, "OpenStack-API-Version", "volume 3.31")
			name, msg := fault(r)
			if r.status != c.status || name != c.faultName || !strings.Contains(msg, c.msg) {
				t.Errorf("%s %s = %d %s %q, want %d %s containing %q", c.method, c.path, r.status, name, msg, c.status, c.faultName, c.msg)
			}
		})
	}
}

func TestAdminOnly(t *testing.T) {
	srv, _ := newServer(t)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v3/os-services", ""},
		{"GET", "/v3/scheduler-stats/get_pools", ""},
		{"POST", "/v3/types", `{"volume_type":{"name":"x"}}`},
		{"PUT", "/v3/os-services/disable", `{"host":"h","binary":"cinder-volume"}`},
	} {
		r := do(t, srv, "alice:p1", c.method, c.path, c.body)
		if name, _ := fault(r); r.status != 403 || name != "forbidden" {
			t.Errorf("member %s %s = %d %s, want 403 forbidden", c.method, c.path, r.status, r.raw)
		}
		r = do(t, srv, "admin:admin", c.method, c.path, c.body)
		if r.status == 403 {
			t.Errorf("admin %s %s = 403", c.method, c.path)
		}
	}
}

func TestTypes(t *testing.T) {
	srv, _ := newServer(t)
	r := do(t, srv, "admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"gold","extra_specs":{"volume_backend_name":"lvmbackend"}}}`)
	if r.status != 200 {
		t.Fatalf("create type = %d %s", r.status, r.raw)
	}
	vt := r.body["volume_type"].(map[string]any)
	if vt["extra_specs"].(map[string]any)["volume_backend_name"] != "lvmbackend" {
		t.Errorf("create type response = %v", vt)
	}
	id := vt["id"].(string)
	if r := do(t, srv, "admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"gold"}}`); r.status != 409 {
		t.Errorf("duplicate type = %d, want 409", r.status)
	}
	if r := do(t, srv, "admin:admin", "PUT", "/v3/types/"+id+"/extra_specs/multiattach", `{"multiattach":"<is> True"}`); r.status != 200 {
		t.Errorf("put extra spec = %d %s", r.status, r.raw)
	}
	if r := do(t, srv, "admin:admin", "PUT", "/v3/types/"+id+"/extra_specs/a", `{"b":"c"}`); r.status != 400 {
		t.Errorf("put mismatched extra spec = %d, want 400", r.status)
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/types/"+id, "")
	specs := r.body["volume_type"].(map[string]any)["extra_specs"].(map[string]any)
	if _, ok := specs["volume_backend_name"]; ok || specs["multiattach"] != "<is> True" {
		t.Errorf("member sees extra specs %v, want only multiattach", specs)
	}
	r = do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1,"volume_type":"gold"}}`)
	if r.status != 202 || r.body["volume"].(map[string]any)["multiattach"] != true {
		t.Errorf("create with multiattach type = %d %s", r.status, r.raw)
	}
	if r := do(t, srv, "admin:admin", "DELETE", "/v3/types/"+id, ""); r.status != 400 {
		t.Errorf("delete type in use = %d, want 400", r.status)
	}
	r = do(t, srv, "admin:admin", "GET", "/v3/types/default", "")
	if r.status != 200 || r.body["volume_type"].(map[string]any)["name"] != "__DEFAULT__" {
		t.Errorf("default type = %d %s", r.status, r.raw)
	}
}

func TestPagination(t *testing.T) {
	srv, _ := newServer(t)
	for i := 0; i < 5; i++ {
		if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":"1"}}`); r.status != 202 {
			t.Fatalf("create = %d %s", r.status, r.raw)
		}
	}
	seen := map[string]bool{}
	path := "/v3/p1/volumes/detail?limit=2"
	for pages := 0; path != "" && pages < 10; pages++ {
		r := do(t, srv, "alice:p1", "GET", path, "")
		for _, v := range r.body["volumes"].([]any) {
			seen[v.(map[string]any)["id"].(string)] = true
		}
		path = ""
		if links, ok := r.body["volumes_links"].([]any); ok {
			href := links[0].(map[string]any)["href"].(string)
			path = href[strings.Index(href, "/v3/"):]
		}
	}
	if len(seen) != 5 {
		t.Errorf("paging saw %d volumes, want 5", len(seen))
	}
}

var _ = bytes.NewReader

func TestResetStatus(t *testing.T) {
	srv, _ := newServer(t)
	r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1}}`)
	id := r.body["volume"].(map[string]any)["id"].(string)
	path := "/v3/volumes/" + id + "/action"
	if r := do(t, srv, "alice:p1", "POST", path, `{"os-reset_status":{"status":"error"}}`); r.status != 403 {
		t.Errorf("member os-reset_status = %d, want 403", r.status)
	}
	for _, c := range []struct {
		body   string
		status int
	}{
		{`{"os-reset_status":{}}`, 400},
		{`{"os-reset_status":{"status":"deleting"}}`, 400},
		{`{"os-reset_status":{"status":"sleeping"}}`, 400},
		{`{"os-reset_status":{"status":"in-use"}}`, 400},
		{`{"os-reset_status":{"status":"error"},"os-extend":{"new_size":2}}`, 400},
		{`{"os-reset_status":{"status":"ERROR"}}`, 202},
	} {
		if r := do(t, srv, "admin:admin", "POST", path, c.body); r.status != c.status {
			t.Errorf("admin action %s = %d %s, want %d", c.body, r.status, r.raw, c.status)
		}
	}
	if r := do(t, srv, "alice:p1", "GET", "/v3/volumes/"+id, ""); r.body["volume"].(map[string]any)["status"] != "error" {
		t.Errorf("status after reset = %v, want error", r.body["volume"].(map[string]any)["status"])
	}
	// The reset volume can now be deleted: it was never placed, so it is removed at once.
	if r := do(t, srv, "alice:p1", "DELETE", "/v3/volumes/"+id, ""); r.status != 202 {
		t.Fatalf("delete = %d %s", r.status, r.raw)
	}
	if r := do(t, srv, "alice:p1", "GET", "/v3/volumes/"+id, ""); r.status != 404 {
		t.Errorf("show after deleting an unplaced volume = %d, want 404", r.status)
	}
}

func TestConcurrentCreatesRespectQuota(t *testing.T) {
	srv, _ := newServer(t)
	if r := do(t, srv, "admin:admin", "PUT", "/v3/os-quota-sets/p1", `{"quota_set":{"volumes":100}}`); r.status != 200 {
		t.Fatalf("set quota = %d %s", r.status, r.raw)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1}}`)
			mu.Lock()
			defer mu.Unlock()
			codes[r.status]++
			if r.status == 413 {
				if name, msg := fault(r); name != "overLimit" || !strings.Contains(msg, "VolumeLimitExceeded: Maximum number of volumes allowed (100) exceeded for quota 'volumes'.") {
					t.Errorf("over-quota create = %s %q", name, msg)
				}
			}
		}()
	}
	wg.Wait()
	if codes[202] != 100 || codes[413] != 100 {
		t.Errorf("200 concurrent creates against a quota of 100 answered %v, want 100 × 202 and 100 × 413", codes)
	}
	r := do(t, srv, "alice:p1", "GET", "/v3/volumes?limit=1000", "")
	if n := len(r.body["volumes"].([]any)); n != 100 {
		t.Errorf("the project holds %d volumes, want 100", n)
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/os-quota-sets/p1?usage=true", "")
	if used := r.body["quota_set"].(map[string]any)["volumes"].(map[string]any)["in_use"]; used != float64(100) {
		t.Errorf("quota usage = %v, want 100", used)
	}
}

func TestReadonlyAndBootableFlags(t *testing.T) {
	srv, _ := newServer(t)
	r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1}}`)
	id := r.body["volume"].(map[string]any)["id"].(string)
	path := "/v3/volumes/" + id + "/action"
	// The volume is still creating: the read-only flag needs an available volume.
	if r := do(t, srv, "alice:p1", "POST", path, `{"os-update_readonly_flag":{"readonly":true}}`); r.status != 400 {
		t.Errorf("readonly on a creating volume = %d, want 400", r.status)
	}
	do(t, srv, "admin:admin", "POST", path, `{"os-reset_status":{"status":"available"}}`)
	for _, c := range []struct {
		body   string
		status int
	}{
		{`{"os-update_readonly_flag":{"readonly":true}}`, 202},
		{`{"os-update_readonly_flag":{"readonly":"maybe"}}`, 400},
		{`{"os-set_bootable":{"bootable":"true"}}`, 200},
		{`{"os-set_bootable":{"bootable":7}}`, 400},
	} {
		if r := do(t, srv, "alice:p1", "POST", path, c.body); r.status != c.status {
			t.Errorf("action %s = %d %s, want %d", c.body, r.status, r.raw, c.status)
		}
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/volumes/"+id, "")
	if b := r.body["volume"].(map[string]any)["bootable"]; b != "true" {
		t.Errorf("bootable after os-set_bootable = %v, want \"true\"", b)
	}
	if md := r.body["volume"].(map[string]any)["metadata"].(map[string]any); md["readonly"] != "True" {
		t.Errorf("metadata after os-update_readonly_flag = %v, want readonly True", md)
	}
}

// TestStoredInputLimits: control characters in what a request stores and metadata over the cap
// (128 items by default, counted on the merged result) are 400 badRequest faults naming the
// field or the cap, and the metadata stays as it was.
func TestStoredInputLimits(t *testing.T) {
	srv, _ := newServer(t)
	for _, c := range []struct{ token, path, body, msg string }{
		{"alice:p1", "/v3/volumes", `{"volume":{"size":1,"name":"a\u0000b"}}`, "Invalid input for field/attribute name. It must not contain control characters (U+0000 found)."},
		{"alice:p1", "/v3/volumes", `{"volume":{"size":1,"description":"bell\u0007"}}`, "Invalid input for field/attribute description. It must not contain control characters (U+0007 found)."},
		{"alice:p1", "/v3/volumes", `{"volume":{"size":1,"metadata":{"k":"\u001b[0m"}}}`, `Invalid input for field/attribute metadata. Value for key "k" must not contain control characters (U+001B found).`},
		{"admin:admin", "/v3/types", `{"volume_type":{"name":"gold","extra_specs":{"k":"\u007f"}}}`, `Invalid input for field/attribute extra_specs. Value of "k" must not contain control characters (U+007F found).`},
	} {
		r := do(t, srv, c.token, "POST", c.path, c.body)
		if name, msg := fault(r); r.status != 400 || name != "badRequest" || msg != c.msg {
			t.Errorf("POST %s %s = %d %s %q, want 400 badRequest %q", c.path, c.body, r.status, name, msg, c.msg)
		}
	}
	r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1,"metadata":{"a":"1","b":"2"}}}`)
	if r.status != 202 {
		t.Fatalf("create volume = %d %s", r.status, r.raw)
	}
	id := r.body["volume"].(map[string]any)["id"].(string)
	md := map[string]string{}
	for i := range 126 {
		md[strings.Repeat("k", i+1)] = "v"
	}
	body, _ := json.Marshal(map[string]any{"metadata": md})
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes/"+id+"/metadata", string(body)); r.status != 200 {
		t.Fatalf("merge up to 128 items = %d %s", r.status, r.raw)
	}
	r = do(t, srv, "alice:p1", "POST", "/v3/volumes/"+id+"/metadata", `{"metadata":{"one":"more"}}`)
	if name, msg := fault(r); r.status != 400 || name != "badRequest" || msg != "Invalid input received: metadata would have 129 items, more than the 128 allowed." {
		t.Errorf("merge a 129th item = %d %s %q, want 400 badRequest naming the cap", r.status, name, msg)
	}
	r = do(t, srv, "alice:p1", "GET", "/v3/volumes/"+id+"/metadata", "")
	if got := r.body["metadata"].(map[string]any); len(got) != 128 || got["one"] != nil {
		t.Errorf("metadata after the refused merge has %d items (one=%v), want the 128", len(got), got["one"])
	}
}
