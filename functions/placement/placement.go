// Package placement is the scheduler function: it consumes the scheduler topic, ranks the pools
// of up and enabled backends with the scheduler package, reserves capacity on the best pool
// atomically in Redis, records the decision, and hands the command to the chosen backend's
// topic. Any number of replicas may run: a reservation is one Lua script (check and claim), so
// no pool is ever over-committed, and every step is idempotent by operation id.
package placement

import (
	"context"
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
	"github.com/google/uuid"
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
	Publish(topic, opID, requestID string, v any) error
}

// Function places volumes.
type Function struct {
	cfg    Config
	sched  *scheduler.Scheduler
	store  *store.Store
	pub    Publisher
	logger *slog.Logger
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
	return &Function{cfg: cfg, sched: s, store: st, pub: pub, logger: logger}, nil
}

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
	log := f.logger.With("volume_id", cmd.VolumeID, "op_id", cmd.OpID, "request_id", cmd.RequestID)
	if cmd.Kind != events.KindCreateVolume {
		return fmt.Errorf("scheduler cannot handle %q commands", cmd.Kind)
	}
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
		return f.endOp(ctx, op.ID, "the volume was deleted before it was placed")
	}
	if err != nil {
		return err
	}
	if v.OpID != op.ID {
		return nil
	}
	if v.Host != "" && op.Owner == v.Backend() {
		// Placed before a crash, but maybe not handed over: hand over again (agents dedupe).
		return f.handOver(ctx, cmd, v)
	}
	if op.Attempts >= f.cfg.MaxAttempts {
		return f.fail(ctx, cmd, v, fmt.Sprintf("No valid backend was found. Exceeded max scheduling attempts %d for resource %s", f.cfg.MaxAttempts, v.ID))
	}
	var vt *basalt.VolumeType
	if v.VolumeTypeID != "" {
		if vt, err = f.store.Type(ctx, v.VolumeTypeID); err != nil && basalt.ErrorCode(err) != basalt.ENOTFOUND {
			return err
		}
	}
	pools, err := f.store.Pools(ctx, f.store.Now(), f.cfg.ServiceDownTime)
	if err != nil {
		return err
	}
	req := &scheduler.Request{ID: v.ID, SizeGB: v.Size, Zone: v.AvailabilityZone, Type: vt, Attempted: cmd.Attempted}
	d := f.sched.Place(req, pools)
	var lost []string
	for _, c := range d.Ranked {
		ok, err := f.store.Reserve(ctx, v.ID, c.Pool.Name, v.Size, ledgerLimit(c))
		if err != nil {
			return err
		}
		if !ok {
			lost = append(lost, fmt.Sprintf("%s: CapacityFilter: taken by a concurrent placement", c.Pool.Name))
			continue
		}
		return f.placed(ctx, cmd, op, c.Pool, d, log)
	}
	reason := "No valid backend was found. " + explainFailure(d, lost, len(pools))
	return f.fail(ctx, cmd, v, reason)
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
	for _, r := range d.Rejected {
		parts = append(parts, fmt.Sprintf("%s: %s: %s", r.Pool, r.Filter, r.Reason))
	}
	parts = append(parts, lost...)
	return strings.Join(parts, "; ")
}

func (f *Function) placed(ctx context.Context, cmd events.Command, op *basalt.Operation, pool *basalt.Pool,
	d *scheduler.Decision, log *slog.Logger) error {
	_, _, poolName := basalt.SplitHost(pool.Name)
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
		return &o
	})
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return f.store.Release(ctx, cmd.VolumeID)
	}
	if err != nil {
		return err
	}
	if err := f.store.PutDecision(ctx, v.ID, d.Explain()); err != nil {
		log.Warn("record placement decision", "err", err)
	}
	log.Info("volume placed", "pool", pool.Name, "size", v.Size)
	cmd.Volume.Pool = poolName
	return f.handOver(ctx, cmd, v)
}

func (f *Function) handOver(ctx context.Context, cmd events.Command, v *basalt.Volume) error {
	_, _, poolName := basalt.SplitHost(v.Host)
	cmd.Backend = v.Backend()
	cmd.Volume = basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size, Pool: poolName}
	cmd.Attempted = append(cmd.Attempted, cmd.Backend)
	return f.pub.Publish(events.BackendTopic(cmd.Backend), cmd.OpID, cmd.RequestID, cmd)
}

// fail ends a create that fits nowhere: the volume goes to error with the reason, and the
// user gets a message naming every pool and why it was rejected.
func (f *Function) fail(ctx context.Context, cmd events.Command, v *basalt.Volume, reason string) error {
	f.logger.Warn("volume not placed", "volume_id", v.ID, "op_id", cmd.OpID, "request_id", cmd.RequestID, "reason", reason)
	return FailCreate(ctx, f.store, cmd.OpID, v.ID, cmd.RequestID, basalt.EventScheduleNoBackend,
		"schedule allocate volume:"+reason, reason, f.cfg.MessageTTL)
}

func (f *Function) endOp(ctx context.Context, opID, reason string) error {
	_, err := f.store.UpdateOp(ctx, opID, func(op *basalt.Operation) error {
		op.State, op.Reason = basalt.OpFailed, reason
		return nil
	})
	if errors.Is(err, store.ErrOpFinished) {
		return nil
	}
	return err
}

// FailCreate moves a creating volume to error with reason, ends its operation, returns its
// capacity to the pool and leaves the user a message. It does nothing when the operation is
// no longer the volume's (a redelivery). The results function and the reconciler use it too.
func FailCreate(ctx context.Context, st *store.Store, opID, volumeID, requestID, eventID, userMessage, reason string, ttl time.Duration) error {
	if err := st.Release(ctx, volumeID); err != nil {
		return err
	}
	var project string
	_, err := st.UpdateVolumeWithOp(ctx, volumeID, func(v *basalt.Volume) error {
		if v.OpID != opID {
			return store.ErrOpFinished
		}
		project = v.ProjectID
		v.Status, v.StatusReason, v.OpID = basalt.StatusError, reason, ""
		return nil
	}, func(v *basalt.Volume) *basalt.Operation { return finishedOp(st, opID, basalt.OpFailed, reason) })
	if errors.Is(err, store.ErrOpFinished) || basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	now := st.Now()
	return st.CreateMessage(ctx, &basalt.Message{ID: uuid.NewString(), ProjectID: project, EventID: eventID,
		UserMessage: userMessage, Level: "ERROR", RequestID: requestID, ResourceType: "VOLUME",
		ResourceUUID: volumeID, CreatedAt: now, ExpiresAt: now.Add(ttl)})
}

// finishedOp returns operation opID in a final state; it reads the record so that nothing else
// in it is lost, and falls back to a minimal record.
func finishedOp(st *store.Store, opID, state, reason string) *basalt.Operation {
	op, err := st.Op(context.Background(), opID)
	if err != nil {
		op = &basalt.Operation{ID: opID}
	}
	op.State, op.Reason, op.UpdatedAt = state, reason, st.Now()
	return op
}
