package agents_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

const ownedInterval = 50 * time.Millisecond

// newOwnedAgent makes an agent of host h with one fake backend b that heartbeats every
// ownedInterval, and its bus, both connecting with opts. The caller closes both.
func newOwnedAgent(t *testing.T, o *redis.Options) (*agents.Agent, *events.Bus) {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	opts := events.Single(o)
	bus, err := events.NewBus(events.BusConfig{Redis: opts}, logger)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agents.New(agents.Config{Host: "h", DataDir: t.TempDir(), ReportInterval: agents.Duration(ownedInterval),
		CapabilityInterval: agents.Duration(ownedInterval), StopGrace: agents.Duration(time.Second),
		Backends: []agents.BackendConfig{{Name: "b", Driver: "fake"}}}, bus, opts, logger)
	if err != nil {
		bus.Close()
		t.Fatal(err)
	}
	return a, bus
}

// runFor runs a.Run(ctx) and returns its error, failing the test if Run has not returned
// within limit.
func runFor(t *testing.T, a *agents.Agent, ctx context.Context, limit time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("Run has not returned after %s", limit)
		return nil
	}
}

// heartbeatOf returns the updated_at of h@b's heartbeat, "" when there is none.
func heartbeatOf(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	v, err := rdb.HGet(context.Background(), events.ServiceKey(basalt.BinaryVolume, "h@b"), "updated_at").Result()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return v
}

// assertNoHeartbeatAfterRun fails the test if h@b's heartbeat changes over several heartbeat
// intervals: once Run has returned, the service must go down, not keep a zombie heartbeat.
func assertNoHeartbeatAfterRun(t *testing.T, rdb *redis.Client) {
	t.Helper()
	before := heartbeatOf(t, rdb)
	time.Sleep(6 * ownedInterval)
	if after := heartbeatOf(t, rdb); after != before {
		t.Errorf("the heartbeat of h@b went from %q to %q after Run returned: something Run started still runs", before, after)
	}
}

// clients returns the connections Redis has open, this test's own included.
func clients(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(list), "\n")
}

// TestStoppedAgentLeavesNothing runs an agent, stops it, and checks that its heartbeat is no
// longer refreshed, that once closed it holds no Redis connection (presence, journal,
// subscribers, publisher) and that no goroutine of it is left.
func TestStoppedAgentLeavesNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	rs := redistest.Start(t)
	rdb := rs.Client()
	baseline := len(clients(t, rdb))
	a, bus := newOwnedAgent(t, rs.Options())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for heartbeatOf(t, rdb) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the agent never heartbeated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assertNoHeartbeatAfterRun(t, rdb)

	a.Close()
	bus.Close()
	deadline = time.Now().Add(5 * time.Second)
	for {
		open := clients(t, rdb)
		if len(open) <= baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Redis connections open after the agent and its bus were closed, want %d:\n%s",
				len(open), baseline, strings.Join(open, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	goleak.VerifyNone(t, ignore)
}

// TestRunReturningEarlyStopsEverything: Redis refuses as the agent starts, so Run fails. Run
// must stop its heartbeats, reports and everything else it started before it returns: when
// Redis is back, nothing of the failed agent heartbeats, and no goroutine of it is left.
func TestRunReturningEarlyStopsEverything(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	rs := redistest.Start(t)
	opts := rs.Options()
	opts.MaxRetries, opts.DialerRetries = -1, 1 // fail at once while Redis is away
	a, bus := newOwnedAgent(t, opts)
	rs.Stop()

	if err := runFor(t, a, context.Background(), 20*time.Second); err == nil {
		t.Fatal("Run = nil with Redis refusing, want an error")
	}
	rs.Restart()
	rdb := rs.Client()
	assertNoHeartbeatAfterRun(t, rdb)
	if hb := heartbeatOf(t, rdb); hb != "" {
		t.Errorf("h@b heartbeated (updated_at %s) after its Run failed", hb)
	}

	a.Close()
	bus.Close()
	goleak.VerifyNone(t, ignore)
}

// TestRunWithEndedContext: a Run whose context has already ended returns at once, without an
// error, and leaves nothing running.
func TestRunWithEndedContext(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	rs := redistest.Start(t)
	a, bus := newOwnedAgent(t, rs.Options())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := runFor(t, a, ctx, 5*time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	assertNoHeartbeatAfterRun(t, rs.Client())
	a.Close()
	bus.Close()
	goleak.VerifyNone(t, ignore)
}
