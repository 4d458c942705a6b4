package basalt_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
)

// volumeStatuses is every status a volume record may hold.
var volumeStatuses = append(slices.Clone(basalt.AllVolumeStatuses), basalt.StatusReverting, basalt.StatusManaging,
	basalt.StatusUnmanaging, basalt.StatusErrorUnmanaging)

// pseudo are the outcomes of rules that are no status.
var pseudo = []basalt.VolumeStatus{basalt.StatusPrevious, basalt.StatusByAttachments, basalt.StatusRemoved, basalt.StatusAny}

// TestKindsAreTheCommandKinds: the table's kinds are the kinds of the commands and operation
// records that control, placement and results exchange.
func TestKindsAreTheCommandKinds(t *testing.T) {
	pairs := [][2]string{
		{basalt.KindCreateVolume, events.KindCreateVolume}, {basalt.KindDeleteVolume, events.KindDeleteVolume},
		{basalt.KindExtendVolume, events.KindExtendVolume}, {basalt.KindRevert, events.KindRevert},
		{basalt.KindManageVolume, events.KindManageVolume}, {basalt.KindUnmanageVolume, events.KindUnmanageVolume},
		{basalt.KindCreateSnapshot, events.KindCreateSnapshot}, {basalt.KindDeleteSnapshot, events.KindDeleteSnapshot},
		{basalt.KindReserve, events.KindReserve}, {basalt.KindBeginDetaching, events.KindBeginDetaching},
	}
	for _, p := range pairs {
		if p[0] != p[1] {
			t.Errorf("basalt kind %q != events kind %q", p[0], p[1])
		}
	}
	if len(basalt.StateMachine) != len(pairs) {
		t.Errorf("the table has %d rows, want one per kind (%d)", len(basalt.StateMachine), len(pairs))
	}
	seen := map[string]bool{}
	for _, tr := range basalt.StateMachine {
		if seen[tr.Kind] {
			t.Errorf("kind %s has two rows", tr.Kind)
		}
		seen[tr.Kind] = true
		if tr.Volume == nil && tr.Snapshot == nil {
			t.Errorf("kind %s changes nothing", tr.Kind)
		}
	}
}

// TestEveryTransitionalStatusHasOneOwner: a status that holds a resource belongs to exactly one
// kind, and Transitional() says so of exactly those statuses (Cinder's in-flight statuses).
func TestEveryTransitionalStatusHasOneOwner(t *testing.T) {
	owners := map[basalt.VolumeStatus][]string{}
	snapOwners := map[basalt.SnapshotStatus][]string{}
	for _, tr := range basalt.StateMachine {
		if tr.Volume != nil && tr.Volume.Doing != "" {
			owners[tr.Volume.Doing] = append(owners[tr.Volume.Doing], tr.Kind)
		}
		if tr.Snapshot != nil && tr.Snapshot.Doing != "" {
			snapOwners[tr.Snapshot.Doing] = append(snapOwners[tr.Snapshot.Doing], tr.Kind)
		}
	}
	for s, kinds := range owners {
		if len(kinds) != 1 {
			t.Errorf("volume status %s is held by %v, want exactly one kind", s, kinds)
		}
		if !slices.Contains(volumeStatuses, s) {
			t.Errorf("volume status %s held by %v is no volume status", s, kinds)
		}
	}
	for s, kinds := range snapOwners {
		if len(kinds) != 1 {
			t.Errorf("snapshot status %s is held by %v, want exactly one kind", s, kinds)
		}
		if !slices.Contains(basalt.AllSnapshotStatuses, s) {
			t.Errorf("snapshot status %s held by %v is no snapshot status", s, kinds)
		}
	}
	wantVol := []basalt.VolumeStatus{basalt.StatusCreating, basalt.StatusDeleting, basalt.StatusAttaching,
		basalt.StatusDetaching, basalt.StatusExtending, basalt.StatusReverting, basalt.StatusManaging, basalt.StatusUnmanaging}
	for _, s := range volumeStatuses {
		_, owned := owners[s]
		if s.Transitional() != owned {
			t.Errorf("%s.Transitional() = %v, but the table has it held: %v", s, s.Transitional(), owned)
		}
		if s.Transitional() != slices.Contains(wantVol, s) {
			t.Errorf("%s.Transitional() = %v, want %v", s, s.Transitional(), slices.Contains(wantVol, s))
		}
	}
	wantSnap := []basalt.SnapshotStatus{basalt.SnapCreating, basalt.SnapDeleting, basalt.SnapRestoring}
	for _, s := range basalt.AllSnapshotStatuses {
		if s.Transitional() != slices.Contains(wantSnap, s) {
			t.Errorf("snapshot %s.Transitional() = %v, want %v", s, s.Transitional(), slices.Contains(wantSnap, s))
		}
	}
	for _, s := range pseudo {
		if s.Transitional() || slices.Contains(basalt.AllVolumeStatuses, s) {
			t.Errorf("pseudo status %s is transitional or settable", s)
		}
	}
}

// resolved returns the statuses an outcome may put a volume in, for a rule's From.
func resolved(r *basalt.VolumeRule, to basalt.VolumeStatus) []basalt.VolumeStatus {
	switch to {
	case "", basalt.StatusRemoved:
		return nil
	case basalt.StatusPrevious:
		return append(slices.Clone(r.From), r.With...)
	case basalt.StatusByAttachments:
		return []basalt.VolumeStatus{basalt.StatusAvailable, basalt.StatusInUse}
	}
	return []basalt.VolumeStatus{to}
}

// TestOutcomesAreSettled: no operation starts from, or ends in, a status that holds a resource;
// failures of work a backend does end in an error status.
func TestOutcomesAreSettled(t *testing.T) {
	for _, tr := range basalt.StateMachine {
		if r := tr.Volume; r != nil {
			for _, s := range append(slices.Clone(r.From), r.With...) {
				if s.Transitional() {
					t.Errorf("%s starts from transitional volume status %s", tr.Kind, s)
				}
			}
			for name, to := range map[string]basalt.VolumeStatus{"success": r.Done, "failure": r.Failed, "no room": r.Unplaced} {
				for _, s := range resolved(r, to) {
					if s.Transitional() || !slices.Contains(volumeStatuses, s) {
						t.Errorf("%s ends (%s) in volume status %s: transitional or unknown", tr.Kind, name, s)
					}
				}
			}
			if r.Doing != "" && r.Failed == "" {
				t.Errorf("%s holds the volume but has no failure status", tr.Kind)
			}
		}
		if r := tr.Snapshot; r != nil {
			for name, to := range map[string]basalt.SnapshotStatus{"success": r.Done, "failure": r.Failed, "no room": r.Unplaced} {
				if to != "" && to != basalt.SnapRemoved && (to.Transitional() || !slices.Contains(basalt.AllSnapshotStatuses, to)) {
					t.Errorf("%s ends (%s) in snapshot status %s: transitional or unknown", tr.Kind, name, to)
				}
			}
		}
	}
	// Cinder's failure statuses of work a backend does.
	wantFailed := map[string]basalt.VolumeStatus{
		basalt.KindCreateVolume: basalt.StatusError, basalt.KindDeleteVolume: basalt.StatusErrorDeleting,
		basalt.KindExtendVolume: basalt.StatusErrorExtend, basalt.KindRevert: basalt.StatusError,
		basalt.KindManageVolume: basalt.StatusErrorManaging, basalt.KindUnmanageVolume: basalt.StatusErrorUnmanaging,
	}
	for kind, want := range wantFailed {
		if got := basalt.VolumeTransitions[kind].Failed; got != want || !got.IsError() {
			t.Errorf("%s fails to %s, want %s", kind, got, want)
		}
	}
	wantSnapFailed := map[string]basalt.SnapshotStatus{basalt.KindCreateSnapshot: basalt.SnapError,
		basalt.KindDeleteSnapshot: basalt.SnapErrorDeleting, basalt.KindRevert: basalt.SnapAvailable}
	for kind, want := range wantSnapFailed {
		if got := basalt.SnapshotTransitions[kind].Failed; got != want {
			t.Errorf("snapshot side of %s fails to %s, want %s", kind, got, want)
		}
	}
}

// TestCanStart: a status outside a rule's From is refused, one of its With only with its flag,
// and Cinder's rules hold case by case.
func TestCanStart(t *testing.T) {
	for _, tr := range basalt.StateMachine {
		r := tr.Volume
		if r == nil {
			continue
		}
		for _, s := range volumeStatuses {
			inFrom := slices.Contains(r.From, s)
			inWith := slices.Contains(r.With, s) || (slices.Contains(r.With, basalt.StatusAny) && s != r.Doing)
			if got := r.CanStart(s, false); got != inFrom {
				t.Errorf("%s.CanStart(%s, no flag) = %v, want %v", tr.Kind, s, got, inFrom)
			}
			if got := r.CanStart(s, true); got != (inFrom || inWith) {
				t.Errorf("%s.CanStart(%s, %s) = %v, want %v", tr.Kind, s, r.Flag, got, inFrom || inWith)
			}
		}
		if len(r.With) > 0 && r.Flag == "" {
			t.Errorf("%s allows more statuses with an unnamed flag", tr.Kind)
		}
	}
	vol := func(kind string, s basalt.VolumeStatus, flag bool) bool {
		return basalt.VolumeTransitions[kind].CanStart(s, flag)
	}
	snap := func(kind string, s basalt.SnapshotStatus, flag bool) bool {
		return basalt.SnapshotTransitions[kind].CanStart(s, flag)
	}
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"delete available", vol(basalt.KindDeleteVolume, basalt.StatusAvailable, false), true},
		{"delete error_managing", vol(basalt.KindDeleteVolume, basalt.StatusErrorManaging, false), true},
		{"delete in-use", vol(basalt.KindDeleteVolume, basalt.StatusInUse, false), false},
		{"delete error_deleting", vol(basalt.KindDeleteVolume, basalt.StatusErrorDeleting, false), false},
		{"force delete error_deleting", vol(basalt.KindDeleteVolume, basalt.StatusErrorDeleting, true), true},
		{"force delete extending", vol(basalt.KindDeleteVolume, basalt.StatusExtending, true), true},
		{"force delete deleting", vol(basalt.KindDeleteVolume, basalt.StatusDeleting, true), false},
		{"extend in-use", vol(basalt.KindExtendVolume, basalt.StatusInUse, false), false},
		{"online extend in-use", vol(basalt.KindExtendVolume, basalt.StatusInUse, true), true},
		{"online extend error", vol(basalt.KindExtendVolume, basalt.StatusError, true), false},
		{"revert in-use", vol(basalt.KindRevert, basalt.StatusInUse, false), false},
		{"revert to a restoring snapshot", snap(basalt.KindRevert, basalt.SnapRestoring, false), false},
		{"unmanage error_unmanaging", vol(basalt.KindUnmanageVolume, basalt.StatusErrorUnmanaging, false), false},
		{"snapshot in-use", vol(basalt.KindCreateSnapshot, basalt.StatusInUse, false), false},
		{"forced snapshot in-use", vol(basalt.KindCreateSnapshot, basalt.StatusInUse, true), true},
		{"forced snapshot of maintenance", vol(basalt.KindCreateSnapshot, basalt.StatusMaintenance, true), false},
		{"delete error snapshot", snap(basalt.KindDeleteSnapshot, basalt.SnapError, false), true},
		{"delete creating snapshot", snap(basalt.KindDeleteSnapshot, basalt.SnapCreating, false), false},
		{"force delete creating snapshot", snap(basalt.KindDeleteSnapshot, basalt.SnapCreating, true), true},
		{"force delete deleting snapshot", snap(basalt.KindDeleteSnapshot, basalt.SnapDeleting, true), false},
		{"reserve in-use", vol(basalt.KindReserve, basalt.StatusInUse, false), false},
		{"reserve in-use multiattach", vol(basalt.KindReserve, basalt.StatusInUse, true), true},
		{"begin_detaching available", vol(basalt.KindBeginDetaching, basalt.StatusAvailable, false), false},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: CanStart = %v, want %v", c.name, c.got, c.want)
		}
	}
	for _, s := range volumeStatuses {
		want := slices.Contains([]basalt.VolumeStatus{basalt.StatusAvailable, basalt.StatusError, basalt.StatusErrorRestore,
			basalt.StatusErrorExtend, basalt.StatusErrorManaging}, s)
		if s.Deletable() != want {
			t.Errorf("%s.Deletable() = %v, want %v (Cinder's delete)", s, s.Deletable(), want)
		}
	}
}

// TestBeginAndEnd: what Begin, Succeed, Fail and Unplace do to a record.
func TestBeginAndEnd(t *testing.T) {
	type rec struct {
		status, previous basalt.VolumeStatus
		reason, op       string
		attach           string
	}
	get := func(v *basalt.Volume) rec {
		return rec{v.Status, v.PreviousStatus, v.StatusReason, v.OpID, v.AttachStatus}
	}
	newVol := func(s basalt.VolumeStatus, attached bool) *basalt.Volume {
		v := &basalt.Volume{Status: s, AttachStatus: basalt.AttachDetached, StatusReason: "old", OpID: "op-old"}
		if attached {
			v.AttachStatus = basalt.AttachAttached
			v.Attachments = []*basalt.Attachment{{ID: "a", Status: basalt.AttachAttached}}
		}
		return v
	}
	cases := []struct {
		name  string
		kind  string
		from  basalt.VolumeStatus
		att   bool
		end   func(r *basalt.VolumeRule, v *basalt.Volume)
		begun rec
		ended rec
	}{
		{"create fails", basalt.KindCreateVolume, "", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "no disk") },
			rec{"creating", "", "", "op-1", "detached"}, rec{"error", "", "no disk", "", "detached"}},
		{"create not placed", basalt.KindCreateVolume, "", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Unplace(v, "no room") },
			rec{"creating", "", "", "op-1", "detached"}, rec{"error", "", "no room", "", "detached"}},
		{"online extend succeeds", basalt.KindExtendVolume, "in-use", true, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Succeed(v) },
			rec{"extending", "in-use", "", "op-1", "attached"}, rec{"in-use", "", "", "", "attached"}},
		{"extend succeeds", basalt.KindExtendVolume, "available", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Succeed(v) },
			rec{"extending", "available", "", "op-1", "detached"}, rec{"available", "", "", "", "detached"}},
		{"extend fails", basalt.KindExtendVolume, "available", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "driver") },
			rec{"extending", "available", "", "op-1", "detached"}, rec{"error_extending", "", "driver", "", "detached"}},
		{"online extend not placed", basalt.KindExtendVolume, "in-use", true, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Unplace(v, "full") },
			rec{"extending", "in-use", "", "op-1", "attached"}, rec{"in-use", "", "", "", "attached"}},
		{"delete fails", basalt.KindDeleteVolume, "error", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "busy") },
			rec{"deleting", "error", "", "op-1", "detached"}, rec{"error_deleting", "", "busy", "", "detached"}},
		{"revert fails", basalt.KindRevert, "available", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "io") },
			rec{"reverting", "available", "", "op-1", "detached"}, rec{"error", "", "io", "", "detached"}},
		{"manage fails", basalt.KindManageVolume, "", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "gone") },
			rec{"managing", "", "", "op-1", "detached"}, rec{"error_managing", "", "gone", "", "detached"}},
		{"unmanage fails", basalt.KindUnmanageVolume, "available", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "export") },
			rec{"unmanaging", "available", "", "op-1", "detached"}, rec{"error_unmanaging", "", "export", "", "detached"}},
		{"reserve expires", basalt.KindReserve, "available", false, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "late") },
			rec{"attaching", "available", "", "op-1", "detached"}, rec{"available", "", "", "", "detached"}},
		{"detach rolled back", basalt.KindBeginDetaching, "in-use", true, func(r *basalt.VolumeRule, v *basalt.Volume) { r.Fail(v, "late") },
			rec{"detaching", "in-use", "", "op-1", "attached"}, rec{"in-use", "", "", "", "attached"}},
	}
	for _, c := range cases {
		r := basalt.VolumeTransitions[c.kind]
		v := newVol(c.from, c.att)
		r.Begin(v, "op-1")
		if got := get(v); got != c.begun {
			t.Errorf("%s: after Begin %+v, want %+v", c.name, got, c.begun)
		}
		c.end(r, v)
		if got := get(v); got != c.ended {
			t.Errorf("%s: at the end %+v, want %+v", c.name, got, c.ended)
		}
	}
	// A rule that holds no status leaves the volume alone.
	v := newVol(basalt.StatusInUse, true)
	basalt.VolumeTransitions[basalt.KindCreateSnapshot].Begin(v, "op-1")
	if v.Status != basalt.StatusInUse || v.OpID != "op-old" {
		t.Errorf("a snapshot create moved its volume: %s (op %s)", v.Status, v.OpID)
	}

	snap := func(kind string, from basalt.SnapshotStatus, ok bool) (basalt.SnapshotStatus, string, string) {
		sn := &basalt.Snapshot{Status: from}
		r := basalt.SnapshotTransitions[kind]
		r.Begin(sn, "op-1")
		if sn.Status != r.Doing || sn.OpID != "op-1" || sn.PreviousStatus != from {
			t.Errorf("%s: after Begin %s (op %q, previous %q)", kind, sn.Status, sn.OpID, sn.PreviousStatus)
		}
		if ok {
			r.Succeed(sn)
		} else {
			r.Fail(sn, "why")
		}
		if sn.PreviousStatus != "" {
			t.Errorf("%s: previous status %q kept", kind, sn.PreviousStatus)
		}
		return sn.Status, sn.StatusReason, sn.OpID
	}
	snapCases := []struct {
		kind   string
		from   basalt.SnapshotStatus
		ok     bool
		status basalt.SnapshotStatus
		reason string
	}{
		{basalt.KindCreateSnapshot, "", true, basalt.SnapAvailable, ""},
		{basalt.KindCreateSnapshot, "", false, basalt.SnapError, "why"},
		{basalt.KindDeleteSnapshot, basalt.SnapAvailable, false, basalt.SnapErrorDeleting, "why"},
		{basalt.KindRevert, basalt.SnapAvailable, true, basalt.SnapAvailable, ""},
		{basalt.KindRevert, basalt.SnapAvailable, false, basalt.SnapAvailable, ""},
	}
	for _, c := range snapCases {
		if s, reason, op := snap(c.kind, c.from, c.ok); s != c.status || reason != c.reason || op != "" {
			t.Errorf("%s (ok %v): ends %s %q (op %q), want %s %q", c.kind, c.ok, s, reason, op, c.status, c.reason)
		}
	}
}

// TestDocumentedStateMachine: the table in docs/architecture.md is the Go table.
func TestDocumentedStateMachine(t *testing.T) {
	b, err := os.ReadFile("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, section, ok := strings.Cut(doc, "\n## The state machine\n")
	if !ok {
		t.Fatal(`docs/architecture.md has no section "## The state machine"`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	var got []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "|") {
			got = append(got, line)
		}
	}
	want := stateMachineTable()
	if !slices.Equal(got, want) {
		t.Errorf("the state machine in docs/architecture.md differs from the Go table (states.go); it should read:\n%s",
			strings.Join(want, "\n"))
	}
}

// stateMachineTable renders basalt.StateMachine as the markdown table of the documentation.
func stateMachineTable() []string {
	code := func(s string) string { return "`" + s + "`" }
	outcome := func(s string) string {
		switch s {
		case "":
			return "-"
		case string(basalt.StatusPrevious):
			return "previous status"
		case string(basalt.StatusByAttachments):
			return "`in-use` with attachments, else `available`"
		case string(basalt.StatusRemoved):
			return "record removed"
		}
		return code(s)
	}
	list := func(ss []string, doing string) string {
		if ss == nil {
			return "(new record)"
		}
		var out []string
		for _, s := range ss {
			if s == string(basalt.StatusAny) {
				out = append(out, "any but "+code(doing))
				continue
			}
			out = append(out, code(s))
		}
		return strings.Join(out, ", ")
	}
	row := func(kind, resource string, from, with []string, flag, doing, done, failed, unplaced string) string {
		withCell := "-"
		if len(with) > 0 {
			withCell = flag + ": " + list(with, doing)
		}
		doingCell := "(unchanged)"
		if doing != "" {
			doingCell = code(doing)
		}
		return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |", code(kind), resource, list(from, doing), withCell,
			doingCell, outcome(done), outcome(failed), outcome(unplaced))
	}
	vs := func(in []basalt.VolumeStatus) []string {
		if in == nil {
			return nil
		}
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = string(s)
		}
		return out
	}
	ss := func(in []basalt.SnapshotStatus) []string {
		if in == nil {
			return nil
		}
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = string(s)
			if s == basalt.SnapAny {
				out[i] = string(basalt.StatusAny)
			}
		}
		return out
	}
	lines := []string{
		"| kind | resource | starts from | also, with the flag | while running | success | failure | no room (scheduler) |",
		"|---|---|---|---|---|---|---|---|",
	}
	for _, tr := range basalt.StateMachine {
		if r := tr.Volume; r != nil {
			lines = append(lines, row(tr.Kind, "volume", vs(r.From), vs(r.With), r.Flag, string(r.Doing),
				string(r.Done), string(r.Failed), string(r.Unplaced)))
		}
		if r := tr.Snapshot; r != nil {
			lines = append(lines, row(tr.Kind, "snapshot", ss(r.From), ss(r.With), r.Flag, string(r.Doing),
				string(r.Done), string(r.Failed), string(r.Unplaced)))
		}
	}
	return lines
}
