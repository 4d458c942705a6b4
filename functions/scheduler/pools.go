package scheduler

import "github.com/basalt-storage/basalt"

// PoolCapabilities returns what the scheduler sees of one pool of a backend, built as
// Cinder's BackendState._append_backend_info builds it: a copy of the pool's own report, with
// volume_backend_name, vendor_name and driver_version taken from the backend where the pool's
// are falsy (null when the backend has none either), storage_protocol expanded to its variants
// ("iSCSI" becomes ["iSCSI", "iscsi"]; the backend's when the pool names none), and
// filter_function and goodness_function copied when only the backend has them. No other
// backend-level key reaches the pool, so CapabilitiesFilter cannot see them. A backend that
// reports no pools is its own single pool: pass its report as both. Neither map is changed.
func PoolCapabilities(backend, pool basalt.Capabilities) basalt.Capabilities {
	c := make(basalt.Capabilities, len(pool)+6)
	for k, v := range pool {
		c[k] = v
	}
	for _, k := range []string{"volume_backend_name", "vendor_name", "driver_version"} {
		if !truthy(c[k]) {
			c[k] = backend[k]
		}
	}
	if p := c["storage_protocol"]; truthy(p) {
		c["storage_protocol"] = protocolVariants(p)
	} else {
		c["storage_protocol"] = protocolVariants(backend["storage_protocol"])
	}
	for _, k := range []string{"filter_function", "goodness_function"} {
		if _, ok := c[k]; !ok {
			if v, ok := backend[k]; ok {
				c[k] = v
			}
		}
	}
	return c
}

// protocolVariants is BackendState.get_storage_protocol_variants: a protocol with variants
// becomes the list of all of them; anything else is returned as is.
func protocolVariants(p any) any {
	s, ok := p.(string)
	if !ok {
		return p
	}
	for _, vs := range [][]string{
		{"iSCSI", "iscsi"},
		{"FC", "fibre_channel", "fc"},
		{"NFS", "nfs"},
		{"NVMe-oF", "NVMeOF", "nvmeof"},
	} {
		for _, v := range vs {
			if s == v {
				l := make([]any, len(vs))
				for i, v := range vs {
					l[i] = v
				}
				return l
			}
		}
	}
	return p
}
