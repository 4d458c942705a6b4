package process

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// TestStoppedProcessesLeaveNothing runs the API and the scheduler until their context ends:
// each returns, the scheduler's heartbeat is no longer refreshed, every Redis connection they
// opened (bus, store, presence, subscribers) is closed and no goroutine of theirs is left.
func TestStoppedProcessesLeaveNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	rs := redistest.Start(t)
	rdb := rs.Client()
	bg := context.Background()
	clients := func() []string {
		list, err := rdb.ClientList(bg).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(list), "\n")
	}
	baseline := len(clients())
	heartbeat := func() string {
		v, err := rdb.HGet(bg, events.ServiceKey(basalt.BinaryScheduler, "sched"), "updated_at").Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return v
	}

	c := Config{RedisURL: rs.URL(), Listen: "127.0.0.1:0", ReportInterval: 50 * time.Millisecond,
		ReconcileInterval: 50 * time.Millisecond, Auth: "noauth"}
	c.setDefaults()
	opts, err := c.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	sched, api := make(chan error, 1), make(chan error, 1)
	listening := make(chan string, 1)
	go func() { sched <- RunScheduler(ctx, c, opts, "sched", logger) }()
	go func() { api <- RunAPI(ctx, c, opts, logger, func(addr string) { listening <- addr }) }()
	select {
	case <-listening:
	case err := <-api:
		t.Fatalf("RunAPI = %v before it listened", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the API does not listen")
	}
	deadline := time.Now().Add(10 * time.Second)
	for heartbeat() == "" {
		if time.Now().After(deadline) {
			t.Fatal("the scheduler never heartbeated")
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	for name, done := range map[string]chan error{"RunScheduler": sched, "RunAPI": api} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s = %v, want nil", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not return after its context ended", name)
		}
	}
	before := heartbeat()
	time.Sleep(300 * time.Millisecond)
	if after := heartbeat(); after != before {
		t.Errorf("the scheduler's heartbeat went from %s to %s after RunScheduler returned", before, after)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		open := clients()
		if len(open) <= baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Redis connections open after the processes returned, want %d:\n%s",
				len(open), baseline, strings.Join(open, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	goleak.VerifyNone(t, ignore)
}
