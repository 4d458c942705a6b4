// Package events holds Basalt's message contracts, topic names, the bus (Watermill on Redis
// Streams with consumer groups), host presence (heartbeats and capability reports) and the
// Redis clients of every process (NewRedisClient: every call has a deadline).
package events

import (
	"strings"

	"github.com/basalt-storage/basalt"
)

// Topics. Each topic is a Redis stream of the same name.
const (
	// TopicScheduler carries commands that need placement (create_volume).
	TopicScheduler = "basalt.scheduler"
	// TopicResults carries outcomes from agents (and the scheduler's placement failures).
	TopicResults = "basalt.results"
	// TopicDeadLetter receives messages that failed every retry (the poison queue).
	TopicDeadLetter = "basalt.deadletter"
)

// HostTopic returns the topic of one storage host: the commands of every backend of the host,
// which its agent reads with one blocking subscription, however many backends it runs. (One
// topic per backend cost one subscription, and so one read every BlockTime, per backend: an
// idle agent of 1,000 backends kept Redis busy doing nothing.)
func HostTopic(host string) string { return "basalt.host." + host }

// BackendTopic returns the topic that carries the commands of backend (host@backend; a pool
// name, host@backend#pool, gives the same): the topic of its host (HostTopic). A command names
// its backend in Command.Backend, by which the host's agent hands it to the backend.
func BackendTopic(backend string) string {
	host, _, _ := basalt.SplitHost(backend)
	return HostTopic(host)
}

// LegacyBackendTopic returns the topic one backend (host@backend) had before backends' commands
// travelled on their host's topic. Nothing publishes to it any more: an agent that starts
// drains what is left on the legacy topics of its backends once (the upgrade), then reads only
// its host's topic.
func LegacyBackendTopic(backend string) string { return "basalt.volume." + backend }

// CurrentTopic returns the topic to send a stored command to: a legacy backend topic, kept by
// an operation record written before host topics, becomes its backend's host topic.
func CurrentTopic(topic string) string {
	if backend, ok := strings.CutPrefix(topic, "basalt.volume."); ok {
		return BackendTopic(backend)
	}
	return topic
}

// Command kinds.
const (
	KindCreateVolume   = "create_volume"
	KindDeleteVolume   = "delete_volume"
	KindExtendVolume   = "extend_volume"
	KindCreateSnapshot = "create_snapshot"
	KindDeleteSnapshot = "delete_snapshot"
	KindRevert         = "revert_to_snapshot"
	// KindInitializeConnection exports a volume for one consumer and answers with the
	// connection info (a request/reply: the API waits for the result).
	KindInitializeConnection = "initialize_connection"
	// KindTerminateConnection removes one export (ExportID) or every export of the volume
	// (AllExports). Teardown is always safe, so an agent runs it even when its operation has
	// ended: a detach sent while the agent was away completes when it returns.
	KindTerminateConnection = "terminate_connection"
)

// Operation kinds that no agent runs: the reconciler ends them at their deadline. A legacy
// os-reserve (the volume is attaching) is unreserved; an os-begin_detaching is rolled back.
const (
	KindReserve        = "reserve"
	KindBeginDetaching = "begin_detaching"
)

// Teardown reports whether commands of kind must run even after their operation ended.
func Teardown(kind string) bool { return kind == KindTerminateConnection }

// A Command asks for work on one volume. OpID identifies the operation across redeliveries:
// every consumer is idempotent by OpID.
type Command struct {
	OpID      string `json:"op_id"`
	RequestID string `json:"request_id"`
	Kind      string `json:"kind"`
	VolumeID  string `json:"volume_id"`
	ProjectID string `json:"project_id"`
	// Volume is what the agent creates; Pool is set by the scheduler.
	Volume basalt.VolumeSpec `json:"volume"`
	// Backend is host@backend, set once placed. Every command sent to a host's topic carries
	// it: the host's agent runs the command on that backend, and dead-letters a command for a
	// backend it does not run.
	Backend string `json:"backend,omitempty"`
	// Attempted lists the backends already tried for this operation (rescheduling).
	Attempted []string `json:"attempted,omitempty"`
	// SnapshotID is the snapshot created, deleted or reverted to, or the source of a volume.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// SourceVolumeID is the volume a clone copies.
	SourceVolumeID string `json:"source_volume_id,omitempty"`
	// SourcePool restricts placement to one pool (host@backend#pool): the pool of the source
	// of a clone or a volume from a snapshot, or the volume's own pool for an extend.
	SourcePool string `json:"source_pool,omitempty"`
	// OldSizeGB is the size before an extend; Volume.SizeGB is the new size.
	OldSizeGB int `json:"old_size_gb,omitempty"`
	// Snapshots lists snapshots to delete before the volume (a cascade delete).
	Snapshots []string `json:"snapshots,omitempty"`
	// ExportID names the export of a connection command; AttachmentID the attachment it
	// serves ("" for a legacy connection).
	ExportID     string `json:"export_id,omitempty"`
	AttachmentID string `json:"attachment_id,omitempty"`
	// Connector describes the consumer (os-brick's connector: initiator, host, ip, ...).
	Connector map[string]any `json:"connector,omitempty"`
	// Mode is the access mode of an export: rw or ro.
	Mode string `json:"mode,omitempty"`
	// AllExports asks a terminate_connection to remove every export of the volume.
	AllExports bool `json:"all_exports,omitempty"`
}

// A Result is the outcome of a command, published by the agent (or the scheduler).
type Result struct {
	OpID      string `json:"op_id"`
	RequestID string `json:"request_id"`
	Kind      string `json:"kind"`
	VolumeID  string `json:"volume_id"`
	// SnapshotID is the snapshot of a snapshot command.
	SnapshotID string `json:"snapshot_id,omitempty"`
	Backend    string `json:"backend,omitempty"`
	// Host is host@backend#pool for a placed create.
	Host string `json:"host,omitempty"`
	OK   bool   `json:"ok"`
	// Error says what failed, for the user message; empty when OK.
	Error string `json:"error,omitempty"`
	// Reschedule asks for the create to be placed elsewhere (a driver failure, not a bad request).
	Reschedule bool `json:"reschedule,omitempty"`
	// Attempted carries the backends tried so far, for rescheduling.
	Attempted []string `json:"attempted,omitempty"`
	// Command is the original command (for rescheduling, and what a cascade deleted).
	Command *Command `json:"command,omitempty"`
	// ConnectionInfo is an initialize_connection's answer: driver_volume_type and data.
	ConnectionInfo map[string]any `json:"connection_info,omitempty"`
	// Invalid says the failure is the request's fault (a bad connector), not the backend's.
	Invalid bool `json:"invalid,omitempty"`
}
