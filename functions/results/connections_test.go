package results_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

type recordingPub struct {
	mu   sync.Mutex
	cmds []events.Command
}

func (p *recordingPub) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch c := v.(type) {
	case events.Command:
		p.cmds = append(p.cmds, c)
	case json.RawMessage: // a command sent from its operation's record
		var cmd events.Command
		if json.Unmarshal(c, &cmd) == nil {
			p.cmds = append(p.cmds, cmd)
		}
	}
	return nil
}

func (p *recordingPub) teardowns() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, c := range p.cmds {
		if c.Kind == events.KindTerminateConnection {
			out = append(out, c.ExportID)
		}
	}
	return out
}

// connecting stores a volume with one reserved attachment whose connection operation is in
// flight, and returns the operation.
func connecting(t *testing.T, st *store.Store) *basalt.Operation {
	t.Helper()
	ctx := context.Background()
	now := st.Now()
	op := &basalt.Operation{ID: "op-c", Kind: events.KindInitializeConnection, VolumeID: "v1", AttachmentID: "a1",
		State: basalt.OpPending, Owner: "h@b", Deadline: now.Add(time.Minute), CreatedAt: now}
	v := &basalt.Volume{ID: "v1", ProjectID: "p1", Status: basalt.StatusReserved, Host: "h@b#pool", CreatedAt: now,
		Attachments: []*basalt.Attachment{{ID: "a1", VolumeID: "v1", ProjectID: "p1", Status: basalt.AttachReserved,
			ExportID: "a1", OpID: op.ID, CreatedAt: now}}}
	if err := st.CreateVolume(ctx, v, op); err != nil {
		t.Fatal(err)
	}
	return op
}

func okResult(op *basalt.Operation) events.Result {
	cmd := &events.Command{OpID: op.ID, Kind: events.KindInitializeConnection, VolumeID: "v1", AttachmentID: "a1",
		ExportID: "a1", Connector: map[string]any{"host": "compute-1"}}
	return events.Result{OpID: op.ID, Kind: events.KindInitializeConnection, VolumeID: "v1", Backend: "h@b", OK: true,
		ConnectionInfo: map[string]any{"driver_volume_type": "fake", "data": map[string]any{}}, Command: cmd}
}

func TestConnectedAppliesOnceAndAnswers(t *testing.T) {
	st := store.New(redistest.Start(t).Client(), nil)
	pub := &recordingPub{}
	f := results.New(results.Config{}, st, pub, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	op := connecting(t, st)
	r := okResult(op)
	for i := 0; i < 2; i++ { // the second is a redelivery
		if err := f.Apply(ctx, r); err != nil {
			t.Fatalf("Apply #%d: %v", i, err)
		}
	}
	v, _ := st.Volume(ctx, "v1")
	a := v.Attachment("a1")
	if v.Status != basalt.StatusAttaching || a.Status != basalt.AttachAttaching || a.OpID != "" ||
		a.ConnectionInfo["driver_volume_type"] != "fake" || a.AttachedHost != "compute-1" || a.Mountpoint != "na" {
		t.Errorf("after the outcome: volume %s, attachment %+v", v.Status, a)
	}
	if got, _ := st.WaitReply(ctx, op.ID, time.Second); got == nil {
		t.Error("no reply was pushed for the waiting request")
	}
	if td := pub.teardowns(); len(td) != 0 {
		t.Errorf("a redelivered, applied outcome tore the export down: %v", td)
	}
}

func TestLateExportIsTornDown(t *testing.T) {
	st := store.New(redistest.Start(t).Client(), nil)
	pub := &recordingPub{}
	f := results.New(results.Config{}, st, pub, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	op := connecting(t, st)
	// The request gave up: the operation ended before the agent answered.
	if err := st.FailOp(ctx, op.ID, "no answer in time"); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, okResult(op)); err != nil {
		t.Fatal(err)
	}
	if td := pub.teardowns(); len(td) != 1 || td[0] != "a1" {
		t.Errorf("teardowns = %v, want the late export a1 torn down", td)
	}
	if undo, err := st.Op(ctx, op.ID+"-undo"); err != nil || undo.State != basalt.OpPending || undo.Kind != events.KindTerminateConnection {
		t.Errorf("the teardown's operation = %+v, %v; want a pending terminate_connection", undo, err)
	}
	// A redelivery of the late outcome asks for no second teardown.
	if err := f.Apply(ctx, okResult(op)); err != nil {
		t.Fatal(err)
	}
	if td := pub.teardowns(); len(td) != 1 {
		t.Errorf("teardowns after a redelivery = %v, want still one", td)
	}
	v, _ := st.Volume(ctx, "v1")
	if a := v.Attachment("a1"); a.ConnectionInfo != nil || a.Status != basalt.AttachReserved {
		t.Errorf("a late outcome changed the attachment: %+v", a)
	}
	// A failed outcome that comes late tears nothing down: nothing was exported.
	late := okResult(op)
	late.OK, late.ConnectionInfo, late.Error = false, nil, "target down"
	if err := f.Apply(ctx, late); err != nil {
		t.Fatal(err)
	}
	if td := pub.teardowns(); len(td) != 1 {
		t.Errorf("teardowns after a failed late outcome = %v", td)
	}
}
