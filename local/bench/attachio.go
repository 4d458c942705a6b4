package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/basalt-storage/basalt/agents"
	"github.com/basalt-storage/basalt/agents/export"
)

const (
	// ioRequestMiB is the size of every qemu-io request, on every path: large sequential I/O,
	// one request at a time, which qemu does not split on any of the three paths.
	ioRequestMiB = 4
	// qemuIOTimeout bounds one qemu-io run.
	qemuIOTimeout = 60 * time.Second
	// qemuIOMalloc makes qemu-io reuse its request buffers instead of mapping fresh pages for
	// each command. That happens before qemu-io starts its clock, so it changes no figure, but
	// page faults are slow on this kind of VM and it shortens the run by seconds.
	qemuIOMalloc = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
)

// ioRow is one path's throughput over the rounds, in MB/s (10^6 bytes per second).
type ioRow struct {
	name      string
	transport bool
	writes    []float64
	reads     []float64
	syncs     []time.Duration // the bench's fdatasync of the file right after each write run
}

// throughputResult is the throughput part of the phase.
type throughputResult struct {
	mib     int
	rounds  int
	rows    []ioRow
	elapsed time.Duration
}

// ioTarget is one attached volume and the qemu-io arguments that open it directly and
// through its transport.
type ioTarget struct {
	vol                  attachVolume
	attachment           string
	direct, remote       []string // qemu-io's options and image
	directRow, remoteRow *ioRow
}

// throughput attaches the first volume of each protocol and, in each round, writes then reads
// cfg.ioMiB MiB sequentially through qemu-io, directly on the volume's file and through the
// transport, with the same commands and options.
func (e *attachEnv) throughput(ctx context.Context, vols map[string][]attachVolume, progress io.Writer) (*throughputResult, error) {
	res := &throughputResult{mib: e.cfg.ioMiB}
	var targets []*ioTarget
	defer func() {
		if ctx.Err() != nil {
			return // the stack is stopping; stopTargets ends the exports
		}
		for _, t := range targets {
			if _, err := e.detach(ctx, t.attachment); err != nil {
				fmt.Fprintf(progress, "attach: delete the throughput attachment %s: %v\n", t.attachment, err)
			}
		}
	}()
	for _, s := range e.sites {
		if s.protocol == agents.TargetLocal {
			continue // no transport
		}
		v := vols[s.protocol][0]
		id, ci, _, err := e.attach(ctx, v, "bench-io-"+s.protocol)
		if err != nil {
			return nil, err
		}
		t := &ioTarget{vol: v, attachment: id, direct: []string{"-t", "none", "-f", "raw", v.path()}}
		switch s.protocol {
		case export.ProtocolISCSI:
			// The CHAP secret goes through a file, not the command line.
			secret := filepath.Join(e.dir, "chap-"+id)
			if err := os.WriteFile(secret, []byte(ci.AuthPassword), 0o600); err != nil {
				return nil, err
			}
			t.remote = []string{"-t", "none", "--object", "secret,id=chap,file=" + secret, "--image-opts",
				fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,user=%s,password-secret=chap,initiator-name=%s",
					ci.TargetPortal, ci.TargetIQN, ci.TargetLUN, ci.AuthUsername, benchInitiator)}
		case export.ProtocolNBD:
			t.remote = []string{"-t", "none", "-f", "raw", ci.URI}
		}
		name := map[string]string{export.ProtocolISCSI: "iSCSI", export.ProtocolNBD: "NBD"}[s.protocol]
		res.rows = append(res.rows, ioRow{name: "direct: the " + name + " volume's file"},
			ioRow{name: name + " (" + ioClient(s.protocol) + ")", transport: true})
		targets = append(targets, t)
	}
	for i, t := range targets {
		t.directRow, t.remoteRow = &res.rows[2*i], &res.rows[2*i+1]
	}
	start := time.Now()
	for r := range e.cfg.rounds {
		if r > 0 && time.Since(start) > e.cfg.ioTime {
			fmt.Fprintf(progress, "attach: throughput stopped after %d rounds (-attach-io-time %s)\n", r, e.cfg.ioTime)
			break
		}
		for _, t := range targets {
			fmt.Fprintf(progress, "attach: throughput round %d, %s\n", r+1, t.vol.site.protocol)
			if err := e.ioRound(ctx, t, byte(0x10+2*r)); err != nil {
				return nil, err
			}
		}
		res.rounds = r + 1
	}
	res.elapsed = time.Since(start)
	return res, nil
}

func ioClient(protocol string) string {
	if protocol == export.ProtocolISCSI {
		return "tgtd; qemu's libiscsi initiator"
	}
	return "nbdkit file plugin; qemu's NBD client"
}

// ioRound measures t once: the direct write and read (one qemu-io), then the transport's
// write and read (two, the volume file's page cache emptied between them). Every run starts
// with the file synced and its page cache emptied; the direct run writes pattern p, the
// transport's p+1, and every read checks the pattern.
func (e *attachEnv) ioRound(ctx context.Context, t *ioTarget, p byte) error {
	path := t.vol.path()
	n := e.cfg.ioMiB / ioRequestMiB
	if _, err := dropCache(path); err != nil {
		return err
	}
	ops, err := e.qemuIO(ctx, t.direct, append(ioCommands("write", p, n), ioCommands("read", p, n)...))
	if err != nil {
		return err
	}
	t.directRow.writes = append(t.directRow.writes, mbps(ops[:n]))
	t.directRow.reads = append(t.directRow.reads, mbps(ops[n:]))

	if _, err := dropCache(path); err != nil {
		return err
	}
	if ops, err = e.qemuIO(ctx, t.remote, ioCommands("write", p+1, n)); err != nil {
		return err
	}
	t.remoteRow.writes = append(t.remoteRow.writes, mbps(ops))
	sync, err := dropCache(path)
	if err != nil {
		return err
	}
	t.remoteRow.syncs = append(t.remoteRow.syncs, sync)
	// What the transport wrote is in the volume's file.
	if err := checkPattern(path, p+1, int64(e.cfg.ioMiB)<<20); err != nil {
		return fmt.Errorf("%s write: %w", t.remoteRow.name, err)
	}
	if ops, err = e.qemuIO(ctx, t.remote, ioCommands("read", p+1, n)); err != nil {
		return err
	}
	t.remoteRow.reads = append(t.remoteRow.reads, mbps(ops))
	return nil
}

// ioCommands returns n sequential qemu-io commands op ("write" or "read") of ioRequestMiB each
// from offset 0, with pattern p (written, or checked on read), printing machine-readable
// statistics (-C).
func ioCommands(op string, p byte, n int) []string {
	var c []string
	for i := range n {
		c = append(c, "-c", fmt.Sprintf("%s -C -P 0x%02x %d %d", op, p, i*ioRequestMiB<<20, ioRequestMiB<<20))
	}
	return c
}

// ioOp is one qemu-io command's statistics.
type ioOp struct {
	bytes int64
	secs  float64
}

// mbps returns the throughput of ops in MB/s: their bytes over the sum of their times.
func mbps(ops []ioOp) float64 {
	var b int64
	var s float64
	for _, o := range ops {
		b, s = b+o.bytes, s+o.secs
	}
	if s <= 0 {
		return 0
	}
	return float64(b) / s / 1e6
}

// qemuIO runs qemu-io with open and cmds (pairs "-c", command) and returns each command's
// statistics. It fails when a command fails, a pattern does not match or a command printed no
// statistics.
func (e *attachEnv) qemuIO(ctx context.Context, open, cmds []string) ([]ioOp, error) {
	ctx, cancel := context.WithTimeout(ctx, qemuIOTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.tools.qemuIO, append(slices.Clone(open), cmds...)...)
	cmd.Env = append(os.Environ(), qemuIOMalloc)
	out, err := cmd.CombinedOutput()
	shown := strings.Join(open, " ")
	if err != nil {
		return nil, fmt.Errorf("qemu-io %s: %w: %.500s", shown, err, out)
	}
	if bytes.Contains(out, []byte("Pattern verification failed")) || bytes.Contains(out, []byte("failed:")) {
		return nil, fmt.Errorf("qemu-io %s: %.500s", shown, out)
	}
	// -C prints bytes,ops,time,bytes per second,ops per second. The time is rounded to 10 ms;
	// the rate is exact, so the time is taken from it.
	var ops []ioOp
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) != 5 {
			continue
		}
		b, err1 := strconv.ParseInt(f[0], 10, 64)
		rate, err2 := strconv.ParseFloat(f[3], 64)
		if err1 != nil || err2 != nil || rate <= 0 {
			continue
		}
		ops = append(ops, ioOp{bytes: b, secs: float64(b) / rate})
	}
	if len(ops) != len(cmds)/2 {
		return nil, fmt.Errorf("qemu-io %s: %d of %d commands reported: %.500s", shown, len(ops), len(cmds)/2, out)
	}
	return ops, nil
}

// dropCache makes the file at path durable (fdatasync) and then drops its pages from the
// page cache, so that the next run reads from the disk. It returns the fdatasync's time.
func dropCache(path string) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	t0 := time.Now()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, fmt.Errorf("fdatasync %s: %w", path, err)
	}
	d := time.Since(t0)
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return 0, fmt.Errorf("fadvise %s: %w", path, err)
	}
	return d, nil
}

// checkPattern checks that the first and the last 4 KiB of the n bytes at the start of the
// file at path hold byte p.
func checkPattern(path string, p byte, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for _, off := range []int64{0, n - int64(len(buf))} {
		if _, err := f.ReadAt(buf, off); err != nil {
			return err
		}
		if i := bytes.IndexFunc(buf, func(r rune) bool { return r != rune(p) }); i >= 0 {
			return fmt.Errorf("%s: byte %d is %#x, want %#x", path, off+int64(i), buf[i], p)
		}
	}
	return nil
}

// median returns the median of xs (the mean of the middle two for an even count), 0 for none.
func median[T float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *throughputResult) print(out io.Writer) {
	fmt.Fprintf(out, "### Throughput\n\n")
	fmt.Fprintf(out, "Sequential %d MiB written, then read, in %d MiB requests, one at a time, from offset 0 of a 1 GiB "+
		"volume, with the same qemu-io commands (`write -C -P <pattern> <offset> %dM`, then `read` with the pattern checked) "+
		"and the same options (`-t none`: O_DIRECT on the file, no client cache on any path) on each path: directly on "+
		"the volume's file (`-f raw <file>`), through iSCSI (`--image-opts driver=iscsi,...` with the CHAP account and "+
		"initiator of the attachment's connection info) and through NBD (`nbd://...`). MB/s is 10^6 bytes per second, "+
		"from qemu-io's own timing of the requests. Before each run the file is synced and its page cache dropped "+
		"(`fdatasync`, `POSIX_FADV_DONTNEED`), so every read comes from the disk. Median of %d round(s), one after the "+
		"other (%s in all).\n\n", r.mib, ioRequestMiB, ioRequestMiB, r.rounds, dur(r.elapsed))
	fmt.Fprintf(out, "| path | write MB/s | read MB/s | write / direct | read / direct | target |\n|---|---:|---:|---:|---:|---|\n")
	var direct ioRow
	for _, row := range r.rows {
		w, rd := median(row.writes), median(row.reads)
		if !row.transport {
			direct = row
			fmt.Fprintf(out, "| %s | %.0f | %.0f | 1.00 | 1.00 | |\n", row.name, w, rd)
			continue
		}
		wr, rr := w/median(direct.writes), rd/median(direct.reads)
		fmt.Fprintf(out, "| %s | %.0f | %.0f | %.2f | %.2f | %s |\n", row.name, w, rd, wr, rr,
			verdict("≥ 0.8× direct", wr >= 0.8 && rr >= 0.8))
	}
	fmt.Fprintln(out)
	var lines []string
	for _, row := range r.rows {
		var rounds []string
		for i := range row.writes {
			rounds = append(rounds, fmt.Sprintf("%.0f/%.0f", row.writes[i], row.reads[i]))
		}
		s := fmt.Sprintf("%s %s", row.name, strings.Join(rounds, ", "))
		if row.transport {
			s += fmt.Sprintf(" (fdatasync after its writes: %s median)", dur(median(row.syncs)))
		}
		lines = append(lines, s)
	}
	fmt.Fprintf(out, "Each round, write/read MB/s: %s.\n\n", strings.Join(lines, "; "))
}
