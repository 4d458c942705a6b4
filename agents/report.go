package agents

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/events"
)

// cacheableProtocols are the protocols for which Cinder's volume manager marks pools
// cacheable (constants.CACHEABLE_PROTOCOLS: the FC, iSCSI and NVMe-oF variants).
var cacheableProtocols = []string{"FC", "fibre_channel", "fc", "iSCSI", "iscsi", "NVMe-oF", "NVMeOF", "nvmeof"}

// capabilityReport turns a driver's report into the backend's capability report, raw: the
// driver's keys and values as they are, a key it does not report absent, nothing of the backend
// level merged into the pools (the reader does that as Cinder's scheduler does). The agent adds
// only what it knows in the driver's stead or what Cinder's volume manager adds:
//
//   - volume_backend_name, from the backend's configuration (Cinder drivers read theirs);
//   - for drivers whose volumes the agent exports (drivers.Pather): storage_protocol, the
//     target protocol when it is not local (the pools' own too, where they report one), and
//     multiattach true in every pool: the agent's exports serve any number of consumers;
//   - location_info in every pool that reports none (driver:host@backend:pool);
//   - extra_capabilities, merged into every pool (into the backend's keys when the driver
//     reports no pools), as Cinder's volume manager merges them;
//   - cacheable true in every pool that does not report one, when the backend's
//     storage_protocol is an FC, iSCSI or NVMe-oF variant, and filter_function and
//     goodness_function null at the backend level when the driver reports none: what Cinder's
//     volume manager adds (_report_driver_status) before it sends the report.
//
// allocated_capacity_gb, which Cinder's volume manager also adds, comes from the scheduler's
// ledger when the report is read. The maps are JSON round-tripped, so that the scheduler sees
// the same types whether it reads the report from Redis or not.
func capabilityReport(b *backend, stats basalt.BackendStats) (events.CapabilityReport, error) {
	top := maps.Clone(stats.Backend)
	if top == nil {
		top = basalt.Capabilities{}
	}
	var pools []basalt.Capabilities
	if stats.Pools != nil {
		pools = make([]basalt.Capabilities, len(stats.Pools))
		for i, p := range stats.Pools {
			pools[i] = maps.Clone(p)
			if pools[i] == nil {
				pools[i] = basalt.Capabilities{}
			}
		}
	}
	// The dictionaries keys go to: every pool, or the backend's when it reports no pools.
	targets := pools
	if pools == nil {
		targets = []basalt.Capabilities{top}
	}

	top["volume_backend_name"] = b.cfg.VolumeBackendName
	if _, ok := b.driver.(drivers.Pather); ok {
		if proto, _ := top["storage_protocol"].(string); storageProtocol(b, proto) != proto {
			top["storage_protocol"] = storageProtocol(b, proto)
			for _, p := range pools {
				if _, ok := p["storage_protocol"]; ok {
					p["storage_protocol"] = top["storage_protocol"]
				}
			}
		}
		for _, p := range targets {
			p["multiattach"] = true
		}
	}
	for _, p := range pools {
		if _, ok := p["location_info"]; !ok {
			p["location_info"] = fmt.Sprintf("%s:%s:%v", b.cfg.Driver, b.name, p["pool_name"])
		}
	}
	for _, p := range targets {
		maps.Copy(p, b.cfg.ExtraCapabilities)
	}
	if proto, ok := top["storage_protocol"].(string); ok && slices.Contains(cacheableProtocols, proto) {
		cacheTargets := pools
		if len(pools) == 0 {
			cacheTargets = []basalt.Capabilities{top}
		}
		for _, p := range cacheTargets {
			if p["cacheable"] == nil {
				p["cacheable"] = true
			}
		}
	}
	for _, k := range []string{"filter_function", "goodness_function"} {
		if _, ok := top[k]; !ok {
			top[k] = nil
		}
	}

	rep := events.CapabilityReport{Backend: b.name, Capabilities: top, Pools: pools}
	raw, err := json.Marshal(rep)
	if err != nil {
		return events.CapabilityReport{}, fmt.Errorf("capabilities of %s: %w", b.name, err)
	}
	var norm events.CapabilityReport
	if err := json.Unmarshal(raw, &norm); err != nil {
		return events.CapabilityReport{}, fmt.Errorf("capabilities of %s: %w", b.name, err)
	}
	return norm, nil
}
