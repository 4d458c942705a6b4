package agents

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/drivers/fake"
	"github.com/basalt-storage/basalt/drivers/file"
	"log/slog"
)

// Duration is a time.Duration written as "10s" in configuration files.
type Duration time.Duration

// UnmarshalJSON reads "10s" (or a number of seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err := json.Unmarshal(b, &secs); err != nil {
			return fmt.Errorf("duration must be a string like \"10s\" or a number of seconds: %s", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as "10s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Config is one agent: one storage host with its backends. It is read from a JSON file.
type Config struct {
	// Host names the storage host; backends are host@backend.
	Host string `json:"host"`
	// Zone is the availability zone of every backend of the host (default "nova").
	Zone string `json:"availability_zone"`
	// ReportInterval is the heartbeat period (Cinder's report_interval, default 10s).
	ReportInterval Duration `json:"report_interval"`
	// CapabilityInterval is the capability-report period (backend_stats_polling_interval,
	// default 60s); each report is delayed by up to a tenth of it at random (jitter).
	CapabilityInterval Duration `json:"capability_interval"`
	// StopGrace is how long a stopping agent lets driver calls finish (default 30s). Calls
	// still running then are cancelled and re-run when the agent starts again.
	StopGrace Duration `json:"stop_grace"`
	// OperationLease is how long an operation the agent holds stays alive without news from it
	// (default 60s). Every third of it the agent extends the deadline of each command it has
	// accepted and not finished, queued or running, to now plus the lease; an agent that is down
	// or frozen stops, and the reconciler ends its operations once their lease runs out.
	OperationLease Duration `json:"operation_lease"`
	// DataDir is where drivers without a directory of their own keep data.
	DataDir  string          `json:"data_dir"`
	Backends []BackendConfig `json:"backends"`
	// ISCSI configures the host's iSCSI target (tgt) for backends whose target_protocol is
	// iscsi; NBD the NBD exports (nbdkit) of those whose target_protocol is nbd.
	ISCSI ISCSIConfig `json:"iscsi"`
	NBD   NBDConfig   `json:"nbd"`
}

// ISCSIConfig configures the agent's tgtd.
type ISCSIConfig struct {
	// Portal is the ip:port that tgtd listens on and consumers connect to
	// (default 127.0.0.1:3260).
	Portal string `json:"portal"`
	// ControlPort is tgtd's management port, so that several agents on one machine each run
	// their own tgtd (default 0). The agent starts its tgtd when none answers there.
	ControlPort int `json:"control_port"`
}

// NBDConfig configures the agent's NBD exports.
type NBDConfig struct {
	// Address is the IP address nbdkit listens on and consumers connect to (default 127.0.0.1).
	Address string `json:"address"`
}

// BackendConfig is one backend of the host (one entry of Cinder's enabled_backends).
type BackendConfig struct {
	Name              string `json:"name"`
	Driver            string `json:"driver"` // "file" or "fake"
	VolumeBackendName string `json:"volume_backend_name"`
	// Workers bounds the driver calls that run at once (default 4).
	Workers int `json:"workers"`
	// Delay holds every mutating driver call for this long before it runs: a test and demo
	// aid that makes slow storage visible. Default 0.
	Delay Duration `json:"delay"`
	// TargetProtocol is how consumers reach the backend's volumes when the driver hands over a
	// local path: "local" (the path itself, for consumers on the host; the default), "iscsi"
	// (a tgt target per volume) or "nbd" (an nbdkit export per attachment). It is reported as
	// the pools' storage_protocol.
	TargetProtocol string `json:"target_protocol"`
	// ExtraCapabilities are merged into every pool's capabilities.
	ExtraCapabilities map[string]any `json:"extra_capabilities"`
	// Options are the driver's own settings.
	Options json.RawMessage `json:"options"`
}

func (c *Config) setDefaults() {
	if c.Zone == "" {
		c.Zone = basalt.DefaultZone
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = Duration(10 * time.Second)
	}
	if c.CapabilityInterval == 0 {
		c.CapabilityInterval = Duration(60 * time.Second)
	}
	if c.StopGrace == 0 {
		c.StopGrace = Duration(30 * time.Second)
	}
	if c.OperationLease == 0 {
		c.OperationLease = Duration(60 * time.Second)
	}
	for i := range c.Backends {
		if c.Backends[i].Workers == 0 {
			c.Backends[i].Workers = 4
		}
		if c.Backends[i].TargetProtocol == "" {
			c.Backends[i].TargetProtocol = TargetLocal
		}
		if c.Backends[i].VolumeBackendName == "" {
			c.Backends[i].VolumeBackendName = c.Backends[i].Name
		}
	}
}

// Validate reports a configuration that cannot work, naming the field.
func (c *Config) Validate() error {
	if c.Host == "" || strings.ContainsAny(c.Host, "@#") {
		return fmt.Errorf("agent config: host %q must be non-empty and contain no '@' or '#'", c.Host)
	}
	if len(c.Backends) == 0 {
		return errors.New("agent config: at least one backend is required")
	}
	seen := map[string]bool{}
	for _, b := range c.Backends {
		if b.Name == "" || strings.ContainsAny(b.Name, "@#") {
			return fmt.Errorf("agent config: backend name %q must be non-empty and contain no '@' or '#'", b.Name)
		}
		if seen[b.Name] {
			return fmt.Errorf("agent config: backend %q is listed twice", b.Name)
		}
		seen[b.Name] = true
		if b.Driver != "file" && b.Driver != "fake" {
			return fmt.Errorf("agent config: backend %q: unknown driver %q (want file or fake)", b.Name, b.Driver)
		}
		switch b.TargetProtocol {
		case TargetLocal, TargetISCSI, TargetNBD:
		default:
			return fmt.Errorf("agent config: backend %q: unknown target_protocol %q (want local, iscsi or nbd)", b.Name, b.TargetProtocol)
		}
		if b.Workers < 1 {
			return fmt.Errorf("agent config: backend %q: workers must be at least 1", b.Name)
		}
	}
	if c.ReportInterval <= 0 || c.CapabilityInterval <= 0 {
		return errors.New("agent config: report_interval and capability_interval must be positive")
	}
	if c.OperationLease < Duration(30*time.Millisecond) {
		return fmt.Errorf("agent config: operation_lease %s is too short (at least 30ms)", time.Duration(c.OperationLease))
	}
	return nil
}

// LoadConfig reads an agent configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("agent config %s: %w", path, err)
	}
	return c, nil
}

// openDriver builds the driver of one backend.
func openDriver(c *Config, b BackendConfig, logger *slog.Logger) (drivers.Driver, error) {
	switch b.Driver {
	case "file":
		var o struct {
			Dir                      string  `json:"dir"`
			Pool                     string  `json:"pool"`
			ReservedPercentage       int     `json:"reserved_percentage"`
			MaxOverSubscriptionRatio float64 `json:"max_over_subscription_ratio"`
			DisableReflink           bool    `json:"disable_reflink"`
		}
		if err := decodeOptions(b, &o); err != nil {
			return nil, err
		}
		if o.Dir == "" {
			if c.DataDir == "" {
				return nil, fmt.Errorf("backend %s: the file driver needs options.dir or the agent's data_dir", b.Name)
			}
			o.Dir = filepath.Join(c.DataDir, c.Host, b.Name)
		}
		return file.New(file.Config{Dir: o.Dir, Pool: o.Pool, BackendName: b.VolumeBackendName,
			ReservedPercentage: o.ReservedPercentage, MaxOverSubscriptionRatio: o.MaxOverSubscriptionRatio,
			DisableReflink: o.DisableReflink}, logger)
	case "fake":
		var o struct {
			Pools           []string `json:"pools"`
			TotalCapacityGB float64  `json:"total_capacity_gb"`
			Latency         Duration `json:"latency"`
			// Fail makes every call of an operation ("create", "extend", ...) fail with the
			// given message: failure drills and tests.
			Fail map[string]string `json:"fail"`
			// Stats is the raw report the driver sends instead of its own, as a Cinder
			// driver's get_volume_stats() returns it (fake.Config.Stats): scheduler tests.
			Stats map[string]any `json:"stats"`
		}
		if err := decodeOptions(b, &o); err != nil {
			return nil, err
		}
		cfg := fake.Config{Pools: o.Pools, TotalCapacityGB: o.TotalCapacityGB,
			BackendName: b.VolumeBackendName, Latency: time.Duration(o.Latency), Stats: o.Stats}
		if len(o.Fail) > 0 {
			cfg.Fail = func(op, id string) error {
				if msg, ok := o.Fail[op]; ok {
					return errors.New(msg)
				}
				return nil
			}
		}
		return fake.New(cfg, logger)
	}
	return nil, fmt.Errorf("backend %s: unknown driver %q", b.Name, b.Driver)
}

func decodeOptions(b BackendConfig, v any) error {
	if len(b.Options) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b.Options)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("backend %s: options: %w", b.Name, err)
	}
	return nil
}
