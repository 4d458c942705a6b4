package store

import (
	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/scheduler"
)

// DefaultPoolName names the single pool of a backend whose driver reports no pools and no
// volume_backend_name (Cinder's volume_utils.DEFAULT_POOL_NAME).
const DefaultPoolName = "_pool0"

// PoolsFromReport returns the pools of one backend's capability report, each pool's
// capabilities built as Cinder's scheduler host manager builds them when it consumes a report
// (BackendState.update_from_volume_capability, update_backend, update_pools and
// _append_backend_info):
//
//   - a pool's own keys are kept as reported, raw: a missing key stays missing (a missing
//     multiattach is not false, a missing provisioned_capacity_gb is not 0), and strings,
//     nulls, "infinite" and "unknown" reach the scheduler's filters and weighers unchanged;
//   - of the backend-level keys only these reach the pool: volume_backend_name, vendor_name and
//     driver_version where the pool's own are falsy (null when the backend has none either),
//     and storage_protocol; filter_function and goodness_function too, where the pool has none.
//     Any other backend-level key (online_extend_support, replication_enabled, QoS_support,
//     ...) is invisible to the scheduler, as in Cinder;
//   - storage_protocol is expanded to all its variants, the pool's own or, where that is
//     falsy, the backend's: "iSCSI" and "iscsi" both become ["iSCSI", "iscsi"], likewise the
//     FC, NFS and NVMe-oF variants (scheduler.PoolCapabilities), so that "<in> iSCSI" and
//     "<in> iscsi" both match;
//   - a report without pools (Pools null) is one pool, named after volume_backend_name
//     (DefaultPoolName when there is none), whose keys are the backend's.
//
// Where Cinder's host manager fails the whole scheduling request (a pool without pool_name),
// the pool is left out: pools without a non-empty string pool_name are skipped. Two pools of
// one name are one pool, the last one reported, as in Cinder's pool map. Reports written before
// the backend-level keys were reported apart (Capabilities nil) carry them in every pool; their
// storage_protocol is expanded all the same. The maps of rep are not changed and not shared with
// the pools returned.
func PoolsFromReport(rep events.CapabilityReport) []basalt.Pool {
	backend := rep.Capabilities
	if backend == nil {
		backend = basalt.Capabilities{}
	}
	if rep.Pools == nil && rep.Capabilities != nil {
		name, _ := backend["volume_backend_name"].(string)
		if name == "" {
			name = DefaultPoolName
		}
		return []basalt.Pool{{Name: basalt.PoolName(rep.Backend, name), Backend: rep.Backend, Zone: rep.Zone,
			Capabilities: scheduler.PoolCapabilities(backend, backend), UpdatedAt: rep.Timestamp}}
	}
	pools := make([]basalt.Pool, 0, len(rep.Pools))
	at := make(map[string]int, len(rep.Pools))
	for _, c := range rep.Pools {
		name, _ := c["pool_name"].(string)
		if name == "" {
			continue
		}
		p := basalt.Pool{Name: basalt.PoolName(rep.Backend, name), Backend: rep.Backend, Zone: rep.Zone,
			Capabilities: scheduler.PoolCapabilities(backend, c), UpdatedAt: rep.Timestamp}
		if i, ok := at[name]; ok {
			pools[i] = p
			continue
		}
		at[name] = len(pools)
		pools = append(pools, p)
	}
	return pools
}
