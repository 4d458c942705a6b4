package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/store"
)

// recPub records published commands; while down is set it refuses them.
type recPub struct {
	mu   sync.Mutex
	down bool
	sent []recSent
}

type recSent struct{ topic, opID string }

func (p *recPub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return errors.New("bus unreachable")
	}
	p.sent = append(p.sent, recSent{topic, opID})
	return nil
}

func (p *recPub) setDown(down bool) { p.mu.Lock(); p.down = down; p.mu.Unlock() }

func (p *recPub) count(opID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.sent {
		if s.opID == opID {
			n++
		}
	}
	return n
}

// bench is a control plane over its own Redis, with a member (alice of p1) and an admin.
type bench struct {
	st           *store.Store
	p            *control.Plane
	pub          *recPub
	member, root context.Context
}

func newBench(t *testing.T) *bench {
	t.Helper()
	st := store.New(redistest.Start(t).Client(), nil)
	pub := &recPub{}
	return &bench{st: st, p: control.New(control.Config{}, st, pub, slog.New(slog.DiscardHandler)), pub: pub,
		member: control.WithCaller(context.Background(), control.Caller{UserID: "alice", ProjectID: "p1", RequestID: "req-1"}),
		root:   control.WithCaller(context.Background(), control.Caller{UserID: "admin", ProjectID: "admin", Admin: true})}
}

// volume creates a volume of size GiB and makes it as if placed on h@b#pool and created, in
// status: available, or in-use with one attachment.
func (b *bench) volume(t *testing.T, size int, status basalt.VolumeStatus) *basalt.Volume {
	t.Helper()
	v, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.st.FailOp(b.member, v.OpID, "test: created"); err != nil {
		t.Fatal(err)
	}
	v, err = b.st.UpdateVolume(b.member, v.ID, func(v *basalt.Volume) error {
		v.Host, v.Status, v.OpID = "h@b#pool", status, ""
		if status == basalt.StatusInUse {
			v.AttachStatus = basalt.AttachAttached
			v.Attachments = []*basalt.Attachment{{ID: "att-" + v.ID, VolumeID: v.ID, ProjectID: v.ProjectID, Status: basalt.AttachAttached}}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// snapshot snapshots volume id and makes the snapshot available.
func (b *bench) snapshot(t *testing.T, volumeID string) *basalt.Snapshot {
	t.Helper()
	sn, err := b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: volumeID, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.st.FailOp(b.member, sn.OpID, "test: created"); err != nil {
		t.Fatal(err)
	}
	sn, err = b.st.UpdateSnapshot(b.member, sn.ID, func(sn *basalt.Snapshot) error {
		sn.Status, sn.OpID = basalt.SnapAvailable, ""
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // snapshots are ordered by creation time
	return sn
}

func (b *bench) get(t *testing.T, id string) *basalt.Volume {
	t.Helper()
	v, err := b.st.Volume(b.member, id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (b *bench) getSnap(t *testing.T, id string) *basalt.Snapshot {
	t.Helper()
	sn, err := b.st.Snapshot(b.member, id)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func (b *bench) inUse(t *testing.T, resource string) int {
	t.Helper()
	u, err := b.st.QuotaUsage(b.member, "p1")
	if err != nil {
		t.Fatal(err)
	}
	return u[resource]
}

func (b *bench) op(t *testing.T, id string) *basalt.Operation {
	t.Helper()
	op, err := b.st.Op(b.member, id)
	if err != nil {
		t.Fatalf("operation %q: %v", id, err)
	}
	return op
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if basalt.ErrorCode(err) != code {
		t.Errorf("%s = %v (%s), want %s", what, err, basalt.ErrorCode(err), code)
	}
}

// TestCreateVolumeRecordsAllAtOnce: a create writes the volume, its operation, its command and
// its quota charge together; the command is sent once; a retry with the same Idempotency-Key
// gets the first answer and charges nothing more; a create over quota leaves nothing.
func TestCreateVolumeRecordsAllAtOnce(t *testing.T) {
	b := newBench(t)
	b.pub.setDown(true)
	v, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 3})
	if err != nil {
		t.Fatalf("create with the bus down = %v, want accepted", err)
	}
	got := b.get(t, v.ID)
	if got.Status != basalt.StatusCreating || got.OpID == "" || got.OpID != v.OpID || got.Host != "" {
		t.Fatalf("record: %s op %q host %q; want creating, held by the returned op, unplaced", got.Status, got.OpID, got.Host)
	}
	op := b.op(t, got.OpID)
	var cmd events.Command
	if err := json.Unmarshal(op.Command, &cmd); err != nil {
		t.Fatal(err)
	}
	if op.Kind != events.KindCreateVolume || op.State != basalt.OpPending || op.Owner != "scheduler" ||
		op.Topic != events.TopicScheduler || op.RequestID != "req-1" {
		t.Errorf("operation %+v: want a pending create_volume owned by the scheduler, to %s, request req-1", op, events.TopicScheduler)
	}
	if cmd.Kind != events.KindCreateVolume || cmd.VolumeID != v.ID || cmd.OpID != op.ID || cmd.Volume.SizeGB != 3 {
		t.Errorf("command %+v: want create_volume of %s, 3 GiB", cmd, v.ID)
	}
	if unsent, _ := b.st.Unsent(b.member, b.st.Now().Add(time.Second)); len(unsent) != 1 || unsent[0] != op.ID {
		t.Errorf("outbox %v, want [%s]", unsent, op.ID)
	}
	if g, n := b.inUse(t, "gigabytes"), b.inUse(t, "volumes"); g != 3 || n != 1 {
		t.Errorf("quota in use: %d GiB, %d volumes; want 3 and 1", g, n)
	}

	// With the bus up the command goes out once and leaves the outbox.
	b.pub.setDown(false)
	v2, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.pub.count(v2.OpID); n != 1 {
		t.Errorf("the create's command was published %d times, want 1", n)
	}
	if unsent, _ := b.st.Unsent(b.member, b.st.Now().Add(time.Second)); len(unsent) != 1 {
		t.Errorf("outbox %v after a sent create, want only the earlier unsent one", unsent)
	}

	// The same request twice with one Idempotency-Key: one volume, one charge.
	create := func() (int, error) {
		claim, saved, err := b.p.ClaimIdempotencyKey(b.member, "key-1", "POST /v3/p1/volumes size=4")
		if err != nil {
			return 0, err
		}
		if saved != nil {
			return saved.Status, nil
		}
		if _, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 4}); err != nil {
			return 0, err
		}
		return 202, b.p.CompleteIdempotencyKey(b.member, claim, control.SavedResponse{Status: 202, Body: []byte("{}")})
	}
	for i := 0; i < 2; i++ {
		if status, err := create(); err != nil || status != 202 {
			t.Fatalf("request %d with the key = %d, %v; want 202", i+1, status, err)
		}
	}
	vols, _ := b.st.Volumes(b.member, "p1")
	if len(vols) != 3 || b.inUse(t, "volumes") != 3 || b.inUse(t, "gigabytes") != 9 {
		t.Errorf("after a retried create: %d volumes, quota %d volumes %d GiB; want 3, 3, 9",
			len(vols), b.inUse(t, "volumes"), b.inUse(t, "gigabytes"))
	}

	// Over quota: refused, nothing kept.
	if _, err := b.p.UpdateQuotaSet(b.root, "p1", map[string]string{"volumes": "3"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1})
	wantCode(t, "create over the volumes quota", err, basalt.EOVERLIMIT)
	if vols, _ := b.st.Volumes(b.member, "p1"); len(vols) != 3 || b.inUse(t, "volumes") != 3 || b.inUse(t, "gigabytes") != 9 {
		t.Errorf("a refused create left %d volumes, quota %d volumes %d GiB; want 3, 3, 9", len(vols), b.inUse(t, "volumes"), b.inUse(t, "gigabytes"))
	}
}

// TestDeleteVolumeRules: Cinder's delete rules, and exactly one of concurrent deletes wins.
func TestDeleteVolumeRules(t *testing.T) {
	b := newBench(t)
	attached := b.volume(t, 1, basalt.StatusInUse)
	err := b.p.DeleteVolume(b.member, attached.ID, false, false)
	wantCode(t, "delete of an in-use volume", err, basalt.EINVALID)
	if err == nil || !strings.Contains(err.Error(), "must be available or error") {
		t.Errorf("refusal %v, want Cinder's message", err)
	}
	if got := b.get(t, attached.ID); got.Status != basalt.StatusInUse || got.OpID != "" {
		t.Errorf("a refused delete left the volume %s (op %q)", got.Status, got.OpID)
	}

	withSnap := b.volume(t, 1, basalt.StatusAvailable)
	sn := b.snapshot(t, withSnap.ID)
	wantCode(t, "delete of a volume with a snapshot", b.p.DeleteVolume(b.member, withSnap.ID, false, false), basalt.EINVALID)
	if got := b.get(t, withSnap.ID); got.Status != basalt.StatusAvailable {
		t.Errorf("a refused delete left the volume %s", got.Status)
	}
	// Cascade: the volume and its snapshot go to deleting under one operation.
	if err := b.p.DeleteVolume(b.member, withSnap.ID, false, true); err != nil {
		t.Fatalf("cascade delete = %v", err)
	}
	gv, gs := b.get(t, withSnap.ID), b.getSnap(t, sn.ID)
	if gv.Status != basalt.StatusDeleting || gv.PreviousStatus != basalt.StatusAvailable || gs.Status != basalt.SnapDeleting ||
		gs.OpID != gv.OpID || gv.OpID == "" {
		t.Errorf("cascade: volume %s (previous %s, op %q), snapshot %s (op %q); want both deleting under one op",
			gv.Status, gv.PreviousStatus, gv.OpID, gs.Status, gs.OpID)
	}
	if op := b.op(t, gv.OpID); op.Kind != events.KindDeleteVolume || op.Owner != "h@b" {
		t.Errorf("delete operation %s owned by %s, want delete_volume by h@b", op.Kind, op.Owner)
	}
	wantCode(t, "a second delete", b.p.DeleteVolume(b.member, withSnap.ID, false, true), basalt.EINVALID)

	// error_deleting needs force, and force needs an administrator.
	stuck := b.volume(t, 1, basalt.StatusErrorDeleting)
	wantCode(t, "delete of an error_deleting volume", b.p.DeleteVolume(b.member, stuck.ID, false, false), basalt.EINVALID)
	wantCode(t, "a member's forced delete", b.p.DeleteVolume(b.member, stuck.ID, true, false), basalt.EFORBIDDEN)
	if err := b.p.DeleteVolume(b.root, stuck.ID, true, false); err != nil {
		t.Errorf("an administrator's forced delete of error_deleting = %v", err)
	}
	got := b.get(t, stuck.ID)
	if got.Status != basalt.StatusDeleting {
		t.Errorf("forced delete left %s, want deleting", got.Status)
	}
	wantCode(t, "a forced delete of a deleting volume", b.p.DeleteVolume(b.root, stuck.ID, true, false), basalt.EINVALID)
	if again := b.get(t, stuck.ID); again.OpID != got.OpID {
		t.Errorf("a refused forced delete replaced the operation %s by %s", got.OpID, again.OpID)
	}

	// Concurrent deletes: one wins, the others are refused, one command.
	v := b.volume(t, 1, basalt.StatusError)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.p.DeleteVolume(b.member, v.ID, false, false) }()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case basalt.ErrorCode(err) != basalt.EINVALID && basalt.ErrorCode(err) != basalt.ECONFLICT:
			t.Errorf("a concurrent delete = %v, want refused", err)
		}
	}
	got = b.get(t, v.ID)
	if won != 1 || got.Status != basalt.StatusDeleting || b.pub.count(got.OpID) != 1 {
		t.Errorf("concurrent deletes: %d won, volume %s, its command sent %d times; want 1, deleting, 1", won, got.Status, b.pub.count(got.OpID))
	}

	// A volume never placed is removed at once, with its quota.
	before := b.inUse(t, "volumes")
	unplaced, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.st.UpdateVolume(b.member, unplaced.ID, func(v *basalt.Volume) error {
		v.Status, v.StatusReason = basalt.StatusError, "no room"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.p.DeleteVolume(b.member, unplaced.ID, false, false); err != nil {
		t.Fatalf("delete of an unplaced volume = %v", err)
	}
	if _, err := b.st.Volume(b.member, unplaced.ID); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("the unplaced volume is still there (%v)", err)
	}
	if n := b.inUse(t, "volumes"); n != before {
		t.Errorf("volumes in use %d after deleting an unplaced one, want %d", n, before)
	}
	if op := b.op(t, unplaced.OpID); op.State != basalt.OpFailed {
		t.Errorf("the unplaced volume's operation is %s, want failed", op.State)
	}
}

// TestExtendRules: an available volume may grow, an in-use one only online; anything else is
// refused without charging quota.
func TestExtendRules(t *testing.T) {
	b := newBench(t)
	avail := b.volume(t, 2, basalt.StatusAvailable)
	attached := b.volume(t, 2, basalt.StatusInUse)
	broken := b.volume(t, 2, basalt.StatusError)
	const base = 6
	refused := []struct {
		name   string
		id     string
		size   int
		online bool
		code   string
	}{
		{"in-use without online", attached.ID, 3, false, basalt.EINVALID},
		{"error", broken.ID, 3, true, basalt.EINVALID},
		{"not larger", avail.ID, 2, false, basalt.EINVALID},
		{"above the size limit", avail.ID, 70000, false, basalt.EOVERLIMIT},
	}
	for _, c := range refused {
		wantCode(t, "extend "+c.name, b.p.ExtendVolume(b.member, c.id, c.size, c.online), c.code)
	}
	if g := b.inUse(t, "gigabytes"); g != base {
		t.Errorf("refused extends left %d GiB charged, want %d", g, base)
	}
	if got := b.get(t, attached.ID); got.Status != basalt.StatusInUse || got.OpID != "" {
		t.Errorf("a refused extend left %s (op %q)", got.Status, got.OpID)
	}
	if err := b.p.ExtendVolume(b.member, avail.ID, 5, false); err != nil {
		t.Fatalf("extend available = %v", err)
	}
	if err := b.p.ExtendVolume(b.member, attached.ID, 4, true); err != nil {
		t.Fatalf("online extend in-use = %v", err)
	}
	for id, prev := range map[string]basalt.VolumeStatus{avail.ID: basalt.StatusAvailable, attached.ID: basalt.StatusInUse} {
		got := b.get(t, id)
		if got.Status != basalt.StatusExtending || got.PreviousStatus != prev || got.Size != 2 {
			t.Errorf("extending %s: %s (previous %s, size %d); want extending from %s, size 2 until done", id, got.Status, got.PreviousStatus, got.Size, prev)
		}
		op := b.op(t, got.OpID)
		var cmd events.Command
		_ = json.Unmarshal(op.Command, &cmd)
		if op.Kind != events.KindExtendVolume || op.Topic != events.TopicScheduler || cmd.OldSizeGB != 2 || cmd.SourcePool != "h@b#pool" {
			t.Errorf("extend operation %s to %s, command %+v; want extend_volume via the scheduler from 2 GiB on h@b#pool", op.Kind, op.Topic, cmd)
		}
	}
	if g := b.inUse(t, "gigabytes"); g != base+3+2 {
		t.Errorf("%d GiB charged after two extends, want %d", g, base+5)
	}
	wantCode(t, "extend of an extending volume", b.p.ExtendVolume(b.member, avail.ID, 9, false), basalt.EINVALID)
	if g := b.inUse(t, "gigabytes"); g != base+5 {
		t.Errorf("a refused extend of an extending volume left %d GiB charged, want %d", g, base+5)
	}
}

// TestRevertRules: a revert needs the latest snapshot and an available volume; it holds both.
func TestRevertRules(t *testing.T) {
	b := newBench(t)
	v := b.volume(t, 1, basalt.StatusAvailable)
	old := b.snapshot(t, v.ID)
	latest := b.snapshot(t, v.ID)
	wantCode(t, "revert to an older snapshot", b.p.RevertVolume(b.member, v.ID, old.ID), basalt.EINVALID)
	other := b.volume(t, 1, basalt.StatusAvailable)
	wantCode(t, "revert to another volume's snapshot", b.p.RevertVolume(b.member, other.ID, latest.ID), basalt.EINVALID)

	if _, err := b.st.UpdateVolume(b.member, v.ID, func(v *basalt.Volume) error {
		v.Status, v.AttachStatus = basalt.StatusInUse, basalt.AttachAttached
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "revert of an in-use volume", b.p.RevertVolume(b.member, v.ID, latest.ID), basalt.ECONFLICT)
	if _, err := b.st.UpdateVolume(b.member, v.ID, func(v *basalt.Volume) error {
		v.Status, v.AttachStatus = basalt.StatusAvailable, basalt.AttachDetached
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.p.RevertVolume(b.member, v.ID, latest.ID); err != nil {
		t.Fatalf("revert to the latest snapshot = %v", err)
	}
	gv, gs, go_ := b.get(t, v.ID), b.getSnap(t, latest.ID), b.getSnap(t, old.ID)
	if gv.Status != basalt.StatusReverting || gs.Status != basalt.SnapRestoring || gv.OpID == "" || gs.OpID != gv.OpID {
		t.Errorf("reverting: volume %s (op %q), snapshot %s (op %q); want reverting and restoring under one op", gv.Status, gv.OpID, gs.Status, gs.OpID)
	}
	if go_.Status != basalt.SnapAvailable || go_.OpID != "" {
		t.Errorf("the older snapshot is %s (op %q), want untouched", go_.Status, go_.OpID)
	}
	if op := b.op(t, gv.OpID); op.Kind != events.KindRevert || op.SnapshotID != latest.ID || op.Topic != events.BackendTopic("h@b") {
		t.Errorf("revert operation %+v, want revert_to_snapshot of %s sent to h@b", op, latest.ID)
	}
	wantCode(t, "a second revert", b.p.RevertVolume(b.member, v.ID, latest.ID), basalt.ECONFLICT)
}

// TestSnapshotRules: an in-use volume is snapshotted only with force, a refused snapshot
// charges nothing, and a snapshot is deleted from available or error (any, forced, but
// deleting).
func TestSnapshotRules(t *testing.T) {
	b := newBench(t)
	attached := b.volume(t, 3, basalt.StatusInUse)
	_, err := b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: attached.ID})
	wantCode(t, "snapshot of an in-use volume without force", err, basalt.EINVALID)
	maint := b.volume(t, 3, basalt.StatusMaintenance)
	_, err = b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: maint.ID, Force: true})
	wantCode(t, "snapshot of a volume in maintenance", err, basalt.EINVALID)
	unplaced, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: unplaced.ID, Force: true})
	wantCode(t, "snapshot of an unplaced volume", err, basalt.EINVALID)
	if n, g := b.inUse(t, "snapshots"), b.inUse(t, "gigabytes"); n != 0 || g != 7 {
		t.Errorf("refused snapshots left %d snapshots, %d GiB charged; want 0 and 7", n, g)
	}
	sn, err := b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: attached.ID, Force: true})
	if err != nil {
		t.Fatalf("forced snapshot of an in-use volume = %v", err)
	}
	got := b.getSnap(t, sn.ID)
	if got.Status != basalt.SnapCreating || got.OpID == "" || got.Host != "h@b#pool" || got.Size != 3 {
		t.Errorf("snapshot %s (op %q) on %q of %d GiB; want creating on h@b#pool, 3", got.Status, got.OpID, got.Host, got.Size)
	}
	if v := b.get(t, attached.ID); v.Status != basalt.StatusInUse || v.Snapshots != 1 {
		t.Errorf("snapshotted volume %s with %d snapshots, want in-use with 1", v.Status, v.Snapshots)
	}
	if n, g := b.inUse(t, "snapshots"), b.inUse(t, "gigabytes"); n != 1 || g != 10 {
		t.Errorf("quota %d snapshots, %d GiB; want 1 and 10", n, g)
	}

	// Delete: creating refused, forced by an administrator accepted, deleting refused even forced.
	wantCode(t, "delete of a creating snapshot", b.p.DeleteSnapshot(b.member, sn.ID, false), basalt.EINVALID)
	if err := b.p.DeleteSnapshot(b.root, sn.ID, true); err != nil {
		t.Fatalf("forced delete of a creating snapshot = %v", err)
	}
	got = b.getSnap(t, sn.ID)
	if got.Status != basalt.SnapDeleting || got.PreviousStatus != basalt.SnapCreating {
		t.Errorf("deleting snapshot %s (previous %s), want deleting from creating", got.Status, got.PreviousStatus)
	}
	wantCode(t, "forced delete of a deleting snapshot", b.p.DeleteSnapshot(b.root, sn.ID, true), basalt.EINVALID)
}

// TestResetStatus: an administrator's reset ends the operation in flight and settles what it
// had charged; deleting and in-use without attachments are refused.
func TestResetStatus(t *testing.T) {
	b := newBench(t)
	v := b.volume(t, 2, basalt.StatusAvailable)
	if err := b.p.ExtendVolume(b.member, v.ID, 10, false); err != nil {
		t.Fatal(err)
	}
	opID := b.get(t, v.ID).OpID
	if g := b.inUse(t, "gigabytes"); g != 10 {
		t.Fatalf("%d GiB charged while extending, want 10", g)
	}
	s := func(x string) *string { return &x }
	wantCode(t, "a member's reset", b.p.ResetVolumeStatus(b.member, v.ID, s("available"), nil), basalt.EFORBIDDEN)
	wantCode(t, "reset to deleting", b.p.ResetVolumeStatus(b.root, v.ID, s("deleting"), nil), basalt.EINVALID)
	wantCode(t, "reset to in-use without attachments", b.p.ResetVolumeStatus(b.root, v.ID, s("in-use"), nil), basalt.EINVALID)
	wantCode(t, "reset to no status", b.p.ResetVolumeStatus(b.root, v.ID, s("sleeping"), nil), basalt.EINVALID)
	if got := b.get(t, v.ID); got.Status != basalt.StatusExtending || got.OpID != opID {
		t.Errorf("refused resets left %s (op %q), want extending held by %s", got.Status, got.OpID, opID)
	}
	if err := b.p.ResetVolumeStatus(b.root, v.ID, s("ERROR"), nil); err != nil {
		t.Fatalf("reset to error = %v", err)
	}
	got := b.get(t, v.ID)
	if got.Status != basalt.StatusError || got.OpID != "" || got.Size != 2 {
		t.Errorf("after reset: %s (op %q, size %d), want error, no op, size 2", got.Status, got.OpID, got.Size)
	}
	if op := b.op(t, opID); op.State != basalt.OpFailed || !strings.Contains(op.Reason, "reset by an administrator") {
		t.Errorf("the extend's operation is %s (%q), want failed by the reset", op.State, op.Reason)
	}
	if g := b.inUse(t, "gigabytes"); g != 2 {
		t.Errorf("%d GiB charged after the reset ended the extend, want 2", g)
	}

	sn := b.snapshot(t, b.volume(t, 1, basalt.StatusAvailable).ID)
	if err := b.p.DeleteSnapshot(b.member, sn.ID, false); err != nil {
		t.Fatal(err)
	}
	snOp := b.getSnap(t, sn.ID).OpID
	wantCode(t, "reset of a snapshot to a bad status", b.p.ResetSnapshotStatus(b.root, sn.ID, "gone"), basalt.EINVALID)
	if err := b.p.ResetSnapshotStatus(b.root, sn.ID, "available"); err != nil {
		t.Fatal(err)
	}
	if got := b.getSnap(t, sn.ID); got.Status != basalt.SnapAvailable || got.OpID != "" {
		t.Errorf("reset snapshot %s (op %q), want available, no op", got.Status, got.OpID)
	}
	if op := b.op(t, snOp); op.State != basalt.OpFailed {
		t.Errorf("the snapshot delete's operation is %s, want failed", op.State)
	}
}

// TestLegacyReserveAndDetach: os-reserve holds an available volume attaching until
// os-unreserve; os-begin_detaching needs an attached volume and os-roll_detaching undoes it.
func TestLegacyReserveAndDetach(t *testing.T) {
	b := newBench(t)
	v := b.volume(t, 1, basalt.StatusAvailable)
	if err := b.p.Reserve(b.member, v.ID); err != nil {
		t.Fatal(err)
	}
	got := b.get(t, v.ID)
	if got.Status != basalt.StatusAttaching || got.OpID == "" || b.op(t, got.OpID).Kind != events.KindReserve {
		t.Fatalf("reserved volume %s (op %q), want attaching held by a reserve", got.Status, got.OpID)
	}
	opID := got.OpID
	wantCode(t, "reserve of an attaching volume", b.p.Reserve(b.member, v.ID), basalt.EINVALID)
	wantCode(t, "begin_detaching of an available volume", b.p.BeginDetaching(b.member, b.volume(t, 1, basalt.StatusAvailable).ID), basalt.EINVALID)
	if err := b.p.Unreserve(b.member, v.ID); err != nil {
		t.Fatal(err)
	}
	if got := b.get(t, v.ID); got.Status != basalt.StatusAvailable || got.OpID != "" || got.AttachStatus != basalt.AttachDetached {
		t.Errorf("unreserved volume %s/%s (op %q), want available/detached", got.Status, got.AttachStatus, got.OpID)
	}
	if op := b.op(t, opID); op.State != basalt.OpFailed {
		t.Errorf("the reserve's operation is %s, want ended (failed)", op.State)
	}

	attached := b.volume(t, 1, basalt.StatusInUse)
	if err := b.p.BeginDetaching(b.member, attached.ID); err != nil {
		t.Fatal(err)
	}
	if got := b.get(t, attached.ID); got.Status != basalt.StatusDetaching {
		t.Fatalf("begin_detaching left %s, want detaching", got.Status)
	}
	if err := b.p.RollDetaching(b.member, attached.ID); err != nil {
		t.Fatal(err)
	}
	if got := b.get(t, attached.ID); got.Status != basalt.StatusInUse || got.OpID != "" || got.AttachStatus != basalt.AttachAttached {
		t.Errorf("rolled back volume %s/%s (op %q), want in-use/attached", got.Status, got.AttachStatus, got.OpID)
	}
}
