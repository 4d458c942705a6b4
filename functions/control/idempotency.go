package control

import (
	"context"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/google/uuid"
)

// MaxIdempotencyKeyLength is the longest Idempotency-Key accepted.
const MaxIdempotencyKeyLength = 255

// idempotencyClaimTTL bounds how long the first request with a key may run before a retry is
// allowed to run it again. Mutating requests only record state and publish commands, so they
// end in well under a second; the bound only matters when a process dies mid-request.
const idempotencyClaimTTL = time.Minute

// A SavedResponse is the response kept for an idempotency key: status, the headers worth
// replaying (Content-Type, OpenStack-API-Version, ...) and the body.
type SavedResponse struct {
	Status int
	Header map[string]string
	Body   []byte
}

// An IdempotencyClaim is held by the one request that does the work for an idempotency key.
// Its holder ends it with CompleteIdempotencyKey or ReleaseIdempotencyKey.
type IdempotencyClaim struct {
	project, key, token, fingerprint string
}

// ClaimIdempotencyKey looks up key, scoped to the caller's project, for a request identified by
// fingerprint (what it asks: method, path, body digest). It returns a claim when this request
// is the first: the caller does the work and then completes or releases the claim. It returns
// the saved response when the same request was done before. Of concurrent requests with one
// key exactly one gets the claim. Errors: EINVALID (a key longer than 255 characters),
// ECONFLICT (the key was used for a different request, or its first request is still running),
// EUNAVAILABLE.
func (p *Plane) ClaimIdempotencyKey(ctx context.Context, key, fingerprint string) (*IdempotencyClaim, *SavedResponse, error) {
	if key == "" || len(key) > MaxIdempotencyKeyLength {
		return nil, nil, invalid("Invalid input received: Idempotency-Key must be 1 to %d characters, not %d.", MaxIdempotencyKeyLength, len(key))
	}
	c := &IdempotencyClaim{project: CallerFrom(ctx).ProjectID, key: key, token: uuid.NewString(), fingerprint: fingerprint}
	rec, err := p.store.ClaimIdempotencyKey(ctx, c.project, key, c.token, fingerprint, idempotencyClaimTTL)
	if err != nil {
		return nil, nil, unavailable(p.logger, "check the Idempotency-Key", err)
	}
	switch {
	case rec == nil:
		return c, nil, nil
	case rec.Fingerprint != fingerprint:
		return nil, nil, basalt.Errorf(basalt.ECONFLICT, "Idempotency-Key %q was already used for a different request (method, path or body); a retry must repeat the original request exactly, and a new request needs a new key.", key)
	case !rec.Done:
		return nil, nil, basalt.Errorf(basalt.ECONFLICT, "A request with Idempotency-Key %q is still in progress; retry after it completes.", key)
	}
	return nil, &SavedResponse{Status: rec.Status, Header: rec.Header, Body: rec.Body}, nil
}

// CompleteIdempotencyKey saves r as the response of the claim's key for the configured
// IdempotencyTTL, so retries get it without the work being done again. Errors: EUNAVAILABLE.
func (p *Plane) CompleteIdempotencyKey(ctx context.Context, c *IdempotencyClaim, r SavedResponse) error {
	rec := &store.IdempotencyRecord{Token: c.token, Fingerprint: c.fingerprint, Done: true, Status: r.Status,
		Header: r.Header, Body: r.Body}
	stored, err := p.store.CompleteIdempotencyKey(ctx, c.project, c.key, rec, p.cfg.IdempotencyTTL)
	if err != nil {
		return unavailable(p.logger, "save the response of the Idempotency-Key", err)
	}
	if !stored {
		p.logger.Warn("idempotency claim lapsed before the response was saved", "project_id", c.project,
			"request_id", CallerFrom(ctx).RequestID)
	}
	return nil
}

// ReleaseIdempotencyKey gives up the claim without saving a response (the request failed on
// the server's side), so a retry runs the request again. It is idempotent. Errors:
// EUNAVAILABLE (the claim then lapses by itself).
func (p *Plane) ReleaseIdempotencyKey(ctx context.Context, c *IdempotencyClaim) error {
	if err := p.store.ReleaseIdempotencyKey(ctx, c.project, c.key, c.token); err != nil {
		return unavailable(p.logger, "release the Idempotency-Key", err)
	}
	return nil
}
