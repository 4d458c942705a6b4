package scheduler

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/basalt-storage/basalt"
)

// caps builds a capability report from key/value pairs.
func caps(kv ...any) basalt.Capabilities {
	c := basalt.Capabilities{}
	for i := 0; i < len(kv); i += 2 {
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

func thickType() *basalt.VolumeType {
	return &basalt.VolumeType{ExtraSpecs: map[string]string{"provisioning:type": "thick"}}
}

func TestCapacityFilter(t *testing.T) {
	thin := func(kv ...any) basalt.Capabilities {
		return caps(append([]any{keyThin, true}, kv...)...)
	}
	tests := []struct {
		name   string
		caps   basalt.Capabilities
		size   int
		thick  bool
		extend bool
		cfg    CapacityFilter
		want   bool
		reason string
	}{
		// §4.2 in order.
		{name: "zero size passes anything", caps: caps(keyFree, nil), size: 0, want: true},
		{name: "free null fails", caps: caps(keyTotal, 100.0, keyFree, nil), size: 1,
			reason: "free capacity unknown (null)"},
		{name: "free infinite passes", caps: caps(keyTotal, 0.0, keyFree, "infinite"), size: 5000, want: true},
		{name: "free unknown passes", caps: caps(keyFree, "unknown", keyReserved, 50.0), size: 5000, want: true},
		{name: "total infinite, no reserve, passes", caps: caps(keyTotal, "infinite", keyFree, 1.0), size: 5000, want: true},
		{name: "total unknown with reserve fails", caps: caps(keyTotal, "unknown", keyFree, 1.0, keyReserved, 10.0), size: 5,
			reason: "total capacity unknown with 10% reserved"},
		{name: "total 0 fails", caps: caps(keyTotal, 0.0, keyFree, 10.0), size: 5, reason: "total capacity 0 GiB"},
		{name: "negative total fails", caps: caps(keyTotal, -5.0, keyFree, 10.0), size: 5, reason: "total capacity -5 GiB"},
		{name: "missing total is 0", caps: caps(keyFree, 10.0), size: 5, reason: "total capacity 0 GiB"},

		// Thick: min(total - floor(total*reserved) - provisioned, free); the reserve is not
		// taken from the reported free.
		{name: "thick: free binds", caps: caps(keyTotal, 100.0, keyFree, 50.0, keyReserved, 10.0), size: 50, thick: true, want: true},
		{name: "thick: free binds, over", caps: caps(keyTotal, 100.0, keyFree, 50.0, keyReserved, 10.0), size: 51, thick: true,
			reason: "50 GiB virtual free < 51 GiB requested"},
		{name: "thick: reserve binds", caps: caps(keyTotal, 100.0, keyFree, 95.0, keyReserved, 10.0), size: 91, thick: true,
			reason: "90 GiB virtual free < 91 GiB requested"},
		{name: "thick: provisioned binds", caps: caps(keyTotal, 100.0, keyFree, 95.0, keyAllocated, 30.0), size: 71, thick: true,
			reason: "70 GiB virtual free < 71 GiB requested"},
		{name: "provisioned overrides allocated", caps: caps(keyTotal, 100.0, keyFree, 95.0, keyAllocated, 30.0, keyProvisioned, 10.0), size: 90, thick: true, want: true},
		{name: "reserve is floored", caps: caps(keyTotal, 99.5, keyFree, 100.0, keyReserved, 10.0), size: 91, thick: true,
			reason: "90.5 GiB virtual free < 91 GiB requested"},
		{name: "missing free counts as 0 (thick)", caps: caps(keyTotal, 100.0), size: 1, thick: true,
			reason: "0 GiB virtual free < 1 GiB requested"},
		{name: "missing free is unused on the thin path", caps: thin(keyTotal, 100.0), size: 1, want: true},
		{name: "rounded to 2 decimals: 3.345 reads 3.34", caps: caps(keyTotal, 10.0, keyFree, 100.0, keyProvisioned, 6.655), size: 5,
			reason: "3.34 GiB virtual free < 5 GiB requested"},
		{name: "rounded to 2 decimals: 4.999 passes 5", caps: caps(keyTotal, 10.0, keyFree, 100.0, keyProvisioned, 5.001), size: 5, want: true},
		{name: "thin request on a pool without thin support is thick", caps: caps(keyTotal, 100.0, keyFree, 10.0), size: 11,
			reason: "10 GiB virtual free < 11 GiB requested"},

		// Thin: total_available = (total - reserve) * ratio.
		{name: "thin: virtual free", caps: thin(keyTotal, 100.0, keyFree, 10.0, keyProvisioned, 1500.0), size: 500, want: true},
		{name: "thin: virtual free, over", caps: thin(keyTotal, 100.0, keyFree, 10.0, keyProvisioned, 1500.0), size: 501,
			reason: "500 GiB virtual free < 501 GiB requested"},
		{name: "thin: reserve before the ratio", caps: thin(keyTotal, 100.0, keyReserved, 10.0, keyRatio, 2.0), size: 181,
			reason: "180 GiB virtual free < 181 GiB requested"},
		{name: "thin: ratio check comes first", caps: thin(keyTotal, 100.0, keyRatio, 2.0, keyProvisioned, 390.0), size: 20,
			reason: "provisioned ratio 2.05 ((390 + 20 GiB requested) / 200 GiB available) > max_over_subscription_ratio 2"},
		{name: "thin: ratio over rounded available binds alone", caps: thin(keyTotal, 10.004, keyRatio, 1.0, keyProvisioned, 0.006), size: 10,
			reason: "provisioned ratio 1.0006 ((0.006 + 10 GiB requested) / 10 GiB available) > max_over_subscription_ratio 1"},
		{name: "thin: ratio below 1 fails thin", caps: thin(keyTotal, 100.0, keyFree, 100.0, keyRatio, 0.5), size: 1,
			reason: "max_over_subscription_ratio 0.5 < 1"},
		{name: "thick on a ratio-below-1 pool uses free", caps: thin(keyTotal, 100.0, keyFree, 100.0, keyRatio, 0.5), size: 1, thick: true, want: true},
		{name: "provisioning:type thick ignores the ratio", caps: thin(keyTotal, 100.0, keyFree, 10.0), size: 11, thick: true,
			reason: "10 GiB virtual free < 11 GiB requested"},

		// Ratio fallbacks (§8).
		{name: "ratio missing: global 20", caps: thin(keyTotal, 100.0, keyProvisioned, 1000.0), size: 1000, want: true},
		{name: "ratio 0: global 20", caps: thin(keyTotal, 100.0, keyProvisioned, 1000.0, keyRatio, 0.0), size: 1000, want: true},
		{name: "ratio null: global 20", caps: thin(keyTotal, 100.0, keyProvisioned, 1000.0, keyRatio, nil), size: 1000, want: true},
		{name: "ratio empty string: global", caps: thin(keyTotal, 100.0, keyRatio, ""), size: 201, cfg: CapacityFilter{MaxOverSubscriptionRatio: 2},
			reason: "200 GiB virtual free < 201 GiB requested"},
		{name: "ratio string \"0\" is 0: thin fails", caps: thin(keyTotal, 100.0, keyRatio, "0"), size: 1,
			reason: "max_over_subscription_ratio 0 < 1"},
		{name: "ratio numeric string", caps: thin(keyTotal, 100.0, keyRatio, "1.5"), size: 151,
			reason: "150 GiB virtual free < 151 GiB requested"},
		{name: "ratio true is 1", caps: thin(keyTotal, 100.0, keyRatio, true), size: 101,
			reason: "provisioned ratio 1.01 ((0 + 101 GiB requested) / 100 GiB available) > max_over_subscription_ratio 1"},
		{name: "global ratio", caps: thin(keyTotal, 100.0), size: 301, cfg: CapacityFilter{MaxOverSubscriptionRatio: 3},
			reason: "300 GiB virtual free < 301 GiB requested"},
		{name: "auto: 1 + provisioned/(total - free + 1)", caps: thin(keyTotal, 100.0, keyFree, 60.0, keyProvisioned, 82.0, keyRatio, "auto"), size: 218, want: true},
		{name: "auto: over", caps: thin(keyTotal, 100.0, keyFree, 60.0, keyProvisioned, 82.0, keyRatio, "auto"), size: 219,
			reason: "218 GiB virtual free < 219 GiB requested"},
		{name: "auto: nothing provisioned is 20", caps: thin(keyTotal, 100.0, keyFree, 60.0, keyRatio, "auto"), size: 2000, want: true},
		{name: "auto: provisioned \"0\" is provisioned, ratio 1", caps: thin(keyTotal, 100.0, keyFree, 60.0, keyProvisioned, "0", keyRatio, "auto"), size: 101,
			reason: "provisioned ratio 1.01 ((0 + 101 GiB requested) / 100 GiB available) > max_over_subscription_ratio 1"},
		{name: "auto from the global setting", caps: thin(keyTotal, 100.0, keyFree, 60.0, keyProvisioned, 82.0), size: 219, cfg: CapacityFilter{AutoOverSubscription: true},
			reason: "218 GiB virtual free < 219 GiB requested"},
		{name: "auto: free = total + 1 (Cinder divides by zero) is 20", caps: thin(keyTotal, 100.0, keyFree, 101.0, keyProvisioned, 10.0, keyRatio, "auto"), size: 1990, want: true},

		// Thin support truthiness (§8).
		{name: "thin support \"False\" is truthy", caps: caps(keyTotal, 100.0, keyFree, 0.0, keyThin, "False"), size: 50, want: true},
		{name: "thin support false", caps: caps(keyTotal, 100.0, keyFree, 0.0, keyThin, false), size: 50,
			reason: "0 GiB virtual free < 50 GiB requested"},
		{name: "thin support \"\" is false", caps: caps(keyTotal, 100.0, keyFree, 0.0, keyThin, ""), size: 50,
			reason: "0 GiB virtual free < 50 GiB requested"},
		{name: "thin support 1 is true", caps: caps(keyTotal, 100.0, keyFree, 0.0, keyThin, 1.0), size: 50, want: true},
		{name: "thick_provisioning_support is unused", caps: caps(keyTotal, 100.0, keyFree, 0.0, "thick_provisioning_support", true), size: 50,
			reason: "0 GiB virtual free < 50 GiB requested"},

		// Extend: SizeGB is the growth.
		{name: "extend by the growth", caps: caps(keyTotal, 100.0, keyFree, 5.0), size: 5, extend: true, want: true},
		{name: "extend by the growth, over", caps: caps(keyTotal, 100.0, keyFree, 5.0), size: 6, extend: true,
			reason: "5 GiB virtual free < 6 GiB requested"},
		{name: "extend by nothing", caps: caps(keyTotal, 0.0, keyFree, nil), size: 0, extend: true, want: true},

		// Where Cinder raises (§8), Basalt rejects the pool.
		{name: "thin available rounds to 0 (Cinder divides by zero)", caps: thin(keyTotal, 0.004, keyFree, 0.004, keyRatio, 1.0), size: 1,
			reason: "thin available capacity rounds to 0 GiB"},
		{name: "thin, all reserved (Cinder divides by zero)", caps: thin(keyTotal, 100.0, keyFree, 100.0, keyReserved, 100.0), size: 1,
			reason: "thin available capacity rounds to 0 GiB"},
		{name: "free null with auto (Cinder breaks the pool state)", caps: thin(keyTotal, 100.0, keyFree, nil, keyProvisioned, 5.0, keyRatio, "auto"), size: 1,
			reason: "free capacity unknown (null)"},
		{name: "total null", caps: caps(keyTotal, nil, keyFree, 10.0), size: 1, reason: "total capacity unknown (null)"},
		{name: "total not a number", caps: caps(keyTotal, "lots", keyFree, 10.0), size: 1, reason: `invalid total_capacity_gb "lots"`},
		{name: "reserved not a number", caps: caps(keyTotal, 100.0, keyFree, "infinite", keyReserved, "x"), size: 1, reason: `invalid reserved_percentage "x"`},
		{name: "ratio not a number, thin", caps: thin(keyTotal, 100.0, keyFree, 10.0, keyRatio, "lots"), size: 1, reason: `invalid max_over_subscription_ratio "lots"`},
		{name: "ratio not a number, thick request", caps: thin(keyTotal, 100.0, keyFree, 10.0, keyRatio, "lots"), size: 1, thick: true, want: true},
		{name: "provisioned not a number", caps: caps(keyTotal, 100.0, keyFree, 10.0, keyProvisioned, []any{1.0}), size: 1, reason: "invalid provisioned_capacity_gb [1]"},
		{name: "free not a number, thick", caps: caps(keyTotal, 100.0, keyFree, "lots"), size: 1, reason: `invalid free_capacity_gb "lots"`},
		{name: "free not a number is unused on the thin path", caps: thin(keyTotal, 100.0, keyFree, "lots"), size: 1, want: true},
		{name: "numeric strings (Cinder raises on free)", caps: caps(keyTotal, "100", keyFree, "50", keyReserved, "10"), size: 50, want: true},
		{name: "Go ints and json.Number are numbers", caps: caps(keyTotal, 100, keyFree, json.Number("50"), keyReserved, int64(10)), size: 51,
			reason: "50 GiB virtual free < 51 GiB requested"},
		{name: "reserved null counts as 0", caps: caps(keyTotal, 100.0, keyFree, 100.0, keyReserved, nil), size: 100, want: true},
		{name: "provisioned null counts as allocated", caps: caps(keyTotal, 100.0, keyFree, 100.0, keyAllocated, 60.0, keyProvisioned, nil), size: 41,
			reason: "40 GiB virtual free < 41 GiB requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Request{SizeGB: tt.size}
			if tt.thick {
				r.Type = thickType()
			}
			if tt.extend {
				r.Operation = OpExtendVolume
			}
			p := &basalt.Pool{Name: "block1@lvm#pool", Capabilities: tt.caps}
			got, reason := tt.cfg.Fits(r, p)
			if got != tt.want || reason != tt.reason {
				t.Errorf("Fits(%v, size %d) = %v, %q; want %v, %q", tt.caps, tt.size, got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestCapacityLimit(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name  string
		caps  basalt.Capabilities
		size  int
		thick bool
		want  float64
	}{
		{"thin: total available", caps(keyThin, true, keyTotal, 100.0, keyFree, 10.0, keyProvisioned, 1500.0, keyReserved, 10.0), 5, false, 1800},
		{"thick: provisioned + free", caps(keyTotal, 100.0, keyFree, 50.0, keyProvisioned, 20.0), 5, true, 70},
		{"thick: provisioned + available", caps(keyTotal, 100.0, keyFree, 95.0, keyProvisioned, 20.0), 5, true, 100},
		{"thin request, no thin support", caps(keyTotal, 100.0, keyFree, 50.0, keyProvisioned, 20.0), 5, false, 70},
		{"rounded virtual free", caps(keyTotal, 10.0, keyFree, 100.0, keyProvisioned, 5.001), 5, true, add(5.001, 5)}, // provisioned + round(4.999, 2)
		{"ratio bound over rounded available", caps(keyThin, true, keyTotal, 10.004, keyRatio, 1.0, keyProvisioned, 0.005), 5, false, 10},
		{"infinite free", caps(keyTotal, 100.0, keyFree, "infinite"), 5, false, inf},
		{"unknown total", caps(keyTotal, "unknown", keyFree, 5.0), 5, false, inf},
		{"zero size", caps(keyTotal, 100.0, keyFree, 50.0), 0, false, inf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{})
			if err != nil {
				t.Fatal(err)
			}
			r := &Request{SizeGB: tt.size}
			if tt.thick {
				r.Type = thickType()
			}
			d := s.Place(r, []basalt.Pool{{Name: "a@b#c", Capabilities: tt.caps}})
			if len(d.Ranked) != 1 {
				t.Fatalf("Place(%v) rejected the pool: %s", tt.caps, d.Explain())
			}
			if got := d.Ranked[0].Limit; got != tt.want {
				t.Errorf("Place(%v).Ranked[0].Limit = %v, want %v", tt.caps, got, tt.want)
			}
			if got := d.Ranked[0].Limit; got < capacityOf(tt.caps)+float64(tt.size) {
				t.Errorf("Place(%v).Ranked[0].Limit = %v < provisioned + size", tt.caps, got)
			}
		})
	}

	t.Run("no CapacityFilter", func(t *testing.T) {
		s, err := New(Config{Filters: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		d := s.Place(&Request{SizeGB: 5}, []basalt.Pool{{Name: "a@b#c", Capabilities: caps(keyTotal, 1.0, keyFree, 0.0)}})
		if got := d.Ranked[0].Limit; !math.IsInf(got, 1) {
			t.Errorf("Place() without CapacityFilter: Limit = %v, want +Inf", got)
		}
	})
}

// capacityOf returns the provisioned capacity a report states (allocated when unset).
func capacityOf(c basalt.Capabilities) float64 {
	return readCapacity(c, ratioConfig{}).provisioned
}

// TestLimitAgreesWithFilter checks the Limit contract on the golden reports: for every pool
// that passes, a reservation of the request from the reported ledger fits under Limit, and
// for thick requests and thin ones alike, one GiB more than the virtual free does not.
func TestLimitAgreesWithFilter(t *testing.T) {
	c := loadCinderCases(t)
	s, err := New(Config{Filters: []string{"CapacityFilter"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range c.Capacity {
		r := &Request{SizeGB: tc.Size}
		if tc.Thick {
			r.Type = thickType()
		}
		pools := []basalt.Pool{{Name: "a@b#c", Capabilities: tc.Caps}}
		d := s.Place(r, pools)
		if len(d.Ranked) == 0 {
			continue
		}
		lim := d.Ranked[0].Limit
		prov := capacityOf(tc.Caps)
		if prov+float64(tc.Size) > lim {
			t.Errorf("Place(%v, size %d): Limit %v < provisioned %v + size", tc.Caps, tc.Size, lim, prov)
		}
		if math.IsInf(lim, 1) || tc.Size == 0 {
			continue
		}
		// A request of the headroom the limit leaves (rounded down) passes the filter; one
		// GiB more fails it.
		room := int(math.Floor(lim - prov + 1e-9)) // lim - prov may land just below an integer
		if room >= 1 {
			if ok, why := (CapacityFilter{}).Fits(&Request{SizeGB: room, Type: r.Type}, &pools[0]); !ok {
				t.Errorf("Fits(%v, size %d) = false (%s), but Limit %v leaves room", tc.Caps, room, why, lim)
			}
		}
		if ok, _ := (CapacityFilter{}).Fits(&Request{SizeGB: room + 1, Type: r.Type}, &pools[0]); ok {
			t.Errorf("Fits(%v, size %d) = true, but Limit %v leaves only %d", tc.Caps, room+1, lim, room)
		}
	}
}

func TestCapacityWeigher(t *testing.T) {
	tests := []struct {
		name string
		caps basalt.Capabilities
		mult float64
		want float64
	}{
		{"thin virtual free", caps(keyThin, true, keyTotal, 100.0, keyProvisioned, 500.0, keyRatio, 10.0), 1, 500},
		{"thick free", caps(keyTotal, 100.0, keyFree, 30.0), 1, 30},
		{"rounded", caps(keyTotal, 10.0, keyFree, 100.0, keyProvisioned, 6.655), 1, 3.34},
		{"infinite, positive multiplier", caps(keyTotal, 100.0, keyFree, "infinite"), 1, -1},
		{"unknown total, negative multiplier", caps(keyTotal, "unknown", keyFree, 3.0), -1, math.Inf(1)},
		{"infinite, zero multiplier", caps(keyFree, "unknown"), 0, math.Inf(1)},
		{"free null is unknown", caps(keyTotal, 100.0, keyFree, nil), 1, -1},
		{"free null is unused on the thin path", caps(keyThin, true, keyTotal, 100.0, keyFree, nil), 1, 2000},
	}
	for _, tt := range tests {
		w := CapacityWeigher{Multiplier: tt.mult}
		if got := w.Weigh(&Request{SizeGB: 1}, &basalt.Pool{Capabilities: tt.caps}); got != tt.want {
			t.Errorf("%s: Weigh(%v) = %v, want %v", tt.name, tt.caps, got, tt.want)
		}
	}
}

func TestRound2(t *testing.T) {
	tests := []struct{ x, want float64 }{
		{3.3449999999999998, 3.34}, // 10 - 6.655
		{3.345, 3.35},              // the literal is just above
		{2.675, 2.67},              // binary just below
		{0.125, 0.12},              // exact tie: to even
		{0.375, 0.38},
		{-0.125, -0.12},
		{1.005, 1},
		{0.005, 0.01},
		{4.999, 5},
		{1e15 + 0.125, 1e15 + 0.125},
		{123456789012.345, 123456789012.35}, // slow path
		{-2.5e-3, -0},
		{math.Inf(1), math.Inf(1)},
	}
	for _, tt := range tests {
		if got := round2(tt.x); got != tt.want {
			t.Errorf("round2(%v) = %v, want %v", tt.x, got, tt.want)
		}
	}
}

func TestPyFloat(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10", 10, true}, {" 1.5 ", 1.5, true}, {"1_000", 1000, true}, {"1e3", 1000, true},
		{".5", 0.5, true}, {"5.", 5, true}, {"-2", -2, true}, {"+2", 2, true},
		{"inf", math.Inf(1), true}, {"-Infinity", math.Inf(-1), true}, {"1e400", math.Inf(1), true},
		{"", 0, false}, {"abc", 0, false}, {"0x10", 0, false}, {"1__0", 0, false}, {"_1", 0, false},
		{"1_", 0, false}, {"1,5", 0, false}, {"infinite", 0, false}, {"1 2", 0, false},
	}
	for _, tt := range tests {
		got, ok := pyFloat(tt.in)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("pyFloat(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if got, ok := pyFloat("nan"); !ok || !math.IsNaN(got) {
		t.Errorf("pyFloat(%q) = %v, %v; want NaN, true", "nan", got, ok)
	}
}

// add adds at run time, in float64 (constant expressions are exact).
func add(a, b float64) float64 { return a + b }
