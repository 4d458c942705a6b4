package basalt

import (
	"slices"
	"strings"
)

// The state machine: for each kind of operation that changes a volume's or a snapshot's status,
// the statuses it may start from, the status that holds the resource while it runs, and the
// status it ends in on success, on failure, and when the scheduler cannot place it. Control
// (which starts operations), placement (which places them) and results (which applies their
// outcomes and ends overdue ones) all go through this one table, so a rule is written once.
// docs/architecture.md ("The state machine") shows it; a test keeps the two equal.
//
// Every operation record goes pending → done | failed, and a final state never changes
// (store.UpdateOp refuses to touch an operation that ended): a redelivered outcome finds its
// operation ended and changes nothing.

// Operation kinds: the Kind of an operation record and of the command it sends. The events
// package names the same values (events.KindCreateVolume, ...).
const (
	KindCreateVolume   = "create_volume"
	KindDeleteVolume   = "delete_volume"
	KindExtendVolume   = "extend_volume"
	KindRevert         = "revert_to_snapshot"
	KindManageVolume   = "manage_volume"
	KindUnmanageVolume = "unmanage_volume"
	KindCreateSnapshot = "create_snapshot"
	KindDeleteSnapshot = "delete_snapshot"
	// KindReserve is a legacy os-reserve, KindBeginDetaching an os-begin_detaching: no agent
	// runs them; the reconciler ends them at their deadline (their failure).
	KindReserve        = "reserve"
	KindBeginDetaching = "begin_detaching"
)

// Outcomes of a rule that are not one fixed status. None is a status a record ever holds.
const (
	// StatusPrevious is the status the operation started from (Volume.PreviousStatus;
	// available when none was kept).
	StatusPrevious VolumeStatus = "(previous)"
	// StatusByAttachments is in-use when the volume has attachments, else available (and then
	// detached): Cinder's rule after an os-unreserve or an os-roll_detaching.
	StatusByAttachments VolumeStatus = "(attachments)"
	// StatusRemoved means the record is removed.
	StatusRemoved VolumeStatus = "(removed)"
	// StatusAny in VolumeRule.With allows any status but the rule's own Doing.
	StatusAny VolumeStatus = "(any)"
	// SnapRemoved means the snapshot's record is removed.
	SnapRemoved SnapshotStatus = "(removed)"
	// SnapAny in SnapshotRule.With allows any status but the rule's own Doing.
	SnapAny SnapshotStatus = "(any)"
)

// A VolumeRule is how one kind of operation moves a volume.
type VolumeRule struct {
	// From lists the statuses the operation may start from; nil for an operation that makes
	// the volume's record (create, manage).
	From []VolumeStatus
	// With lists the statuses it may also start from when the request's Flag is set (force,
	// online extend, a multiattach volume); StatusAny allows every status but Doing.
	With []VolumeStatus
	Flag string
	// Doing is the status that holds the volume while the operation runs; "" when the
	// operation leaves the volume's status alone (a snapshot create only checks it).
	Doing VolumeStatus
	// Done is the status on success, Failed on failure (a driver error, or the operation's
	// lease running out), Unplaced when the scheduler finds no room ("" when the scheduler
	// does not place this kind).
	Done, Failed, Unplaced VolumeStatus
}

// A SnapshotRule is how one kind of operation moves a snapshot.
type SnapshotRule struct {
	From []SnapshotStatus
	With []SnapshotStatus
	Flag string
	// Doing, Done, Failed and Unplaced are as VolumeRule's.
	Doing, Done, Failed, Unplaced SnapshotStatus
}

// A Transition is one row of the state machine: what an operation kind does to the volume it
// acts on and to the snapshot it acts on (nil: that side's status does not change).
type Transition struct {
	Kind     string
	Volume   *VolumeRule
	Snapshot *SnapshotRule
}

// deletableStatuses are the statuses a volume may be deleted (or unmanaged) from without force,
// as Cinder's volume API delete.
var deletableStatuses = []VolumeStatus{StatusAvailable, StatusError, StatusErrorRestore, StatusErrorExtend,
	StatusErrorManaging}

// StateMachine is the table, in the order the documentation shows it. It must not be changed.
var StateMachine = []Transition{
	{Kind: KindCreateVolume, Volume: &VolumeRule{
		Doing: StatusCreating, Done: StatusAvailable, Failed: StatusError, Unplaced: StatusError}},
	{Kind: KindDeleteVolume, Volume: &VolumeRule{From: deletableStatuses, With: []VolumeStatus{StatusAny}, Flag: "force",
		Doing: StatusDeleting, Done: StatusRemoved, Failed: StatusErrorDeleting}},
	{Kind: KindExtendVolume, Volume: &VolumeRule{From: []VolumeStatus{StatusAvailable},
		With: []VolumeStatus{StatusInUse}, Flag: "online (3.42)",
		Doing: StatusExtending, Done: StatusByAttachments, Failed: StatusErrorExtend, Unplaced: StatusPrevious}},
	{Kind: KindRevert,
		Volume: &VolumeRule{From: []VolumeStatus{StatusAvailable},
			Doing: StatusReverting, Done: StatusAvailable, Failed: StatusError},
		Snapshot: &SnapshotRule{From: []SnapshotStatus{SnapAvailable},
			Doing: SnapRestoring, Done: SnapAvailable, Failed: SnapAvailable}},
	{Kind: KindManageVolume, Volume: &VolumeRule{
		Doing: StatusManaging, Done: StatusAvailable, Failed: StatusErrorManaging}},
	{Kind: KindUnmanageVolume, Volume: &VolumeRule{From: deletableStatuses,
		Doing: StatusUnmanaging, Done: StatusRemoved, Failed: StatusErrorUnmanaging}},
	{Kind: KindCreateSnapshot,
		Volume: &VolumeRule{From: []VolumeStatus{StatusAvailable}, With: []VolumeStatus{StatusInUse}, Flag: "force"},
		Snapshot: &SnapshotRule{
			Doing: SnapCreating, Done: SnapAvailable, Failed: SnapError, Unplaced: SnapError}},
	// A cascade delete (delete_volume with cascade) moves the volume's snapshots by this rule too,
	// without its flag.
	{Kind: KindDeleteSnapshot, Snapshot: &SnapshotRule{From: []SnapshotStatus{SnapAvailable, SnapError},
		With: []SnapshotStatus{SnapAny}, Flag: "force",
		Doing: SnapDeleting, Done: SnapRemoved, Failed: SnapErrorDeleting}},
	{Kind: KindReserve, Volume: &VolumeRule{From: []VolumeStatus{StatusAvailable},
		With: []VolumeStatus{StatusInUse}, Flag: "multiattach",
		Doing: StatusAttaching, Done: StatusInUse, Failed: StatusByAttachments}},
	{Kind: KindBeginDetaching, Volume: &VolumeRule{From: []VolumeStatus{StatusInUse},
		Doing: StatusDetaching, Done: StatusByAttachments, Failed: StatusByAttachments}},
}

// VolumeTransitions is the volume side of StateMachine by kind; a kind that does not change a
// volume is absent (nil).
var VolumeTransitions = func() map[string]*VolumeRule {
	m := map[string]*VolumeRule{}
	for _, t := range StateMachine {
		if t.Volume != nil {
			m[t.Kind] = t.Volume
		}
	}
	return m
}()

// SnapshotTransitions is the snapshot side of StateMachine by kind.
var SnapshotTransitions = func() map[string]*SnapshotRule {
	m := map[string]*SnapshotRule{}
	for _, t := range StateMachine {
		if t.Snapshot != nil {
			m[t.Kind] = t.Snapshot
		}
	}
	return m
}()

// CanStart reports whether the operation may start on a volume in status s; flag says the
// request set the rule's Flag.
func (r *VolumeRule) CanStart(s VolumeStatus, flag bool) bool {
	if slices.Contains(r.From, s) {
		return true
	}
	return flag && (slices.Contains(r.With, s) || (slices.Contains(r.With, StatusAny) && s != r.Doing))
}

// Begin moves v into the operation opID: the status it starts from is kept in PreviousStatus,
// and the volume is held in Doing with no reason. A rule without Doing changes nothing.
func (r *VolumeRule) Begin(v *Volume, opID string) {
	if r.Doing == "" {
		return
	}
	v.PreviousStatus, v.Status, v.StatusReason, v.OpID = v.Status, r.Doing, "", opID
}

// Succeed ends the operation on v as a success: v takes Done and is no longer held. (For Done
// StatusRemoved the caller removes the record.)
func (r *VolumeRule) Succeed(v *Volume) { r.end(v, r.Done, "") }

// Fail ends the operation on v as a failure: v takes Failed, with reason when that is an error
// status.
func (r *VolumeRule) Fail(v *Volume, reason string) { r.end(v, r.Failed, reason) }

// Unplace ends the operation on v when the scheduler found no room for it: v takes Unplaced,
// with reason when that is an error status.
func (r *VolumeRule) Unplace(v *Volume, reason string) { r.end(v, r.Unplaced, reason) }

func (r *VolumeRule) end(v *Volume, to VolumeStatus, reason string) {
	switch to {
	case "", StatusRemoved:
		// The status is left alone, or the record goes.
	case StatusPrevious:
		v.Status = v.PreviousStatus
		if v.Status == "" {
			v.Status = StatusAvailable
		}
	case StatusByAttachments:
		v.Status = StatusAvailable
		if len(v.Attachments) > 0 {
			v.Status = StatusInUse
		} else {
			v.AttachStatus = AttachDetached
		}
	default:
		v.Status = to
	}
	v.StatusReason = ""
	if v.Status.IsError() {
		v.StatusReason = reason
	}
	v.PreviousStatus, v.OpID = "", ""
}

// IsError reports whether s is an error status (error, error_deleting, error_extending, ...).
func (s VolumeStatus) IsError() bool { return strings.HasPrefix(string(s), "error") }

// CanStart reports whether the operation may start on a snapshot in status s; flag says the
// request set the rule's Flag.
func (r *SnapshotRule) CanStart(s SnapshotStatus, flag bool) bool {
	if slices.Contains(r.From, s) {
		return true
	}
	return flag && (slices.Contains(r.With, s) || (slices.Contains(r.With, SnapAny) && s != r.Doing))
}

// Begin moves sn into the operation opID, as VolumeRule.Begin.
func (r *SnapshotRule) Begin(sn *Snapshot, opID string) {
	sn.PreviousStatus, sn.Status, sn.StatusReason, sn.OpID = sn.Status, r.Doing, "", opID
}

// Succeed ends the operation on sn as a success, as VolumeRule.Succeed.
func (r *SnapshotRule) Succeed(sn *Snapshot) { r.end(sn, r.Done, "") }

// Fail ends the operation on sn as a failure, as VolumeRule.Fail.
func (r *SnapshotRule) Fail(sn *Snapshot, reason string) { r.end(sn, r.Failed, reason) }

// Unplace ends the operation on sn when the scheduler found no room, as VolumeRule.Unplace.
func (r *SnapshotRule) Unplace(sn *Snapshot, reason string) { r.end(sn, r.Unplaced, reason) }

func (r *SnapshotRule) end(sn *Snapshot, to SnapshotStatus, reason string) {
	if to != "" && to != SnapRemoved {
		sn.Status = to
	}
	sn.StatusReason = ""
	if sn.Status.IsError() {
		sn.StatusReason = reason
	}
	sn.PreviousStatus, sn.OpID = "", ""
}

// IsError reports whether s is an error status (error, error_deleting).
func (s SnapshotStatus) IsError() bool { return strings.HasPrefix(string(s), "error") }

// Transitional reports whether s is a status that work in flight holds: the Doing of a rule of
// the state machine. A snapshot in such a status has an operation record with a deadline.
func (s SnapshotStatus) Transitional() bool {
	for _, t := range StateMachine {
		if t.Snapshot != nil && t.Snapshot.Doing == s {
			return true
		}
	}
	return false
}
