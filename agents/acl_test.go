package agents_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// agentACL is the ACL file line of the agent of host, as docs/security.md gives it: its host's
// keys (heartbeats, reports, inventories, journals) and topic, its backends' legacy topics and
// journals, the operation records and pending sets it renews leases in, and write-only access
// to the global indexes of heartbeats and reports and to the results and dead-letter topics.
// Commands are listed one by one: no FLUSHALL, KEYS, CONFIG or SCAN, whatever the keys.
func agentACL(host, password string) string {
	return "user agent-" + host + " on >" + password + " resetkeys resetchannels" +
		" ~basalt:{h:" + host + "}:* ~basalt.host." + host +
		" ~basalt.volume." + host + "@* ~basalt:{basalt}:agent:" + host + "@*:inflight" +
		" ~basalt:{s*}:op:* ~basalt:{s*}:ops:pending" +
		" %W~basalt:{basalt}:services %W~basalt:{basalt}:svc:beats %W~basalt:{basalt}:caps:updated" +
		" %W~basalt.results %W~basalt.deadletter" +
		" -@all +hello +auth +ping +client|setname +select +multi +exec" +
		" +get +set +del +hgetall +hset +hsetnx +hdel +sadd +zadd +evalsha +eval" +
		" +xadd +xreadgroup +xack +xpending +xclaim +xgroup|create +xgroup|delconsumer" +
		" +xinfo|groups +xinfo|consumers +xrevrange"
}

// forbidden is what the agent of host h must not do, each with the connection of its ACL user.
func forbidden(volKey, quotaKey string) []struct {
	what string
	do   func(ctx context.Context, c *redis.Client) error
} {
	return []struct {
		what string
		do   func(ctx context.Context, c *redis.Client) error
	}{
		{"write a volume record", func(ctx context.Context, c *redis.Client) error {
			return c.Set(ctx, volKey, "{}", 0).Err()
		}},
		{"read a volume record", func(ctx context.Context, c *redis.Client) error {
			return c.Get(ctx, volKey).Err()
		}},
		{"write a volume record from a script", func(ctx context.Context, c *redis.Client) error {
			return c.Eval(ctx, "return redis.call('SET', KEYS[1], '{}')", []string{volKey}).Err()
		}},
		{"write a quota usage", func(ctx context.Context, c *redis.Client) error {
			return c.HSet(ctx, quotaKey, "gigabytes", 0).Err()
		}},
		{"publish to another host's topic", func(ctx context.Context, c *redis.Client) error {
			return c.XAdd(ctx, &redis.XAddArgs{Stream: events.HostTopic("other"), Values: map[string]any{"payload": "{}"}}).Err()
		}},
		{"read another host's topic", func(ctx context.Context, c *redis.Client) error {
			return c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "agents", Consumer: "h",
				Streams: []string{events.HostTopic("other"), ">"}, Count: 1, Block: -1}).Err()
		}},
		{"write another host's report", func(ctx context.Context, c *redis.Client) error {
			return c.Set(ctx, events.CapabilitiesKey("other@b"), "{}", 0).Err()
		}},
		{"read another host's report", func(ctx context.Context, c *redis.Client) error {
			return c.Get(ctx, events.CapabilitiesKey("other@b")).Err()
		}},
		{"read the results", func(ctx context.Context, c *redis.Client) error {
			return c.XRange(ctx, events.TopicResults, "-", "+").Err()
		}},
		{"delete the volume types", func(ctx context.Context, c *redis.Client) error {
			return c.Del(ctx, events.KeyPrefix+"types").Err()
		}},
		{"flush the database", func(ctx context.Context, c *redis.Client) error {
			return c.FlushDB(ctx).Err()
		}},
		{"list the keys", func(ctx context.Context, c *redis.Client) error {
			return c.Keys(ctx, "*").Err()
		}},
	}
}

// allowed returns what of forbidden the connection c was allowed to do: every action must be
// refused with NOPERM.
func allowed(ctx context.Context, c *redis.Client, volKey, quotaKey string) []string {
	var out []string
	for _, f := range forbidden(volKey, quotaKey) {
		err := f.do(ctx, c)
		if err == nil || errors.Is(err, redis.Nil) || !strings.Contains(err.Error(), "NOPERM") {
			out = append(out, fmt.Sprintf("%s (%v)", f.what, err))
		}
	}
	return out
}

// TestAgentACL runs an agent of host h as its ACL user (agentACL) against a redis-server with
// an aclfile: it heartbeats, reports, takes a command from its host topic, renews the lease of
// its operation, runs it and publishes its result, adopts a journal of the old key layout and
// drains a legacy backend topic, and Redis refuses it nothing (ACL LOG). Then every
// forbidden action of its user fails with NOPERM; with the ACL widened they succeed, so the
// check can fail.
func TestAgentACL(t *testing.T) {
	const pw, otherPW = "agent-h-secret", "agent-other-secret"
	rs := redistest.StartWithACL(t, []string{agentACL("h", pw), agentACL("other", otherPW)})
	admin := rs.Client() // the default user: every right, as the api and the scheduler have
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)

	// The state the api would write: a volume being created by h@b, its pending operation with
	// its command, and another host's report and topic.
	const project = "p"
	volID := events.NewID(project)
	opID := events.NewPrefixedID("op-", project)
	now := time.Now().UTC()
	deadline := now.Add(time.Minute)
	cmd := events.Command{OpID: opID, Kind: events.KindCreateVolume, VolumeID: volID, Backend: "h@b",
		Volume: basalt.VolumeSpec{ID: volID, SizeGB: 1, Pool: "pool"}}
	rawCmd, _ := json.Marshal(cmd)
	vol := &basalt.Volume{ID: volID, ProjectID: project, Size: 1, Status: basalt.VolumeStatus("creating"),
		Host: "h@b#pool", CreatedAt: now, UpdatedAt: &now}
	op := &basalt.Operation{ID: opID, Kind: events.KindCreateVolume, VolumeID: volID, Topic: events.BackendTopic("h@b"),
		Command: rawCmd, ProjectID: project, State: basalt.OpPending, Owner: "h@b", Deadline: deadline,
		CreatedAt: now, UpdatedAt: now}
	if err := store.New(admin, time.Now).CreateVolume(ctx, vol, op); err != nil {
		t.Fatal(err)
	}
	volKey := events.PrefixOf(volID) + "vol:" + volID
	quotaKey := events.PrefixOf(project) + "quota:" + project + ":usage"
	if n, err := admin.Exists(ctx, volKey).Result(); err != nil || n != 1 {
		t.Fatalf("the volume record %s is not where the ACL test expects it (%d, %v)", volKey, n, err)
	}
	if err := admin.HSet(ctx, quotaKey, "gigabytes", 1, "volumes", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := events.NewPresence(admin, time.Now).Report(ctx, events.CapabilityReport{Backend: "other@b"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.XGroupCreateMkStream(ctx, events.HostTopic("other"), "agents", "0").Err(); err != nil {
		t.Fatal(err)
	}

	// What an agent of the version before host topics and slotted keys left: a command in
	// its backend's journal of the old layout (adopted, run, then the old journal deleted) and
	// one on its backend's legacy topic (drained through the group "agents").
	journaled := events.Command{OpID: "op-journaled", Kind: events.KindCreateVolume, VolumeID: "vol-journaled",
		Backend: "h@b", Volume: basalt.VolumeSpec{ID: "vol-journaled", SizeGB: 1, Pool: "pool"}}
	rawJournaled, _ := json.Marshal(journaled)
	legacyJournal := events.KeyPrefix + "agent:h@b:inflight"
	if err := admin.HSet(ctx, legacyJournal, journaled.OpID, rawJournaled).Err(); err != nil {
		t.Fatal(err)
	}
	adminBus, err := events.NewBus(events.BusConfig{Redis: events.Single(rs.Options())}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer adminBus.Close()
	onLegacy := events.Command{OpID: "op-legacy", Kind: events.KindCreateVolume, VolumeID: "vol-legacy",
		Backend: "h@b", Volume: basalt.VolumeSpec{ID: "vol-legacy", SizeGB: 1, Pool: "pool"}}
	if err := adminBus.Publish(events.LegacyBackendTopic("h@b"), onLegacy.OpID, "req-legacy", onLegacy); err != nil {
		t.Fatal(err)
	}

	// The agent of h, as agent-h: bus and state connections alike.
	agentOpts := func() *events.RedisOptions { return events.Single(rs.UserOptions("agent-h", pw)) }
	bus, err := events.NewBus(events.BusConfig{Redis: agentOpts()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	const lease = 300 * time.Millisecond
	a, err := agents.New(agents.Config{Host: "h", ReportInterval: agents.Duration(100 * time.Millisecond),
		OperationLease: agents.Duration(lease), StopGrace: agents.Duration(time.Second),
		Backends: []agents.BackendConfig{{Name: "b", Driver: "fake", Workers: 1, Delay: agents.Duration(4 * lease)}}},
		bus, agentOpts(), logger)
	if err != nil {
		bus.Close()
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		a.Close()
		bus.Close()
	}
	defer stop()
	defer func() {
		if t.Failed() {
			t.Logf("ACL LOG:\n%s", strings.Join(rs.ACLLog(), "\n"))
		}
	}()

	// The api's publication of the command (as the api's user, here the default one).
	if err := adminBus.Publish(events.BackendTopic("h@b"), opID, "req-acl", cmd); err != nil {
		t.Fatal(err)
	}
	var got map[string]events.Result
	waitFor(t, 20*time.Second, "the agent of h did not publish the results of its three commands", func() bool {
		got = results(t, admin)
		return len(got) == 3
	})
	for _, id := range []string{opID, journaled.OpID, onLegacy.OpID} {
		if r := got[id]; !r.OK || r.Backend != "h@b" {
			t.Errorf("result of %s = %+v, want OK on h@b", id, r)
		}
	}
	if n, err := admin.Exists(ctx, legacyJournal).Result(); err != nil || n != 0 {
		t.Errorf("the journal of the old layout is still there (%d, %v): the agent did not adopt it", n, err)
	}
	waitFor(t, 10*time.Second, "the agent of h has no heartbeat or report", func() bool {
		n, err := admin.Exists(ctx, events.ServiceKey(basalt.BinaryVolume, "h@b"), events.CapabilitiesKey("h@b")).Result()
		return err == nil && n == 2
	})
	for _, idx := range []string{events.BeatsKey, events.ReportsKey} {
		members, err := admin.ZRange(ctx, idx, 0, -1).Result()
		if err != nil || !strings.Contains(strings.Join(members, ","), "h@b") {
			t.Errorf("index %s = %v, %v; want h@b's entry", idx, members, err)
		}
	}
	// The lease was renewed: the deadline in the record is no longer the one the api wrote.
	var rec basalt.Operation
	raw, err := admin.Get(ctx, events.OperationKey(opID)).Bytes()
	if err != nil || json.Unmarshal(raw, &rec) != nil {
		t.Fatalf("operation record: %v", err)
	}
	if rec.Deadline.Equal(deadline) {
		t.Errorf("the deadline of %s is still the api's %s: the agent renewed no lease", opID, deadline)
	}
	// What the agent does at work and at start (legacy topics, journal) was all allowed.
	stop()
	// go-redis names its library (CLIENT SETINFO, Redis 7.2 on) and ignores a refusal.
	var log []string
	for _, l := range rs.ACLLog() {
		if !strings.Contains(l, " client|setinfo ") && !strings.Contains(l, " client|maint_notifications ") {
			log = append(log, l)
		}
	}
	if len(log) != 0 {
		t.Errorf("Redis refused the agent something it does (ACL LOG):\n%s", strings.Join(log, "\n"))
	}

	agentH := redis.NewClient(rs.UserOptions("agent-h", pw))
	defer agentH.Close()
	if got := allowed(ctx, agentH, volKey, quotaKey); len(got) != 0 {
		t.Errorf("agent-h was allowed what it must not do:\n%s", strings.Join(got, "\n"))
	}

	// The check can fail: with every key and command allowed, agent-h's forbidden actions succeed.
	wide := agentACL("h", pw) + " ~* +@all"
	rs.SetACL([]string{wide, agentACL("other", otherPW)})
	if got := allowed(ctx, agentH, volKey, quotaKey); len(got) == 0 {
		t.Error("with every key and command allowed, agent-h was still refused everything: the check cannot fail")
	} else {
		t.Logf("with ~* +@all added, agent-h may:\n%s", strings.Join(got, "\n"))
	}
	rs.SetACL([]string{agentACL("h", pw), agentACL("other", otherPW)})
	if got := allowed(ctx, agentH, volKey, quotaKey); len(got) != 0 {
		t.Errorf("after restoring the ACL, agent-h was allowed:\n%s", strings.Join(got, "\n"))
	}
}
