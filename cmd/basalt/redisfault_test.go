package main

// Bounded Redis trouble: a frozen Redis gets quick 503s on every route, a client that stalls
// in its request is disconnected, and a stream entry that is not a Watermill message is
// dead-lettered instead of stopping its consumer.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// unavailableBound is how soon a request must answer while Redis is frozen: the behaviour asked
// for is within 2s; the bound leaves room for a loaded test machine.
const unavailableBound = 4 * time.Second

// timedRequest sends one request and reports its status, Retry-After and duration. It does not
// fail the test: callers judge the answer.
func (s *stack) timedRequest(method, path, body string, hdr ...string) (status int, retryAfter string, d time.Duration, err error) {
	start := time.Now()
	r, err := s.tryRequest(method, path, body, append([]string{mv, "volume 3.54"}, hdr...)...)
	return r.status, r.header.Get("Retry-After"), time.Since(start), err
}

// TestE2ERedisFaultFrozen freezes redis-server (SIGSTOP) under a running stack: reads and
// writes, on every route of the OpenAPI document, answer within the bound and never with a
// 500; the ones that need Redis answer 503 with Retry-After. After the thaw everything works
// again. Before that, a synchronous call that outlasts the Redis and read timeouts is not cut.
func TestE2ERedisFaultFrozen(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_CALL_TIMEOUT=10s", "BASALT_READ_TIMEOUT=1s"}})
	b := fileBackend("b1")
	b.Delay = agents.Duration(1500 * time.Millisecond) // every driver call, the export too
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{b}})
	vid := s.availableVolume("admin:admin", `{"volume":{"size":1}}`)

	// A synchronous call waits for the agent longer than BASALT_REDIS_TIMEOUT (500ms) and
	// BASALT_READ_TIMEOUT: only Redis calls have the short deadline.
	r := s.do("admin:admin", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"inst-1"}}`, vid), mv, "volume 3.54")
	if r.status != 200 {
		t.Fatalf("create attachment = %d %s", r.status, r.raw)
	}
	aid := r.body["attachment"].(map[string]any)["id"].(string)
	start := time.Now()
	r = s.do("admin:admin", "PUT", "/v3/attachments/"+aid, `{"attachment":{"connector":{"host":"compute-1","initiator":"iqn.x"}}}`, mv, "volume 3.54")
	if d := time.Since(start); r.status != 200 || !strings.Contains(r.raw, "connection_info") || d < 1500*time.Millisecond {
		t.Fatalf("update attachment with a 1.5s export = %d after %v: %s; want 200 with connection_info after the export", r.status, d, r.raw)
	}

	routes := openAPIRoutes(t, s)
	s.redis.Freeze()
	frozen := true
	defer func() {
		if frozen {
			s.redis.Thaw()
		}
	}()

	// Requests that must reach Redis: each answers 503 with Retry-After, quickly.
	must := []struct{ method, path, body, key string }{
		{"GET", "/v3/volumes/detail", "", ""},
		{"GET", "/v3/volumes/" + vid, "", ""},
		{"GET", "/v3/admin/volumes", "", ""},
		{"GET", "/v3/types", "", ""},
		{"GET", "/v3/os-services", "", ""},
		{"GET", "/v3/attachments/" + aid, "", ""},
		{"POST", "/v3/volumes", `{"volume":{"size":1}}`, ""},
		{"POST", "/v3/volumes", `{"volume":{"size":1}}`, "frozen-create-1"},
		{"POST", "/v3/volumes/" + vid + "/action", `{"os-extend":{"new_size":2}}`, ""},
		{"PUT", "/v3/volumes/" + vid, `{"volume":{"name":"x"}}`, ""},
		{"PUT", "/v3/attachments/" + aid, `{"attachment":{"connector":{"host":"compute-2"}}}`, ""},
		{"DELETE", "/v3/volumes/" + vid, "", ""},
	}
	for _, m := range must {
		var hdr []string
		if m.key != "" {
			hdr = []string{"Idempotency-Key", m.key}
		}
		status, ra, d, err := s.timedRequest(m.method, m.path, m.body, hdr...)
		if err != nil || status != http.StatusServiceUnavailable || ra == "" || d > unavailableBound {
			t.Errorf("%s %s (Idempotency-Key %q) with Redis frozen = %d, Retry-After %q, %v after %v; want 503 with Retry-After within %v",
				m.method, m.path, m.key, status, ra, err, d, unavailableBound)
		}
	}

	// Every route, at once: none waits past the bound, none answers 500, every 503 says when
	// to retry.
	type answer struct {
		route      string
		status     int
		retryAfter string
		d          time.Duration
		err        error
	}
	answers := make([]answer, len(routes))
	var wg sync.WaitGroup
	for i, rt := range routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			method, path, _ := strings.Cut(rt, " ")
			body := ""
			if method == "POST" || method == "PUT" || method == "PATCH" {
				body = "{}"
			}
			a := answer{route: rt}
			a.status, a.retryAfter, a.d, a.err = s.timedRequest(method, path, body)
			answers[i] = a
		}()
	}
	wg.Wait()
	unavailable := 0
	for _, a := range answers {
		switch {
		case a.err != nil || a.d > unavailableBound:
			t.Errorf("%s with Redis frozen: %d, %v after %v; want an answer within %v", a.route, a.status, a.err, a.d, unavailableBound)
		case a.status >= 500 && (a.status != http.StatusServiceUnavailable || a.retryAfter == ""):
			t.Errorf("%s with Redis frozen = %d, Retry-After %q; want a 503 with Retry-After", a.route, a.status, a.retryAfter)
		case a.status == http.StatusServiceUnavailable:
			unavailable++
		}
	}
	if unavailable < len(routes)/3 {
		t.Errorf("%d of %d routes answered 503 with Redis frozen; the rest did not reach Redis?", unavailable, len(routes))
	}
	t.Logf("with Redis frozen, %d of %d routes answered 503", unavailable, len(routes))

	s.redis.Thaw()
	frozen = false
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/os-services?binary=cinder-volume", "")
		svcs, _ := r.body["services"].([]any)
		return r.status == 200 && len(svcs) == 1 && svcs[0].(map[string]any)["state"] == "up", r.raw
	}, "the API reads again and the agent is up")
	if v := s.volume(vid); v["status"] != "in-use" && v["status"] != "attaching" {
		t.Errorf("volume after the thaw = %v, want it as the attachment left it", v["status"])
	}
	id := s.createVolume("admin:admin", `{"volume":{"size":1}}`)
	if v := s.waitFinal(id, 30*time.Second); v["status"] != "available" {
		t.Errorf("volume created after the thaw = %v (%v), want available", v["status"], v["status_reason"])
	}
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// openAPIRoutes lists every operation of the API's OpenAPI document as "METHOD path", with
// each path parameter replaced by an id that names nothing.
func openAPIRoutes(t *testing.T, s *stack) []string {
	t.Helper()
	res, err := http.Get(s.base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatalf("decode /openapi.json: %v", err)
	}
	var routes []string
	for path, ops := range doc.Paths {
		path = pathParam.ReplaceAllString(path, "00000000-0000-4000-8000-000000000000")
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete":
				routes = append(routes, strings.ToUpper(method)+" "+path)
			}
		}
	}
	sort.Strings(routes)
	if len(routes) < 20 {
		t.Fatalf("the OpenAPI document lists %d operations: %v", len(routes), routes)
	}
	return routes
}

// TestE2ERedisFaultSlowClient sends requests that stall in their headers or body: the API
// disconnects each after BASALT_READ_TIMEOUT instead of holding the connection.
func TestE2ERedisFaultSlowClient(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_READ_TIMEOUT=1s"}})
	addr := strings.TrimPrefix(s.base, "http://")
	head := "POST /v3/volumes HTTP/1.1\r\nHost: " + addr + "\r\nX-Auth-Token: admin:admin\r\n" +
		"Content-Type: application/json\r\nContent-Length: 100\r\n"
	cases := []struct{ name, sent string }{
		{"part of the body", head + "\r\n" + `{"volume":`},
		{"part of the body, with an Idempotency-Key", head + "Idempotency-Key: slow-1\r\n\r\n" + `{"volume":`},
		{"part of the headers", "POST /v3/volumes HTTP/1.1\r\nHost: " + addr + "\r\n"},
	}
	const bound = 10 * time.Second
	for _, c := range cases {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := io.WriteString(conn, c.sent); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(bound))
		got, err := io.ReadAll(conn) // returns when the server closes the connection
		d := time.Since(start)
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a client that sent %s was still connected after %v", c.name, bound)
			continue
		}
		status, _, _ := strings.Cut(string(got), "\r\n")
		t.Logf("a client that sent %s: disconnected after %v (%q, %v)", c.name, d, status, err)
	}
	// The server still serves.
	if r := s.do("admin:admin", "GET", "/v3/volumes", ""); r.status != 200 {
		t.Errorf("GET /v3/volumes after slow clients = %d %s", r.status, r.raw)
	}
}

// TestE2ERedisFaultCorruptEntry writes entries that are not Watermill messages to a backend's
// stream: they reach the dead-letter stream with their raw fields, nothing stays pending, and
// the agent goes on consuming.
func TestE2ERedisFaultCorruptEntry(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{fileBackend("b1")}})
	topic := events.BackendTopic("h1@b1")
	rdb := s.redis.Client()
	for _, v := range []map[string]any{
		{"garbage": "no envelope"},
		{"_watermill_message_uuid": "corrupt-2", "metadata": "not msgpack", "payload": "{}"},
	} {
		if err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: topic, Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	s.eventually(20*time.Second, func() (bool, string) {
		r := s.do("admin:admin", "GET", "/v3/os-deadletters", "")
		dl, _ := r.body["dead_letters"].([]any)
		if len(dl) != 2 {
			return false, r.raw
		}
		for _, d := range dl {
			m := d.(map[string]any)
			if m["topic"] != topic || !strings.Contains(m["reason"].(string), "undecodable") {
				return false, r.raw
			}
		}
		return strings.Contains(r.raw, "no envelope") && strings.Contains(r.raw, "not msgpack"), r.raw
	}, "both corrupt entries are listed with their topic, reason and fields")
	s.eventually(10*time.Second, func() (bool, string) {
		p, err := rdb.XPending(t.Context(), topic, "agents").Result()
		if err != nil {
			return false, err.Error()
		}
		return p.Count == 0, fmt.Sprintf("%+v", p)
	}, "nothing is pending on "+topic)
	id := s.createVolume("admin:admin", `{"volume":{"size":1}}`)
	if v := s.waitFinal(id, 20*time.Second); v["status"] != "available" {
		t.Errorf("volume after corrupt entries = %v (%v), want available", v["status"], v["status_reason"])
	}
}
