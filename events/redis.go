package events

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// defaultRedisTimeout is go-redis's read timeout when ReadTimeout is zero.
const defaultRedisTimeout = 5 * time.Second

// RedisOptions configure every connection of a Basalt process to one Redis deployment: a
// single server (Single) or a Redis Cluster (Cluster). Exactly one is set.
type RedisOptions struct {
	Single  *redis.Options
	Cluster *redis.ClusterOptions
}

// Single returns the options of one Redis server.
func Single(o *redis.Options) *RedisOptions { return &RedisOptions{Single: o} }

// ParseRedisURL reads a Redis URL. redis://, rediss:// and unix:// name one server (go-redis's
// ParseURL); redis+cluster:// and rediss+cluster:// name a Redis Cluster by one or more of its
// nodes, the first as the URL's host and the others as repeated addr parameters
// (redis+cluster://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379), with the query
// parameters of go-redis's ParseClusterURL.
func ParseRedisURL(url string) (*RedisOptions, error) {
	for _, scheme := range []string{"redis", "rediss"} {
		if rest, ok := strings.CutPrefix(url, scheme+"+cluster://"); ok {
			o, err := redis.ParseClusterURL(scheme + "://" + rest)
			if err != nil {
				return nil, err
			}
			return &RedisOptions{Cluster: o}, nil
		}
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	return Single(o), nil
}

// SetDefaultTimeouts sets the dial, read, write and pool timeouts that are zero to d.
func (o *RedisOptions) SetDefaultTimeouts(d time.Duration) {
	var ts []*time.Duration
	if o.Cluster != nil {
		ts = []*time.Duration{&o.Cluster.DialTimeout, &o.Cluster.ReadTimeout, &o.Cluster.WriteTimeout, &o.Cluster.PoolTimeout}
	} else {
		ts = []*time.Duration{&o.Single.DialTimeout, &o.Single.ReadTimeout, &o.Single.WriteTimeout, &o.Single.PoolTimeout}
	}
	for _, t := range ts {
		if *t == 0 {
			*t = d
		}
	}
}

// UseTLSFiles trusts the certificate authorities in caFile (PEM) for a rediss:// deployment
// instead of the system's, and presents the client certificate certFile with keyFile when
// both are given (Redis's tls-auth-clients). Empty names change nothing. It is an error on a
// deployment whose URL did not ask for TLS.
func (o *RedisOptions) UseTLSFiles(caFile, certFile, keyFile string) error {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil
	}
	t := o.tlsConfig()
	if t == nil {
		return errors.New("a CA or client certificate is given, but the Redis URL is not rediss:// (or rediss+cluster://)")
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate", caFile)
		}
		t.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return nil
}

func (o *RedisOptions) tlsConfig() *tls.Config {
	if o.Cluster != nil {
		return o.Cluster.TLSConfig
	}
	return o.Single.TLSConfig
}

// String names the deployment for logs, without credentials.
func (o *RedisOptions) String() string {
	if o.Cluster != nil {
		return "cluster " + strings.Join(o.Cluster.Addrs, ",")
	}
	return o.Single.Addr
}

// NewRedisClient returns a client for opts on which every Redis call has a deadline, so that a
// frozen or unreachable Redis fails the call in bounded time instead of holding its caller:
// a command or pipeline must finish, retries and connection waits included, within the read
// timeout (go-redis's 5s when zero; no deadline when negative). A blocking command sent alone
// (BLPOP, XREADGROUP BLOCK, ...) gets its block time on top; one that blocks forever gets no
// deadline. A caller's earlier deadline still wins. The client respects context deadlines
// (ContextTimeoutEnabled), which is how the deadline reaches the socket. Every Basalt process
// makes its clients here. For a Cluster the client follows MOVED and ASK redirections and
// retries TRYAGAIN and CLUSTERDOWN within the same deadline. Close the client when done.
func NewRedisClient(opts *RedisOptions) redis.UniversalClient {
	var (
		c       redis.UniversalClient
		timeout time.Duration
	)
	if opts.Cluster != nil {
		o := *opts.Cluster
		o.ContextTimeoutEnabled = true
		c, timeout = redis.NewClusterClient(&o), o.ReadTimeout
	} else {
		o := *opts.Single
		o.ContextTimeoutEnabled = true
		c, timeout = redis.NewClient(&o), o.ReadTimeout
	}
	if timeout == 0 {
		timeout = defaultRedisTimeout
	}
	if timeout > 0 {
		c.AddHook(deadlineHook{timeout: timeout})
	}
	return c
}

// deadlineHook gives each command and pipeline a context deadline.
type deadlineHook struct{ timeout time.Duration }

func (h deadlineHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h deadlineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		d := h.timeout
		if block, ok := blockTime(cmd); ok {
			if block == 0 {
				return next(ctx, cmd) // blocks until an answer: no deadline
			}
			d += block
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return next(ctx, cmd)
	}
}

func (h deadlineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := context.WithTimeout(ctx, h.timeout)
		defer cancel()
		return next(ctx, cmds)
	}
}

// blockTime reports whether cmd is a blocking command and how long it may block (0: forever).
// A command whose timeout argument cannot be read counts as blocking forever, so no deadline
// cuts it short.
func blockTime(cmd redis.Cmder) (time.Duration, bool) {
	args := cmd.Args()
	switch strings.ToLower(cmd.Name()) {
	case "blpop", "brpop", "brpoplpush", "blmove", "bzpopmin", "bzpopmax":
		return argDuration(args[len(args)-1], time.Second), true
	case "blmpop", "bzmpop":
		if len(args) < 2 {
			return 0, true
		}
		return argDuration(args[1], time.Second), true
	case "xread", "xreadgroup":
		for i := 1; i+1 < len(args); i++ {
			if s, ok := args[i].(string); ok && strings.EqualFold(s, "block") {
				return argDuration(args[i+1], time.Millisecond), true
			}
		}
		return 0, false // without BLOCK it answers at once
	case "wait", "waitaof":
		return argDuration(args[len(args)-1], time.Millisecond), true
	}
	return 0, false
}

// argDuration reads a command's timeout argument, a number of units; 0 when unreadable.
func argDuration(arg any, unit time.Duration) time.Duration {
	var f float64
	switch v := arg.(type) {
	case int64:
		f = float64(v)
	case int:
		f = float64(v)
	case float64:
		f = v
	case string:
		p, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0
		}
		f = p
	default:
		return 0
	}
	if f <= 0 {
		return 0
	}
	return time.Duration(f * float64(unit))
}
