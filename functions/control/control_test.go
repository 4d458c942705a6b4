package control_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/store"
)

// flakyBus fails every publish while down is set.
type flakyBus struct{ down atomic.Bool }

func (b *flakyBus) Publish(topic, opID, requestID string, v any) error {
	if b.down.Load() {
		return errors.New("bus unreachable")
	}
	return nil
}

// TestUnsentCommandsChangeNothing: when the bus refuses a command after the state change was
// recorded, the change is undone and the caller gets 503, so a retry works.
func TestUnsentCommandsChangeNothing(t *testing.T) {
	st := store.New(redistest.Start(t).Client(), nil)
	bus := &flakyBus{}
	p := control.New(control.Config{}, st, bus, slog.New(slog.DiscardHandler))
	ctx := control.WithCaller(context.Background(), control.Caller{UserID: "alice", ProjectID: "p1"})
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
	bus.down.Store(true)
	checks := []struct {
		name string
		call func() error
	}{
		{"delete", func() error { return p.DeleteVolume(ctx, v.ID, false, false) }},
		{"extend", func() error { return p.ExtendVolume(ctx, v.ID, 2, false) }},
		{"snapshot", func() error { _, err := p.CreateSnapshot(ctx, control.SnapshotCreate{VolumeID: v.ID}); return err }},
	}
	for _, c := range checks {
		if err := c.call(); basalt.ErrorCode(err) != basalt.EUNAVAILABLE {
			t.Errorf("%s with the bus down = %v, want EUNAVAILABLE", c.name, err)
		}
		got, _ := st.Volume(ctx, v.ID)
		if got.Status != basalt.StatusAvailable || got.OpID != "" || got.Size != 1 || got.Snapshots != 0 {
			t.Errorf("after a failed %s the volume is %s (op %q, size %d, snapshots %d), want available as before",
				c.name, got.Status, got.OpID, got.Size, got.Snapshots)
		}
	}
	usage, _ := p.QuotaSetUsage(ctx, "p1")
	if usage["gigabytes"].InUse != 1 || usage["snapshots"].InUse != 0 {
		t.Errorf("quota after failed requests: gigabytes %d snapshots %d, want 1 and 0", usage["gigabytes"].InUse, usage["snapshots"].InUse)
	}
	bus.down.Store(false)
	if err := p.DeleteVolume(ctx, v.ID, false, false); err != nil {
		t.Errorf("delete once the bus is back = %v", err)
	}
}
