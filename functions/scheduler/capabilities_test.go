package scheduler

import (
	"testing"

	"github.com/basalt-storage/basalt"
)

func TestCapabilitiesFilter(t *testing.T) {
	lvm := caps(
		"volume_backend_name", "lvmbackend",
		"vendor_name", "Open Source",
		"driver_version", "3.0.0",
		"storage_protocol", []any{"iSCSI", "iscsi"},
		"multiattach", true,
		"thin_provisioning_support", "False",
		"QoS_support", false,
		"total_volumes", 12.0,
		"free_capacity_gb", 33.5,
		"replication_count", "3",
		"nothing", nil,
		"nested", map[string]any{"a": map[string]any{"b": "deep"}, "n": 5.0},
		"flags", []any{1.0, "x", nil, []any{"inner"}},
		"empty", []any{},
		"lists", []any{"x", []any{"inner"}},
		"go_int", 1,
	)
	tests := []struct {
		key, req string
		want     bool
	}{
		// No operator: exact equality with the whole value, no coercion.
		{"volume_backend_name", "lvmbackend", true},
		{"volume_backend_name", "LVMbackend", false},
		{"volume_backend_name", "lvmbackend x", false},
		{"multiattach", "True", false}, // a bool never equals a string
		{"total_volumes", "12", false}, // nor does a number
		{"vendor_name", "Open Source", true},
		{"storage_protocol", "iscsi", true}, // any list element
		{"storage_protocol", "FC", false},
		{"nothing", "", false},
		{"replication_count", "3", true},

		// = is numeric >= (sic).
		{"total_volumes", "= 10", true},
		{"total_volumes", "= 12", true},
		{"total_volumes", "= 13", false},
		{"replication_count", "= 2.5", true}, // numeric strings convert
		{"multiattach", "= 1", true},         // float(True) is 1
		{"volume_backend_name", "= 1", false},
		{"total_volumes", "= abc", false},
		{"total_volumes", "=", false},
		{"total_volumes", "= 13 1", false}, // only the first word counts

		// Float comparisons.
		{"total_volumes", "== 12.0", true},
		{"total_volumes", "== 12 wrong", true},
		{"total_volumes", "!= 12", false},
		{"total_volumes", "!= 11", true},
		{"free_capacity_gb", ">= 33.5", true},
		{"free_capacity_gb", ">= 34", false},
		{"free_capacity_gb", "<= 33.5", true},
		{"free_capacity_gb", "<= 1e1", false},
		{"driver_version", ">= 2", false}, // "3.0.0" is not a number
		{"replication_count", ">= inf", false},
		{"replication_count", "!= nan", true},
		{"replication_count", "== nan", false},

		// String comparisons: first word only, no coercion.
		{"vendor_name", "s== Open", false},
		{"vendor_name", "s== Open Source", false}, // never matches "Open Source"
		{"vendor_name", "s!= Open", true},
		{"total_volumes", "s!= 12", true}, // a number is never equal to a string
		{"total_volumes", "s== 12", false},
		{"total_volumes", "s< 99", false}, // Cinder raises TypeError; Basalt: no match
		{"driver_version", "s< 4", true},
		{"driver_version", "s<= 3.0.0", true},
		{"driver_version", "s> 3", true},
		{"driver_version", "s>= 3.1", false},
		{"storage_protocol", "s== iSCSI", true},
		{"nothing", "s!= x", false}, // null fails every operator, s!= included

		// <in>: substring, list element, dict key.
		{"storage_protocol", "<in> SCS", true},
		{"volume_backend_name", "<in> mback", true},
		{"volume_backend_name", "<in> xyz", false},
		{"total_volumes", "<in> 1", false}, // Cinder raises TypeError
		{"lists", "<in> inner", true},      // element of a nested list
		{"flags", "<in> inner", true},      // Cinder raises on 1 first; Basalt skips it
		{"nested", "<in> a", true},         // key of a dict
		{"nested", "<in> z", false},

		// <is>: bool_from_string on both sides.
		{"multiattach", "<is> True", true},
		{"multiattach", "<is> yes", true},
		{"multiattach", "<is> False", false},
		{"thin_provisioning_support", "<is> True", false}, // "False" is false here
		{"thin_provisioning_support", "<is> False", true},
		{"QoS_support", "<is> False", true},
		{"vendor_name", "<is> False", true}, // unrecognized strings are false
		{"total_volumes", "<is> True", false},
		{"multiattach", "<is>", false},

		// <or>: words at even positions, exact strings.
		{"volume_backend_name", "<or> lvm <or> lvmbackend", true},
		{"volume_backend_name", "<or> lvmbackend", true},
		{"volume_backend_name", "<or> lvm <or> LVMBACKEND", false},
		{"volume_backend_name", "<or> a lvmbackend b", false}, // odd positions are separators
		{"volume_backend_name", "<or> a junk lvmbackend", true},
		{"total_volumes", "<or> 12 <or> 12.0", false}, // never matches a number
		{"storage_protocol", "<or> FC <or> iscsi", true},
		{"volume_backend_name", "<or>", false}, // Cinder raises IndexError

		// Missing keys and nesting.
		{"no_such_key", "anything", false},
		{"no_such_key", "s!= x", false},
		{"capabilities:volume_backend_name", "lvmbackend", true},
		{"capabilities:nested:a:b", "deep", true},
		{"capabilities:nested:n", ">= 5", true},
		{"capabilities:nested:a:c", "deep", false},
		{"capabilities:volume_backend_name:x", "lvmbackend", false}, // a string has no keys
		{"capabilities:storage_protocol:0", "iSCSI", false},         // nor has a list

		// Other scopes are ignored.
		{"provisioning:type", "thick", true},
		{"RESKEY:availability_zones", "az9", true},
		{"vendor:feature", "<is> True", true},

		{"go_int", "<is> True", true}, // pools built in Go: ints are numbers
		{"go_int", ">= 1", true},
		{"go_int", "1", false},
		{"empty", "x", false}, // an empty list matches nothing
		{"flags", "", false},
	}
	for _, tt := range tests {
		r := &Request{Type: &basalt.VolumeType{ExtraSpecs: map[string]string{tt.key: tt.req}}}
		p := &basalt.Pool{Name: "block1@lvm#pool", Capabilities: lvm}
		if got, reason := (CapabilitiesFilter{}).Fits(r, p); got != tt.want {
			t.Errorf("Fits(%s=%q) = %v (%s), want %v", tt.key, tt.req, got, reason, tt.want)
		}
	}
}

func TestCapabilitiesFilterReasons(t *testing.T) {
	p := &basalt.Pool{Name: "block1@lvm#pool", Capabilities: caps("volume_backend_name", "lvm", "multiattach", false, "storage_protocol", []any{"iSCSI", "iscsi"})}
	tests := []struct {
		specs  map[string]string
		reason string
	}{
		{nil, ""},
		{map[string]string{"volume_backend_name": "lvm"}, ""},
		{map[string]string{"volume_backend_name": "lvmbackend"}, `volume_backend_name "lvm" does not match "lvmbackend"`},
		{map[string]string{"multiattach": "<is> True"}, `multiattach False does not match "<is> True"`},
		{map[string]string{"capabilities:storage_protocol": "FC"}, `capabilities:storage_protocol ["iSCSI", "iscsi"] does not match "FC"`},
		{map[string]string{"replication_enabled": "<is> True"}, `missing capability "replication_enabled"`},
		// Keys are checked in order, so the first failing one is named.
		{map[string]string{"b": "x", "a": "y"}, `missing capability "a"`},
	}
	for _, tt := range tests {
		r := &Request{Type: &basalt.VolumeType{ExtraSpecs: tt.specs}}
		if ok, reason := (CapabilitiesFilter{}).Fits(r, p); reason != tt.reason || ok != (tt.reason == "") {
			t.Errorf("Fits(%v) = %v, %q; want %q", tt.specs, ok, reason, tt.reason)
		}
	}
}

func TestCapabilitiesFilterOnlineExtend(t *testing.T) {
	tests := []struct {
		name     string
		value    any // online_extend_support; missingValue: absent
		op       string
		attached bool
		want     bool
	}{
		{"attached extend, support false", false, OpExtendVolume, true, false},
		{"detached extend, support false", false, OpExtendVolume, false, true},
		{"attached extend, support true", true, OpExtendVolume, true, true},
		{"attached extend, support missing", missingValue, OpExtendVolume, true, true},
		{"attached extend, support \"False\" is not False", "False", OpExtendVolume, true, true},
		{"attached extend, support 0 is not False", 0.0, OpExtendVolume, true, true},
		{"attached create, support false", false, OpCreateVolume, true, true},
	}
	for _, tt := range tests {
		c := caps()
		if tt.value != missingValue {
			c[keyOnlineExt] = tt.value
		}
		r := &Request{Operation: tt.op, Attached: tt.attached, SizeGB: 1}
		if got, reason := (CapabilitiesFilter{}).Fits(r, &basalt.Pool{Capabilities: c}); got != tt.want {
			t.Errorf("%s: Fits(%v) = %v (%s), want %v", tt.name, c, got, reason, tt.want)
		}
	}
}

type missing struct{}

var missingValue any = missing{}
