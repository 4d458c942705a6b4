package results_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

// TestManageAccounting follows the quota and the capacity ledger of adoptions through every
// way one ends: overdue (the reconciler), a success after that, an administrator's reset, and a
// release that fails and then succeeds late. Quota in use and the ledger always equal what the
// records hold.
func TestManageAccounting(t *testing.T) {
	rs := redistest.Start(t)
	var skew atomic.Int64 // how far the clock is ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	st := store.New(rs.Client(), clock)
	logger := slog.New(slog.DiscardHandler)
	pub := &recordingPub{}
	plane := control.New(control.Config{}, st, pub, logger)
	f := results.New(results.Config{}, st, pub, logger)
	ctx := control.WithCaller(context.Background(), control.Caller{UserID: "admin", ProjectID: "admin", Admin: true})
	const a, b = "aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b"
	pr := events.NewPresence(rs.Client(), clock)
	report := func() {
		t.Helper()
		if err := pr.Heartbeat(ctx, basalt.BinaryVolume, "h@b", "nova", 0); err != nil {
			t.Fatal(err)
		}
		if err := pr.ReportInventory(ctx, events.Inventory{Backend: "h@b", Volumes: []basalt.VolumeSpec{
			{ID: a, SizeGB: 3, Pool: "pool"}, {ID: b, SizeGB: 2, Pool: "pool"}}}); err != nil {
			t.Fatal(err)
		}
	}
	report()
	want := func(what string, gb int, ledger float64) {
		t.Helper()
		usage, _ := st.QuotaUsage(ctx, "admin")
		if usage["gigabytes"] != gb {
			t.Errorf("%s: gigabytes in use = %d, want %d", what, usage["gigabytes"], gb)
		}
		if l, _ := st.Ledger(ctx, "h@b#pool"); l != ledger {
			t.Errorf("%s: ledger = %v, want %v", what, l, ledger)
		}
	}
	manage := func(id string) *basalt.Volume {
		t.Helper()
		v, err := plane.ManageVolume(ctx, control.VolumeManage{Host: "h@b", Ref: map[string]any{"source-id": id}})
		if err != nil {
			t.Fatalf("ManageVolume(%s) = %v", id, err)
		}
		return v
	}

	// Overdue: the reconciler fails it; the record keeps no pool, the charge is returned.
	va := manage(a)
	want("adopting a", 3, 0)
	skew.Store(int64(time.Hour))
	if err := f.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile() = %v", err)
	}
	skew.Store(0)
	report()
	got, _ := st.Volume(ctx, a)
	if got.Status != basalt.StatusErrorManaging || got.Host != "" || got.OpID != "" {
		t.Errorf("overdue adoption: %s on %q (op %q), want error_managing on no pool", got.Status, got.Host, got.OpID)
	}
	want("overdue adoption", 0, 0)
	// Its success, late, changes nothing: the object was never the volume's.
	if err := f.Apply(ctx, events.Result{OpID: va.OpID, Kind: events.KindManageVolume, VolumeID: a, Backend: "h@b",
		Host: "h@b#pool", OK: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Volume(ctx, a); got.Status != basalt.StatusErrorManaging {
		t.Errorf("after a late success the failed adoption is %s, want error_managing", got.Status)
	}
	want("late success", 0, 0)
	// Unmanaging (or deleting) the failed adoption removes the record only.
	sent := len(pub.cmds)
	if err := plane.UnmanageVolume(ctx, a); err != nil {
		t.Fatalf("UnmanageVolume(failed adoption) = %v", err)
	}
	if _, err := st.Volume(ctx, a); basalt.ErrorCode(err) != basalt.ENOTFOUND || len(pub.cmds) != sent {
		t.Errorf("unmanaging a failed adoption: record %v, commands %v; want it gone, nothing sent", err, pub.cmds[sent:])
	}

	// An administrator resets an adoption in flight: the volume keeps the object, its charge and
	// its capacity.
	vb := manage(b)
	if err := plane.ResetVolumeStatus(ctx, b, ptr("available"), nil); err != nil {
		t.Fatalf("ResetVolumeStatus = %v", err)
	}
	want("reset adoption", 2, 2)
	if project, amounts, _ := st.Charged(ctx, "vol:"+b); project != "admin" || amounts["gigabytes"] != 2 {
		t.Errorf("charge vol:%s = %s %v, want admin's 2 GiB", b, project, amounts)
	}
	// The adoption's own outcome, arriving after, changes nothing.
	if err := f.Apply(ctx, events.Result{OpID: vb.OpID, Kind: events.KindManageVolume, VolumeID: b, Backend: "h@b",
		Host: "h@b#pool", Error: "too late"}); err != nil {
		t.Fatal(err)
	}
	want("an outcome after the reset", 2, 2)

	// A release that fails is error_unmanaging; its success, late, completes it.
	if err := plane.UnmanageVolume(ctx, b); err != nil {
		t.Fatalf("UnmanageVolume = %v", err)
	}
	got, _ = st.Volume(ctx, b)
	unmanageOp := got.OpID
	if err := f.Apply(ctx, events.Result{OpID: unmanageOp, Kind: events.KindUnmanageVolume, VolumeID: b, Backend: "h@b",
		Error: "tgtadm: busy"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Volume(ctx, b); got.Status != basalt.StatusErrorUnmanaging {
		t.Errorf("failed release: %s, want error_unmanaging", got.Status)
	}
	want("failed release", 2, 2)
	if err := f.Apply(ctx, events.Result{OpID: unmanageOp, Kind: events.KindUnmanageVolume, VolumeID: b, Backend: "h@b",
		OK: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Volume(ctx, b); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("after the release's late success the record is still there (%v)", err)
	}
	want("released", 0, 0)
}

func ptr[T any](v T) *T { return &v }
