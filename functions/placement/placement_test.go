package placement_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
)

// sent records what is published, decoded as commands whatever form they took.
type sent struct {
	mu   sync.Mutex
	msgs []sentMsg
}

type sentMsg struct {
	topic string
	cmd   events.Command
}

func (s *sent) PublishContext(_ context.Context, topic, opID, requestID string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var cmd events.Command
	_ = json.Unmarshal(b, &cmd)
	s.mu.Lock()
	s.msgs = append(s.msgs, sentMsg{topic, cmd})
	s.mu.Unlock()
	return nil
}

// to returns the commands of operation opID published to topic.
func (s *sent) to(topic, opID string) []events.Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []events.Command
	for _, m := range s.msgs {
		if m.topic == topic && m.cmd.OpID == opID {
			out = append(out, m.cmd)
		}
	}
	return out
}

// world is a control plane, the scheduler function and the results function over one Redis
// holding two backends: h1@b (pool of 100 GiB, 100 free) and h2@b (pool of 100 GiB, 40 free).
type world struct {
	st     *store.Store
	plane  *control.Plane
	place  *placement.Function
	result *results.Function
	pub    *sent
	ctx    context.Context
}

func newWorld(t *testing.T) *world {
	t.Helper()
	rdb := redistest.Start(t).Client()
	st := store.New(rdb, nil)
	logger := slog.New(slog.DiscardHandler)
	pub := &sent{}
	f, err := placement.New(placement.Config{}, st, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{st: st, plane: control.New(control.Config{}, st, pub, logger), place: f,
		result: results.New(results.Config{}, st, pub, logger), pub: pub,
		ctx: control.WithCaller(context.Background(), control.Caller{UserID: "u1", ProjectID: "p1", RequestID: "req-1"})}
	pr := events.NewPresence(rdb, nil)
	for backend, free := range map[string]float64{"h1@b": 100, "h2@b": 40} {
		if err := pr.Heartbeat(w.ctx, basalt.BinaryVolume, backend, "nova", 0); err != nil {
			t.Fatal(err)
		}
		if err := pr.Report(w.ctx, events.CapabilityReport{Backend: backend, Zone: "nova", Pools: []basalt.Capabilities{{
			"pool_name": "pool", "total_capacity_gb": 100.0, "free_capacity_gb": free, "reserved_percentage": 0.0,
			"thin_provisioning_support": false, "thick_provisioning_support": true, "online_extend_support": true,
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// command returns the command operation opID holds.
func (w *world) command(t *testing.T, opID string) events.Command {
	t.Helper()
	op, err := w.st.Op(w.ctx, opID)
	if err != nil {
		t.Fatal(err)
	}
	var cmd events.Command
	if err := json.Unmarshal(op.Command, &cmd); err != nil {
		t.Fatalf("command of %s: %v", opID, err)
	}
	return cmd
}

func (w *world) volume(t *testing.T, id string) *basalt.Volume {
	t.Helper()
	v, err := w.st.Volume(w.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (w *world) ledger(t *testing.T, pool string) float64 {
	t.Helper()
	l, err := w.st.Ledger(w.ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (w *world) usage(t *testing.T, resource string) int {
	t.Helper()
	u, err := w.st.QuotaUsage(w.ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	return u[resource]
}

func (w *world) messages(t *testing.T) []*basalt.Message {
	t.Helper()
	ms, err := w.st.Messages(w.ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// created creates a volume of size GiB and places it (the agent's success applied): it is
// available on h1@b#pool.
func (w *world) created(t *testing.T, size int) *basalt.Volume {
	t.Helper()
	v, err := w.plane.CreateVolume(w.ctx, control.VolumeCreate{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.place.Place(w.ctx, w.command(t, v.OpID)); err != nil {
		t.Fatal(err)
	}
	got := w.volume(t, v.ID)
	if err := w.result.Apply(w.ctx, events.Result{OpID: v.OpID, Kind: events.KindCreateVolume, VolumeID: v.ID,
		Backend: got.Backend(), Host: got.Host, OK: true}); err != nil {
		t.Fatal(err)
	}
	if got = w.volume(t, v.ID); got.Status != basalt.StatusAvailable {
		t.Fatalf("created volume is %s, want available", got.Status)
	}
	return got
}

// TestCreatePlacedOnceOnTheBestPool: a create goes to the pool with the most free capacity, and
// its size is claimed there once, however often its command is delivered, one after another or
// at the same time.
func TestCreatePlacedOnceOnTheBestPool(t *testing.T) {
	w := newWorld(t)
	v, err := w.plane.CreateVolume(w.ctx, control.VolumeCreate{Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	cmd := w.command(t, v.OpID)
	for i := 0; i < 2; i++ {
		if err := w.place.Place(w.ctx, cmd); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	got := w.volume(t, v.ID)
	if got.Host != "h1@b#pool" || got.Status != basalt.StatusCreating || got.OpID != v.OpID {
		t.Errorf("placed volume: host %q status %s op %q; want h1@b#pool, creating, %s", got.Host, got.Status, got.OpID, v.OpID)
	}
	if l1, l2 := w.ledger(t, "h1@b#pool"), w.ledger(t, "h2@b#pool"); l1 != 5 || l2 != 0 {
		t.Errorf("ledgers after two deliveries: h1 %v h2 %v, want 5 and 0", l1, l2)
	}
	op, _ := w.st.Op(w.ctx, v.OpID)
	if op.Owner != "h1@b" || op.Attempts != 1 || op.State != basalt.OpPending {
		t.Errorf("operation: owner %q attempts %d state %s; want h1@b, 1, pending", op.Owner, op.Attempts, op.State)
	}
	handed := w.pub.to(events.BackendTopic("h1@b"), v.OpID)
	if len(handed) == 0 {
		t.Fatal("the create was never handed to h1@b")
	}
	for _, c := range handed {
		if c.Kind != events.KindCreateVolume || c.Backend != "h1@b" || c.Volume.Pool != "pool" || c.Volume.SizeGB != 5 {
			t.Errorf("hand-over %+v: want create_volume of 5 GiB on h1@b, pool pool", c)
		}
	}
	if len(w.pub.to(events.BackendTopic("h2@b"), v.OpID)) != 0 {
		t.Error("the create was also handed to h2@b")
	}
	if d, _ := w.st.Decision(w.ctx, v.ID); !strings.Contains(d, "h1@b#pool") {
		t.Errorf("decision %q does not name the chosen pool", d)
	}

	// Concurrent deliveries of another create claim its size once in all.
	v2, err := w.plane.CreateVolume(w.ctx, control.VolumeCreate{Size: 7})
	if err != nil {
		t.Fatal(err)
	}
	cmd2 := w.command(t, v2.OpID)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.place.Place(w.ctx, cmd2) // a loser may see the claim move under it: the bus retries
		}()
	}
	wg.Wait()
	if err := w.place.Place(w.ctx, cmd2); err != nil {
		t.Fatalf("delivery after the concurrent ones: %v", err)
	}
	got2 := w.volume(t, v2.ID)
	if total := w.ledger(t, "h1@b#pool") + w.ledger(t, "h2@b#pool"); total != 12 {
		t.Errorf("ledgers hold %v GiB in all, want 12 (5 + 7)", total)
	}
	if got2.Host == "" || w.ledger(t, got2.Host) < 7 {
		t.Errorf("second volume on %q whose ledger is %v; want it placed and counted there", got2.Host, w.ledger(t, got2.Host))
	}
}

// TestCreateThatFitsNowhere: a volume no pool can take ends in error with a reason and a user
// message naming every pool; its quota is returned and no capacity is held. Its command
// delivered again changes nothing.
func TestCreateThatFitsNowhere(t *testing.T) {
	w := newWorld(t)
	v, err := w.plane.CreateVolume(w.ctx, control.VolumeCreate{Size: 500})
	if err != nil {
		t.Fatal(err)
	}
	if w.usage(t, "gigabytes") != 500 || w.usage(t, "volumes") != 1 {
		t.Fatalf("quota while creating: %d GiB, %d volumes; want 500 and 1", w.usage(t, "gigabytes"), w.usage(t, "volumes"))
	}
	cmd := w.command(t, v.OpID)
	check := func(when string) {
		t.Helper()
		got := w.volume(t, v.ID)
		if got.Status != basalt.StatusError || got.OpID != "" || got.Host != "" {
			t.Errorf("%s: volume %s (op %q, host %q), want error, no op, no host", when, got.Status, got.OpID, got.Host)
		}
		for _, pool := range []string{"h1@b#pool", "h2@b#pool"} {
			if !strings.Contains(got.StatusReason, pool) {
				t.Errorf("%s: reason %q does not name %s", when, got.StatusReason, pool)
			}
			if l := w.ledger(t, pool); l != 0 {
				t.Errorf("%s: ledger of %s = %v, want 0", when, pool, l)
			}
		}
		if g, n := w.usage(t, "gigabytes"), w.usage(t, "volumes"); g != 0 || n != 0 {
			t.Errorf("%s: quota in use %d GiB, %d volumes; want 0 and 0", when, g, n)
		}
		op, _ := w.st.Op(w.ctx, v.OpID)
		if op.State != basalt.OpFailed || !strings.HasPrefix(op.Reason, "No valid backend was found.") {
			t.Errorf("%s: operation %s %q, want failed: No valid backend was found. ...", when, op.State, op.Reason)
		}
		ms := w.messages(t)
		if len(ms) != 1 {
			t.Fatalf("%s: %d user messages, want 1", when, len(ms))
		}
		m := ms[0]
		if m.EventID != basalt.EventScheduleNoBackend || m.ResourceUUID != v.ID || m.RequestID != "req-1" ||
			!strings.Contains(m.UserMessage, "h1@b#pool") || !strings.Contains(m.UserMessage, "h2@b#pool") {
			t.Errorf("%s: message %+v, want %s about %s naming both pools", when, m, basalt.EventScheduleNoBackend, v.ID)
		}
	}
	if err := w.place.Place(w.ctx, cmd); err != nil {
		t.Fatal(err)
	}
	check("after placement")
	if err := w.place.Place(w.ctx, cmd); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	check("after a redelivery")
	if n := len(w.pub.to(events.BackendTopic("h1@b"), v.OpID)) + len(w.pub.to(events.BackendTopic("h2@b"), v.OpID)); n != 0 {
		t.Errorf("a volume that fits nowhere was handed to a backend %d times", n)
	}
}

// TestExtendBeyondThePool: an extend its pool cannot take puts the volume back in the status it
// had (in-use for an online extend), at its size, with the growth's quota returned and a user
// message; delivered again it changes nothing. One that fits claims its growth once.
func TestExtendBeyondThePool(t *testing.T) {
	w := newWorld(t)
	v := w.created(t, 5)
	// It is attached.
	if _, err := w.st.UpdateVolume(w.ctx, v.ID, func(v *basalt.Volume) error {
		v.Status, v.AttachStatus = basalt.StatusInUse, basalt.AttachAttached
		v.Attachments = []*basalt.Attachment{{ID: "att-1", VolumeID: v.ID, ProjectID: v.ProjectID, Status: basalt.AttachAttached}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.plane.ExtendVolume(w.ctx, v.ID, 300, true); err != nil {
		t.Fatal(err)
	}
	ext := w.volume(t, v.ID)
	if ext.Status != basalt.StatusExtending || ext.PreviousStatus != basalt.StatusInUse || w.usage(t, "gigabytes") != 300 {
		t.Fatalf("extending: %s (previous %s), %d GiB charged; want extending from in-use, 300", ext.Status, ext.PreviousStatus, w.usage(t, "gigabytes"))
	}
	cmd := w.command(t, ext.OpID)
	check := func(when string) {
		t.Helper()
		got := w.volume(t, v.ID)
		if got.Status != basalt.StatusInUse || got.PreviousStatus != "" || got.OpID != "" || got.Size != 5 || got.StatusReason != "" {
			t.Errorf("%s: volume %s (previous %q, op %q, size %d, reason %q); want in-use, size 5, nothing held",
				when, got.Status, got.PreviousStatus, got.OpID, got.Size, got.StatusReason)
		}
		if g := w.usage(t, "gigabytes"); g != 5 {
			t.Errorf("%s: %d GiB in use, want 5", when, g)
		}
		if l := w.ledger(t, "h1@b#pool"); l != 5 {
			t.Errorf("%s: ledger %v, want 5", when, l)
		}
		op, _ := w.st.Op(w.ctx, ext.OpID)
		if op.State != basalt.OpFailed {
			t.Errorf("%s: extend operation %s, want failed", when, op.State)
		}
		var extendMsgs []*basalt.Message
		for _, m := range w.messages(t) {
			if m.EventID == basalt.EventExtendNoBackend {
				extendMsgs = append(extendMsgs, m)
			}
		}
		if len(extendMsgs) != 1 || !strings.Contains(extendMsgs[0].UserMessage, "h1@b#pool") {
			t.Errorf("%s: extend messages %v, want one naming h1@b#pool", when, extendMsgs)
		}
	}
	if err := w.place.Place(w.ctx, cmd); err != nil {
		t.Fatal(err)
	}
	check("after placement")
	if err := w.place.Place(w.ctx, cmd); err != nil {
		t.Fatal(err)
	}
	check("after a redelivery")

	// An extend that fits claims its growth once, delivered twice.
	if err := w.plane.ExtendVolume(w.ctx, v.ID, 8, true); err != nil {
		t.Fatal(err)
	}
	opID := w.volume(t, v.ID).OpID
	cmd = w.command(t, opID)
	for i := 0; i < 2; i++ {
		if err := w.place.Place(w.ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	if l := w.ledger(t, "h1@b#pool"); l != 8 {
		t.Errorf("ledger while the fitting extend runs = %v, want 8 (5 + 3 once)", l)
	}
	if got := w.volume(t, v.ID); got.Status != basalt.StatusExtending {
		t.Errorf("a placed extend left the volume %s, want extending", got.Status)
	}
	handed := w.pub.to(events.BackendTopic("h1@b"), opID)
	if len(handed) == 0 || handed[0].Kind != events.KindExtendVolume || handed[0].Backend != "h1@b" || handed[0].Volume.SizeGB != 8 {
		t.Errorf("extend hand-overs %+v, want extend_volume to 8 GiB on h1@b", handed)
	}
}

// TestSnapshotThatFitsNowhere: a snapshot its volume's pool cannot hold ends in error with its
// quota returned; the volume is not touched.
func TestSnapshotThatFitsNowhere(t *testing.T) {
	w := newWorld(t)
	v := w.created(t, 60) // on h1@b#pool: 40 GiB left there
	if _, err := w.st.UpdateVolume(w.ctx, v.ID, func(v *basalt.Volume) error {
		v.Status, v.AttachStatus = basalt.StatusInUse, basalt.AttachAttached
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sn, err := w.plane.CreateSnapshot(w.ctx, control.SnapshotCreate{VolumeID: v.ID, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.place.Place(w.ctx, w.command(t, sn.OpID)); err != nil {
		t.Fatal(err)
	}
	got, err := w.st.Snapshot(w.ctx, sn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != basalt.SnapError || got.OpID != "" || !strings.Contains(got.StatusReason, "h1@b#pool") {
		t.Errorf("snapshot %s (op %q, reason %q), want error naming h1@b#pool", got.Status, got.OpID, got.StatusReason)
	}
	if n, g := w.usage(t, "snapshots"), w.usage(t, "gigabytes"); n != 0 || g != 60 {
		t.Errorf("quota: %d snapshots, %d GiB; want 0 and 60 (the volume's)", n, g)
	}
	if l := w.ledger(t, "h1@b#pool"); l != 60 {
		t.Errorf("ledger %v, want 60", l)
	}
	if vol := w.volume(t, v.ID); vol.Status != basalt.StatusInUse {
		t.Errorf("volume %s after its snapshot failed, want in-use", vol.Status)
	}
}
