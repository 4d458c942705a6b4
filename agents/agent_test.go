package agents_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRecoveryRunsJournaledWork starts an agent whose journal holds two commands left by a
// crash: one whose operation is still pending (it must run and report) and one whose operation
// already ended (it must be dropped, not run).
func TestRecoveryRunsJournaledWork(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	dir := t.TempDir()
	put := func(opID, volID, state string) {
		cmd := events.Command{OpID: opID, Kind: events.KindCreateVolume, VolumeID: volID, Backend: "h@b",
			Volume: basalt.VolumeSpec{ID: volID, SizeGB: 1, Pool: "pool"}}
		raw, _ := json.Marshal(cmd)
		rdb.HSet(ctx, agents.JournalKey("h@b"), opID, raw)
		op, _ := json.Marshal(basalt.Operation{ID: opID, State: state})
		rdb.Set(ctx, events.OperationKey(opID), op, 0)
	}
	put("op-pending", "vol-a", basalt.OpPending)
	put("op-ended", "vol-b", basalt.OpFailed)
	// A command an agent of the key layout before slots journaled: it runs too.
	legacy := events.Command{OpID: "op-legacy", Kind: events.KindCreateVolume, VolumeID: "vol-c", Backend: "h@b",
		Volume: basalt.VolumeSpec{ID: "vol-c", SizeGB: 1, Pool: "pool"}}
	raw, _ := json.Marshal(legacy)
	rdb.HSet(ctx, events.KeyPrefix+"agent:h@b:inflight", "op-legacy", raw)
	op, _ := json.Marshal(basalt.Operation{ID: "op-legacy", State: basalt.OpPending})
	rdb.Set(ctx, events.OperationKey("op-legacy"), op, 0)
	runAgent(t, rs, dir)

	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _ := rdb.HLen(ctx, agents.JournalKey("h@b")).Result()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal still holds %d entries", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "h", "b", "volume-vol-a")); err != nil {
		t.Errorf("the pending create was not run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "h", "b", "volume-vol-c")); err != nil {
		t.Errorf("the create journaled by an agent of the older key layout was not run: %v", err)
	}
	if n, _ := rdb.Exists(ctx, events.KeyPrefix+"agent:h@b:inflight").Result(); n != 0 {
		t.Errorf("the older layout's journal is still there")
	}
	if _, err := os.Stat(filepath.Join(dir, "h", "b", "volume-vol-b")); !os.IsNotExist(err) {
		t.Errorf("the ended create was run (stat = %v)", err)
	}
	msgs, err := rdb.XRange(ctx, events.TopicResults, "-", "+").Result()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("results stream = %v, %v; want exactly two results", msgs, err)
	}
	ok := map[string]bool{}
	for _, m := range msgs {
		var res events.Result
		if err := json.Unmarshal([]byte(m.Values["payload"].(string)), &res); err != nil || !res.OK || res.Host != "h@b#pool" {
			t.Errorf("result = %+v (%v), want OK on h@b#pool", res, err)
		}
		ok[res.OpID] = true
	}
	if !ok["op-pending"] || !ok["op-legacy"] {
		t.Errorf("results for %v, want op-pending and op-legacy", ok)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		json string
	}{
		{"no host", `{"backends":[{"name":"b","driver":"file"}]}`},
		{"host with @", `{"host":"a@b","backends":[{"name":"b","driver":"file"}]}`},
		{"no backends", `{"host":"h"}`},
		{"unknown driver", `{"host":"h","backends":[{"name":"b","driver":"lvm"}]}`},
		{"duplicate backend", `{"host":"h","backends":[{"name":"b","driver":"fake"},{"name":"b","driver":"fake"}]}`},
		{"unknown key", `{"host":"h","bakends":[]}`},
		{"bad duration", `{"host":"h","report_interval":"soon","backends":[{"name":"b","driver":"fake"}]}`},
	} {
		path := filepath.Join(t.TempDir(), "agent.json")
		os.WriteFile(path, []byte(c.json), 0o644)
		cfg, err := agents.LoadConfig(path)
		if err == nil {
			_, err = agents.New(cfg, nil, nil, slog.New(slog.DiscardHandler))
		}
		if err == nil {
			t.Errorf("%s: config %s accepted, want an error", c.name, c.json)
		}
	}
}

// TestJournaledCommandWhoseReplyWasLostRuns: the journal write of a command landed but its reply
// was lost, so the message is delivered again and finds the entry. The agent must run it, not
// take the entry for a command it runs already.
func TestJournaledCommandWhoseReplyWasLostRuns(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	dir := t.TempDir()
	bus := runAgent(t, rs, dir)

	cmd := events.Command{OpID: "op-lost", Kind: events.KindCreateVolume, VolumeID: "vol-l", Backend: "h@b",
		Volume: basalt.VolumeSpec{ID: "vol-l", SizeGB: 1, Pool: "pool"}}
	raw, _ := json.Marshal(cmd)
	op, _ := json.Marshal(basalt.Operation{ID: "op-lost", State: basalt.OpPending})
	rdb.Set(ctx, events.OperationKey("op-lost"), op, 0)
	rdb.HSet(ctx, agents.JournalKey("h@b"), "op-lost", raw) // the write that landed
	if err := bus.Publish(events.BackendTopic("h@b"), "op-lost", "req-1", cmd); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _ := rdb.XLen(ctx, events.TopicResults).Result()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command whose journal reply was lost never ran: no result")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "h", "b", "volume-vol-l")); err != nil {
		t.Errorf("the volume was not created: %v", err)
	}
}

// TestLeasesKeepQueuedAndRunningCommandsAlive: with one worker and slow driver calls, one command
// runs while another waits for the worker. The agent renews both operations' leases the whole
// time (no deadline ever passes), and stops once it has published their outcomes.
func TestLeasesKeepQueuedAndRunningCommandsAlive(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	bus, err := events.NewBus(events.BusConfig{Redis: events.Single(rs.Options())}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	const lease = 300 * time.Millisecond
	a, err := agents.New(agents.Config{Host: "h", DataDir: t.TempDir(), ReportInterval: agents.Duration(100 * time.Millisecond),
		OperationLease: agents.Duration(lease),
		Backends:       []agents.BackendConfig{{Name: "b", Driver: "fake", Workers: 1, Delay: agents.Duration(3 * lease)}}},
		bus, events.Single(rs.Options()), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	// The request's deadline is far; once the agent holds a command, its lease is the deadline.
	ops := []string{"op-1", "op-2"}
	for _, id := range ops {
		deadline := time.Now().Add(5 * time.Second)
		op, _ := json.Marshal(basalt.Operation{ID: id, State: basalt.OpPending, Owner: "h@b", Deadline: deadline})
		rdb.Set(ctx, events.OperationKey(id), op, 0)
		rdb.ZAdd(ctx, events.PendingOpsKey(id), redis.Z{Score: float64(deadline.UnixMilli()), Member: id})
		cmd := events.Command{OpID: id, Kind: events.KindCreateVolume, VolumeID: "vol-" + id, Backend: "h@b",
			Volume: basalt.VolumeSpec{ID: "vol-" + id, SizeGB: 1, Pool: "pool"}}
		if err := bus.Publish(events.BackendTopic("h@b"), id, "req-1", cmd); err != nil {
			t.Fatal(err)
		}
	}
	overdue := func() []string {
		var ids []string
		for _, id := range ops {
			s, err := rdb.ZScore(ctx, events.PendingOpsKey(id), id).Result()
			if err == nil && s <= float64(time.Now().UnixMilli()) {
				ids = append(ids, id)
			}
		}
		return ids
	}
	finished := func() map[string]bool {
		msgs, _ := rdb.XRange(ctx, events.TopicResults, "-", "+").Result()
		out := map[string]bool{}
		for _, m := range msgs {
			var res events.Result
			if json.Unmarshal([]byte(m.Values["payload"].(string)), &res) == nil {
				out[res.OpID] = true
			}
		}
		return out
	}
	end := time.Now().Add(15 * time.Second)
	for {
		fin := finished()
		if len(fin) == len(ops) {
			break
		}
		for _, id := range overdue() {
			if !fin[id] {
				t.Fatalf("operation %s passed its deadline while the agent held it (finished: %v)", id, fin)
			}
		}
		if time.Now().After(end) {
			t.Fatal("the commands did not finish")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, id := range ops {
		var op basalt.Operation
		raw, _ := rdb.Get(ctx, events.OperationKey(id)).Bytes()
		if err := json.Unmarshal(raw, &op); err != nil || op.State != basalt.OpPending || op.Owner != "h@b" {
			t.Errorf("record of %s after renewals = %+v (%v), want it pending and owned by h@b", id, op, err)
		}
	}
	// Finished: no one renews them, and their leases run out.
	time.Sleep(lease + 200*time.Millisecond)
	if ids := overdue(); len(ids) != len(ops) {
		t.Errorf("overdue after the agent finished = %v, want %v: a finished command is still renewed", ids, ops)
	}
}

// runAgent runs an agent of host h with one file backend b on dir against rs until the test
// ends, and returns the bus it uses.
func runAgent(t *testing.T, rs *redistest.Server, dir string) *events.Bus {
	t.Helper()
	return runAgentWith(t, rs, events.BusConfig{}, agents.Config{Host: "h", DataDir: dir,
		ReportInterval: agents.Duration(100 * time.Millisecond), Backends: []agents.BackendConfig{{Name: "b", Driver: "file"}}})
}
