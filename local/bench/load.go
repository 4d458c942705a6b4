package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/basalt-storage/basalt"
)

// client calls the API as one project.
type client struct {
	base  string // http://127.0.0.1:port
	token string // user:project
	http  *http.Client
}

func newHTTPClient(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second}}
}

// do sends one request and reads the whole response (see client.send).
func (c *client) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	return c.send(ctx, method, path, "", body, want)
}

// send sends one request, at microversion mv when it is not "", and reads the whole response.
// An unexpected status is an error that quotes the start of the body.
func (c *client) send(ctx context.Context, method, path, mv string, body []byte, want int) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", c.token)
	if mv != "" {
		req.Header.Set("OpenStack-API-Version", mv)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return b, fmt.Errorf("%s %s: status %d: %.300s", method, path, resp.StatusCode, b)
	}
	return b, nil
}

func createBody(name string) []byte {
	return []byte(`{"volume": {"size": 1, "name": "` + name + `"}}`)
}

// create asks for one 1 GiB volume.
func (c *client) create(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodPost, "/v3/volumes", createBody(name), http.StatusAccepted)
	return err
}

// burstResult is the outcome of a burst of creates.
type burstResult struct {
	accepted, failed int
	firstErr         string
	start, last      time.Time // first request sent, last response received
}

// createBurst sends n creates from conc goroutines and returns when every one has answered.
func createBurst(ctx context.Context, c *client, prefix string, n, conc int) burstResult {
	var (
		next            atomic.Int64
		accepted, fails atomic.Int64
		mu              sync.Mutex
		res             burstResult
		wg              sync.WaitGroup
	)
	res.start = time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				err := c.create(ctx, fmt.Sprintf("%s-%d", prefix, i))
				now := time.Now()
				mu.Lock()
				if now.After(res.last) {
					res.last = now
				}
				if err != nil && res.firstErr == "" {
					res.firstErr = err.Error()
				}
				mu.Unlock()
				if err != nil {
					fails.Add(1)
				} else {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res.accepted, res.failed = int(accepted.Load()), int(fails.Load())
	return res
}

// waitSettled polls (every 200 ms, up to timeout) until the project has no volume in status
// creating, and returns when it saw that.
func waitSettled(ctx context.Context, c *client, timeout time.Duration) (time.Time, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(timeout)
	for {
		b, err := c.do(ctx, http.MethodGet, "/v3/volumes?status=creating&limit=1", nil, http.StatusOK)
		if err == nil {
			var page struct {
				Volumes []json.RawMessage `json:"volumes"`
			}
			if err := json.Unmarshal(b, &page); err != nil {
				return time.Time{}, fmt.Errorf("list creating volumes: %w", err)
			}
			if len(page.Volumes) == 0 {
				return time.Now(), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-deadline:
			return time.Time{}, fmt.Errorf("volumes still creating after %s", timeout)
		case <-t.C:
		}
	}
}

// timestamp is an API timestamp (basalt.TimeLayout, UTC).
type timestamp struct{ time.Time }

func (t *timestamp) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		return nil
	}
	v, err := time.ParseInLocation(basalt.TimeLayout, s, time.UTC)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// volumeRec is what the benchmark reads of a volume.
type volumeRec struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	CreatedAt timestamp `json:"created_at"`
	UpdatedAt timestamp `json:"updated_at"`
}

// listAll reads every volume of the project, a page of 1,000 at a time (at most 100 pages).
func listAll(ctx context.Context, c *client) ([]volumeRec, error) {
	var all []volumeRec
	marker := ""
	for range 100 {
		q := url.Values{"limit": {"1000"}}
		if marker != "" {
			q.Set("marker", marker)
		}
		b, err := c.do(ctx, http.MethodGet, "/v3/volumes/detail?"+q.Encode(), nil, http.StatusOK)
		if err != nil {
			return nil, err
		}
		var page struct {
			Volumes []volumeRec `json:"volumes"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("decode volume list: %w", err)
		}
		all = append(all, page.Volumes...)
		if len(page.Volumes) < 1000 {
			return all, nil
		}
		marker = page.Volumes[len(page.Volumes)-1].ID
	}
	return all, fmt.Errorf("more than 100 pages of volumes")
}

// loopResult is the outcome of an open-loop run.
type loopResult struct {
	sent, errs, dropped int
	firstErr            string
	lat                 summary
	elapsed             time.Duration // first send to last answer
}

// openLoop starts call rate times a second for d, on schedule whether or not earlier calls
// have answered (an open loop), with at most maxInflight calls outstanding: a call due while
// that many are outstanding is not sent and counts as dropped. Latency is measured from the
// time a call was due, so a late start counts against it.
func openLoop(ctx context.Context, ratePerSec int, d time.Duration, maxInflight int, call func(ctx context.Context, i int) error) loopResult {
	n := int(float64(ratePerSec) * d.Seconds())
	interval := time.Second / time.Duration(ratePerSec)
	var (
		wg       sync.WaitGroup
		inflight atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, n)
		res      loopResult
		last     time.Time
	)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				i = n
				continue
			case <-timer.C:
			}
		}
		if inflight.Load() >= int64(maxInflight) {
			res.dropped++
			continue
		}
		inflight.Add(1)
		res.sent++
		wg.Go(func() {
			defer inflight.Add(-1)
			err := call(ctx, i)
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if now.After(last) {
				last = now
			}
			if err != nil {
				res.errs++
				if res.firstErr == "" {
					res.firstErr = err.Error()
				}
				return
			}
			lat = append(lat, now.Sub(due))
		})
	}
	wg.Wait()
	res.lat = summarize(lat)
	res.elapsed = last.Sub(start)
	return res
}
