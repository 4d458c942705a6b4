// Package agents is the node agent: the one long-lived process per storage host. It runs the
// drivers of the host's backends, consumes each backend's topic, runs driver calls in bounded
// worker pools off the heartbeat path, heartbeats every backend service, reports capabilities
// on a jittered timer, and publishes outcomes. It never writes volume records: its Redis keys
// are its streams' consumer state, its heartbeats and reports, and its in-flight journal. Its
// one write to a record of the functions is the lease of the operations it holds
// (events.RenewLeases): a deadline, only while the operation is pending and owned by its backend.
//
// A command is acknowledged as soon as it is written to the backend's in-flight journal, so a
// long driver call never holds a stream message past its claim time. When the agent starts, it
// re-runs what the journal holds (driver calls are idempotent), so work cut short by a crash
// ends in a final state and is never done twice.
//
// Every command it has accepted and not finished, queued for a worker or running, keeps its
// operation alive: the agent renews the operation's lease every third of OperationLease. A busy
// backend is so never taken for a dead one, and the operations of an agent that is down or
// frozen end when their lease runs out.
package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/agents/export"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/internal/crash"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// JournalKey is the hash of commands a backend accepted and has not finished: op id → command.
func JournalKey(backend string) string { return events.KeyPrefix + "agent:" + backend + ":inflight" }

// Agent runs the backends of one host.
type Agent struct {
	cfg      Config
	bus      *events.Bus
	rdb      redis.UniversalClient // journal
	presence *events.Presence      // heartbeats and reports, on a connection of their own
	logger   *slog.Logger
	backends []*backend
	exports  map[string]*export.Manager // by target protocol
}

type backend struct {
	cfg     BackendConfig
	name    string // host@backend
	driver  drivers.Driver
	slots   chan struct{}
	busy    atomic.Int64
	running sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]bool // op ids started and not yet finished in this process
}

// New opens the drivers of every backend. redisOpts configures the agent's own connections.
func New(cfg Config, bus *events.Bus, redisOpts *events.RedisOptions, logger *slog.Logger) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, bus: bus, logger: logger.With("host", cfg.Host),
		rdb:      events.NewRedisClient(redisOpts),
		presence: events.NewPresence(events.NewRedisClient(redisOpts), nil), exports: map[string]*export.Manager{}}
	for _, bc := range cfg.Backends {
		d, err := openDriver(&a.cfg, bc, logger)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.backends = append(a.backends, &backend{cfg: bc, name: cfg.Host + "@" + bc.Name, driver: d,
			slots: make(chan struct{}, bc.Workers)})
	}
	if err := a.openExports(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Backends returns the host@backend names of the agent's backends.
func (a *Agent) Backends() []string {
	var out []string
	for _, b := range a.backends {
		out = append(out, b.name)
	}
	return out
}

// Close releases the drivers and connections. Call it after Run returns.
func (a *Agent) Close() error {
	for _, b := range a.backends {
		if c, ok := b.driver.(io.Closer); ok {
			_ = c.Close()
		}
	}
	for _, m := range a.exports {
		_ = m.Close() // exports stay up: attached consumers keep working across restarts
	}
	_ = a.rdb.Close()
	_ = a.presence.Close()
	return nil
}

// Run runs the agent until ctx ends, then stops gracefully: it stops taking commands, lets
// driver calls finish for up to StopGrace, and returns after every goroutine has exited. It
// stops the same way on every other return, an early failure (exports that do not start, a
// journal it cannot read) or a heartbeat, report or consumer that fails: nothing it started,
// a heartbeat least of all, outlives it, so a failed agent's services go down.
func (a *Agent) Run(ctx context.Context) error {
	// runCtx ends with ctx, with the first failure in g, and when Run returns, whatever the
	// path; it stops the heartbeats, the reports and the consumers.
	runCtx, stop := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(runCtx)
	// Work outlives runCtx by the grace period, so a SIGTERM does not cut a driver call short.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	var work sync.WaitGroup // lease renewers and the grace timer
	var subs []message.Subscriber
	defer func() {
		stop()
		_ = g.Wait() // its error, if any, is what Run returned
		for _, s := range subs {
			_ = s.Close() // a router that ran closed them already; one that never ran did not
		}
		for _, b := range a.backends {
			b.running.Wait() // cut short by cancelWork at the latest StopGrace after stop
		}
		cancelWork()
		work.Wait()
		a.logger.Info("agent stopped")
	}()
	work.Add(1)
	go func() {
		defer work.Done()
		select {
		case <-gctx.Done():
		case <-workCtx.Done():
			return
		}
		t := time.NewTimer(time.Duration(a.cfg.StopGrace))
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-workCtx.Done():
		}
	}()
	for _, b := range a.backends {
		// Leases are renewed for as long as work runs, grace period included.
		work.Add(1)
		go func() { defer work.Done(); a.renewLeases(workCtx, b) }()
	}

	if err := a.startExports(workCtx); err != nil {
		return err
	}
	router, err := a.bus.Router()
	if err != nil {
		return err
	}
	for _, b := range a.backends {
		sub, err := a.bus.Subscriber("agents", b.name)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		// The journal write runs in the message's context; the command runs in the work's,
		// which outlives the message by the grace period.
		router.AddConsumerHandler("agent."+b.name, events.BackendTopic(b.name), sub, func(msg *message.Message) error {
			return a.accept(workCtx, b, msg)
		})
	}
	for _, b := range a.backends {
		g.Go(func() error { return a.heartbeat(gctx, b) })
		g.Go(func() error { return a.report(gctx, b) })
		if err := a.recover(workCtx, b); err != nil {
			return fmt.Errorf("recover %s: %w", b.name, err)
		}
	}
	g.Go(func() error {
		if err := events.RunRouter(gctx, router, subs...); err != nil {
			return fmt.Errorf("agent router: %w", err)
		}
		return nil
	})
	a.logger.Info("agent started", "backends", a.Backends())
	return g.Wait()
}

// accept journals a command and starts it; the message is then acknowledged.
func (a *Agent) accept(ctx context.Context, b *backend, msg *message.Message) error {
	var cmd events.Command
	if err := events.Decode(msg, &cmd); err != nil {
		return err
	}
	fresh, err := a.rdb.HSetNX(msg.Context(), JournalKey(b.name), cmd.OpID, []byte(msg.Payload)).Result()
	if err != nil {
		return fmt.Errorf("journal %s: %w", cmd.OpID, err)
	}
	if fresh {
		a.logger.Debug("command accepted", "kind", cmd.Kind, "op_id", cmd.OpID, "backend", b.name)
	}
	crash.Point("agent.journaled")
	// Already journaled: a redelivery of a command that runs here (start does nothing), or a
	// journal write whose reply was lost, whose command nothing runs yet (start runs it).
	a.start(ctx, b, cmd)
	return nil
}

// recover re-runs every journaled command of b.
func (a *Agent) recover(ctx context.Context, b *backend) error {
	entries, err := a.rdb.HGetAll(ctx, JournalKey(b.name)).Result()
	if err != nil {
		return err
	}
	for opID, payload := range entries {
		var cmd events.Command
		if err := json.Unmarshal([]byte(payload), &cmd); err != nil {
			a.logger.Error("undecodable journal entry dropped", "op_id", opID, "err", err)
			a.rdb.HDel(ctx, JournalKey(b.name), opID)
			continue
		}
		a.logger.Info("resuming interrupted command", "op_id", opID, "volume_id", cmd.VolumeID, "kind", cmd.Kind, "backend", b.name)
		a.start(ctx, b, cmd)
	}
	return nil
}

// start runs a journaled command in b's worker pool, unless this process runs it already.
func (a *Agent) start(ctx context.Context, b *backend, cmd events.Command) {
	b.mu.Lock()
	if b.inflight == nil {
		b.inflight = map[string]bool{}
	}
	if b.inflight[cmd.OpID] {
		b.mu.Unlock()
		return
	}
	b.inflight[cmd.OpID] = true
	b.mu.Unlock()
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		defer func() {
			b.mu.Lock()
			delete(b.inflight, cmd.OpID)
			b.mu.Unlock()
		}()
		// The lease starts now, not at the next renewal: the command may have waited in the
		// stream for most of its deadline. renewLeases keeps it while it is queued and runs.
		a.renew(ctx, b, cmd.OpID)
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return // stays journaled; the next start runs it
		}
		if !events.Teardown(cmd.Kind) && a.ended(ctx, cmd.OpID) {
			a.logger.Info("command skipped: its operation already ended", "op_id", cmd.OpID, "kind", cmd.Kind)
			// A stale redelivery: the operation ended while this command waited.
			a.rdb.HDel(ctx, JournalKey(b.name), cmd.OpID)
			<-b.slots
			return
		}
		b.busy.Add(1)
		res := a.execute(ctx, b, cmd)
		b.busy.Add(-1)
		<-b.slots
		if ctx.Err() != nil && !res.OK {
			return // cancelled by shutdown: stays journaled
		}
		crash.Point("agent.executed")
		a.finish(ctx, b, cmd, res)
	}()
}

// ended reports whether operation opID is recorded as finished. When in doubt (Redis away, no
// record) it answers false: running an idempotent call again is safe, skipping one is not.
func (a *Agent) ended(ctx context.Context, opID string) bool {
	raw, err := a.rdb.Get(ctx, events.OperationKey(opID)).Bytes()
	if err != nil {
		return false
	}
	var op struct {
		State string `json:"state"`
	}
	return json.Unmarshal(raw, &op) == nil && op.State != "" && op.State != basalt.OpPending
}

func (a *Agent) execute(ctx context.Context, b *backend, cmd events.Command) events.Result {
	log := a.logger.With("volume_id", cmd.VolumeID, "op_id", cmd.OpID, "request_id", cmd.RequestID, "backend", b.name)
	res := events.Result{OpID: cmd.OpID, RequestID: cmd.RequestID, Kind: cmd.Kind, VolumeID: cmd.VolumeID,
		Backend: b.name, Host: basalt.PoolName(b.name, cmd.Volume.Pool)}
	start := time.Now()
	if d := time.Duration(b.cfg.Delay); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			res.Error = ctx.Err().Error()
			return res
		}
	}
	res.SnapshotID, res.Command, res.Attempted = cmd.SnapshotID, &cmd, cmd.Attempted
	err := a.call(ctx, b, cmd, &res)
	res.Invalid = basalt.ErrorCode(err) == basalt.EINVALID
	if cmd.Kind == events.KindCreateVolume {
		// A blank volume may be placed elsewhere; a copy must be made where its source is.
		res.Reschedule = err != nil && cmd.SnapshotID == "" && cmd.SourceVolumeID == ""
	}
	res.OK = err == nil
	if err != nil {
		res.Error = err.Error()
		log.Warn("driver call failed", "kind", cmd.Kind, "err", err, "duration", time.Since(start))
	} else {
		log.Info("driver call done", "kind", cmd.Kind, "duration", time.Since(start))
	}
	return res
}

// call runs the driver call of one command.
func (a *Agent) call(ctx context.Context, b *backend, cmd events.Command, res *events.Result) error {
	d := b.driver
	cannot := func(what string) error {
		return basalt.Errorf(basalt.EINVALID, "the %s driver of %s cannot %s", b.cfg.Driver, b.name, what)
	}
	snap, canSnap := d.(drivers.Snapshotter)
	switch cmd.Kind {
	case events.KindCreateVolume:
		cl, ok := d.(drivers.Cloner)
		switch {
		case cmd.SnapshotID != "" && ok:
			return cl.CreateVolumeFromSnapshot(ctx, cmd.Volume, cmd.SnapshotID)
		case cmd.SourceVolumeID != "" && ok:
			return cl.CloneVolume(ctx, cmd.Volume, cmd.SourceVolumeID)
		case cmd.SnapshotID != "" || cmd.SourceVolumeID != "":
			return cannot("clone volumes")
		}
		return d.CreateVolume(ctx, cmd.Volume)
	case events.KindInitializeConnection:
		info, err := a.connect(ctx, b, cmd)
		res.ConnectionInfo = info
		return err
	case events.KindTerminateConnection:
		id := cmd.ExportID
		if cmd.AllExports {
			id = ""
		}
		return a.disconnect(ctx, b, cmd.VolumeID, id)
	case events.KindDeleteVolume:
		// No export outlives its volume.
		if err := a.disconnect(ctx, b, cmd.VolumeID, ""); err != nil {
			return fmt.Errorf("remove the exports of %s: %w", cmd.VolumeID, err)
		}
		for _, id := range cmd.Snapshots {
			if !canSnap {
				return cannot("delete snapshots")
			}
			if err := snap.DeleteSnapshot(ctx, id); err != nil {
				return fmt.Errorf("delete snapshot %s: %w", id, err)
			}
		}
		return d.DeleteVolume(ctx, cmd.VolumeID)
	case events.KindExtendVolume:
		if ext, ok := d.(drivers.Extender); ok {
			return ext.ExtendVolume(ctx, cmd.VolumeID, cmd.Volume.SizeGB)
		}
		return cannot("extend volumes")
	case events.KindCreateSnapshot:
		if canSnap {
			return snap.CreateSnapshot(ctx, cmd.VolumeID, cmd.SnapshotID)
		}
		return cannot("take snapshots")
	case events.KindDeleteSnapshot:
		if canSnap {
			return snap.DeleteSnapshot(ctx, cmd.SnapshotID)
		}
		return cannot("delete snapshots")
	case events.KindRevert:
		if rv, ok := d.(drivers.Reverter); ok {
			return rv.RevertToSnapshot(ctx, cmd.VolumeID, cmd.SnapshotID)
		}
		return cannot("revert volumes")
	case events.KindManageVolume, events.KindUnmanageVolume:
		return a.manage(ctx, b, cmd)
	}
	return fmt.Errorf("unknown command kind %q", cmd.Kind)
}

// finish publishes the result and clears the journal entry, retrying while Redis is away.
func (a *Agent) finish(ctx context.Context, b *backend, cmd events.Command, res events.Result) {
	for attempt := 0; ; attempt++ {
		err := a.bus.Publish(events.TopicResults, cmd.OpID, cmd.RequestID, res)
		if err == nil {
			err = a.rdb.HDel(ctx, JournalKey(b.name), cmd.OpID).Err()
		}
		if err == nil {
			return
		}
		a.logger.Warn("publish result", "op_id", cmd.OpID, "err", err, "attempt", attempt)
		t := time.NewTimer(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return // stays journaled: the next start re-runs the (idempotent) call
		}
	}
}

// renewLeases renews the leases of b's accepted and unfinished commands every third of
// OperationLease, all in one round trip, until ctx ends. A renewal that fails is logged: the next
// one comes long before the lease runs out.
func (a *Agent) renewLeases(ctx context.Context, b *backend) {
	t := time.NewTicker(time.Duration(a.cfg.OperationLease) / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.mu.Lock()
			ids := make([]string, 0, len(b.inflight))
			for id := range b.inflight {
				ids = append(ids, id)
			}
			b.mu.Unlock()
			a.renew(ctx, b, ids...)
		}
	}
}

// renew extends the leases of operations opIDs of b to now plus OperationLease.
func (a *Agent) renew(ctx context.Context, b *backend, opIDs ...string) {
	if len(opIDs) == 0 {
		return
	}
	lease := time.Duration(a.cfg.OperationLease)
	rctx, cancel := context.WithTimeout(ctx, lease/3)
	defer cancel()
	if _, err := events.RenewLeases(rctx, a.rdb, b.name, time.Now().Add(lease), opIDs...); err != nil && ctx.Err() == nil {
		a.logger.Warn("renew operation leases", "backend", b.name, "ops", len(opIDs), "err", err)
	}
}

// heartbeat reports b's service as alive every ReportInterval, on its own connection and
// goroutine: no driver call can delay it.
func (a *Agent) heartbeat(ctx context.Context, b *backend) error {
	return a.presence.Run(ctx, basalt.BinaryVolume, b.name, a.cfg.Zone, time.Duration(a.cfg.ReportInterval),
		func() int { return int(b.busy.Load()) }, a.logger)
}

// report sends b's capabilities and inventory now and then every CapabilityInterval plus jitter.
func (a *Agent) report(ctx context.Context, b *backend) error {
	interval := time.Duration(a.cfg.CapabilityInterval)
	for {
		if err := a.reportOnce(ctx, b); err != nil && ctx.Err() == nil {
			a.logger.Warn("capability report", "backend", b.name, "err", err)
		}
		if err := a.reportInventory(ctx, b); err != nil && ctx.Err() == nil {
			a.logger.Warn("inventory report", "backend", b.name, "err", err)
		}
		jitter := time.Duration(rand.Int64N(int64(interval)/10 + 1))
		t := time.NewTimer(interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) reportOnce(ctx context.Context, b *backend) error {
	stats, err := b.driver.Capabilities(ctx)
	if err != nil {
		return err
	}
	rep, err := capabilityReport(b, stats)
	if err != nil {
		return err
	}
	rep.Zone = a.cfg.Zone
	return a.presence.Report(ctx, rep)
}
