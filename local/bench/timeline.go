package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// stage is one step of a create, seen as the times its messages were written.
type stage struct {
	what  string
	times []time.Time
}

// streamTimes returns the times of the entries of stream (from their ids, in milliseconds),
// reading at most limit entries.
func streamTimes(ctx context.Context, rdb *redis.Client, stream string, limit int64) ([]time.Time, error) {
	entries, err := rdb.XRangeN(ctx, stream, "-", "+", limit).Result()
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	out := make([]time.Time, 0, len(entries))
	for _, e := range entries {
		ms, _, _ := strings.Cut(e.ID, "-")
		n, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("stream %s: entry id %q", stream, e.ID)
		}
		out = append(out, time.UnixMilli(n))
	}
	return out, nil
}

// createStages reads when each step of the creates happened from the streams the steps write
// (the API to the scheduler topic, placement to the topics of the backends' hosts, agents to the
// results topic); the last step is the volumes' updated_at. Call it before anything else
// publishes.
func createStages(ctx context.Context, opts *redis.Options, backends []string, available []time.Time, limit int64) ([]stage, error) {
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	sched, err := streamTimes(ctx, rdb, events.TopicScheduler, limit)
	if err != nil {
		return nil, err
	}
	var placed []time.Time
	seen := map[string]bool{} // backends of one host share its topic
	for _, b := range backends {
		topic := events.BackendTopic(b)
		if seen[topic] {
			continue
		}
		seen[topic] = true
		t, err := streamTimes(ctx, rdb, topic, limit)
		if err != nil {
			return nil, err
		}
		placed = append(placed, t...)
	}
	done, err := streamTimes(ctx, rdb, events.TopicResults, limit)
	if err != nil {
		return nil, err
	}
	return []stage{
		{"accepted: API published to the scheduler topic", sched},
		{"placed: scheduler published to a host topic", placed},
		{"created: agent published the result", done},
		{"available: results function updated the volume", available},
	}, nil
}

// printStages writes when each stage's first, middle and last message happened, relative to
// start, and the stage's rate over its span.
func printStages(w io.Writer, stages []stage, start time.Time) {
	fmt.Fprintf(w, "Where the time goes: when each step happened, from the first POST (stream entry ids, ms resolution).\n\n")
	fmt.Fprintf(w, "| step | messages | first | median | last | rate over first→last |\n|---|---:|---:|---:|---:|---:|\n")
	for _, s := range stages {
		t := slices.Clone(s.times)
		slices.SortFunc(t, func(a, b time.Time) int { return a.Compare(b) })
		if len(t) == 0 {
			fmt.Fprintf(w, "| %s | 0 | | | | |\n", s.what)
			continue
		}
		first, mid, last := t[0], t[(len(t)-1)/2], t[len(t)-1]
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s/s |\n", s.what, count(len(t)), dur(first.Sub(start)),
			dur(mid.Sub(start)), dur(last.Sub(start)), rate(len(t), last.Sub(first)))
	}
	fmt.Fprintln(w)
}

// cmdStats is INFO commandstats: calls and microseconds per command.
type cmdStats map[string]struct{ calls, usec int64 }

func readCmdStats(ctx context.Context, opts *redis.Options) (cmdStats, error) {
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("redis info: %w", err)
	}
	out := cmdStats{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		var s struct{ calls, usec int64 }
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				s.calls = n
			case "usec":
				s.usec = n
			}
		}
		out[name] = s
	}
	return out, nil
}

// printCmdStats writes the Redis commands run between a and b, per create.
func printCmdStats(w io.Writer, a, b cmdStats, creates int) {
	type row struct {
		name        string
		calls, usec int64
	}
	var rows []row
	var calls, usec int64
	for name, s := range b {
		r := row{name, s.calls - a[name].calls, s.usec - a[name].usec}
		if r.calls > 0 {
			rows = append(rows, r)
			calls += r.calls
			usec += r.usec
		}
	}
	slices.SortFunc(rows, func(x, y row) int { return int(y.calls - x.calls) })
	var top []string
	for _, r := range rows[:min(len(rows), 12)] {
		top = append(top, fmt.Sprintf("%s %.1f", strings.ToUpper(r.name), float64(r.calls)/float64(creates)))
	}
	fmt.Fprintf(w, "Redis commands during the creates: %.1f per create, %.0f µs of Redis time per create (%s; polling included).\n\n",
		float64(calls)/float64(creates), float64(usec)/float64(creates), strings.Join(top, ", "))
}
