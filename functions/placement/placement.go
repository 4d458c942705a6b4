// Package placement is the scheduler function: it consumes the scheduler topic, ranks the pools
// of up and enabled backends with the scheduler package, reserves capacity on the best pool
// atomically in Redis, records the decision, and hands the command to the chosen backend's
// topic. Any number of replicas may run: a reservation is one Lua script (check and claim), so
// no pool is ever over-committed, and every step is idempotent by operation id.
package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/basalt-storage/basalt/internal/crash"
)

// Config configures the scheduler function.
type Config struct {
	Scheduler scheduler.Config
	// MaxAttempts is scheduler_max_attempts: how many placements one create may have. Default 3.
	MaxAttempts int
	// ServiceDownTime is how old a heartbeat may be for its backend to take volumes. Default 60s.
	ServiceDownTime time.Duration
	// MessageTTL is how long user messages are kept. Default 30 days.
	MessageTTL time.Duration
	// PoolRefresh is how old the prepared pool set may grow before it is read again from Redis
	// (in the background). Default 1s.
	PoolRefresh time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.ServiceDownTime == 0 {
		c.ServiceDownTime = 60 * time.Second
	}
	if c.MessageTTL == 0 {
		c.MessageTTL = 30 * 24 * time.Hour
	}
}

// Publisher sends a message to a topic (events.Bus).
type Publisher interface {
	PublishContext(ctx context.Context, topic, opID, requestID string, v any) error
}

// Function places volumes.
type Function struct {
	cfg    Config
	sched  *scheduler.Scheduler
	store  *store.Store
	pub    Publisher
	logger *slog.Logger
	pools  *poolCache
}

// New returns the scheduler function. Unknown filter or weigher names are an error.
func New(cfg Config, st *store.Store, pub Publisher, logger *slog.Logger) (*Function, error) {
	cfg.setDefaults()
	if cfg.MaxAttempts < 1 {
		return nil, fmt.Errorf("scheduler_max_attempts must be at least 1, not %d", cfg.MaxAttempts)
	}
	s, err := scheduler.New(cfg.Scheduler)
	if err != nil {
		return nil, err
	}
	return &Function{cfg: cfg, sched: s, store: st, pub: pub, logger: logger,
		pools: newPoolCache(st, s, cfg.ServiceDownTime, cfg.PoolRefresh)}, nil
}

// Close waits for the pool set's background read, if one runs, and starts no more. Placements
// after Close read the pools in the foreground.
func (f *Function) Close() { f.pools.close() }

// Handle is the Watermill handler of the scheduler topic.
func (f *Function) Handle(msg *message.Message) error {
	var cmd events.Command
	if err := events.Decode(msg, &cmd); err != nil {
		return err
	}
	return f.Place(msg.Context(), cmd)
}

// Explain ranks the pools for a hypothetical request without reserving or creating anything.
func (f *Function) Explain(ctx context.Context, r *scheduler.Request) (*scheduler.Decision, error) {
	pools, err := f.store.Pools(ctx, f.store.Now(), f.cfg.ServiceDownTime)
	if err != nil {
		return nil, err
	}
	return f.sched.Place(r, pools), nil
}

// Place places one create command. It is idempotent: a redelivered command whose operation is
// finished, or whose volume is already placed, is not placed again.
func (f *Function) Place(ctx context.Context, cmd events.Command) error {
	f.logger.Debug("placing", "kind", cmd.Kind, "volume_id", cmd.VolumeID, "snapshot_id", cmd.SnapshotID, "op_id", cmd.OpID)
	switch cmd.Kind {
	case events.KindCreateVolume:
		return f.placeCreate(ctx, cmd)
	case events.KindExtendVolume:
		return f.placeExtend(ctx, cmd)
	case events.KindCreateSnapshot:
		return f.placeSnapshot(ctx, cmd)
	}
	return fmt.Errorf("scheduler cannot handle %q commands", cmd.Kind)
}

// pendingOp returns the command's operation, or nil when it has ended or is unknown (a
// redelivery: nothing to do).
func (f *Function) pendingOp(ctx context.Context, cmd events.Command) (*basalt.Operation, error) {
	op, err := f.store.Op(ctx, cmd.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		f.logger.Warn("command for an unknown operation dropped", "op_id", cmd.OpID)
		return nil, nil
	}
	if err != nil || op.State != basalt.OpPending {
		return nil, err
	}
	return op, nil
}

// onlyPool narrows pools to the one named, for work that must stay on its source's pool.
func onlyPool(pools []basalt.Pool, name string) []basalt.Pool {
	for _, p := range pools {
		if p.Name == name {
			return []basalt.Pool{p}
		}
	}
	return nil
}

func (f *Function) placeCreate(ctx context.Context, cmd events.Command) error {
	log := f.logger.With("volume_id", cmd.VolumeID, "op_id", cmd.OpID, "request_id", cmd.RequestID)
	op, err := f.store.Op(ctx, cmd.OpID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		log.Warn("command for an unknown operation dropped")
		return nil
	}
	if err != nil {
		return err
	}
	if op.State != basalt.OpPending {
		return nil // a redelivery of finished work
	}
	v, err := f.store.Volume(ctx, cmd.VolumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		_ = f.store.Release(ctx, cmd.VolumeID)
		return f.store.FailOp(ctx, op.ID, "the volume was deleted before it was placed")
	}
	if err != nil {
		return err
	}
	if v.OpID != op.ID {
		return nil
	}
	if v.Host != "" && op.Owner == v.Backend() {
		// Placed before a crash, but maybe not handed over: hand over again (agents dedupe).
		return f.handOver(ctx, handoverOp(op, createHandover(cmd, v.Host, v.Size)))
	}
	if op.Attempts >= f.cfg.MaxAttempts {
		return f.fail(ctx, cmd, v, fmt.Sprintf("No valid backend was found. Exceeded max scheduling attempts %d for resource %s", f.cfg.MaxAttempts, v.ID))
	}
	// An unplaced volume holds no capacity, unless an earlier delivery of this command reserved
	// some and died before recording the placement: give that back before ranking again.
	if err := f.store.Release(ctx, v.ID); err != nil {
		return err
	}
	var vt *basalt.VolumeType
	if v.VolumeTypeID != "" {
		if vt, err = f.store.Type(ctx, v.VolumeTypeID); err != nil && basalt.ErrorCode(err) != basalt.ENOTFOUND {
			return err
		}
	}
	req := &scheduler.Request{ID: v.ID, SizeGB: v.Size, Zone: v.AvailabilityZone, Type: vt, Attempted: cmd.Attempted}
	if cmd.SourcePool != "" {
		req.Zone, req.Attempted = "", nil // the source decides; zone and retries do not apply
	}
	// Rank on the prepared set and reserve on the ledger, walking the ranking until a pool
	// takes it. What is kept of the decision is made while the set is held.
	var chosen basalt.Pool
	var record, reason string
	rank := func(read func(context.Context, func(*scheduler.PoolSet, []basalt.Pool) error) error) error {
		// Rank while the set is held, keep copies of the best candidates, and let the set go
		// before the reservations' round trips (a placement's Consume waits for the set).
		// Over more than explainAll pools the ranking stops early (scheduler.Ranking: the
		// pools best first, each filtered as it is reached): it copies out the first
		// candidate and those among the next lookAhead pools. If all of those are taken
		// meanwhile, it ranks again on the set as it is then, past the pools tried, looking
		// further each time, until maxCandidates were tried or no candidate is left.
		var lost []string
		tried := map[string]bool{}
		look := lookAhead
		for {
			var cands []candidate
			var recorder func(string) string
			more := false // the ranking has candidates beyond those copied
			if err := read(ctx, func(set *scheduler.PoolSet, pools []basalt.Pool) error {
				var d *scheduler.Decision
				switch {
				case cmd.SourcePool != "":
					// A clone or a volume from a snapshot is made where its source is.
					only := onlyPool(pools, cmd.SourcePool)
					if only == nil {
						reason = fmt.Sprintf("No valid backend was found. The source's pool %s is not up, enabled and reporting.", cmd.SourcePool)
						return nil
					}
					d = f.sched.Place(req, []basalt.Pool{only[0]})
				case len(pools) <= explainAll:
					d = f.sched.PlaceSet(req, set) // the record explains every pool
				default:
					k := f.sched.Rank(req, set)
					if k.Full() {
						d = k.Decision()
						break
					}
					limit := 0
					for len(cands) < maxCandidates-len(lost) {
						c, ok := k.Next(limit)
						if !ok {
							break
						}
						if tried[c.Pool.Name] {
							continue
						}
						if len(cands) == 0 {
							limit = k.Visited() + look
						}
						cands = append(cands, candidate{pool: *c.Pool, limit: ledgerLimit(c)})
					}
					if len(cands) == 0 && len(lost) == 0 {
						d = k.Decision() // no candidate: the full decision says why
						break
					}
					more, recorder = !k.Done(), walkRecorder(k, len(pools))
					return nil
				}
				if len(d.Ranked) == 0 {
					if len(lost) == 0 {
						reason = "No valid backend was found. " + explainFailure(d, nil, len(pools))
					}
					return nil
				}
				for _, c := range d.Ranked {
					if len(cands) == maxCandidates-len(lost) {
						break
					}
					if !tried[c.Pool.Name] {
						cands = append(cands, candidate{pool: *c.Pool, limit: ledgerLimit(c)})
					}
				}
				recorder = decisionRecorder(d)
				return nil
			}); err != nil || reason != "" {
				return err
			}
			for _, c := range cands {
				ok, err := f.store.Reserve(ctx, v.ID, c.pool.Name, v.Size, c.limit)
				if err != nil {
					return err
				}
				if !ok {
					lost = append(lost, fmt.Sprintf("%s: CapacityFilter: taken by a concurrent placement", c.pool.Name))
					tried[c.pool.Name] = true
					continue
				}
				chosen, record = c.pool, recorder(c.pool.Name)
				return nil
			}
			if !more || len(cands) == 0 || len(lost) >= maxCandidates {
				break
			}
			look *= 4
		}
		// Every candidate tried was taken meanwhile by other placements.
		reason = "No valid backend was found. " + strings.Join(lost, "; ")
		return nil
	}
	if err := rank(f.pools.read); err != nil {
		return err
	}
	if reason != "" {
		// Before a create fails, a fresh read: the set may predate a backend that just
		// started reporting, or the reservations that took the candidates.
		reason = ""
		if err := rank(f.pools.readFresh); err != nil {
			return err
		}
	}
	if reason == "" {
		f.pools.consume(chosen.Name, v.Size)
		return f.placed(ctx, cmd, op, &chosen, record, log)
	}
	if op.Reason != "" {
		reason += ". Earlier attempt: " + op.Reason // why a reschedule happened
	}
	return f.fail(ctx, cmd, v, reason)
}

// maxCandidates is how many of a decision's best candidates a placement tries to reserve on
// before it fails (each taken by a concurrent placement in the meantime).
const maxCandidates = 16

// explainAll is the most pools whose every verdict a placement's record keeps (Explain); over
// more, a placement ranks with an early exit and records the best candidates.
const explainAll = 50

// lookAhead is how many pools past the first candidate an early-exit ranking looks for more
// candidates to copy out before the reservations (four times more on each further round).
const lookAhead = 64

// candidate is a ranked pool, copied out of the pool set, and its limit on the ledger.
type candidate struct {
	pool  basalt.Pool
	limit float64
}

// ledgerLimit converts a candidate's limit on provisioned capacity into a limit on the ledger:
// the reported provisioned capacity may include space the ledger does not track.
func ledgerLimit(c scheduler.Candidate) float64 {
	if math.IsInf(c.Limit, 1) {
		return c.Limit
	}
	prov, _ := c.Pool.Capabilities["provisioned_capacity_gb"].(float64)
	alloc, _ := c.Pool.Capabilities["allocated_capacity_gb"].(float64)
	return c.Limit - math.Max(0, prov-alloc)
}

func explainFailure(d *scheduler.Decision, lost []string, pools int) string {
	if pools == 0 {
		return "No volume service is up, enabled and reporting capabilities."
	}
	var parts []string
	for _, r := range d.Rejections() {
		parts = append(parts, fmt.Sprintf("%s: %s: %s", r.Pool, r.Filter, r.Reason))
	}
	parts = append(parts, lost...)
	return strings.Join(parts, "; ")
}

func (f *Function) placed(ctx context.Context, cmd events.Command, op *basalt.Operation, pool *basalt.Pool,
	record string, log *slog.Logger) error {
	var sent *basalt.Operation
	v, err := f.store.UpdateVolumeWithOp(ctx, cmd.VolumeID, func(v *basalt.Volume) error {
		if v.OpID != op.ID {
			return store.ErrOpFinished
		}
		v.Host = pool.Name
		if v.AvailabilityZone == "" {
			v.AvailabilityZone = pool.Zone
		}
		return nil
	}, func(v *basalt.Volume) *basalt.Operation {
		o := *op
		o.Owner, o.Attempts, o.UpdatedAt = pool.Backend, op.Attempts+1, f.store.Now()
		sent = withCommand(&o, createHandover(cmd, pool.Name, v.Size))
		return sent
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return f.store.Release(ctx, cmd.VolumeID)
	}
	if err != nil {
		return err
	}
	if err := f.store.PutDecision(ctx, v.ID, record); err != nil {
		log.Warn("record placement decision", "err", err)
	}
	log.Info("volume placed", "pool", pool.Name, "size", v.Size)
	crash.Point("placement.placed")
	return f.handOver(ctx, sent)
}

// createHandover is the command that hands a placed create to the backend of host.
func createHandover(cmd events.Command, host string, size int) events.Command {
	backend, poolName, _ := strings.Cut(host, "#")
	cmd.Backend = backend
	cmd.Volume = basalt.VolumeSpec{ID: cmd.VolumeID, SizeGB: size, Pool: poolName}
	cmd.Attempted = append(append([]string(nil), cmd.Attempted...), backend)
	return cmd
}

// withCommand writes cmd into op as the command it sends to its backend's topic, to be sent
// from the outbox: the placement and the hand-off are one transaction.
func withCommand(op *basalt.Operation, cmd events.Command) *basalt.Operation {
	b, err := json.Marshal(cmd)
	if err != nil {
		panic(err) // a plain struct of ours
	}
	op.Topic, op.Command, op.Send = events.BackendTopic(cmd.Backend), b, true
	return op
}

// handoverOp returns op as it hands cmd over: the command its record holds when the
// placement wrote it there, or cmd for an operation placed before commands were kept in
// records.
func handoverOp(op *basalt.Operation, cmd events.Command) *basalt.Operation {
	if op.Topic == events.BackendTopic(cmd.Backend) && len(op.Command) > 0 {
		return op
	}
	o := *op
	return withCommand(&o, cmd)
}

// handOver publishes the command that op's record holds for its backend and marks it sent. A
// publish that fails is left to the relay, which sends every command written and not marked
// sent; agents are idempotent by operation id, so a command sent twice runs once.
func (f *Function) handOver(ctx context.Context, op *basalt.Operation) error {
	if err := f.pub.PublishContext(ctx, op.Topic, op.ID, op.RequestID, op.Command); err != nil {
		f.logger.Warn("hand a placed command over; the relay will send it", "topic", op.Topic, "op_id", op.ID, "err", err)
		return nil
	}
	if err := f.store.MarkSent(ctx, op.ID); err != nil {
		f.logger.Warn("mark a command sent; the relay may send it again", "op_id", op.ID, "err", err)
	}
	return nil
}

// fail ends a create that fits nowhere: the volume goes to error with the reason, and the
// user gets a message naming every pool and why it was rejected.
func (f *Function) fail(ctx context.Context, cmd events.Command, v *basalt.Volume, reason string) error {
	f.logger.Warn("volume not placed", "volume_id", v.ID, "op_id", cmd.OpID, "request_id", cmd.RequestID, "reason", reason)
	return FailCreate(ctx, f.store, cmd.OpID, v.ID, v.Host, cmd.RequestID, basalt.EventScheduleNoBackend,
		"schedule allocate volume:"+reason, reason, f.cfg.MessageTTL)
}

// FailCreate moves a creating volume to error with reason, ends its operation, returns its
// capacity and quota, and leaves the user a message. host is the placement the failure is
// about ("" for a volume that was never placed): a failure of an earlier placement, delivered
// late, changes nothing. It does nothing for a redelivery. The results function and the
// reconciler use it too.
func FailCreate(ctx context.Context, st *store.Store, opID, volumeID, host, requestID, eventID, userMessage, reason string, ttl time.Duration) error {
	release := func() error { return st.ReleaseFrom(ctx, volumeID, host) }
	if host == "" {
		release = func() error { return st.Release(ctx, volumeID) }
	}
	v, err := st.Volume(ctx, volumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if v.OpID != opID || v.Host != host {
		return nil
	}
	// Capacity first: if we crash after it, the redelivery finds nothing to release.
	if err := release(); err != nil {
		return err
	}
	var project string
	_, err = st.UpdateVolumeWithOp(ctx, volumeID, func(v *basalt.Volume) error {
		if v.OpID != opID || v.Host != host {
			return store.ErrOpFinished
		}
		project = v.ProjectID
		basalt.VolumeTransitions[basalt.KindCreateVolume].Fail(v, reason)
		return nil
	}, func(v *basalt.Volume) *basalt.Operation { return finishedOp(ctx, st, opID, basalt.OpFailed, reason) })
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if err := st.Refund(ctx, "vol:"+volumeID); err != nil {
		return err
	}
	return leaveMessage(ctx, st, project, requestID, "VOLUME", volumeID, eventID, userMessage, ttl)
}

// finishedOp returns operation opID in a final state; it reads the record so that nothing else
// in it is lost, and falls back to a minimal record.
func finishedOp(ctx context.Context, st *store.Store, opID, state, reason string) *basalt.Operation {
	op, err := st.Op(ctx, opID)
	if err != nil {
		op = &basalt.Operation{ID: opID}
	}
	op.State, op.Reason, op.UpdatedAt = state, reason, st.Now()
	return op
}

// placeOnOwnPool runs the filters for work that must happen on one pool (extend, snapshot) and
// returns the candidate, or a reason why the pool cannot take it.
func (f *Function) placeOnOwnPool(ctx context.Context, pool string, req *scheduler.Request) (*scheduler.Candidate, string, error) {
	var pools []basalt.Pool
	find := func(_ *scheduler.PoolSet, all []basalt.Pool) error {
		if only := onlyPool(all, pool); only != nil {
			pools = []basalt.Pool{only[0]} // a copy: the set's pools change under Consume
		}
		return nil
	}
	if err := f.pools.read(ctx, find); err != nil {
		return nil, "", err
	}
	if pools == nil {
		if err := f.pools.readFresh(ctx, find); err != nil {
			return nil, "", err
		}
	}
	if pools == nil {
		return nil, fmt.Sprintf("No valid backend was found. Pool %s is not up, enabled and reporting.", pool), nil
	}
	d := f.sched.Place(req, pools)
	if len(d.Ranked) == 0 {
		return nil, "No valid backend was found. " + explainFailure(d, nil, 1), nil
	}
	return &d.Ranked[0], "", nil
}

func (f *Function) volumeType(ctx context.Context, id string) (*basalt.VolumeType, error) {
	if id == "" {
		return nil, nil
	}
	vt, err := f.store.Type(ctx, id)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil, nil
	}
	return vt, err
}

// placeExtend checks and claims the growth on the volume's own pool, then hands the extend to
// its backend. When the pool cannot take it, the volume returns to its previous status and the
// user gets a message.
func (f *Function) placeExtend(ctx context.Context, cmd events.Command) error {
	op, err := f.pendingOp(ctx, cmd)
	if op == nil || err != nil {
		return err
	}
	v, err := f.store.Volume(ctx, cmd.VolumeID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return f.store.FailOp(ctx, op.ID, "the volume is gone")
	}
	if err != nil {
		return err
	}
	if v.OpID != op.ID {
		return nil
	}
	handover := cmd
	handover.Backend = v.Backend()
	if op.Owner == v.Backend() {
		return f.handOver(ctx, handoverOp(op, handover))
	}
	vt, err := f.volumeType(ctx, v.VolumeTypeID)
	if err != nil {
		return err
	}
	delta := cmd.Volume.SizeGB - cmd.OldSizeGB
	req := &scheduler.Request{ID: v.ID, SizeGB: delta, Type: vt, Operation: scheduler.OpExtendVolume,
		Attached: v.AttachStatus == basalt.AttachAttached}
	c, reason, err := f.placeOnOwnPool(ctx, v.Host, req)
	if err != nil {
		return err
	}
	if c != nil {
		ok, err := f.store.Grow(ctx, v.ID, v.Host, op.ID, delta, ledgerLimit(*c))
		if err != nil {
			return err
		}
		if !ok {
			reason = fmt.Sprintf("No valid backend was found. %s: CapacityFilter: taken by a concurrent placement", v.Host)
		}
	}
	if reason != "" {
		return f.failExtend(ctx, cmd, reason)
	}
	o, err := f.store.UpdateOp(ctx, op.ID, func(o *basalt.Operation) error {
		o.Owner = v.Backend()
		withCommand(o, handover)
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrOpFinished) {
			return f.store.Shrink(ctx, v.ID, v.Host, op.ID)
		}
		return err
	}
	return f.handOver(ctx, o)
}

// failExtend ends an extend that the volume's pool cannot take: the volume goes back to its
// previous status, the quota charge is returned and the user gets a message.
func (f *Function) failExtend(ctx context.Context, cmd events.Command, reason string) error {
	f.logger.Warn("extend not placed", "volume_id", cmd.VolumeID, "op_id", cmd.OpID, "reason", reason)
	var project string
	_, err := f.store.UpdateVolumeWithOp(ctx, cmd.VolumeID, func(v *basalt.Volume) error {
		if v.OpID != cmd.OpID {
			return store.ErrOpFinished
		}
		project = v.ProjectID
		basalt.VolumeTransitions[basalt.KindExtendVolume].Unplace(v, reason)
		return nil
	}, func(*basalt.Volume) *basalt.Operation {
		return finishedOp(ctx, f.store, cmd.OpID, basalt.OpFailed, reason)
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	// Return what an earlier delivery may have claimed, and the quota charge.
	if err := f.store.Shrink(ctx, cmd.VolumeID, cmd.SourcePool, cmd.OpID); err != nil {
		return err
	}
	if err := f.store.Refund(ctx, "ext:"+cmd.OpID); err != nil {
		return err
	}
	return leaveMessage(ctx, f.store, project, cmd.RequestID, "VOLUME", cmd.VolumeID, basalt.EventExtendNoBackend,
		"extend volume:"+reason, f.cfg.MessageTTL)
}

// placeSnapshot checks and claims the snapshot's size on its volume's pool, then hands it to
// the volume's backend; when the pool cannot take it, the snapshot ends in error.
func (f *Function) placeSnapshot(ctx context.Context, cmd events.Command) error {
	op, err := f.pendingOp(ctx, cmd)
	if op == nil || err != nil {
		return err
	}
	sn, err := f.store.Snapshot(ctx, cmd.SnapshotID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		_ = f.store.Release(ctx, "snap:"+cmd.SnapshotID)
		return f.store.FailOp(ctx, op.ID, "the snapshot is gone")
	}
	if err != nil {
		return err
	}
	if sn.OpID != op.ID {
		return nil
	}
	handover := cmd
	handover.Backend = sn.Backend()
	if op.Owner == sn.Backend() {
		return f.handOver(ctx, handoverOp(op, handover))
	}
	var vt *basalt.VolumeType
	if v, err := f.store.Volume(ctx, sn.VolumeID); err == nil {
		if vt, err = f.volumeType(ctx, v.VolumeTypeID); err != nil {
			return err
		}
	}
	c, reason, err := f.placeOnOwnPool(ctx, sn.Host, &scheduler.Request{ID: sn.ID, SizeGB: sn.Size, Type: vt})
	if err != nil {
		return err
	}
	if c != nil {
		ok, err := f.store.Reserve(ctx, "snap:"+sn.ID, sn.Host, sn.Size, ledgerLimit(*c))
		if err != nil {
			return err
		}
		if !ok {
			reason = fmt.Sprintf("No valid backend was found. %s: CapacityFilter: taken by a concurrent placement", sn.Host)
		}
	}
	if reason != "" {
		f.logger.Warn("snapshot not placed", "snapshot_id", sn.ID, "op_id", op.ID, "reason", reason)
		return FailSnapshot(ctx, f.store, op.ID, sn.ID, cmd.RequestID, basalt.EventSnapshotNoBackend,
			"create snapshot:"+reason, reason, f.cfg.MessageTTL)
	}
	o, err := f.store.UpdateOp(ctx, op.ID, func(o *basalt.Operation) error {
		o.Owner = sn.Backend()
		withCommand(o, handover)
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrOpFinished) {
			return f.store.Release(ctx, "snap:"+sn.ID)
		}
		return err
	}
	return f.handOver(ctx, o)
}

// FailSnapshot moves a creating snapshot to error with reason, ends its operation, returns its
// capacity and quota, and leaves the user a message. It does nothing for a redelivery.
func FailSnapshot(ctx context.Context, st *store.Store, opID, snapID, requestID, eventID, userMessage, reason string, ttl time.Duration) error {
	if err := st.Release(ctx, "snap:"+snapID); err != nil {
		return err
	}
	var project string
	_, err := st.UpdateSnapshot(ctx, snapID, func(sn *basalt.Snapshot) error {
		if sn.OpID != opID {
			return store.ErrOpFinished
		}
		project = sn.ProjectID
		basalt.SnapshotTransitions[basalt.KindCreateSnapshot].Fail(sn, reason)
		return nil
	}, func(*basalt.Snapshot) *basalt.Operation { return finishedOp(ctx, st, opID, basalt.OpFailed, reason) })
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if err := st.Refund(ctx, "snap:"+snapID); err != nil {
		return err
	}
	return leaveMessage(ctx, st, project, requestID, "VOLUME_SNAPSHOT", snapID, eventID, userMessage, ttl)
}

// leaveMessage leaves project a user message about a resource.
func leaveMessage(ctx context.Context, st *store.Store, project, requestID, resourceType, resourceID, eventID, text string, ttl time.Duration) error {
	now := st.Now()
	return st.CreateMessage(ctx, &basalt.Message{ID: events.NewID(project), ProjectID: project, EventID: eventID,
		UserMessage: text, Level: "ERROR", RequestID: requestID, ResourceType: resourceType,
		ResourceUUID: resourceID, CreatedAt: now, ExpiresAt: now.Add(ttl)})
}

// decisionRecorder returns what is kept of a placement on d: the whole explanation for a small
// pool set, else the chosen pool, the five best candidates and how many pools were rejected, so
// the record stays small (and cheap to build) over thousands of pools. All but the chosen pool is
// formatted at once, so the record can be made after d (and the pool set it refers to) is let go.
func decisionRecorder(d *scheduler.Decision) func(chosen string) string {
	if len(d.Ranked)+d.NumRejected() <= explainAll {
		explain := d.Explain()
		return func(string) string { return explain }
	}
	var b strings.Builder
	for _, c := range d.Ranked[:min(5, len(d.Ranked))] {
		fmt.Fprintf(&b, "%s: weight %.4f\n", c.Pool.Name, c.Weight)
	}
	fmt.Fprintf(&b, "... %d more candidates and %d rejected pools (basalt scheduler explain shows them all)\n",
		max(0, len(d.Ranked)-5), d.NumRejected())
	rest := b.String()
	return func(chosen string) string { return "placed on " + chosen + "; best candidates:\n" + rest }
}

// walkRecorder is decisionRecorder for a ranking that stopped early. Its weights are not known
// (they are normalized over every candidate, and it did not visit them all), nor how many pools
// pass: it keeps the chosen pool, the five best candidates it found, in ranking order, with the
// weigher's raw value (CapacityWeigher's: the virtual free GiB) and limit, and how many pools
// it looked at. Formatted at once, as decisionRecorder's.
func walkRecorder(k *scheduler.Ranking, pools int) func(chosen string) string {
	lines := strings.SplitAfter(k.Explain(), "\n")
	rest := strings.Join(lines[:min(5, len(lines)-1)], "") +
		fmt.Sprintf("... ranked best first with an early exit: %d of %d pools looked at (basalt scheduler explain shows them all)\n",
			k.Visited(), pools)
	return func(chosen string) string { return "placed on " + chosen + "; best candidates:\n" + rest }
}
