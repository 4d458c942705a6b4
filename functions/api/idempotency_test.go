package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/functions/control"
)

// hookPub counts published messages and runs hook (when set) before each.
type hookPub struct {
	mu   sync.Mutex
	n    int
	hook func() error
}

func (p *hookPub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		if err := hook(); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	return nil
}

func (p *hookPub) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *hookPub) setHook(h func() error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = h
}

func volumeCount(t *testing.T, r resp) int {
	t.Helper()
	vols, ok := r.body["volumes"].([]any)
	if !ok {
		t.Fatalf("listing has no volumes: %d %s", r.status, r.raw)
	}
	return len(vols)
}

const createBody = `{"volume":{"size":1,"name":"idem"}}`

func TestIdempotentCreateRetry(t *testing.T) {
	pub := &hookPub{}
	srv, _ := newPlaneServer(t, control.Config{}, pub)
	first := do(t, srv, "alice:p1", "POST", "/v3/p1/volumes", createBody, "Idempotency-Key", "k1", "OpenStack-API-Version", "volume 3.3")
	if first.status != http.StatusAccepted {
		t.Fatalf("create = %d %s", first.status, first.raw)
	}
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first response has Idempotent-Replayed")
	}
	// The retry may drop the project segment and the microversion: same request, same answer.
	for range 3 {
		retry := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "k1")
		if retry.status != first.status || retry.raw != first.raw {
			t.Errorf("retry = %d %s, want %d %s", retry.status, retry.raw, first.status, first.raw)
		}
		if retry.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry lacks Idempotent-Replayed: true")
		}
		if got := retry.header.Get("OpenStack-API-Version"); got != "volume 3.3" {
			t.Errorf("retry OpenStack-API-Version = %q, want the original volume 3.3", got)
		}
		if ct := retry.header.Get("Content-Type"); ct != first.header.Get("Content-Type") {
			t.Errorf("retry Content-Type = %q, want %q", ct, first.header.Get("Content-Type"))
		}
	}
	if n := volumeCount(t, do(t, srv, "alice:p1", "GET", "/v3/volumes", "")); n != 1 {
		t.Errorf("%d volumes after retries, want 1", n)
	}
	if pub.count() != 1 {
		t.Errorf("%d commands published, want 1", pub.count())
	}

	// Same key, different request: 409.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v3/volumes", `{"volume":{"size":2,"name":"idem"}}`},
		{"POST", "/v3/volumes?x=1", createBody},
		{"PUT", "/v3/volumes/" + first.body["volume"].(map[string]any)["id"].(string), `{"volume":{"name":"n"}}`},
	} {
		r := do(t, srv, "alice:p1", c.method, c.path, c.body, "Idempotency-Key", "k1")
		if name, msg := fault(r); r.status != 409 || name != "conflictingRequest" || !strings.Contains(msg, "different request") {
			t.Errorf("%s %s with a used key = %d %s %q, want 409 conflictingRequest about a different request", c.method, c.path, r.status, name, msg)
		}
	}

	// Keys are per project: another project's k1 is a new request.
	if r := do(t, srv, "bob:p2", "POST", "/v3/volumes", createBody, "Idempotency-Key", "k1"); r.status != 202 || r.raw == first.raw {
		t.Errorf("another project's create with the same key = %d %s, want a new 202", r.status, r.raw)
	}

	// Requests without a key, and reads with one, are untouched.
	if r := do(t, srv, "alice:p1", "GET", "/v3/volumes", "", "Idempotency-Key", "k1"); r.status != 200 || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("GET with a used key = %d replayed %q, want an ordinary 200", r.status, r.header.Get("Idempotent-Replayed"))
	}
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody); r.status != 202 {
		t.Errorf("create without a key = %d", r.status)
	}

	long := strings.Repeat("k", 256)
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", long); r.status != 400 {
		t.Errorf("create with a 256-character key = %d %s, want 400", r.status, r.raw)
	}
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", long[:255]); r.status != 202 {
		t.Errorf("create with a 255-character key = %d %s, want 202", r.status, r.raw)
	}
}

func TestIdempotentClientErrorIsKept(t *testing.T) {
	pub := &hookPub{}
	srv, _ := newPlaneServer(t, control.Config{}, pub)
	bad := `{"volume":{"size":0}}`
	first := do(t, srv, "alice:p1", "POST", "/v3/volumes", bad, "Idempotency-Key", "k")
	if first.status != 400 {
		t.Fatalf("create size 0 = %d", first.status)
	}
	retry := do(t, srv, "alice:p1", "POST", "/v3/volumes", bad, "Idempotency-Key", "k")
	if retry.status != 400 || retry.raw != first.raw || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry of a 400 = %d %s replayed %q, want the saved 400", retry.status, retry.raw, retry.header.Get("Idempotent-Replayed"))
	}
}

// TestIdempotentAnswerWhileTheBusIsDownIsKept: a create whose command the bus refuses is still
// accepted (the command waits in the outbox for the relay), so its 202 is kept for retries.
func TestIdempotentAnswerWhileTheBusIsDownIsKept(t *testing.T) {
	pub := &hookPub{}
	srv, _ := newPlaneServer(t, control.Config{}, pub)
	pub.setHook(func() error { return errors.New("bus down") })
	// The bus refusing the command does not fail the request: the command waits in the
	// outbox for the relay, so the answer is 202 and is kept for retries.
	r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "k2")
	if r.status != 202 {
		t.Fatalf("create with the bus down = %d %s, want 202 (the relay sends the command)", r.status, r.raw)
	}
	pub.setHook(nil)
	if again := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "k2"); again.status != 202 || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry = %d replayed %q, want the kept 202", again.status, again.header.Get("Idempotent-Replayed"))
	}
}

func TestIdempotentInProgress(t *testing.T) {
	pub := &hookPub{}
	srv, _ := newPlaneServer(t, control.Config{}, pub)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	pub.setHook(func() error {
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	firstDone := make(chan resp, 1)
	go func() {
		firstDone <- do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "slow")
	}()
	<-entered
	r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "slow")
	if name, msg := fault(r); r.status != 409 || name != "conflictingRequest" || !strings.Contains(msg, "in progress") {
		t.Errorf("retry while the first runs = %d %s %q, want 409 conflictingRequest saying it is in progress", r.status, name, msg)
	}
	close(release)
	first := <-firstDone
	if first.status != 202 {
		t.Fatalf("first create = %d %s", first.status, first.raw)
	}
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "slow"); r.raw != first.raw {
		t.Errorf("retry after the first ended = %d %s, want %s", r.status, r.raw, first.raw)
	}
}

func TestIdempotentConcurrentDuplicates(t *testing.T) {
	pub := &hookPub{}
	srv, _ := newPlaneServer(t, control.Config{}, pub)
	const n = 20
	out := make([]resp, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "dup")
		}()
	}
	wg.Wait()
	var body string
	for _, r := range out {
		switch r.status {
		case 202:
			if body == "" {
				body = r.raw
			} else if r.raw != body {
				t.Errorf("two different 202 bodies for one key:\n%s\n%s", body, r.raw)
			}
		case 409:
		default:
			t.Errorf("concurrent duplicate = %d %s, want 202 or 409", r.status, r.raw)
		}
	}
	if n := volumeCount(t, do(t, srv, "alice:p1", "GET", "/v3/volumes", "")); n != 1 {
		t.Errorf("%d volumes after %d concurrent duplicates, want 1", n, len(out))
	}
	if pub.count() != 1 {
		t.Errorf("%d commands published, want 1", pub.count())
	}
}

func TestIdempotencyKeyExpires(t *testing.T) {
	pub := &hookPub{}
	srv, _ := newPlaneServer(t, control.Config{IdempotencyTTL: 300 * time.Millisecond}, pub)
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", createBody, "Idempotency-Key", "short"); r.status != 202 {
		t.Fatalf("create = %d %s", r.status, r.raw)
	}
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":2}}`, "Idempotency-Key", "short"); r.status != 409 {
		t.Errorf("reuse before expiry = %d, want 409", r.status)
	}
	time.Sleep(600 * time.Millisecond)
	if r := do(t, srv, "alice:p1", "POST", "/v3/volumes", `{"volume":{"size":2}}`, "Idempotency-Key", "short"); r.status != 202 || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("reuse after expiry = %d %s, want a fresh 202", r.status, r.raw)
	}
	if n := volumeCount(t, do(t, srv, "alice:p1", "GET", "/v3/volumes", "")); n != 2 {
		t.Errorf("%d volumes, want 2", n)
	}
}
