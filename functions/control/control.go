// Package control is the logic behind the API: it validates requests, keeps resource state
// through the store and publishes commands. It knows nothing of HTTP; handlers in functions/api
// decode a request, make one call here and encode the answer.
//
// Every method takes the caller from the context (WithCaller) and scopes what it reads and
// writes to the caller's project unless the caller is an administrator. Errors are
// *basalt.Error values.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
)

// A Caller is who makes a request.
type Caller struct {
	UserID    string
	ProjectID string
	Admin     bool
	RequestID string
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller carried by ctx (the zero Caller when none).
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// A Publisher sends a command to a topic. events.Bus implements it.
type Publisher interface {
	PublishContext(ctx context.Context, topic, opID, requestID string, v any) error
}

// Config configures the control plane.
type Config struct {
	// ServiceDownTime is how old a heartbeat may be for its service to count as up. Default 60s.
	ServiceDownTime time.Duration
	// OpTimeout is the deadline of an operation: past it the reconciler ends it. Default 10m.
	OpTimeout time.Duration
	// CallTimeout is how long a request waits for an agent's answer to a synchronous call
	// (initialize a connection, tear one down). Default 30s.
	CallTimeout time.Duration
	// MessageTTL is how long user messages are kept. Default 30 days.
	MessageTTL time.Duration
	// MaxVolumeSizeGB is the largest volume a request may ask for. Default 65536.
	MaxVolumeSizeGB int
	// DefaultZone is the zone of a volume whose request and type name none. Empty (the default)
	// lets the scheduler place it in any zone; the volume takes the zone of its pool.
	DefaultZone string
	// IdempotencyTTL is how long the response to a request with an Idempotency-Key is kept for
	// retries. Default 24h.
	IdempotencyTTL time.Duration
	// MaxMetadataItems caps the metadata items of a volume or a snapshot, counted on what a
	// create, a replace or a merge would store. Default 128.
	MaxMetadataItems int
	// MaxExtraSpecs caps the extra specs of a volume type, counted likewise. Default 128.
	MaxExtraSpecs int
	// QuotaDefaults are the default quota limits by resource (volumes, snapshots, gigabytes,
	// backups, backup_gigabytes, groups, per_volume_gigabytes; -1 = unlimited). Resources
	// missing here take Cinder's defaults (store.DefaultQuotaLimits).
	QuotaDefaults map[string]int
}

func (c *Config) setDefaults() {
	if c.ServiceDownTime == 0 {
		c.ServiceDownTime = 60 * time.Second
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 10 * time.Minute
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.MessageTTL == 0 {
		c.MessageTTL = 30 * 24 * time.Hour
	}
	if c.MaxVolumeSizeGB == 0 {
		c.MaxVolumeSizeGB = 65536
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.MaxMetadataItems == 0 {
		c.MaxMetadataItems = 128
	}
	if c.MaxExtraSpecs == 0 {
		c.MaxExtraSpecs = 128
	}
	defaults := store.DefaultQuotaLimits()
	for k, v := range c.QuotaDefaults {
		defaults[k] = v
	}
	c.QuotaDefaults = defaults
}

// Plane is the control plane. It is stateless: any number of Planes (in any number of
// processes) may serve the same Redis. It is safe for concurrent use.
type Plane struct {
	cfg    Config
	store  *store.Store
	pub    Publisher
	logger *slog.Logger
	zones  zoneCache
}

// New returns a Plane over st publishing through pub.
func New(cfg Config, st *store.Store, pub Publisher, logger *slog.Logger) *Plane {
	cfg.setDefaults()
	return &Plane{cfg: cfg, store: st, pub: pub, logger: logger}
}

// Store returns the plane's store.
func (p *Plane) Store() *store.Store { return p.store }

// Config returns the plane's configuration, defaults filled.
func (p *Plane) Config() Config { return p.cfg }

func requireAdmin(ctx context.Context) error {
	if !CallerFrom(ctx).Admin {
		return basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow this operation to be performed.")
	}
	return nil
}

func invalid(format string, args ...any) error {
	return basalt.Errorf(basalt.EINVALID, format, args...)
}

// unavailable wraps an infrastructure failure as a 503 with a message that names no internals.
func unavailable(logger *slog.Logger, what string, err error) error {
	var be *basalt.Error
	if errors.As(err, &be) {
		return err
	}
	logger.Error(what, "err", err)
	return basalt.Errorf(basalt.EUNAVAILABLE, "The service is temporarily unable to %s; try again.", what)
}

// enqueue puts cmd in op's record, to topic: the transaction that writes op writes the command
// with it (the outbox), so the state change and its command land together or not at all.
func enqueue(op *basalt.Operation, topic string, cmd events.Command) {
	b, err := json.Marshal(cmd)
	if err != nil {
		panic(err) // a plain struct of ours
	}
	op.Topic, op.Command, op.Send = topic, b, true
}

// send publishes the command of op, recorded by enqueue in a transaction that has committed,
// and marks it sent. When the bus refuses it, the command stays in the outbox and the relay
// (results.Function.RunRelay) sends it a few seconds later: the caller need not undo anything.
func (p *Plane) send(ctx context.Context, op *basalt.Operation) {
	if err := p.pub.PublishContext(ctx, op.Topic, op.ID, CallerFrom(ctx).RequestID, op.Command); err != nil {
		p.logger.Warn("publish command; the relay will send it", "topic", op.Topic, "op_id", op.ID, "err", err)
		return
	}
	if err := p.store.MarkSent(ctx, op.ID); err != nil {
		p.logger.Warn("mark a command sent; the relay may send it again", "op_id", op.ID, "err", err)
	}
}
