package events_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"go.uber.org/goleak"
)

// TestPublishContextCarriesTheCallersContext: a message published in a context that has ended
// is not written.
func TestPublishContextCarriesTheCallersContext(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	bus, err := events.NewBus(events.BusConfig{Redis: events.Single(rs.Options())}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	const topic = "basalt.test.ctx"
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := bus.PublishContext(ended, topic, "op-1", "req-1", map[string]int{"N": 1}); err == nil {
		t.Error("PublishContext in an ended context = nil, want an error")
	}
	if err := bus.PublishContext(context.Background(), topic, "op-2", "req-2", map[string]int{"N": 2}); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.XLen(context.Background(), topic).Result(); err != nil || n != 1 {
		t.Errorf("stream length = %d, %v; want 1: only the message of the live context", n, err)
	}
}

// lockedBuffer is a log destination safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunRouterStopsWithItsContext: a handler at work on a message sees the message's context
// end with the router's; RunRouter then returns at once, its subscribers are closed (no Redis
// connection of theirs stays open), no goroutine is left and nothing is logged as an error.
// A router whose context ended before it ran returns at once too, not after its close timeout.
func TestRunRouterStopsWithItsContext(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	rs := redistest.Start(t)
	rdb := rs.Client()
	bg := context.Background()
	clients := func() int {
		list, err := rdb.ClientList(bg).Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(strings.Split(strings.TrimSpace(list), "\n"))
	}
	baseline := clients()
	var logs lockedBuffer
	bus, err := events.NewBus(events.BusConfig{Redis: events.Single(rs.Options())},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	const topic = "basalt.test.run"
	router, err := bus.Router()
	if err != nil {
		t.Fatal(err)
	}
	sub, err := bus.Subscriber("g", "c1")
	if err != nil {
		t.Fatal(err)
	}
	working, stopped := make(chan struct{}), make(chan struct{})
	router.AddConsumerHandler("h", topic, sub, func(msg *message.Message) error {
		close(working)
		<-msg.Context().Done()
		close(stopped)
		return nil
	})
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- events.RunRouter(ctx, router, sub) }()
	if err := bus.Publish(topic, "op-1", "req-1", map[string]int{"N": 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-working:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never got the message")
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the message's context did not end with the router's")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunRouter = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunRouter did not return after its context ended")
	}

	// A router whose context ended before it ran.
	router2, err := bus.Router()
	if err != nil {
		t.Fatal(err)
	}
	sub2, err := bus.Subscriber("g", "c2")
	if err != nil {
		t.Fatal(err)
	}
	router2.AddConsumerHandler("h2", topic, sub2, func(*message.Message) error { return nil })
	start := time.Now()
	if err := events.RunRouter(ctx, router2, sub2); err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("RunRouter in an ended context = %v after %v; want nil at once", err, time.Since(start))
	}

	bus.Close()
	deadline := time.Now().Add(5 * time.Second)
	for clients() > baseline {
		if time.Now().After(deadline) {
			t.Fatalf("%d Redis connections open after the routers and the bus stopped, want %d", clients(), baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
	goleak.VerifyNone(t, ignore)
	if l := logs.String(); l != "" {
		t.Errorf("routers that stopped with their context logged:\n%s", l)
	}
}
