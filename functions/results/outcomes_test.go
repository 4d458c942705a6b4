package results_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// outPub records published commands with their topics, whatever form they took.
type outPub struct {
	mu   sync.Mutex
	msgs []published
}

func (p *outPub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var cmd events.Command
	_ = json.Unmarshal(b, &cmd)
	p.mu.Lock()
	p.msgs = append(p.msgs, published{topic, cmd})
	p.mu.Unlock()
	return nil
}

func (p *outPub) to(topic, opID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.msgs {
		if m.topic == topic && m.cmd.OpID == opID {
			n++
		}
	}
	return n
}

const testPool = "h@b#pool"

// outcomes is a control plane and the results function over one Redis, with a settable clock.
type outcomes struct {
	rdb   *redis.Client
	clk   *leaseClock
	st    *store.Store
	plane *control.Plane
	f     *results.Function
	pub   *outPub
	ctx   context.Context
	admin context.Context
}

func newOutcomes(t *testing.T) *outcomes {
	t.Helper()
	rdb := redistest.Start(t).Client()
	clk := &leaseClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	st := store.New(rdb, clk.now)
	logger := slog.New(slog.DiscardHandler)
	pub := &outPub{}
	return &outcomes{rdb: rdb, clk: clk, st: st, plane: control.New(control.Config{}, st, pub, logger),
		f: results.New(results.Config{}, st, pub, logger), pub: pub,
		ctx:   control.WithCaller(context.Background(), control.Caller{UserID: "u1", ProjectID: "p1", RequestID: "req-1"}),
		admin: control.WithCaller(context.Background(), control.Caller{UserID: "admin", ProjectID: "admin", Admin: true})}
}

// placed creates a volume of size GiB and places it on testPool as the scheduler does: its size
// claimed there, its operation owned by the backend.
func (o *outcomes) placed(t *testing.T, size int) *basalt.Volume {
	t.Helper()
	v, err := o.plane.CreateVolume(o.ctx, control.VolumeCreate{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := o.st.Reserve(o.ctx, v.ID, testPool, size, math.Inf(1)); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	op := o.op(t, v.OpID)
	v, err = o.st.UpdateVolumeWithOp(o.ctx, v.ID, func(v *basalt.Volume) error {
		v.Host = testPool
		return nil
	}, func(*basalt.Volume) *basalt.Operation {
		op.Owner, op.Attempts = "h@b", 1
		return op
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// available is a volume of size GiB whose create succeeded.
func (o *outcomes) available(t *testing.T, size int) *basalt.Volume {
	t.Helper()
	v := o.placed(t, size)
	o.apply(t, events.Result{OpID: v.OpID, Kind: events.KindCreateVolume, VolumeID: v.ID, Backend: "h@b", Host: testPool, OK: true})
	return o.vol(t, v.ID)
}

// owned hands operation opID to the backend, as placement does for extends and snapshots.
func (o *outcomes) owned(t *testing.T, opID string) {
	t.Helper()
	if _, err := o.st.UpdateOp(o.ctx, opID, func(op *basalt.Operation) error { op.Owner = "h@b"; return nil }); err != nil {
		t.Fatal(err)
	}
}

func (o *outcomes) apply(t *testing.T, r events.Result) {
	t.Helper()
	if err := o.f.Apply(o.ctx, r); err != nil {
		t.Fatalf("Apply(%s ok=%v) = %v", r.Kind, r.OK, err)
	}
}

func (o *outcomes) vol(t *testing.T, id string) *basalt.Volume {
	t.Helper()
	v, err := o.st.Volume(o.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (o *outcomes) snap(t *testing.T, id string) *basalt.Snapshot {
	t.Helper()
	sn, err := o.st.Snapshot(o.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func (o *outcomes) op(t *testing.T, id string) *basalt.Operation {
	t.Helper()
	op, err := o.st.Op(o.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// account checks the quota in use and the pool's ledger.
func (o *outcomes) account(t *testing.T, when string, volumes, snapshots, gigabytes int, ledger float64) {
	t.Helper()
	u, err := o.st.QuotaUsage(o.ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if u["volumes"] != volumes || u["snapshots"] != snapshots || u["gigabytes"] != gigabytes {
		t.Errorf("%s: quota in use %d volumes, %d snapshots, %d GiB; want %d, %d, %d", when,
			u["volumes"], u["snapshots"], u["gigabytes"], volumes, snapshots, gigabytes)
	}
	if l, _ := o.st.Ledger(o.ctx, testPool); l != ledger {
		t.Errorf("%s: ledger %v, want %v", when, l, ledger)
	}
}

func (o *outcomes) messages(t *testing.T, event string) int {
	t.Helper()
	ms, err := o.st.Messages(o.ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.EventID == event {
			n++
		}
	}
	return n
}

// TestCreateOutcomes: a success makes the volume available once; a failure puts it in error
// with the reason, returns its capacity and quota exactly once, and leaves one message; a
// failure the backend asks to reschedule sends the create back to the scheduler.
func TestCreateOutcomes(t *testing.T) {
	o := newOutcomes(t)
	ok := o.placed(t, 3)
	success := events.Result{OpID: ok.OpID, Kind: events.KindCreateVolume, VolumeID: ok.ID, Backend: "h@b", Host: testPool, OK: true}
	o.apply(t, success)
	got := o.vol(t, ok.ID)
	if got.Status != basalt.StatusAvailable || got.OpID != "" || got.StatusReason != "" || o.op(t, ok.OpID).State != basalt.OpDone {
		t.Fatalf("after success: %s (op %q, reason %q), operation %s; want available, done", got.Status, got.OpID, got.StatusReason, o.op(t, ok.OpID).State)
	}
	stamp := *got.UpdatedAt
	o.clk.set(o.clk.now().Add(time.Second))
	o.apply(t, success)
	o.apply(t, events.Result{OpID: ok.OpID, Kind: events.KindCreateVolume, VolumeID: ok.ID, Backend: "h@b", Host: testPool, Error: "late"})
	if again := o.vol(t, ok.ID); again.Status != basalt.StatusAvailable || !again.UpdatedAt.Equal(stamp) {
		t.Errorf("a duplicate success and a late failure changed the volume: %s, updated %v (was %v)", again.Status, again.UpdatedAt, stamp)
	}
	o.account(t, "one volume created", 1, 0, 3, 3)

	bad := o.placed(t, 4)
	o.account(t, "a second volume placed", 2, 0, 7, 7)
	failure := events.Result{OpID: bad.OpID, RequestID: "req-1", Kind: events.KindCreateVolume, VolumeID: bad.ID, Backend: "h@b",
		Host: testPool, Error: "disk on fire"}
	for i := 0; i < 3; i++ {
		o.apply(t, failure)
		got := o.vol(t, bad.ID)
		if got.Status != basalt.StatusError || got.StatusReason != "Volume creation failed on h@b: disk on fire" || got.OpID != "" {
			t.Errorf("failure delivery %d: %s %q (op %q), want error with the backend's reason", i+1, got.Status, got.StatusReason, got.OpID)
		}
		o.account(t, "after a failure delivery", 1, 0, 3, 3)
		if n := o.messages(t, basalt.EventCreateDriverError); n != 1 {
			t.Errorf("failure delivery %d: %d messages, want 1", i+1, n)
		}
	}
	if op := o.op(t, bad.OpID); op.State != basalt.OpFailed {
		t.Errorf("failed create's operation %s, want failed", op.State)
	}

	// A failure to reschedule: the volume leaves its pool and the create goes back to the
	// scheduler, still creating.
	again := o.placed(t, 2)
	cmd := events.Command{OpID: again.OpID, Kind: events.KindCreateVolume, VolumeID: again.ID, ProjectID: "p1",
		Volume: basalt.VolumeSpec{ID: again.ID, SizeGB: 2}, Backend: "h@b", Attempted: []string{"h@b"}}
	o.apply(t, events.Result{OpID: again.OpID, Kind: events.KindCreateVolume, VolumeID: again.ID, Backend: "h@b", Host: testPool,
		Error: "transient", Reschedule: true, Command: &cmd, Attempted: []string{"h@b"}})
	got = o.vol(t, again.ID)
	op := o.op(t, again.OpID)
	if got.Status != basalt.StatusCreating || got.Host != "" || got.OpID != again.OpID || op.State != basalt.OpPending || op.Owner != "scheduler" {
		t.Errorf("rescheduled: %s on %q (op %q), operation %s owned by %s; want creating, unplaced, pending, scheduler",
			got.Status, got.Host, got.OpID, op.State, op.Owner)
	}
	if n := o.pub.to(events.TopicScheduler, again.OpID); n < 1 {
		t.Errorf("the rescheduled create was not sent to the scheduler")
	}
	o.account(t, "rescheduled", 2, 0, 5, 3)
}

// TestDeleteOutcomes: a failed cascade delete leaves the volume and its snapshots
// error_deleting; a successful one removes them with their capacity and quota, once.
func TestDeleteOutcomes(t *testing.T) {
	o := newOutcomes(t)
	v := o.available(t, 2)
	sn, err := o.plane.CreateSnapshot(o.ctx, control.SnapshotCreate{VolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := o.st.Reserve(o.ctx, "snap:"+sn.ID, testPool, 2, math.Inf(1)); err != nil || !ok {
		t.Fatal(ok, err)
	}
	o.owned(t, sn.OpID)
	o.apply(t, events.Result{OpID: sn.OpID, Kind: events.KindCreateSnapshot, VolumeID: v.ID, SnapshotID: sn.ID, Backend: "h@b", OK: true})
	if s := o.snap(t, sn.ID); s.Status != basalt.SnapAvailable || s.OpID != "" {
		t.Fatalf("snapshot after success %s (op %q), want available", s.Status, s.OpID)
	}
	o.account(t, "a volume and its snapshot", 1, 1, 4, 4)

	if err := o.plane.DeleteVolume(o.ctx, v.ID, false, true); err != nil {
		t.Fatal(err)
	}
	del := o.vol(t, v.ID).OpID
	failed := events.Result{OpID: del, Kind: events.KindDeleteVolume, VolumeID: v.ID, Backend: "h@b", Error: "busy",
		Command: &events.Command{Snapshots: []string{sn.ID}}}
	o.apply(t, failed)
	gv, gs := o.vol(t, v.ID), o.snap(t, sn.ID)
	if gv.Status != basalt.StatusErrorDeleting || gv.StatusReason != "busy" || gv.PreviousStatus != "" || gv.OpID != "" {
		t.Errorf("volume after a failed delete: %s %q (previous %q, op %q), want error_deleting busy", gv.Status, gv.StatusReason, gv.PreviousStatus, gv.OpID)
	}
	if gs.Status != basalt.SnapErrorDeleting || gs.StatusReason != "busy" || gs.OpID != "" || gs.PreviousStatus != "" {
		t.Errorf("snapshot after a failed cascade: %s %q (op %q), want error_deleting busy", gs.Status, gs.StatusReason, gs.OpID)
	}
	o.account(t, "after a failed delete", 1, 1, 4, 4)

	// Forced again by an administrator, it succeeds: everything goes, once.
	if _, err := o.st.UpdateSnapshot(o.ctx, sn.ID, func(s *basalt.Snapshot) error { s.Status = basalt.SnapError; return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.plane.DeleteVolume(o.admin, v.ID, true, true); err != nil {
		t.Fatal(err)
	}
	del = o.vol(t, v.ID).OpID
	done := events.Result{OpID: del, Kind: events.KindDeleteVolume, VolumeID: v.ID, Backend: "h@b", OK: true,
		Command: &events.Command{Snapshots: []string{sn.ID}}}
	for i := 0; i < 2; i++ {
		o.apply(t, done)
		if _, err := o.st.Volume(o.ctx, v.ID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
			t.Errorf("delivery %d: volume still there (%v)", i+1, err)
		}
		if _, err := o.st.Snapshot(o.ctx, sn.ID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
			t.Errorf("delivery %d: snapshot still there (%v)", i+1, err)
		}
		o.account(t, "after the delete", 0, 0, 0, 0)
	}
	if op := o.op(t, del); op.State != basalt.OpDone {
		t.Errorf("delete operation %s, want done", op.State)
	}
}

// TestExtendOutcomes: a success grows the volume and ends it in-use when attached, available
// otherwise, keeping the growth once; a failure is error_extending and returns the growth.
func TestExtendOutcomes(t *testing.T) {
	o := newOutcomes(t)
	extend := func(v *basalt.Volume, to int, online bool) (string, events.Result) {
		t.Helper()
		if err := o.plane.ExtendVolume(o.ctx, v.ID, to, online); err != nil {
			t.Fatal(err)
		}
		opID := o.vol(t, v.ID).OpID
		if ok, err := o.st.Grow(o.ctx, v.ID, testPool, opID, to-v.Size, math.Inf(1)); err != nil || !ok {
			t.Fatal(ok, err)
		}
		o.owned(t, opID)
		return opID, events.Result{OpID: opID, Kind: events.KindExtendVolume, VolumeID: v.ID, Backend: "h@b",
			Command: &events.Command{OldSizeGB: v.Size, Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: to}}}
	}
	a := o.available(t, 2)
	opID, r := extend(a, 5, false)
	o.account(t, "extending", 1, 0, 5, 5)
	r.OK = true
	for i := 0; i < 2; i++ {
		o.apply(t, r)
		got := o.vol(t, a.ID)
		if got.Status != basalt.StatusAvailable || got.Size != 5 || got.PreviousStatus != "" || got.OpID != "" {
			t.Errorf("delivery %d: %s size %d (previous %q, op %q), want available, 5", i+1, got.Status, got.Size, got.PreviousStatus, got.OpID)
		}
		o.account(t, "extended", 1, 0, 5, 5)
	}
	if op := o.op(t, opID); op.State != basalt.OpDone {
		t.Errorf("extend operation %s, want done", op.State)
	}

	// Online, attached: back to in-use.
	if _, err := o.st.UpdateVolume(o.ctx, a.ID, func(v *basalt.Volume) error {
		v.Status, v.AttachStatus = basalt.StatusInUse, basalt.AttachAttached
		v.Attachments = []*basalt.Attachment{{ID: "att-1", VolumeID: v.ID, ProjectID: "p1", Status: basalt.AttachAttached}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, r = extend(o.vol(t, a.ID), 6, true)
	r.OK = true
	o.apply(t, r)
	if got := o.vol(t, a.ID); got.Status != basalt.StatusInUse || got.AttachStatus != basalt.AttachAttached || got.Size != 6 {
		t.Errorf("online extend ended %s/%s size %d, want in-use/attached, 6", got.Status, got.AttachStatus, got.Size)
	}
	o.account(t, "extended online", 1, 0, 6, 6)

	// A failure: error_extending, the growth returned, once.
	opID, r = extend(o.vol(t, a.ID), 9, true)
	r.Error = "no space in the thin pool"
	for i := 0; i < 2; i++ {
		o.apply(t, r)
		got := o.vol(t, a.ID)
		if got.Status != basalt.StatusErrorExtend || got.StatusReason != r.Error || got.Size != 6 || got.OpID != "" {
			t.Errorf("delivery %d: %s %q size %d, want error_extending with the reason, size 6", i+1, got.Status, got.StatusReason, got.Size)
		}
		o.account(t, "extend failed", 1, 0, 6, 6)
	}
	if op := o.op(t, opID); op.State != basalt.OpFailed {
		t.Errorf("failed extend operation %s, want failed", op.State)
	}
}

// TestRevertAndSnapshotOutcomes: a failed revert leaves the volume in error and its snapshot
// available (as Cinder); a failed snapshot is error with its quota returned once; a failed
// snapshot delete is error_deleting.
func TestRevertAndSnapshotOutcomes(t *testing.T) {
	o := newOutcomes(t)
	v := o.available(t, 1)
	sn, err := o.plane.CreateSnapshot(o.ctx, control.SnapshotCreate{VolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	o.owned(t, sn.OpID)
	o.apply(t, events.Result{OpID: sn.OpID, Kind: events.KindCreateSnapshot, VolumeID: v.ID, SnapshotID: sn.ID, Backend: "h@b", OK: true})

	revert := func() events.Result {
		t.Helper()
		if err := o.plane.RevertVolume(o.ctx, v.ID, sn.ID); err != nil {
			t.Fatal(err)
		}
		opID := o.vol(t, v.ID).OpID
		return events.Result{OpID: opID, Kind: events.KindRevert, VolumeID: v.ID, SnapshotID: sn.ID, Backend: "h@b"}
	}
	r := revert()
	r.OK = true
	o.apply(t, r)
	if gv, gs := o.vol(t, v.ID), o.snap(t, sn.ID); gv.Status != basalt.StatusAvailable || gs.Status != basalt.SnapAvailable || gv.OpID != "" || gs.OpID != "" {
		t.Errorf("after a revert: volume %s, snapshot %s; want both available, free", gv.Status, gs.Status)
	}
	r = revert()
	r.Error = "read error"
	o.apply(t, r)
	gv, gs := o.vol(t, v.ID), o.snap(t, sn.ID)
	if gv.Status != basalt.StatusError || !strings.Contains(gv.StatusReason, "read error") || gv.OpID != "" {
		t.Errorf("after a failed revert the volume is %s %q (op %q), want error with the reason", gv.Status, gv.StatusReason, gv.OpID)
	}
	if gs.Status != basalt.SnapAvailable || gs.OpID != "" {
		t.Errorf("after a failed revert the snapshot is %s (op %q), want available", gs.Status, gs.OpID)
	}
	if op := o.op(t, r.OpID); op.State != basalt.OpFailed {
		t.Errorf("failed revert operation %s, want failed", op.State)
	}
	o.account(t, "after the reverts", 1, 1, 2, 1)

	// A snapshot whose create fails: error, its quota returned once.
	if _, err := o.st.UpdateVolume(o.ctx, v.ID, func(v *basalt.Volume) error { v.Status = basalt.StatusAvailable; return nil }); err != nil {
		t.Fatal(err)
	}
	bad, err := o.plane.CreateSnapshot(o.ctx, control.SnapshotCreate{VolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	o.account(t, "a second snapshot creating", 1, 2, 3, 1)
	o.owned(t, bad.OpID)
	for i := 0; i < 2; i++ {
		o.apply(t, events.Result{OpID: bad.OpID, Kind: events.KindCreateSnapshot, VolumeID: v.ID, SnapshotID: bad.ID, Backend: "h@b", Error: "cow failed"})
		got := o.snap(t, bad.ID)
		if got.Status != basalt.SnapError || !strings.Contains(got.StatusReason, "cow failed") || got.OpID != "" {
			t.Errorf("delivery %d: snapshot %s %q, want error with the reason", i+1, got.Status, got.StatusReason)
		}
		o.account(t, "snapshot failed", 1, 1, 2, 1)
	}

	// Its delete fails: error_deleting.
	if err := o.plane.DeleteSnapshot(o.ctx, bad.ID, false); err != nil {
		t.Fatal(err)
	}
	delOp := o.snap(t, bad.ID).OpID
	o.apply(t, events.Result{OpID: delOp, Kind: events.KindDeleteSnapshot, VolumeID: v.ID, SnapshotID: bad.ID, Backend: "h@b", Error: "busy"})
	if got := o.snap(t, bad.ID); got.Status != basalt.SnapErrorDeleting || got.StatusReason != "busy" || got.PreviousStatus != "" || got.OpID != "" {
		t.Errorf("after a failed snapshot delete: %s %q (previous %q)", got.Status, got.StatusReason, got.PreviousStatus)
	}
}

// reconcileUntil runs the reconciler as its loop does, every 4 s of the clock, up to at.
func (o *outcomes) reconcileUntil(t *testing.T, at time.Time) {
	t.Helper()
	for now := o.clk.now(); !now.After(at); now = now.Add(4 * time.Second) {
		o.clk.set(now)
		if err := o.f.Reconcile(o.ctx); err != nil {
			t.Fatal(err)
		}
	}
	o.clk.set(at)
}

// TestReconcilerEndsOnlyExpiredLeases: the reconciler fails the operations whose deadline has
// passed, each as its kind's failure, and leaves the others alone.
func TestReconcilerEndsOnlyExpiredLeases(t *testing.T) {
	o := newOutcomes(t)
	t0 := o.clk.now()
	creating := o.placed(t, 1) // deadline t0+10m
	extending := o.available(t, 1)
	reserved := o.available(t, 1)
	deleting := o.available(t, 1)
	if err := o.plane.Reserve(o.ctx, reserved.ID); err != nil { // deadline t0+10m
		t.Fatal(err)
	}
	if err := o.plane.DeleteVolume(o.ctx, deleting.ID, false, false); err != nil {
		t.Fatal(err)
	}
	delOp := o.vol(t, deleting.ID).OpID
	o.clk.set(t0.Add(5 * time.Minute))
	if err := o.plane.ExtendVolume(o.ctx, extending.ID, 2, false); err != nil { // deadline t0+15m
		t.Fatal(err)
	}
	// The delete's agent holds a lease until t0+20m.
	if got, err := events.RenewLeases(o.ctx, o.rdb, "h@b", t0.Add(20*time.Minute), delOp); err != nil || len(got) != 1 {
		t.Fatalf("RenewLeases = %v, %v", got, err)
	}

	o.reconcileUntil(t, t0.Add(11*time.Minute))
	want := map[string]basalt.VolumeStatus{creating.ID: basalt.StatusError, reserved.ID: basalt.StatusAvailable,
		extending.ID: basalt.StatusExtending, deleting.ID: basalt.StatusDeleting}
	for id, status := range want {
		if got := o.vol(t, id); got.Status != status {
			t.Errorf("at t0+11m volume %s is %s, want %s", id, got.Status, status)
		}
	}
	if got := o.vol(t, creating.ID); !strings.Contains(got.StatusReason, "did not finish by its deadline") {
		t.Errorf("overdue create's reason %q, want the deadline named", got.StatusReason)
	}
	o.account(t, "after the overdue create", 3, 0, 4, 3)

	o.reconcileUntil(t, t0.Add(16*time.Minute))
	if got := o.vol(t, extending.ID); got.Status != basalt.StatusErrorExtend || got.Size != 1 {
		t.Errorf("at t0+16m the overdue extend left %s size %d, want error_extending, 1", got.Status, got.Size)
	}
	if got := o.vol(t, deleting.ID); got.Status != basalt.StatusDeleting {
		t.Errorf("at t0+16m the leased delete is %s, want still deleting", got.Status)
	}
	o.account(t, "after the overdue extend", 3, 0, 3, 3)

	o.reconcileUntil(t, t0.Add(21*time.Minute))
	if got := o.vol(t, deleting.ID); got.Status != basalt.StatusErrorDeleting || got.OpID != "" {
		t.Errorf("at t0+21m the delete whose lease ran out is %s (op %q), want error_deleting", got.Status, got.OpID)
	}
	if op := o.op(t, delOp); op.State != basalt.OpFailed {
		t.Errorf("the delete's operation is %s, want failed", op.State)
	}
}
