package basalt

// A VolumeSpec is what a driver needs to create a volume: its id, size and the pool it goes to.
type VolumeSpec struct {
	ID     string `json:"id"`
	SizeGB int    `json:"size_gb"`
	Pool   string `json:"pool"` // pool name within the backend (the part after '#')
}

// BackendStats is one backend's report: backend-level facts and one entry per pool.
type BackendStats struct {
	VolumeBackendName   string      `json:"volume_backend_name"`
	VendorName          string      `json:"vendor_name"`
	DriverVersion       string      `json:"driver_version"`
	StorageProtocol     string      `json:"storage_protocol"`
	OnlineExtendSupport bool        `json:"online_extend_support"`
	Pools               []PoolStats `json:"pools"`
}

// PoolStats is the capacity and features of one pool. Capacities are in GiB.
type PoolStats struct {
	Name                     string  `json:"pool_name"`
	TotalCapacityGB          float64 `json:"total_capacity_gb"`
	FreeCapacityGB           float64 `json:"free_capacity_gb"`
	ProvisionedCapacityGB    float64 `json:"provisioned_capacity_gb"`
	ReservedPercentage       int     `json:"reserved_percentage"`
	MaxOverSubscriptionRatio float64 `json:"max_over_subscription_ratio"`
	ThinProvisioningSupport  bool    `json:"thin_provisioning_support"`
	ThickProvisioningSupport bool    `json:"thick_provisioning_support"`
	TotalVolumes             int     `json:"total_volumes"`
	Multiattach              bool    `json:"multiattach"`
	QoSSupport               bool    `json:"QoS_support"`
	// Extra holds further capabilities (from the driver or the backend's configuration) that
	// are merged into the pool's capability dictionary as they are.
	Extra map[string]any `json:"extra,omitempty"`
}

// Capabilities returns the Cinder-shaped capability dictionary of pool p of backend b: the pool's
// keys, then the backend-level keys the scheduler copies into every pool (volume_backend_name,
// vendor_name, driver_version, storage_protocol, online_extend_support), then p.Extra.
func (b BackendStats) Capabilities(p PoolStats) Capabilities {
	c := Capabilities{
		"pool_name":                   p.Name,
		"total_capacity_gb":           p.TotalCapacityGB,
		"free_capacity_gb":            p.FreeCapacityGB,
		"provisioned_capacity_gb":     p.ProvisionedCapacityGB,
		"reserved_percentage":         p.ReservedPercentage,
		"max_over_subscription_ratio": p.MaxOverSubscriptionRatio,
		"thin_provisioning_support":   p.ThinProvisioningSupport,
		"thick_provisioning_support":  p.ThickProvisioningSupport,
		"total_volumes":               p.TotalVolumes,
		"multiattach":                 p.Multiattach,
		"QoS_support":                 p.QoSSupport,
		"backend_state":               "up",
		"volume_backend_name":         b.VolumeBackendName,
		"vendor_name":                 b.VendorName,
		"driver_version":              b.DriverVersion,
		"storage_protocol":            b.StorageProtocol,
		"online_extend_support":       b.OnlineExtendSupport,
	}
	for k, v := range p.Extra {
		c[k] = v
	}
	return c
}
