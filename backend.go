package basalt

import "math"

// A VolumeSpec is what a driver needs to create a volume: its id, size and the pool it goes to.
type VolumeSpec struct {
	ID     string `json:"id"`
	SizeGB int    `json:"size_gb"`
	Pool   string `json:"pool"` // pool name within the backend (the part after '#')
}

// BackendStats is one backend's capability report, as Cinder's driver.get_volume_stats()
// returns it: the backend-level keys and one dictionary per pool, each exactly as the driver
// reports it. A key the driver does not report is absent (never a zero or false in its place),
// and a value is whatever JSON holds: a capacity may be a number, "infinite" or "unknown", a
// numeric string or null. Nothing is merged here: which backend-level keys a pool sees, and
// how, is decided where the report is consumed, as Cinder's scheduler host manager decides it
// (see functions/store.PoolsFromReport).
//
// Typical keys. Backend: volume_backend_name, vendor_name, driver_version, storage_protocol.
// Pool: pool_name (required, a non-empty string), total_capacity_gb, free_capacity_gb,
// provisioned_capacity_gb, reserved_percentage, max_over_subscription_ratio,
// thin_provisioning_support, thick_provisioning_support, total_volumes, multiattach,
// QoS_support, online_extend_support, backend_state. allocated_capacity_gb is not the
// driver's to report: the scheduler's ledger supplies it, as Cinder's volume manager does.
type BackendStats struct {
	// Backend holds the backend-level keys ("pools" is not one of them).
	Backend Capabilities `json:"backend"`
	// Pools holds one dictionary per pool. nil is a driver that reports no pools (Cinder's
	// legacy drivers): the backend is then its own single pool.
	Pools []Capabilities `json:"pools"`
}

// Number returns c[key] when it is a Go or JSON number (any integer or float type), and NaN
// and false when the key is missing or holds anything else (a string, a bool, null), so that
// a comparison with it fails. It is for code that expects a number, such as tests of a
// driver's own report; the scheduler reads values as Cinder does, strings included.
func (c Capabilities) Number(key string) (float64, bool) {
	switch v := c[key].(type) {
	case float64:
		return v, true
	case float32:
		return float64(v), true
	case int:
		return float64(v), true
	case int8:
		return float64(v), true
	case int16:
		return float64(v), true
	case int32:
		return float64(v), true
	case int64:
		return float64(v), true
	case uint:
		return float64(v), true
	case uint8:
		return float64(v), true
	case uint16:
		return float64(v), true
	case uint32:
		return float64(v), true
	case uint64:
		return float64(v), true
	}
	return math.NaN(), false
}
