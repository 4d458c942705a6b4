package results_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// leaseClock is a settable leaseClock for the store.
type leaseClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *leaseClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *leaseClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// leasePub records what is published, with its topic.
type leasePub struct {
	mu   sync.Mutex
	cmds []published
}

type published struct {
	topic string
	cmd   events.Command
}

func (p *leasePub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := v.(events.Command); ok {
		p.cmds = append(p.cmds, published{topic, c})
	}
	return nil
}

func (p *leasePub) all() []published { p.mu.Lock(); defer p.mu.Unlock(); return slices.Clone(p.cmds) }

// leased stores volume v1 on h@b#pool, status status, held by operation op-1 of kind owned by
// the backend h@b, whose deadline is deadline.
func leased(t *testing.T, st *store.Store, kind string, status basalt.VolumeStatus, deadline time.Time) *basalt.Operation {
	t.Helper()
	now := st.Now()
	op := &basalt.Operation{ID: "op-1", Kind: kind, VolumeID: "v1", ProjectID: "p1", State: basalt.OpPending,
		Owner: "h@b", Attempts: 1, Deadline: deadline, CreatedAt: now, UpdatedAt: now}
	v := &basalt.Volume{ID: "v1", ProjectID: "p1", Size: 1, Status: status, Host: "h@b#pool", OpID: op.ID, CreatedAt: now}
	if err := st.CreateVolume(context.Background(), v, op); err != nil {
		t.Fatal(err)
	}
	return op
}

func volumeStatus(t *testing.T, st *store.Store, id string) basalt.VolumeStatus {
	t.Helper()
	v, err := st.Volume(context.Background(), id)
	if err != nil {
		t.Fatalf("Volume(%s): %v", id, err)
	}
	return v.Status
}

// TestLeaseKeepsOperationAlive: the reconciler leaves an operation alone while its agent renews
// its lease, even past the deadline the request gave it, and ends it once the lease runs out; a
// renewal after that does not bring it back.
func TestLeaseKeepsOperationAlive(t *testing.T) {
	rdb := redistest.Start(t).Client()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &leaseClock{t: t0}
	st := store.New(rdb, clk.now)
	f := results.New(results.Config{}, st, &leasePub{}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	leased(t, st, events.KindCreateVolume, basalt.StatusCreating, t0.Add(10*time.Second))

	renew := func(until time.Time) {
		t.Helper()
		got, err := events.RenewLeases(ctx, rdb, "h@b", until, "op-1")
		if err != nil || !slices.Equal(got, []string{"op-1"}) {
			t.Fatalf("RenewLeases(until %v) = %v, %v; want [op-1]", until, got, err)
		}
	}
	reconcileAt := func(at time.Time) {
		t.Helper()
		clk.set(at)
		if err := f.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile at %v: %v", at, err)
		}
	}

	// The lease replaces the request's deadline, in the record and in the index.
	renew(t0.Add(5 * time.Second))
	if op, _ := st.Op(ctx, "op-1"); !op.Deadline.Equal(t0.Add(5 * time.Second)) {
		t.Errorf("deadline after renewal = %v, want %v", op.Deadline, t0.Add(5*time.Second))
	}
	if ids, _ := st.OverdueOps(ctx, t0.Add(6*time.Second)); !slices.Contains(ids, "op-1") {
		t.Errorf("OverdueOps(after the lease) = %v, want op-1", ids)
	}

	// Renewed before each lease runs out, it outlives the request's deadline.
	for at := t0.Add(4 * time.Second); at.Before(t0.Add(30 * time.Second)); at = at.Add(4 * time.Second) {
		reconcileAt(at)
		renew(at.Add(5 * time.Second))
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusCreating {
		t.Fatalf("status while the lease is renewed = %s, want creating", s)
	}

	// No renewal: the lease runs out and the reconciler ends the operation.
	op, _ := st.Op(ctx, "op-1")
	reconcileAt(op.Deadline.Add(time.Millisecond))
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusError {
		t.Fatalf("status after the lease ran out = %s, want error", s)
	}
	if got, err := events.RenewLeases(ctx, rdb, "h@b", clk.now().Add(time.Minute), "op-1"); err != nil || len(got) != 0 {
		t.Errorf("RenewLeases of an ended operation = %v, %v; want nothing renewed", got, err)
	}
	if op, _ := st.Op(ctx, "op-1"); op.State != basalt.OpFailed {
		t.Errorf("operation state after a late renewal = %s, want failed", op.State)
	}
	if err := rdb.ZScore(ctx, events.PendingOpsKey("op-1"), "op-1").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the ended operation is back in the pending index (ZScore err %v)", err)
	}
}

// TestLateCreateIsUndone: a create whose lease ran out ends in error; its driver call then
// succeeds. The backend is asked to delete what it made, the record stays in error, and the
// undo's own result changes nothing.
func TestLateCreateIsUndone(t *testing.T) {
	rdb := redistest.Start(t).Client()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &leaseClock{t: t0}
	st := store.New(rdb, clk.now)
	pub := &leasePub{}
	f := results.New(results.Config{}, st, pub, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	leased(t, st, events.KindCreateVolume, basalt.StatusCreating, t0.Add(time.Second))
	clk.set(t0.Add(2 * time.Second))
	if err := f.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusError {
		t.Fatalf("status after the lease ran out = %s, want error", s)
	}

	late := events.Result{OpID: "op-1", Kind: events.KindCreateVolume, VolumeID: "v1", Backend: "h@b", Host: "h@b#pool",
		OK: true, Command: &events.Command{OpID: "op-1", Kind: events.KindCreateVolume, VolumeID: "v1", ProjectID: "p1"}}
	if err := f.Apply(ctx, late); err != nil {
		t.Fatalf("Apply(late success): %v", err)
	}
	got := pub.all()
	if len(got) != 1 || got[0].topic != events.BackendTopic("h@b") || got[0].cmd.Kind != events.KindDeleteVolume ||
		got[0].cmd.VolumeID != "v1" || got[0].cmd.OpID != "op-1-undo" {
		t.Fatalf("published after the late success = %+v; want one delete_volume of v1 (op-1-undo) to %s", got, events.BackendTopic("h@b"))
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusError {
		t.Errorf("status after the late success = %s, want error (the user was told it failed)", s)
	}
	undone := events.Result{OpID: "op-1-undo", Kind: events.KindDeleteVolume, VolumeID: "v1", Backend: "h@b", OK: true,
		Command: &got[0].cmd}
	if err := f.Apply(ctx, undone); err != nil {
		t.Fatalf("Apply(undo result): %v", err)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusError {
		t.Errorf("status after the undo's result = %s, want error: the user deletes the record", s)
	}
}

// TestCreateInTimeIsKept: a success applied in time, and its redelivery, undo nothing.
func TestCreateInTimeIsKept(t *testing.T) {
	st := store.New(redistest.Start(t).Client(), nil)
	pub := &leasePub{}
	f := results.New(results.Config{}, st, pub, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	leased(t, st, events.KindCreateVolume, basalt.StatusCreating, st.Now().Add(time.Minute))
	r := events.Result{OpID: "op-1", Kind: events.KindCreateVolume, VolumeID: "v1", Backend: "h@b", Host: "h@b#pool", OK: true,
		Command: &events.Command{OpID: "op-1", Kind: events.KindCreateVolume, VolumeID: "v1", ProjectID: "p1"}}
	for i := 0; i < 2; i++ { // the second is a redelivery
		if err := f.Apply(ctx, r); err != nil {
			t.Fatalf("Apply #%d: %v", i, err)
		}
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusAvailable {
		t.Errorf("status = %s, want available", s)
	}
	if got := pub.all(); len(got) != 0 {
		t.Errorf("published %+v, want nothing", got)
	}
}

// TestLateDeleteRemovesRecord: a delete whose lease ran out leaves the volume error_deleting;
// its driver call then succeeds, and the record goes. A success for another operation (the
// undo of a create) leaves an error_deleting volume alone.
func TestLateDeleteRemovesRecord(t *testing.T) {
	rdb := redistest.Start(t).Client()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &leaseClock{t: t0}
	st := store.New(rdb, clk.now)
	f := results.New(results.Config{}, st, &leasePub{}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	leased(t, st, events.KindDeleteVolume, basalt.StatusDeleting, t0.Add(time.Second))
	clk.set(t0.Add(2 * time.Second))
	if err := f.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusErrorDeleting {
		t.Fatalf("status after the lease ran out = %s, want error_deleting", s)
	}
	other := events.Result{OpID: "op-0-undo", Kind: events.KindDeleteVolume, VolumeID: "v1", Backend: "h@b", OK: true,
		Command: &events.Command{OpID: "op-0-undo", Kind: events.KindDeleteVolume, VolumeID: "v1"}}
	if err := f.Apply(ctx, other); err != nil {
		t.Fatalf("Apply(another operation's delete): %v", err)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusErrorDeleting {
		t.Fatalf("status after another operation's delete = %s, want error_deleting", s)
	}
	late := events.Result{OpID: "op-1", Kind: events.KindDeleteVolume, VolumeID: "v1", Backend: "h@b", OK: true,
		Command: &events.Command{OpID: "op-1", Kind: events.KindDeleteVolume, VolumeID: "v1"}}
	for i := 0; i < 2; i++ { // the second is a redelivery
		if err := f.Apply(ctx, late); err != nil {
			t.Fatalf("Apply(late delete) #%d: %v", i, err)
		}
	}
	if _, err := st.Volume(ctx, "v1"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("Volume(v1) after the late delete = %v, want ENOTFOUND", err)
	}
}

// TestLeaseRunsOutWhileReconcilerBlind: Redis was away (no reconcile pass for a minute) and with
// it the agents' renewals. An operation whose lease ran out meanwhile gets the outage's length
// again, so its agent can renew first; without a renewal it then ends.
func TestLeaseRunsOutWhileReconcilerBlind(t *testing.T) {
	rdb := redistest.Start(t).Client()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &leaseClock{t: t0}
	st := store.New(rdb, clk.now)
	f := results.New(results.Config{ReconcileInterval: 5 * time.Second}, st, &leasePub{}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	leased(t, st, events.KindCreateVolume, basalt.StatusCreating, t0.Add(10*time.Second))
	for _, c := range []struct {
		at   time.Duration
		want basalt.VolumeStatus
	}{
		{0, basalt.StatusCreating},
		{time.Minute, basalt.StatusCreating},                 // blind from 0 to 1m: the lease gets 1m more, to 1m10s
		{time.Minute + 5*time.Second, basalt.StatusCreating}, // still within it
		{time.Minute + 9*time.Second, basalt.StatusCreating}, // still within it
		{time.Minute + 11*time.Second, basalt.StatusError},   // no renewal came: it ends
	} {
		clk.set(t0.Add(c.at))
		if err := f.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile at +%v: %v", c.at, err)
		}
		if s := volumeStatus(t, st, "v1"); s != c.want {
			t.Errorf("status after Reconcile at +%v = %s, want %s", c.at, s, c.want)
		}
	}
}
