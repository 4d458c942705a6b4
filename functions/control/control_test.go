package control_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

// flakyBus fails every publish while down is set.
type flakyBus struct{ down atomic.Bool }

func (b *flakyBus) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	if b.down.Load() {
		return errors.New("bus unreachable")
	}
	return nil
}

// TestCommandsTheBusRefusesAreRelayed: a command is written with the state change that causes
// it (the outbox). When the bus refuses it, the request is still accepted, the command waits in
// the outbox, and the relay sends it once the bus is back.
func TestCommandsTheBusRefusesAreRelayed(t *testing.T) {
	st := store.New(redistest.Start(t).Client(), nil)
	bus := &flakyBus{}
	p := control.New(control.Config{}, st, bus, slog.New(slog.DiscardHandler))
	ctx := control.WithCaller(context.Background(), control.Caller{UserID: "alice", ProjectID: "p1"})
	newVolume := func() *basalt.Volume {
		v, err := p.CreateVolume(ctx, control.VolumeCreate{Size: 1})
		if err != nil {
			t.Fatal(err)
		}
		// Pretend the volume was placed and created.
		if _, err := st.UpdateVolume(ctx, v.ID, func(v *basalt.Volume) error {
			v.Host, v.Status, v.OpID = "h@b#pool", basalt.StatusAvailable, ""
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	vols := []*basalt.Volume{newVolume(), newVolume(), newVolume()}
	bus.down.Store(true)
	checks := []struct {
		name   string
		call   func() error
		status basalt.VolumeStatus
	}{
		{"delete", func() error { return p.DeleteVolume(ctx, vols[0].ID, false, false) }, basalt.StatusDeleting},
		{"extend", func() error { return p.ExtendVolume(ctx, vols[1].ID, 2, false) }, basalt.StatusExtending},
		{"snapshot", func() error {
			_, err := p.CreateSnapshot(ctx, control.SnapshotCreate{VolumeID: vols[2].ID})
			return err
		}, basalt.StatusAvailable},
	}
	for i, c := range checks {
		if err := c.call(); err != nil {
			t.Errorf("%s with the bus down = %v, want it accepted", c.name, err)
		}
		if got, _ := st.Volume(ctx, vols[i].ID); got.Status != c.status {
			t.Errorf("after %s the volume is %s, want %s", c.name, got.Status, c.status)
		}
	}
	unsent, err := st.Unsent(ctx, st.Now().Add(time.Second))
	if err != nil || len(unsent) != len(checks) {
		t.Fatalf("outbox with the bus down = %v, %v; want the %d commands", unsent, err, len(checks))
	}
	usage, _ := p.QuotaSetUsage(ctx, "p1")
	if usage["gigabytes"].InUse != 5 || usage["snapshots"].InUse != 1 {
		t.Errorf("quota: gigabytes %d snapshots %d, want 5 (three volumes, a growth, a snapshot) and 1", usage["gigabytes"].InUse, usage["snapshots"].InUse)
	}
	bus.down.Store(false)
	relay := results.New(results.Config{RelayDelay: time.Millisecond}, st, bus, slog.New(slog.DiscardHandler))
	time.Sleep(5 * time.Millisecond)
	if err := relay.Relay(ctx); err != nil {
		t.Fatalf("Relay once the bus is back: %v", err)
	}
	if unsent, _ := st.Unsent(ctx, st.Now().Add(time.Second)); len(unsent) != 0 {
		t.Errorf("outbox after the relay = %v, want empty", unsent)
	}
}
