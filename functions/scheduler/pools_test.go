package scheduler

import (
	"reflect"
	"testing"

	"github.com/basalt-storage/basalt"
)

func TestPoolCapabilities(t *testing.T) {
	backend := caps("volume_backend_name", "lvmbackend", "vendor_name", "Open Source", "driver_version", "3.0.0",
		"storage_protocol", "iSCSI", "replication_enabled", true, "filter_function", "capabilities.x > 1")
	tests := []struct {
		name string
		pool basalt.Capabilities
		want basalt.Capabilities
	}{
		{"backend keys fill the pool", caps("pool_name", "p", keyTotal, 10.0),
			caps("pool_name", "p", keyTotal, 10.0, "volume_backend_name", "lvmbackend", "vendor_name", "Open Source",
				"driver_version", "3.0.0", "storage_protocol", []any{"iSCSI", "iscsi"}, "filter_function", "capabilities.x > 1")},
		{"the pool's own win, falsy ones do not", caps("volume_backend_name", "mine", "vendor_name", "", "storage_protocol", "fc", "filter_function", nil),
			caps("volume_backend_name", "mine", "vendor_name", "Open Source", "driver_version", "3.0.0",
				"storage_protocol", []any{"FC", "fibre_channel", "fc"}, "filter_function", nil)},
		{"protocols without variants stay", caps("storage_protocol", "RBD"),
			caps("volume_backend_name", "lvmbackend", "vendor_name", "Open Source", "driver_version", "3.0.0",
				"storage_protocol", "RBD", "filter_function", "capabilities.x > 1")},
	}
	for _, tt := range tests {
		pool := caps()
		for k, v := range tt.pool {
			pool[k] = v
		}
		got := PoolCapabilities(backend, tt.pool)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: PoolCapabilities(%v) = %v, want %v", tt.name, tt.pool, got, tt.want)
		}
		if !reflect.DeepEqual(pool, tt.pool) {
			t.Errorf("%s: PoolCapabilities changed the pool: %v", tt.name, tt.pool)
		}
	}
	if got := PoolCapabilities(caps(), caps()); got["storage_protocol"] != nil || got["volume_backend_name"] != nil {
		t.Errorf("PoolCapabilities(empty, empty) = %v, want null backend keys", got)
	}
	if _, ok := PoolCapabilities(backend, caps())["replication_enabled"]; ok {
		t.Errorf("PoolCapabilities copied a backend key other than Cinder's four")
	}
}
