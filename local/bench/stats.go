package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the nearest-rank method,
// or 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// summary is the distribution of a set of latencies.
type summary struct {
	n             int
	p50, p99, max time.Duration
}

func summarize(lat []time.Duration) summary {
	s := slices.Clone(lat)
	slices.Sort(s)
	if len(s) == 0 {
		return summary{}
	}
	return summary{n: len(s), p50: percentile(s, 50), p99: percentile(s, 99), max: s[len(s)-1]}
}

// dur formats d with three significant digits in the unit that suits it.
func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + " µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + " ms"
	}
	return sig3(d.Seconds()) + " s"
}

// sig3 formats x (> 0) with three significant digits, without an exponent.
func sig3(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// count formats n with thousands separators: 12,345.
func count(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// rate formats events per second: 12,345 or 12.3 below 100.
func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	r := float64(n) / d.Seconds()
	if r < 100 {
		return fmt.Sprintf("%.1f", r)
	}
	return count(int(math.Round(r)))
}

// verdict formats a target and whether it was met.
func verdict(target string, met bool) string {
	if met {
		return target + ": met"
	}
	return target + ": **missed**"
}
