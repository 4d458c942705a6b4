package results_test

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

// lateStack is a results function on a real redis-server with a settable clock.
func lateStack(t *testing.T) (*store.Store, *results.Function, *leaseClock, *leasePub) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	clk := &leaseClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	st := store.New(rdb, clk.now)
	pub := &leasePub{}
	return st, results.New(results.Config{}, st, pub, slog.New(slog.DiscardHandler)), clk, pub
}

// expire moves the clock past op-1's lease and runs the reconciler, which fails it.
func expire(t *testing.T, st *store.Store, f *results.Function, clk *leaseClock) {
	t.Helper()
	clk.set(clk.now().Add(time.Minute))
	if err := f.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if op, _ := st.Op(context.Background(), "op-1"); op.State != basalt.OpFailed {
		t.Fatalf("operation after its lease ran out: %s, want failed", op.State)
	}
}

// TestLateExtendRepairsTheRecord: an extend whose lease ran out is failed (error_extending, its
// growth returned); its success, reported later, is not ignored: the volume takes the size the
// backend gave it and its status back, and its pool and its project count the growth again. A
// redelivery of that success changes nothing more.
func TestLateExtendRepairsTheRecord(t *testing.T) {
	st, f, clk, _ := lateStack(t)
	ctx := context.Background()
	leased(t, st, events.KindExtendVolume, basalt.StatusExtending, clk.now().Add(5*time.Second))
	const pool = "h@b#pool"
	if ok, err := st.Reserve(ctx, "v1", pool, 1, math.Inf(1)); !ok || err != nil {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	if err := st.Charge(ctx, "p1", "vol:v1", store.QuotaRequest{Volumes: 1, Gigabytes: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.Grow(ctx, "v1", pool, "op-1", 2, math.Inf(1)); !ok || err != nil {
		t.Fatalf("Grow = %v, %v", ok, err)
	}
	if err := st.Charge(ctx, "p1", "ext:op-1", store.QuotaRequest{Gigabytes: 2}, nil); err != nil {
		t.Fatal(err)
	}
	expire(t, st, f, clk)
	check := func(when string, size int, status basalt.VolumeStatus, gb int, ledger float64) {
		t.Helper()
		v, _ := st.Volume(ctx, "v1")
		usage, _ := st.QuotaUsage(ctx, "p1")
		l, _ := st.Ledger(ctx, pool)
		if v.Size != size || v.Status != status || usage[store.QuotaGigabytes] != gb || l != ledger {
			t.Fatalf("%s: size %d %s, %d GB in use, ledger %v; want size %d %s, %d GB, ledger %v",
				when, v.Size, v.Status, usage[store.QuotaGigabytes], l, size, status, gb, ledger)
		}
	}
	check("after the lease ran out", 1, basalt.StatusErrorExtend, 1, 1)

	late := events.Result{OpID: "op-1", Kind: events.KindExtendVolume, VolumeID: "v1", Backend: "h@b", Host: pool, OK: true,
		Command: &events.Command{OpID: "op-1", Kind: events.KindExtendVolume, VolumeID: "v1", OldSizeGB: 1,
			Volume: basalt.VolumeSpec{ID: "v1", SizeGB: 3}}}
	for i := 0; i < 2; i++ {
		if err := f.Apply(ctx, late); err != nil {
			t.Fatal(err)
		}
		check("after the late success", 3, basalt.StatusAvailable, 3, 3)
	}
	if op, _ := st.Op(ctx, "op-1"); op.State != basalt.OpDone {
		t.Errorf("operation after the repair: %s, want done", op.State)
	}
	// The growth is the volume's now: deleting it returns all of it.
	if err := st.Refund(ctx, "vol:v1"); err != nil {
		t.Fatal(err)
	}
	if err := st.Release(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	usage, _ := st.QuotaUsage(ctx, "p1")
	if l, _ := st.Ledger(ctx, pool); l != 0 || usage[store.QuotaGigabytes] != 0 {
		t.Errorf("after the volume's refund and release: ledger %v, %d GB in use; want 0, 0", l, usage[store.QuotaGigabytes])
	}
}

// TestLateRevertRepairsTheRecord: a revert whose lease ran out leaves the volume in error; its
// success, reported later, makes it available again. A late failure changes nothing.
func TestLateRevertRepairsTheRecord(t *testing.T) {
	st, f, clk, _ := lateStack(t)
	ctx := context.Background()
	now := clk.now()
	op := &basalt.Operation{ID: "op-1", Kind: events.KindRevert, VolumeID: "v1", SnapshotID: "s1", ProjectID: "p1",
		State: basalt.OpPending, Owner: "h@b", Deadline: now.Add(5 * time.Second), CreatedAt: now, UpdatedAt: now}
	v := &basalt.Volume{ID: "v1", ProjectID: "p1", Size: 1, Status: basalt.StatusReverting, Host: "h@b#pool", OpID: op.ID, CreatedAt: now}
	if err := st.CreateVolume(ctx, v, op); err != nil {
		t.Fatal(err)
	}
	sn := &basalt.Snapshot{ID: "s1", VolumeID: "v1", ProjectID: "p1", Size: 1, Status: basalt.SnapRestoring, Host: "h@b#pool", OpID: op.ID, CreatedAt: now}
	if err := st.CreateSnapshot(ctx, sn, nil, func(*basalt.Volume) error { return nil }); err != nil {
		t.Fatal(err)
	}
	expire(t, st, f, clk)
	if sn, _ := st.Snapshot(ctx, "s1"); sn.Status != basalt.SnapAvailable {
		t.Fatalf("snapshot after the revert's lease ran out = %s, want available", sn.Status)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusError {
		t.Fatalf("status after the lease ran out = %s, want error", s)
	}
	r := events.Result{OpID: "op-1", Kind: events.KindRevert, VolumeID: "v1", SnapshotID: "s1", Backend: "h@b", Host: "h@b#pool"}
	if err := f.Apply(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusError {
		t.Fatalf("status after a late failure = %s, want error", s)
	}
	r.OK = true
	if err := f.Apply(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s := volumeStatus(t, st, "v1"); s != basalt.StatusAvailable {
		t.Fatalf("status after a late success = %s, want available", s)
	}
}

// TestLateSnapshotIsRemoved: a snapshot created after its operation was failed is removed from
// the backend (a delete_snapshot undo for the backend that made it); one created in time is not.
func TestLateSnapshotIsRemoved(t *testing.T) {
	st, f, clk, pub := lateStack(t)
	ctx := context.Background()
	now := clk.now()
	v := &basalt.Volume{ID: "v1", ProjectID: "p1", Size: 1, Status: basalt.StatusAvailable, Host: "h@b#pool", CreatedAt: now}
	if err := st.CreateVolume(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	mk := func(id string) {
		op := &basalt.Operation{ID: "op-" + id, Kind: events.KindCreateSnapshot, VolumeID: "v1", SnapshotID: id, ProjectID: "p1",
			State: basalt.OpPending, Owner: "h@b", Deadline: now.Add(5 * time.Second), CreatedAt: now, UpdatedAt: now}
		sn := &basalt.Snapshot{ID: id, VolumeID: "v1", ProjectID: "p1", Size: 1, Status: basalt.SnapCreating, Host: "h@b#pool", OpID: op.ID, CreatedAt: now}
		if err := st.CreateSnapshot(ctx, sn, op, func(*basalt.Volume) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	result := func(id string) events.Result {
		return events.Result{OpID: "op-" + id, Kind: events.KindCreateSnapshot, VolumeID: "v1", SnapshotID: id, Backend: "h@b", OK: true,
			Command: &events.Command{OpID: "op-" + id, Kind: events.KindCreateSnapshot, VolumeID: "v1", SnapshotID: id}}
	}
	mk("s-in-time")
	if err := f.Apply(ctx, result("s-in-time")); err != nil {
		t.Fatal(err)
	}
	mk("s-late")
	clk.set(now.Add(time.Minute))
	if err := f.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, result("s-late")); err != nil {
		t.Fatal(err)
	}
	var undos []string
	for _, p := range pub.all() {
		if p.cmd.Kind == events.KindDeleteSnapshot {
			undos = append(undos, p.topic+" "+p.cmd.SnapshotID+" "+p.cmd.OpID)
		}
	}
	want := events.BackendTopic("h@b") + " s-late op-s-late-undo"
	if len(undos) != 1 || undos[0] != want {
		t.Fatalf("deletes sent: %v, want [%s]", undos, want)
	}
	if sn, _ := st.Snapshot(ctx, "s-in-time"); sn.Status != basalt.SnapAvailable {
		t.Errorf("snapshot created in time: %s, want available", sn.Status)
	}
}

// TestExtendEndsByAttachments: an in-use volume whose last attachment went while it grew ends
// its extend available and detached (as Cinder), not in-use with nothing attached, which no
// delete would accept.
func TestExtendEndsByAttachments(t *testing.T) {
	st, f, clk, _ := lateStack(t)
	ctx := context.Background()
	now := clk.now()
	op := &basalt.Operation{ID: "op-1", Kind: events.KindExtendVolume, VolumeID: "v1", ProjectID: "p1",
		State: basalt.OpPending, Owner: "h@b", Deadline: now.Add(time.Minute), CreatedAt: now, UpdatedAt: now}
	v := &basalt.Volume{ID: "v1", ProjectID: "p1", Size: 1, Status: basalt.StatusExtending, PreviousStatus: basalt.StatusInUse,
		AttachStatus: basalt.AttachAttached, Host: "h@b#pool", OpID: op.ID, CreatedAt: now}
	if err := st.CreateVolume(ctx, v, op); err != nil {
		t.Fatal(err)
	}
	r := events.Result{OpID: "op-1", Kind: events.KindExtendVolume, VolumeID: "v1", Backend: "h@b", Host: "h@b#pool", OK: true,
		Command: &events.Command{OpID: "op-1", OldSizeGB: 1, Volume: basalt.VolumeSpec{ID: "v1", SizeGB: 2}}}
	if err := f.Apply(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Volume(ctx, "v1")
	if got.Size != 2 || got.Status != basalt.StatusAvailable || got.AttachStatus != basalt.AttachDetached {
		t.Fatalf("after the extend: size %d, %s, %s; want 2, available, detached", got.Size, got.Status, got.AttachStatus)
	}
}
