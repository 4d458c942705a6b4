package events_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRenewLeases renews operation records written as the functions write them: only pending
// ones of the owner, only their deadline (byte for byte, the rest of the record untouched, even
// a command holding empty arrays and metadata named "deadline"), in the record and the pending
// index together, and a repeat changes nothing more.
func TestRenewLeases(t *testing.T) {
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	const (
		before = `{"id":"op-1","kind":"create_volume","command":{"volume":{"metadata":{"deadline":"2030-01-01T00:00:00Z"}},` +
			`"attempted":[],"snapshots":[]},"state":"pending","owner":"h@b","attempts":1,` +
			`"deadline":"2030-01-01T00:00:00Z","reason":"","created_at":"2029-12-31T23:50:00Z"}`
		after = `{"id":"op-1","kind":"create_volume","command":{"volume":{"metadata":{"deadline":"2030-01-01T00:00:00Z"}},` +
			`"attempted":[],"snapshots":[]},"state":"pending","owner":"h@b","attempts":1,` +
			`"deadline":"2031-02-03T04:05:06.789Z","reason":"","created_at":"2029-12-31T23:50:00Z"}`
	)
	put := func(id, raw string) {
		rdb.Set(ctx, events.OperationKey(id), raw, time.Hour)
		rdb.ZAdd(ctx, events.PendingOpsKey(id), redis.Z{Score: 1, Member: id})
	}
	put("op-1", before)
	put("op-other", `{"id":"op-other","state":"pending","owner":"x@b","deadline":"2030-01-01T00:00:00Z"}`)
	rdb.Set(ctx, events.OperationKey("op-done"), `{"id":"op-done","state":"done","owner":"h@b","deadline":"2030-01-01T00:00:00Z"}`, time.Hour)

	until := time.Date(2031, 2, 3, 4, 5, 6, 789e6, time.UTC)
	for i := 0; i < 2; i++ { // the second is a repeat
		got, err := events.RenewLeases(ctx, rdb, "h@b", until, "op-1", "op-other", "op-done", "op-missing")
		if err != nil || !slices.Equal(got, []string{"op-1"}) {
			t.Fatalf("RenewLeases #%d = %v, %v; want [op-1]", i, got, err)
		}
	}
	if raw, _ := rdb.Get(ctx, events.OperationKey("op-1")).Result(); raw != after {
		t.Errorf("record after RenewLeases =\n%s\nwant\n%s", raw, after)
	}
	if ttl, _ := rdb.TTL(ctx, events.OperationKey("op-1")).Result(); ttl <= 0 {
		t.Errorf("TTL after RenewLeases = %v, want the record's expiry kept", ttl)
	}
	if s, _ := rdb.ZScore(ctx, events.PendingOpsKey("op-1"), "op-1").Result(); s != float64(until.UnixMilli()) {
		t.Errorf("pending index score = %v, want %v", s, until.UnixMilli())
	}
	if s, _ := rdb.ZScore(ctx, events.PendingOpsKey("op-other"), "op-other").Result(); s != 1 {
		t.Errorf("another owner's operation was renewed: score %v", s)
	}
	if err := rdb.ZScore(ctx, events.PendingOpsKey("op-done"), "op-done").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("an ended operation was put back in the pending index (ZScore err %v)", err)
	}
	if n, _ := rdb.Exists(ctx, events.OperationKey("op-missing")).Result(); n != 0 {
		t.Errorf("a renewal created a record for an unknown operation")
	}
	if got, err := events.RenewLeases(ctx, rdb, "h@b", until); err != nil || got != nil {
		t.Errorf("RenewLeases() with no operations = %v, %v; want nothing", got, err)
	}
}
