package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/basalt-storage/basalt/functions/control"
)

// An AuditRecord is one line of the audit log: who did what to which resource, and how it
// ended. Every mutating request is recorded, and every request of an administrator.
type AuditRecord struct {
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id"`
	User      string    `json:"user"`
	Project   string    `json:"project"`
	Admin     bool      `json:"admin"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	// Resource is the collection and id the path names ("volumes/<id>", "types/<id>", ...).
	Resource string `json:"resource,omitempty"`
	// Action is the action a POST .../action asks for ("os-extend", "os-reset_status", ...).
	Action string `json:"action,omitempty"`
	Status int    `json:"status"`
	// Outcome is "accepted" (2xx), "refused" (4xx: the caller's mistake or no right) or
	// "failed" (5xx).
	Outcome string `json:"outcome"`
}

// auditLog writes records as JSON lines to w, one whole line per write, safe for concurrent
// use. A nil *auditLog records nothing.
type auditLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *auditLog) write(rec AuditRecord) {
	if l == nil {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(b)
}

// An Option configures a Server.
type Option func(*Server)

// WithAudit writes the audit log to w (nil: no audit log).
func WithAudit(w io.Writer) Option {
	return func(s *Server) {
		if w != nil {
			s.audit = &auditLog{w: w}
		}
	}
}

// audited reports whether a request is recorded: it changes something, or an administrator
// makes it.
func audited(method string, caller control.Caller) bool {
	return caller.Admin || (method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions)
}

// auditResource returns the collection and id a /v3/ path (project segment removed) names.
func auditResource(path string) string {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(path, "/v3/"), "/"), "/")
	if len(parts) >= 2 && parts[1] != "action" && parts[1] != "detail" {
		return parts[0] + "/" + parts[1]
	}
	return parts[0]
}

// peekAction reads the action a POST .../action names (its body's one key), leaving the body
// for the handler. Bodies over 1 MiB are not read here.
func peekAction(r *http.Request) string {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/action") || r.Body == nil {
		return ""
	}
	const limit = 1 << 20
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if err != nil || len(buf) > limit {
		return ""
	}
	var body map[string]json.RawMessage
	if json.Unmarshal(buf, &body) != nil || len(body) != 1 {
		return ""
	}
	for k := range body {
		return k
	}
	return ""
}

type readCloser struct {
	io.Reader
	io.Closer
}

func outcome(status int) string {
	switch {
	case status >= 500:
		return "failed"
	case status >= 400:
		return "refused"
	}
	return "accepted"
}
