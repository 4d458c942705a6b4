// Package agents is the node agent: the one long-lived process per storage host. It runs the
// drivers of the host's backends, consumes the host's topic, runs driver calls in bounded
// per-backend worker pools off the heartbeat path, heartbeats every backend service, reports
// capabilities on a jittered timer, and publishes outcomes. It never writes volume records: its
// Redis keys are its streams' consumer state, its heartbeats and reports, and its in-flight
// journal. Its one write to a record of the functions is the lease of the operations it holds
// (events.RenewLeases): a deadline, only while the operation is pending and owned by its backend.
//
// The commands of every backend of the host travel on one topic, events.HostTopic(host), which
// the agent reads with one blocking subscription (consumer group "agents", consumer the host):
// an idle agent costs Redis one read every BlockTime whatever its number of backends, where one
// subscription per backend cost one per backend. Each command names its backend
// (Command.Backend), to whose worker pool the agent hands it; a command for a backend the agent
// does not run (a configuration changed, a typo) is journaled nowhere and fails, so that it
// reaches the dead-letter topic after the bus's retries instead of vanishing.
//
// A command is acknowledged as soon as it is written to the backend's in-flight journal, so a
// long driver call never holds a stream message past its claim time, and a slow backend never
// delays the commands of another. When the agent starts, it re-runs what the journal holds
// (driver calls are idempotent), so work cut short by a crash ends in a final state and is never
// done twice.
//
// Every command it has accepted and not finished, queued for a worker or running, keeps its
// operation alive: the agent renews the operation's lease every third of OperationLease. A busy
// backend is so never taken for a dead one, and the operations of an agent that is down or
// frozen end when their lease runs out.
//
// Upgrade: before host topics, each backend had a topic of its own
// (events.LegacyBackendTopic). An agent that starts looks at the legacy topics of its backends,
// and reads each one that still holds commands for group "agents" (unread, or delivered and
// not acknowledged) through the same path as its host topic, until nothing is left on it; then
// it stops reading it. Commands published to a legacy topic after that wait for the next start.
package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
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

// JournalKey is the hash of commands a backend accepted and has not finished: op id → command,
// in its host's Redis Cluster slot (events.JournalKey).
func JournalKey(backend string) string { return events.JournalKey(backend) }

// Agent runs the backends of one host.
type Agent struct {
	cfg      Config
	bus      *events.Bus
	rdb      redis.UniversalClient // journal
	presence *events.Presence      // heartbeats and reports, on a connection of their own
	logger   *slog.Logger
	backends []*backend
	byName   map[string]*backend        // by host@backend
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
		presence: events.NewPresence(events.NewRedisClient(redisOpts), nil), exports: map[string]*export.Manager{},
		byName: map[string]*backend{}}
	for _, bc := range cfg.Backends {
		d, err := openDriver(&a.cfg, bc, logger)
		if err != nil {
			a.Close()
			return nil, err
		}
		b := &backend{cfg: bc, name: cfg.Host + "@" + bc.Name, driver: d, slots: make(chan struct{}, bc.Workers)}
		a.backends = append(a.backends, b)
		a.byName[b.name] = b
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
	// One subscription for the whole host. The journal write runs in the message's context; the
	// command runs in the work's, which outlives the message by the grace period.
	sub, err := a.bus.Subscriber(consumerGroup, a.cfg.Host)
	if err != nil {
		return err
	}
	subs = append(subs, sub)
	router.AddConsumerHandler("agent."+a.cfg.Host, events.HostTopic(a.cfg.Host), sub, func(msg *message.Message) error {
		return a.dispatch(workCtx, msg)
	})
	// Upgrade: the legacy topics of backends that still hold commands are read too, until empty.
	legacy, err := a.legacyBacklog(workCtx, a.backends)
	if err != nil {
		return fmt.Errorf("look for commands on legacy backend topics: %w", err)
	}
	var drains []legacyDrain
	for _, b := range legacy {
		sub, err := a.bus.Subscriber(consumerGroup, a.cfg.Host)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		topic := events.LegacyBackendTopic(b.name)
		a.logger.Info("draining a legacy backend topic", "topic", topic, "backend", b.name)
		h := router.AddConsumerHandler("agent.legacy."+b.name, topic, sub, func(msg *message.Message) error {
			var cmd events.Command
			if err := events.Decode(msg, &cmd); err != nil {
				return err
			}
			return a.accept(workCtx, b, cmd, msg) // its topic names its backend
		})
		drains = append(drains, legacyDrain{b: b, handler: h, sub: sub})
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
	if len(drains) > 0 {
		g.Go(func() error { a.drainLegacy(gctx, router, drains); return nil })
	}
	a.logger.Info("agent started", "backends", a.Backends())
	return g.Wait()
}

// consumerGroup is the consumer group of every agent on its host's topic; the consumer is the host.
const consumerGroup = "agents"

// dispatch accepts a command of the host's topic on the backend it names. A command for a
// backend this agent does not run is journaled nowhere and fails: the bus retries it, then sends
// it to the dead-letter topic, where an admin sees it. Meanwhile the others go on.
func (a *Agent) dispatch(ctx context.Context, msg *message.Message) error {
	var cmd events.Command
	if err := events.Decode(msg, &cmd); err != nil {
		return err
	}
	b := a.byName[cmd.Backend]
	if b == nil {
		a.logger.Error("command for a backend this agent does not run", "op_id", cmd.OpID, "backend", cmd.Backend,
			"kind", cmd.Kind, "volume_id", cmd.VolumeID, "request_id", cmd.RequestID)
		return fmt.Errorf("command %s (%s) is for backend %q, which the agent of host %s does not run",
			cmd.OpID, cmd.Kind, cmd.Backend, a.cfg.Host)
	}
	return a.accept(ctx, b, cmd, msg)
}

// accept journals cmd, the command of msg, on b and starts it; the message is then
// acknowledged. It is quick whatever b's driver does: the driver call runs in b's worker pool.
func (a *Agent) accept(ctx context.Context, b *backend, cmd events.Command, msg *message.Message) error {
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
	if err := a.adoptLegacyJournal(ctx, b); err != nil {
		return err
	}
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

// legacyDrain is the reading of one backend's legacy topic, until it is empty (the upgrade).
type legacyDrain struct {
	b       *backend
	handler *message.Handler
	sub     message.Subscriber
}

// legacyCheck is how often drainLegacy looks whether the legacy topics it reads are empty.
const legacyCheck = time.Second

// drainLegacy stops reading each legacy topic of drains, and closes its subscriber, once nothing
// is left on it for the agents' group: nothing undelivered, nothing delivered and not
// acknowledged (a command being accepted is delivered and not acknowledged yet). It returns
// when every one is drained or ctx ends.
func (a *Agent) drainLegacy(ctx context.Context, router *message.Router, drains []legacyDrain) {
	select {
	case <-router.Running(): // every handler has started: they can be stopped
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(legacyCheck)
	defer t.Stop()
	for len(drains) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		bs := make([]*backend, len(drains))
		for i, d := range drains {
			bs[i] = d.b
		}
		left, err := a.legacyBacklog(ctx, bs)
		if err != nil {
			if ctx.Err() == nil {
				a.logger.Warn("look at legacy backend topics", "err", err)
			}
			continue
		}
		kept := drains[:0]
		for _, d := range drains {
			if slices.Contains(left, d.b) {
				kept = append(kept, d)
				continue
			}
			d.handler.Stop()
			select {
			case <-d.handler.Stopped():
			case <-ctx.Done():
				return
			}
			_ = d.sub.Close()
			a.logger.Info("legacy backend topic drained; no longer read", "topic", events.LegacyBackendTopic(d.b.name),
				"backend", d.b.name)
		}
		drains = kept
	}
}

// legacyBacklog returns those of bs whose legacy topic (events.LegacyBackendTopic) holds
// commands for the agents' group: entries not delivered to it yet, or delivered and not
// acknowledged. A legacy topic without the group holds commands if it holds entries (a
// subscription creates the group at the stream's start, so it reads them all). It costs one
// round trip, whatever the number of backends.
func (a *Agent) legacyBacklog(ctx context.Context, bs []*backend) ([]*backend, error) {
	pipe := a.rdb.Pipeline()
	last := make([]*redis.XMessageSliceCmd, len(bs))
	groups := make([]*redis.XInfoGroupsCmd, len(bs))
	for i, b := range bs {
		topic := events.LegacyBackendTopic(b.name)
		last[i] = pipe.XRevRangeN(ctx, topic, "+", "-", 1)
		groups[i] = pipe.XInfoGroups(ctx, topic)
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error: XINFO fails on every missing stream
	var out []*backend
	for i, b := range bs {
		entries, err := last[i].Result()
		if err != nil {
			return nil, err
		}
		gs, err := groups[i].Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue // no legacy topic: the backend started after the upgrade
			}
			return nil, err
		}
		if legacyWork(gs, entries) {
			out = append(out, b)
		}
	}
	return out, nil
}

// legacyWork reports whether a stream whose consumer groups are groups and whose last entry is
// last (none when empty) holds commands for the agents' group.
func legacyWork(groups []redis.XInfoGroup, last []redis.XMessage) bool {
	for _, g := range groups {
		if g.Name == consumerGroup {
			return g.Pending > 0 || len(last) > 0 && streamIDLess(g.LastDeliveredID, last[0].ID)
		}
	}
	return len(last) > 0
}

// streamIDLess reports whether stream entry id a (ms-seq) comes before b.
func streamIDLess(a, b string) bool {
	split := func(id string) (ms, seq uint64) {
		m, s, _ := strings.Cut(id, "-")
		ms, _ = strconv.ParseUint(m, 10, 64)
		seq, _ = strconv.ParseUint(s, 10, 64)
		return ms, seq
	}
	am, as := split(a)
	bm, bs := split(b)
	return am < bm || am == bm && as < bs
}

// legacyJournalKey is where agents kept b's journal before the keys were laid out by slot.
func legacyJournalKey(backend string) string {
	return events.KeyPrefix + "agent:" + backend + ":inflight"
}

// adoptLegacyJournal moves what an older agent left in b's journal of the old key layout into
// its journal (entries there already win), then drops the old one: an agent upgraded before the
// API has moved the state finds its interrupted work all the same. Both steps may be repeated.
func (a *Agent) adoptLegacyJournal(ctx context.Context, b *backend) error {
	old, err := a.rdb.HGetAll(ctx, legacyJournalKey(b.name)).Result()
	if err != nil || len(old) == 0 {
		return err
	}
	for opID, payload := range old {
		if err := a.rdb.HSetNX(ctx, JournalKey(b.name), opID, payload).Err(); err != nil {
			return err
		}
	}
	a.logger.Info("adopted the journal of an older agent", "backend", b.name, "commands", len(old))
	return a.rdb.Del(ctx, legacyJournalKey(b.name)).Err()
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
