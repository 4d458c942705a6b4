package events_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

// TestTrimStreamKeepsWhatConsumersNeed: entries every group has acknowledged go; an entry still
// pending (delivered, not acknowledged) and those after it stay, as do entries not delivered to
// some group yet; a stream without groups loses only entries older than the age limit.
func TestTrimStreamKeepsWhatConsumersNeed(t *testing.T) {
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	const s = "topic"
	var ids []string
	for i := 0; i < 6; i++ {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: s, Values: map[string]any{"n": i}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, g := range []string{"fast", "slow"} {
		if err := rdb.XGroupCreate(ctx, s, g, "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	read := func(g string, n int64) {
		t.Helper()
		if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g, Consumer: "c", Streams: []string{s, ">"}, Count: n}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	read("fast", 6)
	if err := rdb.XAck(ctx, s, "fast", ids...).Err(); err != nil {
		t.Fatal(err)
	}
	read("slow", 4)                                                                // entries 0-3 delivered to slow
	if err := rdb.XAck(ctx, s, "slow", ids[0], ids[2], ids[3]).Err(); err != nil { // 1 stays pending
		t.Fatal(err)
	}
	trim := func() int64 {
		t.Helper()
		n, err := events.TrimStream(ctx, rdb, s, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := trim(); n != 1 {
		t.Fatalf("trimmed %d, want 1 (entry 0; entry 1 is pending with slow)", n)
	}
	if err := rdb.XAck(ctx, s, "slow", ids[1]).Err(); err != nil {
		t.Fatal(err)
	}
	if n := trim(); n != 3 {
		t.Fatalf("trimmed %d, want 3 (entries 1-3; 4 and 5 are not delivered to slow yet)", n)
	}
	if left, _ := rdb.XLen(ctx, s).Result(); left != 2 {
		t.Fatalf("%d entries left, want 2", left)
	}

	// Dead letters: no groups, trimmed by age.
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "dead", ID: strconv.FormatInt(old, 10) + "-0", Values: map[string]any{"n": 0}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "dead", Values: map[string]any{"n": 1}}).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := events.TrimStream(ctx, rdb, "dead", time.Hour, time.Now()); err != nil || n != 1 {
		t.Fatalf("dead letters trimmed %d (%v), want the one older than an hour", n, err)
	}
	if n, err := events.TrimStream(ctx, rdb, "missing", time.Hour, time.Now()); err != nil || n != 0 {
		t.Fatalf("a missing stream: %d, %v", n, err)
	}
}
