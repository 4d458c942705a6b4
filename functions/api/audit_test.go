package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/store"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) records(t *testing.T) []api.AuditRecord {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.AuditRecord
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var rec api.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("audit line %q is not one JSON record: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

// TestAuditLog: every mutating request, and every request of an administrator, is one JSON line
// saying who, in which project, did what to which resource, with the request id and how it
// ended; a member's reads are not recorded, and the handler still gets an action's body.
func TestAuditLog(t *testing.T) {
	rs := redistest.Start(t)
	plane := control.New(control.Config{}, store.New(rs.Client(), nil), &recordingPub{}, slog.New(slog.DiscardHandler))
	audit := &lockedBuffer{}
	srv := httptest.NewServer(api.New(plane, slog.New(slog.DiscardHandler), api.WithAudit(audit)))
	t.Cleanup(srv.Close)

	created := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1,"name":"a"}}`)
	id := created.body["volume"].(map[string]any)["id"].(string)
	do(t, srv, "alice:p1", "GET", "/v3/volumes/"+id, "")
	refused := do(t, srv, "alice:p1", "POST", "/v3/p1/volumes/"+id+"/action", `{"os-reset_status":{"status":"error"}}`)
	do(t, srv, "admin:admin", "GET", "/v3/volumes?all_tenants=1", "")
	deleted := do(t, srv, "alice:p1", "DELETE", "/v3/volumes/"+id, "") // 400: it is still creating

	recs := audit.records(t)
	if len(recs) != 4 {
		t.Fatalf("%d audit records, want 4 (create, reset_status, the admin's listing, delete): %+v", len(recs), recs)
	}
	want := []struct {
		user, project, method, resource, action, outcome string
		status                                           int
	}{
		{"alice", "p1", "POST", "volumes", "", "accepted", 202},
		{"alice", "p1", "POST", "volumes/" + id, "os-reset_status", "refused", refused.status},
		{"admin", "admin", "GET", "volumes", "", "accepted", 200},
		{"alice", "p1", "DELETE", "volumes/" + id, "", "refused", deleted.status},
	}
	for i, w := range want {
		r := recs[i]
		if r.User != w.user || r.Project != w.project || r.Method != w.method || r.Resource != w.resource ||
			r.Action != w.action || r.Outcome != w.outcome || r.Status != w.status || r.RequestID == "" || r.Time.IsZero() {
			t.Errorf("audit record %d = %+v, want %+v", i, r, w)
		}
	}
	if deleted.status != 400 {
		t.Errorf("delete of a creating volume = %d, want 400", deleted.status)
	}
	if refused.status != 403 {
		t.Errorf("a member's os-reset_status = %d, want 403 (and the action read from the body)", refused.status)
	}
	if recs[0].RequestID != created.header.Get("X-Openstack-Request-Id") {
		t.Errorf("audit request id %q, response's %q", recs[0].RequestID, created.header.Get("X-Openstack-Request-Id"))
	}
}

// TestNoauthTokenNamesAUser: a token with no user (":project") acts as no one: 401 with
// WWW-Authenticate, nothing about the project's resources.
func TestNoauthTokenNamesAUser(t *testing.T) {
	srv, _ := newServer(t)
	do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1,"name":"secret-name"}}`)
	for _, tok := range []string{":p1", ":"} {
		r := do(t, srv, tok, "GET", "/v3/volumes/detail", "")
		if r.status != 401 || r.header.Get("WWW-Authenticate") == "" || strings.Contains(r.raw, "secret-name") {
			t.Errorf("GET with token %q = %d %q (WWW-Authenticate %q), want 401 with WWW-Authenticate and nothing listed",
				tok, r.status, r.raw, r.header.Get("WWW-Authenticate"))
		}
	}
	if r := do(t, srv, "alice:p1", "GET", "/v3/volumes/detail", ""); r.status != 200 || !strings.Contains(r.raw, "secret-name") {
		t.Errorf("GET with alice:p1 = %d, want 200 with the volume", r.status)
	}
}
