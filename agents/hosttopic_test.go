package agents_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

// runAgentWith runs an agent of cfg on a bus of busCfg against rs until the test ends, and
// returns the bus.
func runAgentWith(t *testing.T, rs *redistest.Server, busCfg events.BusConfig, cfg agents.Config) *events.Bus {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	busCfg.Redis = events.Single(rs.Options())
	bus, err := events.NewBus(busCfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agents.New(cfg, bus, events.Single(rs.Options()), logger)
	if err != nil {
		bus.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		a.Close()
		bus.Close()
	})
	return bus
}

// createCmd is a create_volume command of operation opID on backend (host@backend).
func createCmd(opID, backend string) events.Command {
	return events.Command{OpID: opID, Kind: events.KindCreateVolume, VolumeID: "vol-" + opID, Backend: backend,
		Volume: basalt.VolumeSpec{ID: "vol-" + opID, SizeGB: 1, Pool: "pool"}}
}

// results returns the results published so far, by operation id.
func results(t *testing.T, rdb *redis.Client) map[string]events.Result {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), events.TopicResults, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]events.Result{}
	for _, m := range msgs {
		var res events.Result
		if err := json.Unmarshal([]byte(m.Values["payload"].(string)), &res); err != nil {
			t.Fatal(err)
		}
		out[res.OpID] = res
	}
	return out
}

// waitFor polls cond every 20 ms until it holds, failing the test with what after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// xreadgroupCalls returns how many XREADGROUP the server has run (INFO commandstats).
func xreadgroupCalls(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_xreadgroup:")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("commandstats line %q: %v", line, err)
				}
				return n
			}
		}
	}
	return 0 // none yet
}

// readsDuring returns how many XREADGROUP the server runs during d.
func readsDuring(t *testing.T, rdb *redis.Client, d time.Duration) int64 {
	t.Helper()
	before := xreadgroupCalls(t, rdb)
	time.Sleep(d)
	return xreadgroupCalls(t, rdb) - before
}

// waitSubscribed waits until the agent of host has subscribed to its host topic: the topic has
// the agents' group (a subscription creates it before its first read; Redis adds the consumer
// only once it is delivered something).
func waitSubscribed(t *testing.T, rdb *redis.Client, host string) {
	t.Helper()
	waitFor(t, 20*time.Second, "the agent of "+host+" never subscribed to its host topic", func() bool {
		gs, err := rdb.XInfoGroups(context.Background(), events.HostTopic(host)).Result()
		return err == nil && len(gs) == 1 && gs[0].Name == "agents"
	})
}

func TestTopicNames(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"h@b", "basalt.host.h"},
		{"h@b#pool", "basalt.host.h"},
		{"h", "basalt.host.h"},
		{"node-1.example@ceph-ssd", "basalt.host.node-1.example"},
	} {
		if got := events.BackendTopic(c.in); got != c.want {
			t.Errorf("BackendTopic(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := events.LegacyBackendTopic("h@b"); got != "basalt.volume.h@b" {
		t.Errorf("LegacyBackendTopic(h@b) = %q, want basalt.volume.h@b", got)
	}
}

// TestHostTopicRunsEveryBackendsCommands: an agent of three backends reads their commands from
// its host's one topic, with one consumer, and runs each on the backend it names. A command for
// a backend the agent does not run is journaled nowhere and reaches the dead-letter topic, while
// the others still run; a slow backend (one worker, 2 s a call) delays none of the others'.
func TestHostTopicRunsEveryBackendsCommands(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	bus := runAgentWith(t, rs, events.BusConfig{}, agents.Config{Host: "h", ReportInterval: agents.Duration(100 * time.Millisecond),
		StopGrace: agents.Duration(200 * time.Millisecond), Backends: []agents.BackendConfig{
			{Name: "b1", Driver: "fake", Workers: 1, Delay: agents.Duration(2 * time.Second)},
			{Name: "b2", Driver: "fake"},
			{Name: "b3", Driver: "fake"},
		}})
	// The unknown backend's command goes first: the others wait behind it only for its retries.
	for _, c := range []events.Command{createCmd("op-nope", "h@nope"), createCmd("op-b1-a", "h@b1"),
		createCmd("op-b1-b", "h@b1"), createCmd("op-b2", "h@b2"), createCmd("op-b3", "h@b3")} {
		if err := bus.Publish(events.BackendTopic(c.Backend), c.OpID, "req-"+c.OpID, c); err != nil {
			t.Fatal(err)
		}
	}
	var got map[string]events.Result
	waitFor(t, 15*time.Second, "the commands of b2 and b3 did not run", func() bool {
		got = results(t, rdb)
		_, b2 := got["op-b2"]
		_, b3 := got["op-b3"]
		return b2 && b3
	})
	if _, ok := got["op-b1-b"]; ok {
		t.Errorf("b2's and b3's commands waited for the slow backend b1 (its second call, 4 s in, is done): %v", got)
	}
	waitFor(t, 15*time.Second, "the first command of b1 did not run", func() bool {
		got = results(t, rdb)
		_, ok := got["op-b1-a"]
		return ok
	})
	for op, backend := range map[string]string{"op-b1-a": "h@b1", "op-b2": "h@b2", "op-b3": "h@b3"} {
		if r := got[op]; !r.OK || r.Backend != backend || r.Host != backend+"#pool" {
			t.Errorf("result of %s = %+v, want OK on %s", op, r, backend)
		}
	}

	var dead []events.DeadLetter
	waitFor(t, 15*time.Second, "the command for the unknown backend is not in the dead letters", func() bool {
		var err error
		dead, err = events.ListDeadLetters(ctx, rdb, 10)
		return err == nil && len(dead) > 0
	})
	if d := dead[0]; len(dead) != 1 || d.Topic != events.HostTopic("h") || !strings.Contains(d.Payload, `"op-nope"`) ||
		!strings.Contains(d.Reason, `"h@nope"`) {
		t.Errorf("dead letters = %+v, want one: op-nope from %s, its reason naming h@nope", dead, events.HostTopic("h"))
	}
	if _, ok := got["op-nope"]; ok {
		t.Errorf("the command for the unknown backend has a result: %+v", got["op-nope"])
	}
	if n, err := rdb.Exists(ctx, agents.JournalKey("h@nope")).Result(); err != nil || n != 0 {
		t.Errorf("a journal of the unknown backend exists (%d, %v): nothing must be journaled", n, err)
	}
	p, err := rdb.XPending(ctx, events.HostTopic("h"), "agents").Result()
	if err != nil || p.Count != 0 {
		t.Errorf("pending on the host topic = %+v, %v; want nothing: the dead letter is acknowledged", p, err)
	}

	// One consumer, one topic: no per-backend stream exists.
	cs, err := rdb.XInfoConsumers(ctx, events.HostTopic("h"), "agents").Result()
	if err != nil || len(cs) != 1 || cs[0].Name != "h" {
		t.Errorf("consumers of the host topic = %+v, %v; want one, h", cs, err)
	}
	for _, b := range []string{"h@b1", "h@b2", "h@b3"} {
		if n, _ := rdb.Exists(ctx, events.LegacyBackendTopic(b)).Result(); n != 0 {
			t.Errorf("the per-backend stream %s exists", events.LegacyBackendTopic(b))
		}
	}
}

// TestIdleAgentReadsLittle: an idle agent of 200 backends reads its commands with one blocking
// subscription: a handful of XREADGROUP over 3 s (one per 2 s BlockTime), not one per backend.
func TestIdleAgentReadsLittle(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	cfg := agents.Config{Host: "h", StopGrace: agents.Duration(time.Second)}
	for i := range 200 {
		cfg.Backends = append(cfg.Backends, agents.BackendConfig{Name: fmt.Sprintf("b%d", i), Driver: "fake"})
	}
	runAgentWith(t, rs, events.BusConfig{}, cfg)
	waitSubscribed(t, rdb, "h")
	time.Sleep(500 * time.Millisecond) // every subscription of the agent has started
	const window = 3 * time.Second
	reads := readsDuring(t, rdb, window)
	t.Logf("an idle agent of %d backends: %d XREADGROUP in %s", len(cfg.Backends), reads, window)
	if reads >= 20 {
		t.Errorf("an idle agent of %d backends ran %d XREADGROUP in %s, want fewer than 20 (one subscription blocking 2 s a read)",
			len(cfg.Backends), reads, window)
	}
}

// TestUpgradeDrainsLegacyBackendTopics: commands left on the per-backend topics of the version
// before host topics run when the new agent starts: unread by a group the old agent made (b1),
// on a topic no group ever read (b2), and delivered to the old agent and never acknowledged
// (b3, claimed once idle). The command of a legacy topic whose commands were all taken (b4)
// does not run again. Once drained, the agent reads only its host topic.
func TestUpgradeDrainsLegacyBackendTopics(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	busCfg := events.BusConfig{MaxIdleTime: time.Second} // b3's pending command is claimed after 1 s
	busCfg.Redis = events.Single(rs.Options())
	old, err := events.NewBus(busCfg, slog.New(slog.DiscardHandler)) // what the old version published with
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	publish := func(backend, opID string) string {
		t.Helper()
		if err := old.Publish(events.LegacyBackendTopic(backend), opID, "req-"+opID, createCmd(opID, backend)); err != nil {
			t.Fatal(err)
		}
		return events.LegacyBackendTopic(backend)
	}
	// The old agent's read: its consumer was named after the backend.
	oldRead := func(topic, consumer string) redis.XMessage {
		t.Helper()
		xs, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "agents", Consumer: consumer,
			Streams: []string{topic, ">"}, Count: 1}).Result()
		if err != nil || len(xs) != 1 || len(xs[0].Messages) != 1 {
			t.Fatalf("read %s as the old agent: %v, %v", topic, xs, err)
		}
		return xs[0].Messages[0]
	}
	for _, b := range []string{"h@b1", "h@b3", "h@b4"} {
		if err := rdb.XGroupCreateMkStream(ctx, events.LegacyBackendTopic(b), "agents", "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	publish("h@b1", "op-1")
	publish("h@b2", "op-2")
	oldRead(publish("h@b3", "op-3"), "h@b3")
	b4 := publish("h@b4", "op-4")
	if err := rdb.XAck(ctx, b4, "agents", oldRead(b4, "h@b4").ID).Err(); err != nil {
		t.Fatal(err)
	}

	cfg := agents.Config{Host: "h", ReportInterval: agents.Duration(100 * time.Millisecond),
		StopGrace: agents.Duration(time.Second)}
	for _, name := range []string{"b1", "b2", "b3", "b4"} {
		cfg.Backends = append(cfg.Backends, agents.BackendConfig{Name: name, Driver: "fake"})
	}
	runAgentWith(t, rs, busCfg, cfg)
	var got map[string]events.Result
	waitFor(t, 20*time.Second, "the commands left on the legacy topics did not all run", func() bool {
		got = results(t, rdb)
		return len(got) >= 3
	})
	for op, backend := range map[string]string{"op-1": "h@b1", "op-2": "h@b2", "op-3": "h@b3"} {
		if r, ok := got[op]; !ok || !r.OK || r.Backend != backend {
			t.Errorf("result of %s = %+v (found %v), want OK on %s", op, r, ok, backend)
		}
	}
	for _, b := range []string{"h@b1", "h@b2", "h@b3"} {
		waitFor(t, 10*time.Second, "commands are still pending on "+events.LegacyBackendTopic(b), func() bool {
			p, err := rdb.XPending(ctx, events.LegacyBackendTopic(b), "agents").Result()
			return err == nil && p.Count == 0
		})
	}

	// Drained: the legacy topics are no longer read. Three more subscriptions would add at
	// least three reads to each window (one every 2 s each); the host topic's alone make two
	// at most.
	deadline := time.Now().Add(20 * time.Second)
	for {
		reads := readsDuring(t, rdb, 2500*time.Millisecond)
		if reads <= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d XREADGROUP in 2.5 s long after the legacy topics were drained: they are still read", reads)
		}
	}
	if _, ok := results(t, rdb)["op-4"]; ok {
		t.Error("op-4, taken by the old agent, ran again")
	}
}
