package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"
)

// BusConfig configures the bus.
type BusConfig struct {
	// Redis are the options of every connection the bus opens (through NewRedisClient, so
	// every call has a deadline). Each subscriber gets its own client, because closing a
	// Watermill subscriber closes its client.
	Redis *RedisOptions
	// MaxIdleTime is how long a delivered, unacknowledged message stays with a consumer before
	// another consumer of the group claims it (a crashed consumer's messages). Handlers ack
	// quickly, so this can be short. Default 30s.
	MaxIdleTime time.Duration
	// BlockTime is how long one read blocks waiting for messages. A message wakes the read at
	// once, so it bounds only how often an idle subscription asks Redis again. Default 2s: an
	// idle subscription costs Redis one read every 2 s (it was 10 reads/s at 100 ms).
	BlockTime time.Duration
	// MaxRetries is how many times a failing handler is retried before its message goes to the
	// dead-letter topic. Default 3.
	MaxRetries int
}

func (c *BusConfig) setDefaults() {
	if c.MaxIdleTime == 0 {
		c.MaxIdleTime = 30 * time.Second
	}
	if c.BlockTime == 0 {
		c.BlockTime = 2 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
}

// Validate reports a configuration that cannot work.
func (c *BusConfig) Validate() error {
	if c.Redis == nil {
		return errors.New("bus: redis options are required")
	}
	return nil
}

// Bus publishes and consumes Basalt's topics on Redis Streams. It is safe for concurrent use.
type Bus struct {
	cfg    BusConfig
	pub    *redisstream.Publisher
	logger *slog.Logger
	wlog   watermill.LoggerAdapter
}

// NewBus connects a publisher. Close it when done.
func NewBus(cfg BusConfig, logger *slog.Logger) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(logger.With("component", "watermill"),
		map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client:        NewRedisClient(cfg.Redis),
		DefaultMaxlen: 100000, // streams are trimmed approximately; consumers keep up long before
	}, wlog)
	if err != nil {
		return nil, fmt.Errorf("bus publisher: %w", err)
	}
	return &Bus{cfg: cfg, pub: pub, logger: logger, wlog: wlog}, nil
}

// Close closes the publisher.
func (b *Bus) Close() error { return b.pub.Close() }

// Metadata keys carried by every message.
const (
	MetaRequestID = "request_id"
	MetaOpID      = "op_id"
)

// Publish sends v, encoded as JSON, to topic. opID and requestID travel as metadata for logs.
// It is PublishContext without a caller's context: prefer PublishContext where there is one.
func (b *Bus) Publish(topic, opID, requestID string, v any) error {
	return b.PublishContext(context.Background(), topic, opID, requestID, v)
}

// PublishContext sends v, encoded as JSON, to topic, as Publish does, within ctx: the message
// carries ctx (its Context), so the write to Redis ends when the caller's request or operation
// does.
func (b *Bus) PublishContext(ctx context.Context, topic, opID, requestID string, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message for %s: %w", topic, err)
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.SetContext(ctx)
	msg.Metadata.Set(MetaRequestID, requestID)
	msg.Metadata.Set(MetaOpID, opID)
	if err := b.pub.Publish(topic, msg); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// Subscriber returns a new subscriber in consumer group group, with its own Redis connection.
// consumer names this process within the group: a restarted process that keeps its name sees
// the messages it had not acknowledged. Its owner closes it once the router that runs it has
// stopped (a router stopped by its context does not close it); closing it twice is harmless.
func (b *Bus) Subscriber(group, consumer string) (message.Subscriber, error) {
	s := &subscriber{logger: b.logger.With("group", group, "consumer", consumer)}
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:                        NewRedisClient(b.cfg.Redis),
		ConsumerGroup:                 group,
		Consumer:                      consumer,
		MaxIdleTime:                   b.cfg.MaxIdleTime,
		ClaimInterval:                 b.cfg.MaxIdleTime / 4,
		BlockTime:                     b.cfg.BlockTime,
		DisableIndefiniteInitialBlock: true,
		Unmarshaller:                  unmarshaller{},
		ShouldStopOnReadErrors:        s.stopReading,
	}, endLogger{b.wlog})
	if err != nil {
		return nil, err
	}
	s.Subscriber = sub
	return s, nil
}

// subscriber subscribes until it succeeds or its context ends. A Watermill router one of whose
// subscriptions fails (Redis away as it starts, or its context ending meanwhile) returns the
// error but leaves goroutines waiting for that handler forever, and its Close times out. So
// Subscribe waits out a Redis outage, as the subscriber's reads do once it runs, and a
// subscription cut short by the end of its context is an empty, closed stream.
type subscriber struct {
	*redisstream.Subscriber
	logger *slog.Logger
	closed atomic.Bool
}

func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	for attempt := 1; ; attempt++ {
		ch, err := s.Subscriber.Subscribe(ctx, topic)
		if err == nil || s.closed.Load() {
			return ch, err
		}
		if ctx.Err() == nil {
			s.logger.Warn("subscribe; retrying", "topic", topic, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(min(time.Duration(attempt)*100*time.Millisecond, 2*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			closed := make(chan *message.Message)
			close(closed)
			return closed, nil
		}
	}
}

// stopReading tells the subscriber's read loop to stop at a read error that only its end
// causes: its context ended or it is closed. It would otherwise sleep half a second first,
// and outlive Close by as much.
func (s *subscriber) stopReading(err error) bool {
	return s.closed.Load() || errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed)
}

func (s *subscriber) Close() error {
	s.closed.Store(true)
	return s.Subscriber.Close()
}

// endLogger is a subscriber's Watermill logger. The errors that only the subscriber's end
// causes (its context ended, it is closed), which Watermill logs as errors, it logs at debug
// level: a subscriber that stops is no error.
type endLogger struct{ watermill.LoggerAdapter }

func (l endLogger) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed) {
		l.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l endLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return endLogger{l.LoggerAdapter.With(fields)}
}

// MetaEnvelopeError is set on a message whose stream entry did not decode as a Watermill
// message: its value is the decoding error, and the message's payload is the entry's raw
// fields as a JSON object.
const MetaEnvelopeError = "basalt_envelope_error"

// unmarshaller decodes stream entries as Watermill's default does. An entry that does not
// decode (written by something other than a Watermill publisher: a missing UUID field, garbage
// metadata) becomes a message carrying its raw fields and MetaEnvelopeError, which the
// router's middleware sends to the dead-letter topic. The redisstream subscriber would
// otherwise stop consuming the stream at that entry, and the entry would stay pending forever.
type unmarshaller struct {
	redisstream.DefaultMarshallerUnmarshaller
}

func (u unmarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	msg, err := u.DefaultMarshallerUnmarshaller.Unmarshal(values)
	if err == nil {
		return msg, nil
	}
	raw, jerr := json.Marshal(values)
	if jerr != nil {
		raw = []byte(fmt.Sprintf("%q", fmt.Sprint(values)))
	}
	id, _ := values[redisstream.UUIDHeaderKey].(string)
	if id == "" {
		id = watermill.NewUUID()
	}
	msg = message.NewMessage(id, raw)
	msg.Metadata.Set(MetaEnvelopeError, err.Error())
	return msg, nil
}

// rejectUndecodable fails a message whose envelope did not decode without running the handler:
// retrying cannot fix it, so the poison middleware dead-letters it at once.
func rejectUndecodable(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if reason := msg.Metadata.Get(MetaEnvelopeError); reason != "" {
			return nil, fmt.Errorf("undecodable stream entry %s: %s", msg.UUID, reason)
		}
		return h(msg)
	}
}

// Router returns a Watermill router with Basalt's middleware: a message whose handler fails
// MaxRetries times (or panics), or whose stream entry does not decode, goes to TopicDeadLetter
// with the error in its metadata, where an admin can see it, instead of blocking the stream.
func (b *Bus) Router() (*message.Router, error) {
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, b.wlog)
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueue(b.pub, TopicDeadLetter)
	if err != nil {
		return nil, err
	}
	r.AddMiddleware(
		poison,
		rejectUndecodable,
		middleware.Retry{
			MaxRetries:      b.cfg.MaxRetries,
			InitialInterval: 50 * time.Millisecond,
			MaxInterval:     time.Second,
			Multiplier:      2,
			Logger:          b.wlog,
		}.Middleware,
		middleware.Recoverer,
	)
	return r, nil
}

// RunRouter runs router until ctx ends, then closes it and subs, the subscribers of its
// handlers (a router stopped by its context leaves them open), and returns once the router has
// stopped and its handlers have returned. Each handler's message carries a context that ends
// with ctx (msg.Context()): handlers use it for their work on the message. It returns an
// error if the router fails to start, stops on its own before ctx ends (nothing would consume
// its topics any more), or cannot close in time.
func RunRouter(ctx context.Context, router *message.Router, subs ...message.Subscriber) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- router.Run(ctx) }()
	var runErr error
	returned := false
	select {
	case <-ctx.Done():
		// Close only once Run has started (or failed to): a router closed before it runs
		// waits out its CloseTimeout for handlers that never start.
		select {
		case <-router.Running():
		case runErr = <-ran:
			returned = true
		}
	case runErr = <-ran:
		returned = true
		if runErr == nil && ctx.Err() == nil {
			runErr = errors.New("the router stopped on its own")
		}
	}
	err := router.Close()
	if !returned {
		runErr = <-ran
	}
	for _, s := range subs {
		err = errors.Join(err, s.Close())
	}
	return errors.Join(runErr, err)
}

// Decode decodes a message's JSON payload into v. A payload that does not decode is a poison
// message: retrying cannot fix it.
func Decode(msg *message.Message, v any) error {
	if err := json.Unmarshal(msg.Payload, v); err != nil {
		return fmt.Errorf("undecodable message %s: %w", msg.UUID, err)
	}
	return nil
}

// DeadLetter is one message in the dead-letter stream.
type DeadLetter struct {
	ID      string            `json:"id"`
	Topic   string            `json:"topic"`
	Reason  string            `json:"reason"`
	Handler string            `json:"handler"`
	Payload string            `json:"payload"`
	Meta    map[string]string `json:"metadata"`
}

// ListDeadLetters reads up to limit messages of the dead-letter stream, oldest first.
func ListDeadLetters(ctx context.Context, rdb redis.UniversalClient, limit int64) ([]DeadLetter, error) {
	entries, err := rdb.XRangeN(ctx, TopicDeadLetter, "-", "+", limit).Result()
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(entries))
	for _, e := range entries {
		msg, err := (unmarshaller{}).Unmarshal(e.Values)
		if err != nil {
			continue
		}
		out = append(out, DeadLetter{
			ID:      e.ID,
			Topic:   msg.Metadata.Get(middleware.PoisonedTopicKey),
			Reason:  msg.Metadata.Get(middleware.ReasonForPoisonedKey),
			Handler: msg.Metadata.Get(middleware.PoisonedHandlerKey),
			Payload: string(msg.Payload),
			Meta:    msg.Metadata,
		})
	}
	return out, nil
}
