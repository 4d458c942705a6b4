package results_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

type topicPub struct {
	mu     sync.Mutex
	sent   map[string]int    // op id → times published
	topics map[string]string // op id → the topic it was last published to
	fail   bool
}

func (p *topicPub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return context.DeadlineExceeded
	}
	if _, ok := v.(json.RawMessage); !ok {
		return nil
	}
	p.sent[opID]++
	if p.topics == nil {
		p.topics = map[string]string{}
	}
	p.topics[opID] = topic
	return nil
}

func (p *topicPub) times(opID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[opID]
}

// TestRelaySendsWhatWasNotSent: a command written with its state change but never published
// (its writer died, or the bus refused it) is sent by the relay once; a sent one, or one whose
// operation ended, is not.
func TestRelaySendsWhatWasNotSent(t *testing.T) {
	st := store.New(redistest.Start(t).Client(), nil)
	pub := &topicPub{sent: map[string]int{}}
	f := results.New(results.Config{RelayDelay: time.Millisecond}, st, pub, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	put := func(id string) *basalt.Operation {
		now := st.Now()
		cmd, _ := json.Marshal(events.Command{OpID: id, Kind: events.KindDeleteVolume, VolumeID: "v-" + id})
		op := &basalt.Operation{ID: id, Kind: events.KindDeleteVolume, State: basalt.OpPending, Deadline: now.Add(time.Minute),
			CreatedAt: now, UpdatedAt: now, Topic: events.BackendTopic("h@b"), Command: cmd, Send: true}
		if err := st.PutOp(ctx, op); err != nil {
			t.Fatal(err)
		}
		return op
	}
	put("op-lost")
	// A record written before host topics names its backend's old topic: it goes to the host's.
	legacy := put("op-legacy")
	legacy.Topic = events.LegacyBackendTopic("h@b")
	if err := st.PutOp(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	put("op-sent")
	if err := st.MarkSent(ctx, "op-sent"); err != nil {
		t.Fatal(err)
	}
	put("op-ended")
	if err := st.FailOp(ctx, "op-ended", "ended"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	for i := 0; i < 2; i++ {
		if err := f.Relay(ctx); err != nil {
			t.Fatalf("Relay: %v", err)
		}
	}
	if n := pub.times("op-lost"); n != 1 {
		t.Errorf("the unsent command was published %d times, want once", n)
	}
	if n, topic := pub.times("op-legacy"), pub.topics["op-legacy"]; n != 1 || topic != events.HostTopic("h") {
		t.Errorf("a command stored for a legacy backend topic was published %d times to %q, want once to %q",
			n, topic, events.HostTopic("h"))
	}
	if n := pub.times("op-sent") + pub.times("op-ended"); n != 0 {
		t.Errorf("a sent or ended operation's command was published %d times", n)
	}
	if left, _ := st.Unsent(ctx, st.Now()); len(left) != 0 {
		t.Errorf("outbox after the relay = %v, want empty", left)
	}
	// While the bus refuses, the command stays in the outbox for the next round.
	put("op-later")
	time.Sleep(5 * time.Millisecond)
	pub.fail = true
	if err := f.Relay(ctx); err == nil {
		t.Error("Relay with the bus down = nil, want its error")
	}
	pub.fail = false
	if err := f.Relay(ctx); err != nil || pub.times("op-later") != 1 {
		t.Errorf("Relay after the bus came back = %v, sent %d times; want once", err, pub.times("op-later"))
	}
}
