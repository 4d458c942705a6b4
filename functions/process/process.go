// Package process wires Basalt's functions into runnable processes: the API server, and the
// scheduler (placement, results and the reconciler). cmd/basalt runs each alone; local runs
// them together with agents.
package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
	"golang.org/x/sync/errgroup"
)

// Config is the configuration shared by Basalt's processes. FromEnv reads it from the
// environment; docs/configuration.md lists every variable.
type Config struct {
	RedisURL string
	// RedisTimeout is the deadline of every Redis call, retries included (blocking commands
	// get their block time on top); it is also the client's dial, read, write and pool
	// timeout wherever REDIS_URL sets none. Default 500ms.
	RedisTimeout time.Duration
	Listen       string
	// ReadTimeout bounds how long a client may take to send a whole request, headers and
	// body (http.Server.ReadTimeout). Default 30s.
	ReadTimeout     time.Duration
	ServiceDownTime time.Duration
	ReportInterval  time.Duration
	OpTimeout       time.Duration
	// OperationLease is the lease of agents whose file sets none (agents.Config.OperationLease).
	OperationLease time.Duration
	// CallTimeout bounds a request's wait for an agent's answer (attachment connections).
	CallTimeout       time.Duration
	ReconcileInterval time.Duration
	// RelayDelay is how long a command may wait in the outbox before the relay sends it.
	RelayDelay time.Duration
	// ChargeGrace is how long a quota charge may wait for its record before it is refunded.
	ChargeGrace time.Duration
	// PoolRefresh is how old a scheduler's prepared pool set may grow before it is read again.
	PoolRefresh time.Duration
	// DeadLetterRetention is how long dead letters are kept (default 14 days).
	DeadLetterRetention time.Duration
	MaxAttempts         int
	MaxVolumeSizeGB     int
	DefaultZone         string
	Scheduler           scheduler.Config
	// ClaimTimeout is how long an unacknowledged message waits before another consumer claims it.
	ClaimTimeout time.Duration
	// Consumers is the number of parallel consumers of the scheduler and results topics in one
	// process (default 2).
	Consumers int
	// IdempotencyTTL is how long responses to requests with an Idempotency-Key are kept
	// (default 24h).
	IdempotencyTTL time.Duration
	// MaxMetadataItems caps the metadata items of a volume or snapshot (default 128).
	MaxMetadataItems int
	// MaxExtraSpecs caps the extra specs of a volume type (default 128).
	MaxExtraSpecs int
	// RedisCAFile, RedisCertFile and RedisKeyFile are the CA to trust for a rediss:// Redis and
	// the client certificate to present (BASALT_REDIS_CA_FILE, _CERT_FILE, _KEY_FILE).
	RedisCAFile, RedisCertFile, RedisKeyFile string
	// Auth is the authentication mode of the api (BASALT_AUTH). Only "noauth" exists yet, and
	// the api refuses to start without it being asked for: under noauth anyone who reaches
	// the port is whoever their token names (docs/security.md).
	Auth string
	// AuditLog is where the api writes its audit log, one JSON line per mutating or
	// administrator's request: "" or "-" for standard error, "off" for none, else a file
	// appended to (BASALT_AUDIT_LOG).
	AuditLog string
	// QuotaDefaults are default quota limits by resource, from BASALT_QUOTA_*; resources not
	// set take Cinder's defaults.
	QuotaDefaults map[string]int
}

// FromEnv reads the configuration from BASALT_* variables and REDIS_URL.
func FromEnv() (Config, error) {
	c := Config{RedisURL: os.Getenv("REDIS_URL"), Listen: env("BASALT_LISTEN", "127.0.0.1:8776"),
		DefaultZone: os.Getenv("BASALT_DEFAULT_AVAILABILITY_ZONE")}
	var errs []error
	dur := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive duration like 60s", name, v))
			}
			*dst = d
		}
	}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", name, v))
			}
			*dst = n
		}
	}
	dur("BASALT_REDIS_TIMEOUT", &c.RedisTimeout)
	dur("BASALT_READ_TIMEOUT", &c.ReadTimeout)
	dur("BASALT_SERVICE_DOWN_TIME", &c.ServiceDownTime)
	dur("BASALT_REPORT_INTERVAL", &c.ReportInterval)
	dur("BASALT_OPERATION_TIMEOUT", &c.OpTimeout)
	dur("BASALT_OPERATION_LEASE", &c.OperationLease)
	dur("BASALT_CALL_TIMEOUT", &c.CallTimeout)
	dur("BASALT_RECONCILE_INTERVAL", &c.ReconcileInterval)
	dur("BASALT_RELAY_DELAY", &c.RelayDelay)
	dur("BASALT_CHARGE_GRACE", &c.ChargeGrace)
	dur("BASALT_POOL_REFRESH", &c.PoolRefresh)
	dur("BASALT_DEADLETTER_RETENTION", &c.DeadLetterRetention)
	dur("BASALT_CLAIM_TIMEOUT", &c.ClaimTimeout)
	num("BASALT_SCHEDULER_MAX_ATTEMPTS", &c.MaxAttempts)
	num("BASALT_MAX_VOLUME_SIZE_GB", &c.MaxVolumeSizeGB)
	num("BASALT_CONSUMERS", &c.Consumers)
	dur("BASALT_IDEMPOTENCY_TTL", &c.IdempotencyTTL)
	num("BASALT_MAX_METADATA_ITEMS", &c.MaxMetadataItems)
	num("BASALT_MAX_EXTRA_SPECS", &c.MaxExtraSpecs)
	c.AuditLog = os.Getenv("BASALT_AUDIT_LOG")
	c.Auth = os.Getenv("BASALT_AUTH")
	c.RedisCAFile, c.RedisCertFile, c.RedisKeyFile = os.Getenv("BASALT_REDIS_CA_FILE"),
		os.Getenv("BASALT_REDIS_CERT_FILE"), os.Getenv("BASALT_REDIS_KEY_FILE")
	for _, res := range store.QuotaResources() {
		name := "BASALT_QUOTA_" + strings.ToUpper(res)
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < -1 {
				errs = append(errs, fmt.Errorf("%s=%q: want an integer >= -1 (-1 = unlimited)", name, v))
			}
			if c.QuotaDefaults == nil {
				c.QuotaDefaults = map[string]int{}
			}
			c.QuotaDefaults[res] = n
		}
	}
	if v := os.Getenv("BASALT_SCHEDULER_FILTERS"); v != "" {
		c.Scheduler.Filters = splitList(v)
	}
	if v := os.Getenv("BASALT_SCHEDULER_WEIGHERS"); v != "" {
		c.Scheduler.Weighers = splitList(v)
	}
	if v := os.Getenv("BASALT_SCHEDULER_MULTIPLIERS"); v != "" {
		c.Scheduler.Multipliers = map[string]float64{}
		for _, kv := range splitList(v) {
			k, val, _ := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("BASALT_SCHEDULER_MULTIPLIERS: %q: want Weigher=number", kv))
			}
			c.Scheduler.Multipliers[k] = f
		}
	}
	c.setDefaults()
	return c, errors.Join(errs...)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *Config) setDefaults() {
	if c.RedisTimeout == 0 {
		c.RedisTimeout = 500 * time.Millisecond
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.ServiceDownTime == 0 {
		c.ServiceDownTime = 60 * time.Second
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = 10 * time.Second
	}
	if c.DeadLetterRetention == 0 {
		c.DeadLetterRetention = 14 * 24 * time.Hour
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.Consumers == 0 {
		c.Consumers = 2
	}
	if c.Scheduler.Filters == nil {
		// Cinder's defaults plus IgnoreAttemptedHostsFilter, so a reschedule tries elsewhere.
		c.Scheduler.Filters = append(scheduler.DefaultFilters(), "IgnoreAttemptedHostsFilter")
	}
}

// RedisOptions parses c.RedisURL (events.ParseRedisURL: one server or a Cluster). The dial,
// read, write and pool timeouts that the URL does not set are c.RedisTimeout
// (events.NewRedisClient makes the read timeout every call's deadline).
func (c Config) RedisOptions() (*events.RedisOptions, error) {
	if c.RedisURL == "" {
		return nil, errors.New("REDIS_URL is required (for example redis://127.0.0.1:6379/0)")
	}
	o, err := events.ParseRedisURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	o.SetDefaultTimeouts(c.RedisTimeout)
	if err := o.UseTLSFiles(c.RedisCAFile, c.RedisCertFile, c.RedisKeyFile); err != nil {
		return nil, fmt.Errorf("Redis TLS: %w", err)
	}
	return o, nil
}

// Bus opens the message bus.
func (c Config) Bus(opts *events.RedisOptions, logger *slog.Logger) (*events.Bus, error) {
	return events.NewBus(events.BusConfig{Redis: opts, MaxIdleTime: c.ClaimTimeout}, logger)
}

// NewPlane returns the control plane.
func (c Config) NewPlane(st *store.Store, bus *events.Bus, logger *slog.Logger) *control.Plane {
	return control.New(control.Config{ServiceDownTime: c.ServiceDownTime, OpTimeout: c.OpTimeout, CallTimeout: c.CallTimeout,
		MaxVolumeSizeGB: c.MaxVolumeSizeGB, DefaultZone: c.DefaultZone, IdempotencyTTL: c.IdempotencyTTL,
		MaxMetadataItems: c.MaxMetadataItems, MaxExtraSpecs: c.MaxExtraSpecs, QuotaDefaults: c.QuotaDefaults}, st, bus, logger)
}

// RunAPI serves the API on c.Listen until ctx ends. ready, if non-nil, receives the bound
// address once the server listens.
func RunAPI(ctx context.Context, c Config, opts *events.RedisOptions, logger *slog.Logger, ready func(addr string)) error {
	c.setDefaults() // for a Config not read by FromEnv
	if err := c.checkAuth(); err != nil {
		return err
	}
	bus, err := c.Bus(opts, logger)
	if err != nil {
		return err
	}
	defer bus.Close()
	rdb := events.NewRedisClient(opts)
	defer rdb.Close()
	plane := c.NewPlane(store.New(rdb, nil), bus, logger)
	if _, err := plane.EnsureDefaultType(ctx); err != nil {
		return fmt.Errorf("create the default volume type: %w", err)
	}
	// Move the state an older version wrote in one Redis slot into the partitioned key layout
	// (once: a version key marks it done), before indexing, which indexes what it moved.
	if n, err := plane.Store().MigrateLayout(ctx); err != nil {
		return fmt.Errorf("move the state to the partitioned key layout: %w", err)
	} else if n > 0 {
		logger.Info("moved the state to the partitioned key layout", "keys", n)
	}
	// Index the volumes written before the list indexes existed (once: a version key marks it done).
	if n, err := plane.Store().ReindexVolumes(ctx); err != nil {
		return fmt.Errorf("index the volumes: %w", err)
	} else if n > 0 {
		logger.Info("indexed volumes for listing", "volumes", n)
	}
	// A client gets ReadTimeout to send its request: one that stalls in its headers or body is
	// disconnected. Once the body is read, a handler may run longer (a synchronous call waits
	// up to CallTimeout): net/http clears the read deadline then.
	audit, closeAudit, err := c.openAudit()
	if err != nil {
		return err
	}
	defer closeAudit()
	srv := &http.Server{Handler: api.New(plane, logger, api.WithAudit(audit)), ReadHeaderTimeout: min(10*time.Second, c.ReadTimeout),
		ReadTimeout: c.ReadTimeout, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	logger.Info("api listening", "addr", ln.Addr().String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// checkAuth refuses an authentication mode that is not asked for or not built.
func (c Config) checkAuth() error {
	switch c.Auth {
	case "noauth":
		return nil
	case "":
		return errors.New("BASALT_AUTH is not set: set BASALT_AUTH=noauth to serve the API without authentication " +
			"(anyone who reaches the port may act as any user, and as an administrator); see docs/security.md")
	case "keystone", "jwt":
		return fmt.Errorf("BASALT_AUTH=%s is not available yet: only noauth is (docs/security.md)", c.Auth)
	}
	return fmt.Errorf("BASALT_AUTH=%q: want noauth", c.Auth)
}

// openAudit opens the audit log's destination (c.AuditLog); nil for none.
func (c Config) openAudit() (io.Writer, func(), error) {
	switch c.AuditLog {
	case "", "-":
		return os.Stderr, func() {}, nil
	case "off":
		return nil, func() {}, nil
	}
	f, err := os.OpenFile(c.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("BASALT_AUDIT_LOG: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}

// RunScheduler runs the scheduler function, the results function and the reconciler until ctx
// ends, and heartbeats as a cinder-scheduler service named host.
func RunScheduler(ctx context.Context, c Config, opts *events.RedisOptions, host string, logger *slog.Logger) error {
	bus, err := c.Bus(opts, logger)
	if err != nil {
		return err
	}
	defer bus.Close()
	rdb := events.NewRedisClient(opts)
	defer rdb.Close()
	st := store.New(rdb, nil)
	// The results function and the sweeps read the partitioned key layout: wait for (or do) the
	// move of what an older version wrote (MigrateLayout: one process moves, the others wait).
	if n, err := st.MigrateLayout(ctx); err != nil {
		return fmt.Errorf("move the state to the partitioned key layout: %w", err)
	} else if n > 0 {
		logger.Info("moved the state to the partitioned key layout", "keys", n)
	}
	place, err := placement.New(placement.Config{Scheduler: c.Scheduler, MaxAttempts: c.MaxAttempts,
		ServiceDownTime: c.ServiceDownTime, PoolRefresh: c.PoolRefresh}, st, bus, logger)
	if err != nil {
		return err
	}
	defer place.Close()
	res := results.New(results.Config{MaxAttempts: c.MaxAttempts, ReconcileInterval: c.ReconcileInterval, OpTimeout: c.OpTimeout,
		RelayDelay: c.RelayDelay, ChargeGrace: c.ChargeGrace}, st, bus, logger)
	router, err := bus.Router()
	if err != nil {
		return err
	}
	// Closed by events.RunRouter once the router stops; on an early return, here.
	var subs []message.Subscriber
	defer func() {
		for _, s := range subs {
			_ = s.Close()
		}
	}()
	for i := 0; i < c.Consumers; i++ {
		name := fmt.Sprintf("%s-%d", host, i)
		sub, err := bus.Subscriber("scheduler", name)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		router.AddConsumerHandler("placement."+name, events.TopicScheduler, sub, place.Handle)
		rsub, err := bus.Subscriber("results", name)
		if err != nil {
			return err
		}
		subs = append(subs, rsub)
		router.AddConsumerHandler("results."+name, events.TopicResults, rsub, res.Handle)
	}
	presence := events.NewPresence(events.NewRedisClient(opts), nil)
	defer presence.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return res.RunReconciler(gctx) })
	g.Go(func() error { return res.RunRelay(gctx) })
	g.Go(func() error { return trimStreams(gctx, rdb, st, time.Minute, c.DeadLetterRetention, logger) })
	g.Go(func() error {
		return presence.Run(gctx, basalt.BinaryScheduler, host, basalt.DefaultZone, c.ReportInterval, nil, logger)
	})
	g.Go(func() error { return events.RunRouter(gctx, router, subs...) })
	logger.Info("scheduler running", "host", host, "filters", c.Scheduler.Filters, "weighers", c.Scheduler.Weighers)
	return g.Wait()
}
