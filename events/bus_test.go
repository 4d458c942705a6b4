package events_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

// TestUndecodableEntriesAreDeadLettered writes stream entries that are not Watermill messages
// between two good ones: the bad entries go to the dead-letter stream with their raw fields,
// nothing stays pending, and the consumer goes on to the good message after them.
func TestUndecodableEntriesAreDeadLettered(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	bus, err := events.NewBus(events.BusConfig{Redis: events.Single(rs.Options())}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	const topic = "basalt.test"

	var mu sync.Mutex
	var handled []string
	router, err := bus.Router()
	if err != nil {
		t.Fatal(err)
	}
	sub, err := bus.Subscriber("g", "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close() // after the router stopped: one stopped by its context leaves it open
	router.AddConsumerHandler("h", topic, sub, func(msg *message.Message) error {
		var v struct{ N int }
		if err := events.Decode(msg, &v); err != nil {
			return err
		}
		mu.Lock()
		handled = append(handled, msg.Metadata.Get(events.MetaOpID))
		mu.Unlock()
		return nil
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router.Run = %v", err)
		}
	}()
	<-router.Running()

	if err := bus.Publish(topic, "op-1", "req-1", map[string]int{"N": 1}); err != nil {
		t.Fatal(err)
	}
	bad := []map[string]any{
		{"foo": "bar"}, // no message UUID
		{"_watermill_message_uuid": "u-2", "metadata": "garbage", "payload": `{"N":2}`},
	}
	for _, v := range bad {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Publish(topic, "op-3", "req-3", map[string]int{"N": 3}); err != nil {
		t.Fatal(err)
	}

	var dl []events.DeadLetter
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		dl, err = events.ListDeadLetters(ctx, rdb, 10)
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 && len(dl) == len(bad) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %v and dead letters %+v; want op-1, op-3 handled and %d dead letters", handled, dl, len(bad))
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	if strings.Join(handled, ",") != "op-1,op-3" {
		t.Errorf("handled %v, want op-1,op-3", handled)
	}
	mu.Unlock()
	for i, d := range dl {
		var raw map[string]string
		if err := json.Unmarshal([]byte(d.Payload), &raw); err != nil {
			t.Errorf("dead letter %d payload %q is not the entry's fields: %v", i, d.Payload, err)
		}
		for k, v := range bad[i] {
			if raw[k] != v {
				t.Errorf("dead letter %d field %s = %q, want %q", i, k, raw[k], v)
			}
		}
		if d.Topic != topic || !strings.Contains(d.Reason, "undecodable") || d.Meta[events.MetaEnvelopeError] == "" {
			t.Errorf("dead letter %d = %+v; want topic %s, an undecodable reason and %s", i, d, topic, events.MetaEnvelopeError)
		}
	}
	// Acknowledged once dead-lettered: nothing stays pending.
	deadline = time.Now().Add(5 * time.Second)
	for {
		p, err := rdb.XPending(ctx, topic, "g").Result()
		if err != nil {
			t.Fatal(err)
		}
		if p.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("XPENDING %s g = %+v, want nothing pending", topic, p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
