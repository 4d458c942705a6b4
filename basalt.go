// Package basalt is the domain vocabulary of Basalt, a block-storage control plane that speaks
// the OpenStack Block Storage (Cinder) v3 API: volumes, volume types, services, pools, user
// messages and operations, with their statuses and legal transitions. It imports nothing but the
// standard library; every other package builds on it.
package basalt

import (
	"encoding/json"
	"strings"
	"time"
)

// TimeLayout is how every timestamp leaves the API: UTC, six fractional digits, no zone suffix.
// gophercloud fails to parse a trailing "Z".
const TimeLayout = "2006-01-02T15:04:05.000000"

// DefaultTypeName is the name of the volume type used when a request names none.
const DefaultTypeName = "__DEFAULT__"

// DefaultZone is the availability zone of a backend whose configuration names none.
const DefaultZone = "nova"

// VolumeStatus is the status of a volume as Cinder names it.
type VolumeStatus string

// Volume statuses used by Basalt (a subset of Cinder's VolumeStatus).
const (
	StatusCreating      VolumeStatus = "creating"
	StatusAvailable     VolumeStatus = "available"
	StatusDeleting      VolumeStatus = "deleting"
	StatusError         VolumeStatus = "error"
	StatusErrorDeleting VolumeStatus = "error_deleting"
	StatusInUse         VolumeStatus = "in-use"
	StatusAttaching     VolumeStatus = "attaching"
	StatusDetaching     VolumeStatus = "detaching"
	StatusExtending     VolumeStatus = "extending"
	StatusErrorExtend   VolumeStatus = "error_extending"
	StatusMaintenance   VolumeStatus = "maintenance"
	StatusErrorRestore  VolumeStatus = "error_restoring"
	StatusErrorManaging VolumeStatus = "error_managing"
	StatusReverting     VolumeStatus = "reverting"
	StatusReserved      VolumeStatus = "reserved"
)

// AllVolumeStatuses lists every status an admin may set with os-reset_status.
var AllVolumeStatuses = []VolumeStatus{
	StatusCreating, StatusAvailable, StatusDeleting, StatusError, StatusErrorDeleting,
	StatusInUse, StatusAttaching, StatusDetaching, StatusExtending, StatusErrorExtend,
	StatusMaintenance, StatusErrorRestore, StatusErrorManaging, StatusReserved,
}

// Transitional reports whether s is a status that work in flight holds: the Doing of a rule of
// the state machine (states.go). A volume in such a status has an operation record with a
// deadline, except attaching and detaching held by an attachment (the attachments API): those
// last until the consumer completes or deletes the attachment, as in Cinder.
func (s VolumeStatus) Transitional() bool {
	for _, t := range StateMachine {
		if t.Volume != nil && t.Volume.Doing == s {
			return true
		}
	}
	return false
}

// Deletable reports whether a volume in status s may be deleted without force (the state
// machine's delete_volume rule).
func (s VolumeStatus) Deletable() bool { return VolumeTransitions[KindDeleteVolume].CanStart(s, false) }

// Attach statuses of a volume, which are also the statuses of an attachment (Cinder's
// VolumeAttachStatus).
const (
	AttachDetached       = "detached"
	AttachAttached       = "attached"
	AttachAttaching      = "attaching"
	AttachDetaching      = "detaching"
	AttachReserved       = "reserved"
	AttachErrorAttaching = "error_attaching"
	AttachErrorDetaching = "error_detaching"
)

// A Volume is a block device owned by a project and placed on one pool.
type Volume struct {
	ID               string            `json:"id"`
	ProjectID        string            `json:"project_id"`
	UserID           string            `json:"user_id"`
	Name             *string           `json:"name"`
	Description      *string           `json:"description"`
	Size             int               `json:"size"`
	Status           VolumeStatus      `json:"status"`
	AttachStatus     string            `json:"attach_status"`
	AvailabilityZone string            `json:"availability_zone"`
	VolumeTypeID     string            `json:"volume_type_id"`
	VolumeTypeName   string            `json:"volume_type_name"`
	Host             string            `json:"host,omitempty"` // host@backend#pool once placed
	SnapshotID       *string           `json:"snapshot_id"`
	SourceVolID      *string           `json:"source_volid"`
	Metadata         map[string]string `json:"metadata"`
	Bootable         bool              `json:"bootable"`
	Multiattach      bool              `json:"multiattach"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        *time.Time        `json:"updated_at"`
	// ReadOnly is the admin metadata flag set by os-update_readonly_flag.
	ReadOnly bool `json:"readonly,omitempty"`
	// PreviousStatus is the status the operation holding the volume started from (the state
	// machine's Begin keeps it): an extend returns to it.
	PreviousStatus VolumeStatus `json:"previous_status,omitempty"`
	// Snapshots counts the volume's snapshots (in any status). It is changed in the same
	// compare-and-set as the snapshot records, so a delete never races a snapshot create.
	Snapshots int `json:"snapshots,omitempty"`
	// OpID is the operation currently holding the volume in a transitional status, if any.
	OpID string `json:"op_id,omitempty"`
	// StatusReason says why the volume is in an error status.
	StatusReason string `json:"status_reason,omitempty"`
	// Copies are the operations copying this volume's bytes into a new volume (clones). While
	// one is pending the volume is neither deleted nor reverted.
	Copies []string `json:"copies,omitempty"`
	// Attachments are the volume's attachments, in creation order. They live in the volume's
	// record, so a change of an attachment and of the volume's status is one compare-and-set.
	Attachments []*Attachment `json:"attachments,omitempty"`
}

// Attachment returns the volume's attachment id, or nil.
func (v *Volume) Attachment(id string) *Attachment {
	for _, a := range v.Attachments {
		if a.ID == id {
			return a
		}
	}
	return nil
}

// RemoveAttachment drops attachment id from the volume and reports whether it was there.
func (v *Volume) RemoveAttachment(id string) bool {
	for i, a := range v.Attachments {
		if a.ID == id {
			v.Attachments = append(v.Attachments[:i], v.Attachments[i+1:]...)
			return true
		}
	}
	return false
}

// RecomputeAttachStatus sets the volume's attach_status and status from its attachments, as
// Cinder does after an attachment changes: the attach status is the alphabetically first status
// among attachments not in error (attached < attaching < detaching < reserved), or detached;
// the status follows it (attached → in-use, detached → available, the others by name). Only a
// volume whose status is one the attachments decide is changed: an operation in flight
// (extending, deleting, ...) keeps its status.
func (v *Volume) RecomputeAttachStatus() {
	switch v.Status {
	case StatusAvailable, StatusInUse, StatusAttaching, StatusDetaching, StatusReserved:
	default:
		return
	}
	first := ""
	for _, a := range v.Attachments {
		if a.Status == AttachErrorAttaching || a.Status == AttachErrorDetaching {
			continue
		}
		if first == "" || a.Status < first {
			first = a.Status
		}
	}
	if first == "" {
		first = AttachDetached
	}
	v.AttachStatus = first
	switch first {
	case AttachAttached:
		v.Status = StatusInUse
	case AttachDetached:
		v.Status = StatusAvailable
	default:
		v.Status = VolumeStatus(first)
	}
}

// Attachment modes.
const (
	ModeRW = "rw"
	ModeRO = "ro"
)

// An Attachment connects a volume to a consumer (an instance or a host). Its status is one of
// the Attach* constants: reserved (created without a connector) → attaching (connected: it has
// connection info) → attached (the consumer completed it) → gone when deleted;
// error_attaching when the backend could not export the volume.
type Attachment struct {
	ID           string `json:"id"`
	VolumeID     string `json:"volume_id"`
	ProjectID    string `json:"project_id"`
	InstanceUUID string `json:"instance_uuid,omitempty"`
	Status       string `json:"status"`
	// Mode is rw or ro; empty until a request or the volume's read-only flag sets it.
	Mode         string         `json:"mode,omitempty"`
	Connector    map[string]any `json:"connector,omitempty"`
	AttachedHost string         `json:"attached_host,omitempty"`
	Mountpoint   string         `json:"mountpoint,omitempty"`
	// ConnectionInfo is what the backend's export answered: driver_volume_type and data.
	ConnectionInfo map[string]any `json:"connection_info,omitempty"`
	// ExportID names the export on the volume's backend: the attachment id for the
	// attachments API, the legacy connection id for os-attach.
	ExportID   string     `json:"export_id,omitempty"`
	AttachedAt *time.Time `json:"attached_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  *time.Time `json:"updated_at,omitempty"`
	// OpID is the connection operation in flight, if any.
	OpID         string `json:"op_id,omitempty"`
	StatusReason string `json:"status_reason,omitempty"`
}

// Backend returns the host@backend part of the volume's placement, or "" when unplaced.
func (v *Volume) Backend() string { b, _, _ := strings.Cut(v.Host, "#"); return b }

// A VolumeType steers placement through its extra specs.
type VolumeType struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description *string           `json:"description"`
	IsPublic    bool              `json:"is_public"`
	ExtraSpecs  map[string]string `json:"extra_specs"`
	CreatedAt   time.Time         `json:"created_at"`
}

// Zones returns the availability zones named by the type's RESKEY:availability_zones extra spec,
// blanks dropped, or nil when it names none.
func (t *VolumeType) Zones() []string {
	var zs []string
	for _, z := range strings.Split(t.ExtraSpecs["RESKEY:availability_zones"], ",") {
		if z = strings.TrimSpace(z); z != "" {
			zs = append(zs, z)
		}
	}
	return zs
}

// Service binaries.
const (
	BinaryVolume    = "cinder-volume"
	BinaryScheduler = "cinder-scheduler"
)

// A Service is one heartbeating worker: a backend of an agent (binary cinder-volume, host
// host@backend) or a scheduler replica.
type Service struct {
	Binary         string    `json:"binary"`
	Host           string    `json:"host"`
	Zone           string    `json:"zone"`
	Disabled       bool      `json:"disabled"`
	DisabledReason *string   `json:"disabled_reason"`
	UpdatedAt      time.Time `json:"updated_at"` // last heartbeat
	CreatedAt      time.Time `json:"created_at"`
	// Busy counts the driver calls running on the backend at the last heartbeat.
	Busy int `json:"busy"`
}

// Up reports whether the service's last heartbeat is within downTime of now.
func (s *Service) Up(now time.Time, downTime time.Duration) bool {
	return now.Sub(s.UpdatedAt) <= downTime
}

// Capabilities is what a backend reports for one pool, in Cinder's key names and JSON types:
// capacities are numbers or the strings "infinite" and "unknown".
type Capabilities map[string]any

// A Pool is one pool of one backend, as the scheduler sees it.
type Pool struct {
	Name         string       `json:"name"`    // host@backend#pool
	Backend      string       `json:"backend"` // host@backend
	Zone         string       `json:"zone"`
	Capabilities Capabilities `json:"capabilities"`
	UpdatedAt    time.Time    `json:"updated_at"`
}

// PoolName joins a backend (host@backend) and a pool name into host@backend#pool.
func PoolName(backend, pool string) string { return backend + "#" + pool }

// SplitHost splits host@backend#pool into its parts; missing parts are "".
func SplitHost(s string) (host, backend, pool string) {
	rest, pool, _ := strings.Cut(s, "#")
	host, backend, _ = strings.Cut(rest, "@")
	return host, backend, pool
}

// A Message is a user message (Cinder messages API): why something the user asked for failed.
type Message struct {
	ID           string    `json:"id"`
	ProjectID    string    `json:"project_id"`
	EventID      string    `json:"event_id"`
	UserMessage  string    `json:"user_message"`
	Level        string    `json:"message_level"`
	RequestID    string    `json:"request_id"`
	ResourceType string    `json:"resource_type"`
	ResourceUUID string    `json:"resource_uuid"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"guaranteed_until"`
}

// Event ids of user messages (VOLUME_<resource>_<action>_<detail>, Cinder's message_field).
const (
	EventScheduleNoBackend = "VOLUME_VOLUME_001_003" // schedule allocate volume: no backend available
	EventCreateDriverError = "VOLUME_VOLUME_001_012" // driver failed to create the volume
	EventUnknownError      = "VOLUME_VOLUME_001_001"
	EventExtendNoBackend   = "VOLUME_VOLUME_007_003" // extend volume: no backend available
	EventExtendDriverError = "VOLUME_VOLUME_007_010" // driver failed to extend the volume
	EventSnapshotNoBackend = "VOLUME_VOLUME_SNAPSHOT_009_003"
	EventSnapshotError     = "VOLUME_VOLUME_SNAPSHOT_009_013" // snapshot create error
	EventAttachError       = "VOLUME_VOLUME_002_002"          // attach volume: driver failed to export
)

// Operation states.
const (
	OpPending = "pending"
	OpDone    = "done"
	OpFailed  = "failed"
)

// An Operation is the record of work in flight on a volume: who owns it and by when it must
// end. The reconciler drives an operation past its deadline to a final state with a reason, so
// no volume waits forever.
type Operation struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	VolumeID string `json:"volume_id"`
	// SnapshotID is set for snapshot operations.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// AttachmentID is set for connection operations of an attachment.
	AttachmentID string `json:"attachment_id,omitempty"`
	// Topic and Command are the command the operation sends, kept in its record: the
	// transaction that starts the operation writes them with the state change (an outbox), so
	// neither exists without the other, and a relay sends a command that was not sent at once.
	Topic   string          `json:"topic,omitempty"`
	Command json.RawMessage `json:"command,omitempty"`
	// Send marks a record being written with a command still to send (it is not stored).
	Send      bool      `json:"-"`
	ProjectID string    `json:"project_id"`
	RequestID string    `json:"request_id"`
	State     string    `json:"state"`
	Owner     string    `json:"owner"` // "scheduler" or the backend (host@backend) doing the work
	Attempts  int       `json:"attempts"`
	Deadline  time.Time `json:"deadline"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SnapshotStatus is the status of a snapshot.
type SnapshotStatus string

// Snapshot statuses.
const (
	SnapCreating      SnapshotStatus = "creating"
	SnapAvailable     SnapshotStatus = "available"
	SnapDeleting      SnapshotStatus = "deleting"
	SnapError         SnapshotStatus = "error"
	SnapErrorDeleting SnapshotStatus = "error_deleting"
	SnapRestoring     SnapshotStatus = "restoring"
)

// AllSnapshotStatuses lists every status an admin may set with os-reset_status.
var AllSnapshotStatuses = []SnapshotStatus{SnapCreating, SnapAvailable, SnapDeleting, SnapError,
	SnapErrorDeleting, SnapRestoring}

// A Snapshot is a point-in-time copy of a volume, kept on the volume's backend.
type Snapshot struct {
	ID          string         `json:"id"`
	ProjectID   string         `json:"project_id"`
	UserID      string         `json:"user_id"`
	VolumeID    string         `json:"volume_id"`
	Name        *string        `json:"name"`
	Description *string        `json:"description"`
	Size        int            `json:"size"`
	Status      SnapshotStatus `json:"status"`
	// PreviousStatus is the status the operation holding the snapshot started from.
	PreviousStatus SnapshotStatus    `json:"previous_status,omitempty"`
	Metadata       map[string]string `json:"metadata"`
	// Host is the pool (host@backend#pool) of the volume when the snapshot was taken.
	Host         string     `json:"host"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    *time.Time `json:"updated_at"`
	OpID         string     `json:"op_id,omitempty"`
	StatusReason string     `json:"status_reason,omitempty"`
	// Copies are the operations creating volumes from this snapshot. While one is pending the
	// snapshot is not deleted.
	Copies []string `json:"copies,omitempty"`
}

// Backend returns the host@backend part of the snapshot's pool.
func (s *Snapshot) Backend() string { b, _, _ := strings.Cut(s.Host, "#"); return b }
