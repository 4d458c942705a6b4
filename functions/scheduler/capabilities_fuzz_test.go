package scheduler

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
)

// FuzzCapabilities feeds an extra spec written by an admin (key and value, Cinder's operator
// language: "<in> x", "<is> True", ">= 10", "<or> a <or> b", ...) and capabilities reported by
// an agent (any JSON object) to CapabilitiesFilter. Neither may panic, and the two ways the
// filter runs must agree: Fits on one pool, and Place, which compiles the specs once and
// evaluates them over the PoolSet's columns.
func FuzzCapabilities(f *testing.F) {
	for _, s := range []struct{ key, req, caps string }{
		{"capabilities:multiattach", "<is> True", `{"multiattach": true}`},
		{"thin_provisioning_support", "<is> False", `{"thin_provisioning_support": "False"}`},
		{"capabilities:storage_protocol", "<in> iSCSI", `{"storage_protocol": ["iSCSI", "iscsi"]}`},
		{"volume_backend_name", "lvm", `{"volume_backend_name": "lvm"}`},
		{"capabilities:total_volumes", ">= 10", `{"total_volumes": 12}`},
		{"free_capacity_gb", "<= 1_000.5", `{"free_capacity_gb": "33.5"}`},
		{"replication_count", "== 3", `{"replication_count": "3"}`},
		{"driver_version", "s>= 3.0", `{"driver_version": "3.0.0"}`},
		{"vendor_name", "<or> Open <or> Source", `{"vendor_name": "Source"}`},
		{"capabilities:nested:a:b", "s== deep", `{"nested": {"a": {"b": "deep"}}}`},
		{"capabilities:", "x", `{"": "x"}`},
		{"capabilities", "= 1", `{"capabilities": 2}`},
		{"free", "= nan", `{"free": "inf"}`},
		{"flags", "!= -Infinity", `{"flags": [1, "x", null, ["inner"]]}`},
		{"x", "<or>", `{"x": null}`},
		{"provisioning:type", "thin", `{}`},
	} {
		f.Add(s.key, s.req, []byte(s.caps))
	}
	sch, err := New(Config{Filters: []string{"CapabilitiesFilter"}, Weighers: []string{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, req string, capsJSON []byte) {
		var c basalt.Capabilities
		if json.Unmarshal(capsJSON, &c) != nil || c == nil {
			return
		}
		r := &Request{ID: "v", SizeGB: 1, Type: &basalt.VolumeType{ExtraSpecs: map[string]string{key: req}}}
		pools := []basalt.Pool{{Name: "h@b#p", Backend: "h@b", Capabilities: c}}
		fits, why := CapabilitiesFilter{}.Fits(r, &pools[0])
		if !fits && why == "" {
			t.Errorf("Fits(%q=%q, %s) = false without a reason", key, req, capsJSON)
		}
		d := sch.Place(r, pools)
		if placed := d.Best() != nil; placed != fits {
			t.Errorf("%q=%q on %s: Fits = %v (%s), Place placed = %v", key, req, capsJSON, fits, why, placed)
		}
		_ = d.Explain()
	})
}

var decimal = regexp.MustCompile(`^[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$`)

// FuzzPyFloat checks Python's float() as the extra-spec operators use it: no panic, the fast
// path equal to strconv.ParseFloat, and plain decimals read as ParseFloat reads them (Python
// overflows to ±inf).
func FuzzPyFloat(f *testing.F) {
	for _, s := range []string{"20.0", "1_000", " 3 ", "-inf", "Infinity", "nan", "1e400", "1__0", "_1",
		"0x10", "1e", ".", "1.", ".5", "+-1", "１", "1.7976931348623157e308", "123456789012345.6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := pyFloat(s)
		if v, sok := simpleDecimal(s); sok {
			want, err := strconv.ParseFloat(s, 64)
			if err != nil || v != want {
				t.Errorf("simpleDecimal(%q) = %v, ParseFloat = %v, %v", s, v, want, err)
			}
		}
		if d := strings.TrimSpace(s); decimal.MatchString(d) {
			want, err := strconv.ParseFloat(d, 64)
			if ne, isNum := err.(*strconv.NumError); err != nil && !(isNum && ne.Err == strconv.ErrRange) {
				t.Fatalf("ParseFloat(%q): %v", d, err)
			}
			if !ok || got != want {
				t.Errorf("pyFloat(%q) = %v, %v; ParseFloat = %v", s, got, ok, want)
			}
		}
		_ = boolFromString(s)
	})
}
