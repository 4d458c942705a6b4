package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// idempotencyKey names the record of one idempotency key of one project. Both are hashed, so
// no project or key can collide with another's.
func idempotencyKey(project, key string) string {
	sum := sha256.Sum256([]byte(project + "\x00" + key))
	return events.PrefixOf(project) + "idem:" + hex.EncodeToString(sum[:])
}

// An IdempotencyRecord is what is kept under an idempotency key: while the first request runs,
// a claim (Done false) with its token; then that request's response.
type IdempotencyRecord struct {
	// Token identifies the request that claimed the key.
	Token string
	// Fingerprint identifies what was asked (method, path, body digest).
	Fingerprint string
	// Done is set once the response is stored.
	Done   bool
	Status int
	Header map[string]string
	Body   []byte
}

// claimScript claims a key unless it is held. KEYS: record. ARGV: token, fingerprint, claim
// TTL in ms. Returns {} when claimed, else the record's fields (HGETALL).
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fingerprint', ARGV[2], 'done', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {}
`)

// ClaimIdempotencyKey claims key of project for the request identified by token and
// fingerprint, for claimTTL (after which an unfinished claim lapses). It returns nil when the
// claim was made: the caller does the work, then calls CompleteIdempotencyKey or
// ReleaseIdempotencyKey. Otherwise it returns the record that holds the key: a claim of
// another request still running (Done false) or a stored response (Done true). Of concurrent
// claims of one key exactly one is made.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, project, key, token, fingerprint string, claimTTL time.Duration) (*IdempotencyRecord, error) {
	res, err := claimScript.Run(ctx, s.rdb, []string{idempotencyKey(project, key)}, token, fingerprint, claimTTL.Milliseconds()).Slice()
	if err != nil {
		return nil, fmt.Errorf("claim idempotency key: %w", err)
	}
	if len(res) == 0 {
		return nil, nil
	}
	h := make(map[string]string, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		k, _ := res[i].(string)
		v, _ := res[i+1].(string)
		h[k] = v
	}
	rec := &IdempotencyRecord{Token: h["token"], Fingerprint: h["fingerprint"], Done: h["done"] == "1",
		Body: []byte(h["body"])}
	rec.Status, _ = strconv.Atoi(h["status"])
	if !rec.Done && rec.Token == token {
		return nil, nil // our own claim: a repeat of a claim whose reply was lost
	}
	if hdr := h["header"]; hdr != "" {
		if err := json.Unmarshal([]byte(hdr), &rec.Header); err != nil {
			return nil, fmt.Errorf("decode idempotency record: %w", err)
		}
	}
	return rec, nil
}

// completeScript stores a response under a key, unless another request holds it. KEYS: record.
// ARGV: token, fingerprint, status, header JSON, body, TTL in ms. Returns 1 when stored.
var completeScript = redis.NewScript(`
local holder = redis.call('HGET', KEYS[1], 'token')
if holder and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fingerprint', ARGV[2], 'done', '1',
  'status', ARGV[3], 'header', ARGV[4], 'body', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
`)

// CompleteIdempotencyKey stores rec (Token, Fingerprint, Status, Header, Body) as the response
// of key for ttl. It stores nothing when another request's claim holds the key (this request's
// claim lapsed and a retry took the key over); it reports whether it stored.
func (s *Store) CompleteIdempotencyKey(ctx context.Context, project, key string, rec *IdempotencyRecord, ttl time.Duration) (bool, error) {
	hdr, err := json.Marshal(rec.Header)
	if err != nil {
		return false, err
	}
	n, err := completeScript.Run(ctx, s.rdb, []string{idempotencyKey(project, key)}, rec.Token, rec.Fingerprint,
		rec.Status, hdr, rec.Body, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("store idempotent response: %w", err)
	}
	return n == 1, nil
}

// releaseIdemScript deletes a claim held by a token. KEYS: record. ARGV: token.
var releaseIdemScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] and redis.call('HGET', KEYS[1], 'done') == '0' then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// ReleaseIdempotencyKey gives up the claim token holds on key without storing a response, so a
// retry runs the request again. It is idempotent and never removes a stored response or
// another request's claim.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, project, key, token string) error {
	if err := releaseIdemScript.Run(ctx, s.rdb, []string{idempotencyKey(project, key)}, token).Err(); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}
