package control

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
)

// SnapshotCreate is a request to snapshot a volume.
type SnapshotCreate struct {
	VolumeID    string
	Name        *string
	Description *string
	Force       bool
	Metadata    map[string]string
}

func snapshotNotFound(id string) error {
	return basalt.Errorf(basalt.ENOTFOUND, "Snapshot %s could not be found.", id)
}

// CreateSnapshot records a snapshot in status creating and sends it to the scheduler, which
// checks capacity on the volume's own pool and hands it to the volume's backend. The volume
// must be available (or in-use with force). Errors: ENOTFOUND, EINVALID, EOVERLIMIT (quota).
func (p *Plane) CreateSnapshot(ctx context.Context, req SnapshotCreate) (*basalt.Snapshot, error) {
	c := CallerFrom(ctx)
	if err := validateName("name", req.Name); err != nil {
		return nil, err
	}
	if err := validateName("description", req.Description); err != nil {
		return nil, err
	}
	if err := p.validateMetadata(req.Metadata); err != nil {
		return nil, err
	}
	vol, err := p.Volume(ctx, req.VolumeID)
	if err != nil {
		return nil, err
	}
	now := p.store.Now()
	md := req.Metadata
	if md == nil {
		md = map[string]string{}
	}
	sn := &basalt.Snapshot{ID: events.NewID(vol.ID), ProjectID: vol.ProjectID, UserID: c.UserID, VolumeID: vol.ID,
		Name: req.Name, Description: req.Description, Size: vol.Size, Metadata: md, Host: vol.Host, CreatedAt: now}
	op := p.newOp(ctx, events.KindCreateSnapshot, vol, "scheduler")
	basalt.SnapshotTransitions[basalt.KindCreateSnapshot].Begin(sn, op.ID)
	if err := p.charge(ctx, vol.ProjectID, "snap:"+sn.ID, quotaSnapshot(vol.VolumeTypeName, sn.Size)); err != nil {
		return nil, err
	}
	err = p.store.CreateSnapshot(ctx, sn, op, func(v *basalt.Volume) error {
		switch {
		case v.Host == "":
			return invalid("Invalid volume: Volume %s has not been placed on a backend yet.", v.ID)
		case basalt.VolumeTransitions[basalt.KindCreateSnapshot].CanStart(v.Status, req.Force):
		case v.Status == basalt.StatusInUse:
			return invalid("Invalid volume: Volume %s is in-use; use force to snapshot an in-use volume.", v.ID)
		default:
			return invalid("Invalid volume: Volume %s status must be available or in-use, but current status is: %s.", v.ID, v.Status)
		}
		sn.Host, sn.Size = v.Host, v.Size
		enqueue(op, events.TopicScheduler, events.Command{OpID: op.ID, RequestID: c.RequestID, Kind: events.KindCreateSnapshot,
			VolumeID: vol.ID, ProjectID: vol.ProjectID, SnapshotID: sn.ID, SourcePool: sn.Host,
			Volume: basalt.VolumeSpec{ID: vol.ID, SizeGB: sn.Size}})
		return nil
	})
	if err != nil {
		p.refundAfter(ctx, "snap:"+sn.ID, err)
		return nil, unavailable(p.logger, "create the snapshot", err)
	}
	p.send(ctx, op)
	p.logger.Info("snapshot create accepted", "snapshot_id", sn.ID, "volume_id", vol.ID, "op_id", op.ID, "request_id", c.RequestID)
	return sn, nil
}

// Snapshot returns snapshot id if the caller may see it, else ENOTFOUND.
func (p *Plane) Snapshot(ctx context.Context, id string) (*basalt.Snapshot, error) {
	sn, err := p.store.Snapshot(ctx, id)
	if err != nil {
		return nil, unavailable(p.logger, "read the snapshot", err)
	}
	if c := CallerFrom(ctx); !c.Admin && sn.ProjectID != c.ProjectID {
		return nil, snapshotNotFound(id)
	}
	return sn, nil
}

var snapshotFilters = []string{"name", "status", "volume_id", "metadata", "availability_zone", "consumes_quota"}

// Snapshots lists the snapshots the caller may see, filtered and paged, with their count when
// o.WithCount. Errors: EINVALID (a filter not allowed), ENOTFOUND (marker).
func (p *Plane) Snapshots(ctx context.Context, o ListOptions) (Page[*basalt.Snapshot], error) {
	c := CallerFrom(ctx)
	if err := checkFilters(c, o, snapshotFilters); err != nil {
		return Page[*basalt.Snapshot]{}, err
	}
	project := c.ProjectID
	if c.Admin && o.AllTenants {
		project = o.Filters["project_id"]
		delete(o.Filters, "project_id")
	}
	all, err := p.store.Snapshots(ctx, project)
	if err != nil {
		return Page[*basalt.Snapshot]{}, unavailable(p.logger, "list snapshots", err)
	}
	var out []*basalt.Snapshot
	for _, sn := range all {
		if snapshotMatches(sn, o.Filters) {
			out = append(out, sn)
		}
	}
	if len(o.Sort) > 0 {
		sortSnapshots(out, o.Sort)
	}
	page, more, err := paginate(out, o, func(s *basalt.Snapshot) string { return s.ID })
	if err != nil {
		return Page[*basalt.Snapshot]{}, snapshotNotFound(o.Marker)
	}
	return counted(Page[*basalt.Snapshot]{Items: page, More: more}, o, len(out)), nil
}

func snapshotMatches(sn *basalt.Snapshot, f map[string]string) bool {
	for k, want := range f {
		if handled, ok := matchCommon(k, want, sn.Name, string(sn.Status), sn.Metadata); handled {
			if !ok {
				return false
			}
			continue
		}
		if k == "volume_id" && sn.VolumeID != want {
			return false
		}
	}
	return true
}

func sortSnapshots(ss []*basalt.Snapshot, keys []SortKey) {
	str := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	sort.SliceStable(ss, func(i, j int) bool {
		for _, k := range keys {
			var c int
			switch k.Key {
			case "name", "display_name":
				c = strings.Compare(str(ss[i].Name), str(ss[j].Name))
			case "status":
				c = strings.Compare(string(ss[i].Status), string(ss[j].Status))
			case "size":
				c = cmpInt(int64(ss[i].Size), int64(ss[j].Size))
			case "id":
				c = strings.Compare(ss[i].ID, ss[j].ID)
			default:
				c = ss[i].CreatedAt.Compare(ss[j].CreatedAt)
			}
			if c != 0 {
				return (c > 0) == k.Desc
			}
		}
		return false
	})
}

// SnapshotUpdate changes a snapshot's name or description.
type SnapshotUpdate struct {
	Name        *string
	Description *string
}

// UpdateSnapshot applies u. Errors: ENOTFOUND, EINVALID.
func (p *Plane) UpdateSnapshot(ctx context.Context, id string, u SnapshotUpdate) (*basalt.Snapshot, error) {
	if u.Name == nil && u.Description == nil {
		return nil, invalid("Invalid input received: name or description is required to update a snapshot.")
	}
	if err := validateName("name", u.Name); err != nil {
		return nil, err
	}
	if err := validateName("description", u.Description); err != nil {
		return nil, err
	}
	if _, err := p.Snapshot(ctx, id); err != nil {
		return nil, err
	}
	sn, err := p.store.UpdateSnapshot(ctx, id, func(sn *basalt.Snapshot) error {
		if u.Name != nil {
			sn.Name = u.Name
		}
		if u.Description != nil {
			sn.Description = u.Description
		}
		return nil
	}, nil)
	if err != nil {
		return nil, unavailable(p.logger, "update the snapshot", err)
	}
	return sn, nil
}

// DeleteSnapshot starts deleting snapshot id: it goes to deleting and its backend is told.
// Only available and error snapshots may be deleted (force, admin: any but deleting). Of
// concurrent deletes exactly one starts the work.
func (p *Plane) DeleteSnapshot(ctx context.Context, id string, force bool) error {
	c := CallerFrom(ctx)
	if force {
		if err := requireAdmin(ctx); err != nil {
			return err
		}
	}
	if _, err := p.Snapshot(ctx, id); err != nil {
		return err
	}
	var op *basalt.Operation
	del := basalt.SnapshotTransitions[basalt.KindDeleteSnapshot]
	_, err := p.store.UpdateSnapshot(ctx, id, func(sn *basalt.Snapshot) error {
		if !del.CanStart(sn.Status, force) {
			return invalid("Invalid snapshot: Snapshot status must be available or error and must not be part of a group.")
		}
		if sn.Copies = p.pendingCopies(ctx, sn.Copies); len(sn.Copies) > 0 {
			return refuseCopied("snapshot", id, sn.Copies)
		}
		op = p.newSnapshotOp(ctx, events.KindDeleteSnapshot, sn, sn.Backend())
		enqueue(op, events.BackendTopic(sn.Backend()), events.Command{OpID: op.ID, RequestID: c.RequestID,
			Kind: events.KindDeleteSnapshot, VolumeID: sn.VolumeID, ProjectID: sn.ProjectID, SnapshotID: sn.ID,
			Backend: sn.Backend()})
		del.Begin(sn, op.ID)
		return nil
	}, func(*basalt.Snapshot) *basalt.Operation { return op })
	if err != nil {
		return unavailable(p.logger, "delete the snapshot", err)
	}
	p.send(ctx, op)
	return nil
}

func (p *Plane) newSnapshotOp(ctx context.Context, kind string, sn *basalt.Snapshot, owner string) *basalt.Operation {
	op := p.newOp(ctx, kind, &basalt.Volume{ID: sn.VolumeID, ProjectID: sn.ProjectID}, owner)
	op.SnapshotID = sn.ID
	return op
}

// ResetSnapshotStatus sets a snapshot's status (admin), ending any operation on it.
func (p *Plane) ResetSnapshotStatus(ctx context.Context, id string, status string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	st := basalt.SnapshotStatus(strings.ToLower(status))
	if !slices.Contains(basalt.AllSnapshotStatuses, st) {
		return invalid("Invalid input for field/attribute status. Value: %s. It must be one of the snapshot statuses.", status)
	}
	if _, err := p.Snapshot(ctx, id); err != nil {
		return err
	}
	var opID string
	if _, err := p.store.UpdateSnapshot(ctx, id, func(sn *basalt.Snapshot) error {
		sn.Status, sn.StatusReason = st, ""
		opID, sn.OpID = sn.OpID, ""
		return nil
	}, nil); err != nil {
		return unavailable(p.logger, "reset the snapshot's status", err)
	}
	p.endOp(ctx, opID, "status reset by an administrator")
	return nil
}

func (p *Plane) endOp(ctx context.Context, opID, reason string) {
	if err := p.store.FailOp(ctx, opID, reason); err != nil {
		p.logger.Warn("end operation", "op_id", opID, "err", err)
	}
}

// SnapshotMetadata returns snapshot id's metadata.
func (p *Plane) SnapshotMetadata(ctx context.Context, id string) (map[string]string, error) {
	sn, err := p.Snapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	return sn.Metadata, nil
}

// SetSnapshotMetadata merges md into snapshot id's metadata, or replaces it when replace is
// set, and returns the result.
func (p *Plane) SetSnapshotMetadata(ctx context.Context, id string, md map[string]string, replace bool) (map[string]string, error) {
	if err := p.validateMetadata(md); err != nil {
		return nil, err
	}
	if _, err := p.Snapshot(ctx, id); err != nil {
		return nil, err
	}
	sn, err := p.store.UpdateSnapshot(ctx, id, func(sn *basalt.Snapshot) error {
		merged := mergeMetadata(sn.Metadata, md, replace)
		if err := p.checkMetadataCount(len(merged)); err != nil {
			return err
		}
		sn.Metadata = merged
		return nil
	}, nil)
	if err != nil {
		return nil, unavailable(p.logger, "update snapshot metadata", err)
	}
	return sn.Metadata, nil
}

// DeleteSnapshotMetadata removes key from snapshot id's metadata (ENOTFOUND when absent).
func (p *Plane) DeleteSnapshotMetadata(ctx context.Context, id, key string) error {
	if _, err := p.Snapshot(ctx, id); err != nil {
		return err
	}
	_, err := p.store.UpdateSnapshot(ctx, id, func(sn *basalt.Snapshot) error {
		if _, ok := sn.Metadata[key]; !ok {
			return basalt.Errorf(basalt.ENOTFOUND, "Metadata item was not found")
		}
		delete(sn.Metadata, key)
		return nil
	}, nil)
	if err != nil {
		return unavailable(p.logger, "delete snapshot metadata", err)
	}
	return nil
}

func mergeMetadata(have, md map[string]string, replace bool) map[string]string {
	out := map[string]string{}
	if !replace {
		for k, v := range have {
			out[k] = v
		}
	}
	for k, v := range md {
		out[k] = v
	}
	return out
}
