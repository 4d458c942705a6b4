// Command bench measures Basalt and prints markdown tables (docs/benchmarks.md records a run):
//
//  1. scheduler placement latency over 10 to 10,000 synthetic pools;
//  2. end-to-end volume creates per second, from the first POST to the last volume available,
//     through the local stack (API, scheduler, results and the example topology's agents on the
//     fake driver) on a redis-server of its own;
//  3. API latency at a fixed request rate (open loop) for POST /v3/volumes and
//     GET /v3/volumes/detail?limit=100;
//  4. attachment latency and sequential throughput through real iSCSI (tgtd) and NBD (nbdkit)
//     targets, against direct I/O on the volume's file (attach.go; skipped when tgtd, nbdkit or
//     qemu-io is missing).
//
// Everything listens on 127.0.0.1 only, and every loop is bounded in count and time; with the
// defaults a run takes about a minute and a half. Progress goes to stderr, the tables to stdout.
//
//	go run ./local/bench [-phases placement,production,reports,creates,latency,attach] [-volumes 2000] [-consumers 8] ...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// config is the command line.
type config struct {
	phases     map[string]bool
	pools      []int
	scalePools []int
	zone       string
	// reports phase
	reportBackends, reportRate int
	reportTime                 time.Duration
	placeCalls                 int
	placeTime                  time.Duration
	volumes                    int
	concurrency                int
	consumers                  int
	capacityGB                 float64
	rate                       int
	rateTime                   time.Duration
	smallProject               int
	maxInflight                int
	settle                     time.Duration
	maxTime                    time.Duration
	logLevel                   slog.Level
	cpuProfile                 string
	attach                     attachConfig
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	phases := fs.String("phases", "placement,production,reports,creates,latency,attach", "phases to run, comma-separated")
	fs.IntVar(&c.reportBackends, "report-backends", 10000, "reports: simulated backends")
	fs.IntVar(&c.reportRate, "report-rate", 1000, "reports: reports (with heartbeats) per second")
	fs.DurationVar(&c.reportTime, "report-time", 10*time.Second, "reports: how long the backends report")
	scalePools := fs.String("scale-pools", "1000,10000", "creates: extra (full) pools reported for the creates-at-scale table; empty to skip it")
	pools := fs.String("pools", "10,100,1000,10000", "placement: pool counts")
	fs.StringVar(&c.zone, "zone", "", "placement: the requests' availability zone (\"\" = any, the costliest)")
	fs.IntVar(&c.placeCalls, "place-calls", 20000, "placement: most Place calls per pool count")
	fs.DurationVar(&c.placeTime, "place-time", 2*time.Second, "placement: most time per pool count")
	fs.IntVar(&c.volumes, "volumes", 2000, "creates: volumes of 1 GiB to create")
	fs.IntVar(&c.concurrency, "concurrency", 64, "creates: requests in flight")
	fs.IntVar(&c.consumers, "consumers", 8, "scheduler and results consumers in the process (0 = the default)")
	fs.Float64Var(&c.capacityGB, "capacity", 1e6, "GiB of each fake pool")
	fs.IntVar(&c.rate, "rate", 200, "latency: requests per second")
	fs.DurationVar(&c.rateTime, "rate-time", 5*time.Second, "latency: duration of each run")
	fs.IntVar(&c.smallProject, "small-project", 100, "latency: volumes in the small project listed too (0 = skip)")
	fs.IntVar(&c.maxInflight, "max-inflight", 256, "latency: most requests outstanding; more are dropped")
	fs.DurationVar(&c.settle, "settle", 90*time.Second, "most time to wait for volumes to leave creating")
	fs.DurationVar(&c.maxTime, "max-time", 170*time.Second, "most time for the whole run")
	level := fs.String("log-level", "warn", "log level of the stack: debug, info, warn or error")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (choose the phases with -phases) to this file")
	c.attach.register(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case "placement", "production", "reports", "creates", "latency", "attach":
			c.phases[p] = true
		case "":
		default:
			return c, fmt.Errorf("unknown phase %q (want placement, creates, latency or attach)", p)
		}
	}
	for _, s := range strings.Split(*pools, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100000 {
			return c, fmt.Errorf("-pools: %q is not a count in [1, 100000]", s)
		}
		c.pools = append(c.pools, n)
	}
	for _, s := range strings.Split(*scalePools, ",") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100000 || (len(c.scalePools) > 0 && n <= c.scalePools[len(c.scalePools)-1]) {
			return c, fmt.Errorf("-scale-pools: %q is not an increasing count in [1, 100000]", s)
		}
		c.scalePools = append(c.scalePools, n)
	}
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return c, fmt.Errorf("-log-level: %w", err)
	}
	if err := c.attach.validate(); err != nil {
		return c, err
	}
	switch {
	case c.reportBackends < 1 || c.reportBackends > 100_000 || c.reportRate < 1 || c.reportRate > 100_000 || c.reportTime <= 0:
		return c, errors.New("-report-backends and -report-rate must be in [1, 100000], -report-time positive")
	case c.placeCalls < 1 || c.placeCalls > 1_000_000:
		return c, errors.New("-place-calls must be in [1, 1000000]")
	case c.volumes < 1 || c.volumes > 100_000:
		return c, errors.New("-volumes must be in [1, 100000]")
	case c.concurrency < 1 || c.concurrency > 1024:
		return c, errors.New("-concurrency must be in [1, 1024]")
	case c.rate < 1 || c.rate > 10_000:
		return c, errors.New("-rate must be in [1, 10000]")
	case c.maxInflight < 1 || c.maxInflight > 4096:
		return c, errors.New("-max-inflight must be in [1, 4096]")
	case c.consumers < 0 || c.consumers > 256:
		return c, errors.New("-consumers must be in [0, 256]")
	case c.placeTime <= 0 || c.rateTime <= 0 || c.settle <= 0 || c.maxTime <= 0:
		return c, errors.New("durations must be positive")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.maxTime)
	defer cancel()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run runs the chosen phases and writes their tables to out, progress to progress.
func run(ctx context.Context, cfg config, out, progress io.Writer) error {
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(out, "# Basalt benchmark run\n\n")
	printMachine(out, cfg)
	if cfg.phases["placement"] {
		rows, err := benchPlacement(ctx, cfg.pools, cfg.zone, cfg.placeCalls, cfg.placeTime, progress)
		if err != nil {
			return fmt.Errorf("placement: %w", err)
		}
		printPlacement(out, rows, cfg.zone, cfg.placeCalls, cfg.placeTime)
	}
	if cfg.phases["production"] {
		rows, version, err := benchProductionPlacement(ctx, cfg.pools, cfg.placeCalls/4, cfg.placeTime, progress)
		if err != nil {
			return fmt.Errorf("production placement: %w", err)
		}
		printProductionPlacement(out, rows, version)
	}
	if cfg.phases["reports"] {
		res, version, err := benchReports(ctx, cfg.reportBackends, cfg.reportRate, cfg.reportTime, progress)
		if err != nil {
			return fmt.Errorf("reports: %w", err)
		}
		printReports(out, res, version)
	}
	if cfg.phases["creates"] || cfg.phases["latency"] {
		if err := runStack(ctx, cfg, out, progress); err != nil {
			return err
		}
	}
	if cfg.phases["attach"] {
		if err := runAttach(ctx, cfg, out, progress); err != nil {
			return fmt.Errorf("attach: %w", err)
		}
	}
	return nil
}

func printMachine(w io.Writer, cfg config) {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	fmt.Fprintf(w, "## Machine\n\n| | |\n|---|---|\n")
	fmt.Fprintf(w, "| CPUs (nproc) | %d |\n| GOMAXPROCS | %d |\n| CPU | %s |\n| Go | %s %s/%s |\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	fmt.Fprintf(w, "| Started | %s |\n| Load average at start (1, 5, 15 min) | %s |\n\n",
		time.Now().UTC().Format(time.RFC3339), load)
}

// runStack starts redis-server (or the embedded miniredis when it is missing) and the local
// stack, runs the creates and latency phases, and stops both.
func runStack(ctx context.Context, cfg config, out, progress io.Writer) error {
	dir, err := os.MkdirTemp("", "basalt-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	redisDir := filepath.Join(dir, "redis")
	if err := os.Mkdir(redisDir, 0o755); err != nil {
		return err
	}
	var (
		rs        *redisServer
		redisURL  string
		redisNote string
	)
	rs, err = startRedis(ctx, redisDir)
	switch {
	case err == nil:
		defer rs.stop()
		redisURL = "redis://" + rs.addr + "/0"
		redisNote = fmt.Sprintf("a real %s on %s, started by the benchmark (`--save \"\" --appendonly no`)", rs.version, rs.addr)
	case errors.Is(err, exec.ErrNotFound):
		redisNote = "the **embedded miniredis** (redis-server is not installed): numbers are not representative of a real Redis"
	default:
		return err
	}
	fmt.Fprintf(progress, "redis: %s\n", redisNote)

	logger := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: cfg.logLevel}))
	st, pc, err := startStack(ctx, stackConfig{redisURL: redisURL, consumers: cfg.consumers,
		capacityGB: cfg.capacityGB, dataDir: filepath.Join(dir, "data")}, logger)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.stop(); err != nil {
			fmt.Fprintln(progress, "stop the stack:", err)
		}
	}()
	fmt.Fprintf(progress, "stack: API on %s, %d consumers per topic\n", st.addr, pc.Consumers)
	env := stackEnv{cfg: cfg, redis: rs, redisURL: redisURL, redisNote: redisNote, consumers: pc.Consumers, backends: st.backends,
		http: newHTTPClient(max(cfg.concurrency, cfg.maxInflight))}
	defer env.http.CloseIdleConnections()
	bench := env.client(st.addr, "bench:bench")
	if cfg.phases["creates"] {
		if err := env.creates(ctx, bench, out, progress); err != nil {
			return fmt.Errorf("creates: %w", err)
		}
		if len(cfg.scalePools) > 0 && redisURL != "" {
			if err := env.createsAtScale(ctx, st.addr, out, progress); err != nil {
				return fmt.Errorf("creates at scale: %w", err)
			}
		}
	}
	if cfg.phases["latency"] {
		if err := env.latency(ctx, st.addr, out, progress); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	return nil
}

// stackEnv is what the stack phases share.
type stackEnv struct {
	cfg       config
	redis     *redisServer // nil with miniredis
	redisURL  string       // "" with miniredis
	redisNote string
	consumers int
	backends  []string // host@backend
	http      *http.Client
}

func (e *stackEnv) client(addr, token string) *client {
	return &client{base: "http://" + addr, token: token, http: e.http}
}

// cpuMark is a reading of the CPU time used so far.
type cpuMark struct {
	wall                    time.Time
	self, redis             time.Duration
	machineBusy, machineAll time.Duration // all CPUs, every process (from /proc/stat)
}

func (e *stackEnv) mark() cpuMark {
	m := cpuMark{wall: time.Now(), self: selfCPU()}
	m.machineBusy, m.machineAll = machineCPU()
	if e.redis != nil {
		m.redis, _ = e.redis.cpu()
	}
	return m
}

// cpuNote describes the CPU used between a and b.
func (e *stackEnv) cpuNote(a, b cpuMark) string {
	wall := b.wall.Sub(a.wall)
	cores := float64(runtime.NumCPU())
	share := func(d time.Duration) string {
		return fmt.Sprintf("%.2f s (%.0f %% of %d cores)", d.Seconds(), 100*d.Seconds()/(wall.Seconds()*cores), runtime.NumCPU())
	}
	s := fmt.Sprintf("CPU over those %.2f s: basalt process (API, scheduler, results, agents and this load generator) %s",
		wall.Seconds(), share(b.self-a.self))
	if e.redis != nil {
		s += ", redis-server " + share(b.redis-a.redis)
	}
	if all := b.machineAll - a.machineAll; all > 0 {
		busy := b.machineBusy - a.machineBusy
		other := busy - (b.self - a.self) - (b.redis - a.redis)
		s += fmt.Sprintf("; the machine as a whole was %.0f %% busy (other processes: about %.0f %% of %d cores)",
			100*float64(busy)/float64(all), 100*max(other.Seconds(), 0)/(wall.Seconds()*cores), runtime.NumCPU())
	}
	return s + "."
}

// creates is phase 2: a burst of creates, then the wait until every volume is available.
func (e *stackEnv) creates(ctx context.Context, c *client, out, progress io.Writer) error {
	cfg := e.cfg
	fmt.Fprintf(progress, "creates: %d volumes, %d in flight\n", cfg.volumes, cfg.concurrency)
	var ropts *redis.Options
	var cmd0 cmdStats
	if e.redisURL != "" {
		var err error
		if ropts, err = redis.ParseURL(e.redisURL); err != nil {
			return err
		}
		if cmd0, err = readCmdStats(ctx, ropts); err != nil {
			return err
		}
	}
	m0 := e.mark()
	burst := createBurst(ctx, c, "e2e", cfg.volumes, cfg.concurrency)
	fmt.Fprintf(progress, "creates: %d accepted, %d failed in %s\n", burst.accepted, burst.failed, burst.last.Sub(burst.start))
	seen, err := waitSettled(ctx, c, cfg.settle)
	if err != nil {
		return err
	}
	m1 := e.mark()
	var cmd1 cmdStats
	if ropts != nil {
		if cmd1, err = readCmdStats(ctx, ropts); err != nil {
			return err
		}
	}
	vols, err := listAll(ctx, c)
	if err != nil {
		return err
	}
	var available, failed int
	var last time.Time
	var lat []time.Duration
	var availableAt []time.Time
	for _, v := range vols {
		switch v.Status {
		case "available":
			available++
			if v.UpdatedAt.After(last) {
				last = v.UpdatedAt.Time
			}
			lat = append(lat, v.UpdatedAt.Sub(v.CreatedAt.Time))
			availableAt = append(availableAt, v.UpdatedAt.Time)
		default:
			failed++
		}
	}
	if last.IsZero() {
		last = seen
	}
	e2e := last.Sub(burst.start)
	acceptTime := burst.last.Sub(burst.start)
	s := summarize(lat)
	fmt.Fprintf(out, "## 2. End-to-end creates\n\n")
	fmt.Fprintf(out, "%s volumes of 1 GiB, POST /v3/volumes from %d goroutines (token bench:bench), then "+
		"GET /v3/volumes?status=creating every 200 ms until none is left. *creates/s* is volumes available divided by "+
		"the time from the first POST to the last volume's `updated_at` (when it became available); *accepted/s* is "+
		"202 answers divided by the time to the last answer.\n\n", count(cfg.volumes), cfg.concurrency)
	fmt.Fprintf(out, "| volumes | in flight | consumers | accepted/s | creates/s to available | create→available p50 | p99 | errors | target |\n")
	fmt.Fprintf(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	createsPerSec := float64(available) / e2e.Seconds()
	fmt.Fprintf(out, "| %s | %d | %d | %s | %s | %s | %s | %d | %s |\n\n", count(cfg.volumes), cfg.concurrency,
		e.consumers, rate(burst.accepted, acceptTime), rate(available, e2e), dur(s.p50), dur(s.p99),
		burst.failed+failed, verdict("≥ 500/s", createsPerSec >= 500 && burst.failed+failed == 0))
	fmt.Fprintf(out, "Accepted %s in %s; all %s available %s after the first POST (seen by polling after %s). ",
		count(burst.accepted), dur(acceptTime), count(available), dur(e2e), dur(seen.Sub(burst.start)))
	if burst.firstErr != "" {
		fmt.Fprintf(out, "First create error: `%s`. ", burst.firstErr)
	}
	fmt.Fprintf(out, "Redis: %s. Backends: the example topology's 4 backends on the fake driver, %s GiB per pool, "+
		"4 driver workers each; %d scheduler and %d results consumers.\n\n%s\n\n",
		e.redisNote, count(int(cfg.capacityGB)), e.consumers, e.consumers, e.cpuNote(m0, m1))
	if ropts != nil {
		stages, err := createStages(ctx, ropts, e.backends, availableAt, int64(4*cfg.volumes))
		if err != nil {
			return err
		}
		printStages(out, stages, burst.start)
		printCmdStats(out, cmd0, cmd1, cfg.volumes)
	}
	return nil
}

// latency is phase 3: fixed-rate POSTs, then fixed-rate listings of a big and a small project.
func (e *stackEnv) latency(ctx context.Context, addr string, out, progress io.Writer) error {
	cfg := e.cfg
	bench := e.client(addr, "bench:bench")
	type row struct {
		what    string
		volumes int
		res     loopResult
	}
	var rows []row
	listPath := "/v3/volumes/detail?limit=100"
	list := func(c *client) func(ctx context.Context, i int) error {
		return func(ctx context.Context, i int) error {
			_, err := c.do(ctx, http.MethodGet, listPath, nil, http.StatusOK)
			return err
		}
	}
	projectSize := func(c *client) (int, error) {
		vols, err := listAll(ctx, c)
		return len(vols), err
	}

	n, err := projectSize(bench)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "latency: POST at %d/s for %s\n", cfg.rate, cfg.rateTime)
	res := openLoop(ctx, cfg.rate, cfg.rateTime, cfg.maxInflight, func(ctx context.Context, i int) error {
		return bench.create(ctx, fmt.Sprintf("rate-%d", i))
	})
	rows = append(rows, row{"POST /v3/volumes", n, res})
	if _, err := waitSettled(ctx, bench, cfg.settle); err != nil {
		return err
	}
	if n, err = projectSize(bench); err != nil {
		return err
	}
	fmt.Fprintf(progress, "latency: GET (%d volumes) at %d/s for %s\n", n, cfg.rate, cfg.rateTime)
	rows = append(rows, row{"GET " + listPath, n, openLoop(ctx, cfg.rate, cfg.rateTime, cfg.maxInflight, list(bench))})

	if cfg.smallProject > 0 {
		small := e.client(addr, "bench:small")
		if b := createBurst(ctx, small, "small", cfg.smallProject, min(cfg.concurrency, cfg.smallProject)); b.failed > 0 {
			return fmt.Errorf("create the small project's volumes: %s", b.firstErr)
		}
		if _, err := waitSettled(ctx, small, cfg.settle); err != nil {
			return err
		}
		if n, err = projectSize(small); err != nil {
			return err
		}
		fmt.Fprintf(progress, "latency: GET (%d volumes) at %d/s for %s\n", n, cfg.rate, cfg.rateTime)
		rows = append(rows, row{"GET " + listPath, n, openLoop(ctx, cfg.rate, cfg.rateTime, cfg.maxInflight, list(small))})
	}

	fmt.Fprintf(out, "## 3. API latency at a fixed rate\n\n")
	fmt.Fprintf(out, "Open loop: a request is due every %s for %s whether or not earlier ones have answered "+
		"(at most %d outstanding; a request due beyond that is dropped and counted as an error). Latency runs from "+
		"the time a request was due to its last byte. The creates' placements and driver calls run during the POST row; "+
		"each GET row starts when every volume is available.\n\n", time.Second/time.Duration(cfg.rate), cfg.rateTime, cfg.maxInflight)
	fmt.Fprintf(out, "| request | volumes in project | rate | sent | achieved/s | p50 | p99 | max | errors |\n")
	fmt.Fprintf(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var firstErrs []string
	for _, r := range rows {
		fmt.Fprintf(out, "| `%s` | %s | %d/s | %s | %s | %s | %s | %s | %d |\n", r.what, count(r.volumes), cfg.rate,
			count(r.res.sent), rate(r.res.sent-r.res.errs, r.res.elapsed), dur(r.res.lat.p50), dur(r.res.lat.p99),
			dur(r.res.lat.max), r.res.errs+r.res.dropped)
		if r.res.firstErr != "" {
			firstErrs = append(firstErrs, fmt.Sprintf("%s: `%.200s`", r.what, r.res.firstErr))
		}
		if r.res.dropped > 0 {
			firstErrs = append(firstErrs, fmt.Sprintf("%s: %d dropped (over %d outstanding)", r.what, r.res.dropped, cfg.maxInflight))
		}
	}
	fmt.Fprintln(out)
	if len(firstErrs) > 0 {
		fmt.Fprintf(out, "Errors: %s.\n\n", strings.Join(firstErrs, "; "))
	}
	return nil
}
