// Command basalt is Basalt's single binary: basalt api | scheduler | agent | local | openapi | version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/api"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/basalt-storage/basalt/functions/placement"
	"github.com/basalt-storage/basalt/functions/process"
	"github.com/basalt-storage/basalt/functions/scheduler"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/basalt-storage/basalt/local"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `Usage: basalt <command> [flags]

Commands:
  api         serve the Cinder v3 API (stateless; run any number)
  scheduler   run the scheduler, results and reconciler functions (any number)
              basalt scheduler explain --size N [--type T] [--zone Z]: where would it go?
  agent       run a storage host's agent: basalt agent --config host.json
  local       run everything in one process, with a Redis of its own that keeps its state
              under --data (redis-server if installed, else embedded) unless REDIS_URL is set
  openapi     print the OpenAPI document (YAML)
  version     print the version

Configuration comes from the environment: REDIS_URL, BASALT_LISTEN, ... (docs/configuration.md).
`

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "basalt:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(out, usage)
		return errors.New("no command given")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version":
		fmt.Fprintln(out, "basalt", version, "API", api.MinVersion, "-", api.MaxVersion)
		return nil
	case "openapi":
		return printOpenAPI(out)
	case "help", "-h", "--help":
		fmt.Fprint(out, usage)
		return nil
	}
	fs := flag.NewFlagSet("basalt "+cmd, flag.ContinueOnError)
	logLevel := fs.String("log-level", envOr("BASALT_LOG_LEVEL", "info"), "debug, info, warn or error")
	cfgPath := fs.String("config", "", "agent: configuration file (JSON)")
	dataDir := fs.String("data", envOr("BASALT_DATA_DIR", "data"), "local: directory of the file drivers' volumes and of the Redis state")
	driver := fs.String("driver", "", "local: replace every backend's driver (file or fake)")
	host := fs.String("host", hostname(), "scheduler: the service host name")
	size := fs.Int("size", 1, "scheduler explain: volume size in GiB")
	vtype := fs.String("type", "", "scheduler explain: volume type name or id")
	zone := fs.String("zone", "", "scheduler explain: availability zone")
	explain := len(args) > 0 && cmd == "scheduler" && args[0] == "explain"
	if explain {
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	cfg, err := process.FromEnv()
	if err != nil {
		return err
	}
	switch cmd {
	case "local":
		return local.Run(ctx, local.Options{Process: cfg, DataDir: *dataDir, Driver: *driver}, logger)
	case "api":
		opts, err := cfg.RedisOptions()
		if err != nil {
			return err
		}
		return process.RunAPI(ctx, cfg, opts, logger, nil)
	case "scheduler":
		opts, err := cfg.RedisOptions()
		if err != nil {
			return err
		}
		if explain {
			return runExplain(ctx, cfg, opts, out, *size, *vtype, *zone, logger)
		}
		return process.RunScheduler(ctx, cfg, opts, *host, logger)
	case "agent":
		opts, err := cfg.RedisOptions()
		if err != nil {
			return err
		}
		if *cfgPath == "" {
			return errors.New("agent: --config is required")
		}
		acfg, err := agents.LoadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if acfg.ReportInterval == 0 {
			acfg.ReportInterval = agents.Duration(cfg.ReportInterval)
		}
		if acfg.OperationLease == 0 {
			acfg.OperationLease = agents.Duration(cfg.OperationLease)
		}
		bus, err := cfg.Bus(opts, logger)
		if err != nil {
			return err
		}
		defer bus.Close()
		a, err := agents.New(acfg, bus, opts, logger)
		if err != nil {
			return err
		}
		defer a.Close()
		return a.Run(ctx)
	}
	fmt.Fprint(out, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func runExplain(ctx context.Context, cfg process.Config, opts *events.RedisOptions, out io.Writer, size int, vtype, zone string, logger *slog.Logger) error {
	rdb := events.NewRedisClient(opts)
	defer rdb.Close()
	st := store.New(rdb, nil)
	plane := cfg.NewPlane(st, nil, logger)
	actx := control.WithCaller(ctx, control.Caller{UserID: "admin", ProjectID: "admin", Admin: true})
	t, err := plane.ResolveType(actx, vtype)
	if err != nil {
		return err
	}
	f, err := placement.New(placement.Config{Scheduler: cfg.Scheduler, ServiceDownTime: cfg.ServiceDownTime}, st, nil, logger)
	if err != nil {
		return err
	}
	d, err := f.Explain(ctx, &scheduler.Request{ID: "explain", SizeGB: size, Zone: zone, Type: t})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Placing %d GiB of type %s in zone %q:\n%s", size, t.Name, zone, d.Explain())
	if len(d.Ranked) > 0 {
		fmt.Fprintf(out, "=> %s\n", d.Ranked[0].Pool.Name)
	} else {
		fmt.Fprintln(out, "=> No valid backend was found.")
	}
	return nil
}

func printOpenAPI(out io.Writer) error {
	b, err := api.New(nil, slog.New(slog.DiscardHandler)).OpenAPI().YAML()
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "scheduler"
	}
	return h
}
