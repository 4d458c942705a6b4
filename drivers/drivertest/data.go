package drivertest

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/basalt-storage/basalt/drivers"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// A write is a byte range written with the pattern of one generation.
type write struct {
	off, n int64
	gen    byte
}

// An image is what a volume must read: zeros, overlaid with its writes in order.
type image struct {
	sizeGB int
	writes []write
}

// with returns a copy of m with ws written after its writes.
func (m image) with(ws ...write) image {
	return image{sizeGB: m.sizeGB, writes: append(slices.Clip(m.writes), ws...)}
}

// resized returns a copy of m of sizeGB GiB.
func (m image) resized(sizeGB int) image {
	return image{sizeGB: sizeGB, writes: slices.Clip(m.writes)}
}

// patternByte returns the byte generation gen writes at offset off. Two generations differ at
// every offset, and neighbouring offsets and blocks hold different bytes, so a byte read from
// the wrong offset or generation does not match.
func patternByte(off int64, gen byte) byte {
	return byte(uint64(off)*0x9e3779b97f4a7c15>>56) + gen
}

// fillPattern fills p with generation gen's pattern for the bytes at off.
func fillPattern(p []byte, off int64, gen byte) {
	for i := range p {
		p[i] = patternByte(off+int64(i), gen)
	}
}

// expect fills p with what m holds at off: zeros, then each write's bytes in order.
func (m image) expect(p []byte, off int64) {
	clear(p)
	end := off + int64(len(p))
	for _, w := range m.writes {
		lo, hi := max(off, w.off), min(end, w.off+w.n)
		if lo < hi {
			fillPattern(p[lo-off:hi-off], lo, w.gen)
		}
	}
}

// describe says what m holds at off, for failure messages.
func (m image) describe(off int64) string {
	for _, w := range slices.Backward(m.writes) {
		if off >= w.off && off < w.off+w.n {
			return fmt.Sprintf("generation %d written at [%d, %d)", w.gen, w.off, w.off+w.n)
		}
	}
	return "never written, so zero"
}

// accessor returns d as a drivers.Accessor or skips the test.
func accessor(t *testing.T, d drivers.Driver) drivers.Accessor {
	t.Helper()
	a, ok := d.(drivers.Accessor)
	if !ok {
		t.Skipf("%T does not implement drivers.Accessor", d)
	}
	return a
}

// writeImage writes ws to volume id through a and returns m with them.
func writeImage(t *testing.T, a drivers.Accessor, id string, m image, ws ...write) image {
	t.Helper()
	dev, err := a.OpenVolume(t.Context(), id)
	if err != nil {
		t.Fatalf("OpenVolume(%q) = %v, want nil", id, err)
	}
	for _, w := range ws {
		p := make([]byte, w.n)
		fillPattern(p, w.off, w.gen)
		if n, err := dev.WriteAt(p, w.off); n != len(p) || err != nil {
			dev.Close()
			t.Fatalf("volume %s: WriteAt(%d bytes, %d) = %d, %v; want %d, nil", id, len(p), w.off, n, err, len(p))
		}
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("volume %s: Close() = %v, want nil", id, err)
	}
	return m.with(ws...)
}

// wantImage fails the test, naming the first wrong byte, unless volume id holds m: Stat reports
// m's size, every written byte reads as written last, unwritten bytes read as zeros, and a read
// at the end returns io.EOF. Reading every unwritten byte of a sparse file costs about a second
// per GiB, so it reads the written ranges with 64 KiB on each side, 64 KiB every 16 MiB and the
// last 64 KiB. what says which volume this is in the scenario.
func wantImage(t *testing.T, d drivers.Driver, a drivers.Accessor, id, what string, m image) {
	t.Helper()
	if spec, err := d.Stat(t.Context(), id); err != nil || spec.SizeGB != m.sizeGB {
		t.Errorf("%s: Stat(%q) = %+v, %v; want size %d GiB", what, id, spec, err, m.sizeGB)
		return
	}
	dev, err := a.OpenVolume(t.Context(), id)
	if err != nil {
		t.Errorf("%s: OpenVolume(%q) = %v, want nil", what, id, err)
		return
	}
	defer dev.Close()
	size := int64(m.sizeGB) * gib
	const margin, stride = 64 * 1024, 16 * mib
	var spans [][2]int64 // [start, end) to read
	for _, w := range m.writes {
		spans = append(spans, [2]int64{w.off - margin, w.off + w.n + margin})
	}
	for off := int64(0); off < size; off += stride {
		spans = append(spans, [2]int64{off, off + margin})
	}
	spans = append(spans, [2]int64{size - margin, size})
	slices.SortFunc(spans, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	const window = 4 * mib
	got, want := make([]byte, window), make([]byte, window)
	next := int64(0) // everything before next has been read
	for _, sp := range spans {
		for off := max(sp[0], next, 0); off < min(sp[1], size); off += window {
			n := min(window, min(sp[1], size)-off)
			k, err := dev.ReadAt(got[:n], off)
			if k != int(n) || (err != nil && !(errors.Is(err, io.EOF) && off+n == size)) {
				t.Errorf("%s: volume %s: ReadAt(%d bytes, %d) = %d, %v; want %d, nil", what, id, n, off, k, err, n)
				return
			}
			m.expect(want[:n], off)
			if i := firstDiff(got[:n], want[:n]); i >= 0 {
				t.Errorf("%s: volume %s reads %#02x at offset %d, want %#02x (%s)", what, id, got[i], off+int64(i), want[i], m.describe(off+int64(i)))
				return
			}
		}
		next = max(next, sp[1])
	}
	if n, err := dev.ReadAt(got[:1], size); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("%s: volume %s of %d bytes: ReadAt(1 byte, %d) = %d, %v; want 0, io.EOF", what, id, size, size, n, err)
	}
}

// firstDiff returns the first index at which a and b (of one length) differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
