package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/basalt-storage/basalt/functions/control"
)

// maxIdempotentBody is the largest request body the idempotency middleware reads to fingerprint
// it; it equals huma's body limit, so a larger body would be refused anyway.
const maxIdempotentBody = 1 << 20

// replayedHeaders are the response headers saved with an idempotent response and replayed.
var replayedHeaders = []string{"Content-Type", "OpenStack-API-Version", "Retry-After", "Location", "Etag"}

// idempotent makes mutating requests (POST, PUT, PATCH, DELETE) that carry an Idempotency-Key
// safe to retry. Keys are scoped to the caller's project. The first request with a key runs;
// its response (status, body and replayedHeaders) is saved, unless the status is 5xx, in which
// case the key is released so a retry runs again. A retry with the same key and the same
// request (method, path with query, body digest) gets the saved response with
// Idempotent-Replayed: true and does no work; the same key with a different request is a 409,
// and so is a retry while the first request still runs. It must run after the caller is known.
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" || !mutating(r.Method) || control.CallerFrom(r.Context()).ProjectID == "" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxIdempotentBody+1))
		if err != nil {
			writeFault(w, http.StatusBadRequest, "Malformed request body: "+err.Error())
			return
		}
		if len(body) > maxIdempotentBody {
			writeFault(w, http.StatusRequestEntityTooLarge, "Request is too large: the body exceeds 1048576 bytes.")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ctx := r.Context()
		claim, saved, err := s.plane.ClaimIdempotencyKey(ctx, key, fingerprint(r, body))
		if err != nil {
			writeError(w, err)
			return
		}
		if saved != nil {
			h := w.Header()
			for k, v := range saved.Header {
				h.Set(k, v)
			}
			h.Set("Idempotent-Replayed", "true")
			h.Set("Content-Length", strconv.Itoa(len(saved.Body)))
			w.WriteHeader(saved.Status)
			_, _ = w.Write(saved.Body)
			return
		}
		// The claim outlives a client that hangs up: the work is done either way.
		bg := context.WithoutCancel(ctx)
		rec := &capture{ResponseWriter: w}
		done := false
		defer func() {
			if !done { // 5xx, or the handler panicked
				if err := s.plane.ReleaseIdempotencyKey(bg, claim); err != nil {
					s.logger.Warn("release idempotency key", "err", err)
				}
			}
		}()
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		if status >= 500 || status == http.StatusConflict {
			// Not an answer to keep: a retry may succeed (a 409 here is a transient conflict).
			return
		}
		saveHeader := map[string]string{}
		for _, k := range replayedHeaders {
			if v := rec.Header().Get(k); v != "" {
				saveHeader[k] = v
			}
		}
		if err := s.plane.CompleteIdempotencyKey(bg, claim, control.SavedResponse{Status: status,
			Header: saveHeader, Body: rec.body.Bytes()}); err != nil {
			s.logger.Warn("save idempotent response", "err", err)
			return // released by the deferred call, so a retry runs again
		}
		done = true
	})
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// fingerprint identifies what a request asks: its method, path and query, and body digest.
func fingerprint(r *http.Request, body []byte) string {
	sum := sha256.Sum256(body)
	return r.Method + " " + r.URL.Path + "?" + r.URL.RawQuery + " " + hex.EncodeToString(sum[:])
}

// writeError writes err as its Cinder fault.
func writeError(w http.ResponseWriter, err error) {
	var f *Fault
	if errors.As(fault(err), &f) {
		writeFault(w, f.status, f.Message)
	}
}

// capture passes a response through and keeps a copy of its status and body.
type capture struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *capture) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *capture) Unwrap() http.ResponseWriter { return c.ResponseWriter }
