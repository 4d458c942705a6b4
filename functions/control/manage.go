package control

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/drivers"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/results"
)

// Manageable volumes (Cinder's manage_existing, microversion 3.8): a backend object that no
// record owns is adopted as a volume, and a volume is let go (unmanaged) without touching its
// object. Every Basalt driver keeps a volume's object under the volume's id, so an adopted
// volume keeps its object's id: no object is renamed, an adoption is a record written for what
// is there, and an unmanaged volume adopted again gets its old id back. An object is named in
// the API by its reference, {"source-name": "volume-<id>"} (Cinder's volume_name_template), or
// {"source-id": "<id>"}.

// volumeNamePrefix starts the source-name of every volume object (Cinder's "volume-%s").
const volumeNamePrefix = "volume-"

// VolumeReference returns the reference of the object of volume id, as the manageable-volumes
// listing shows it and as an adoption names it.
func VolumeReference(id string) map[string]string {
	return map[string]string{"source-name": volumeNamePrefix + id}
}

// referenceID returns the volume id that ref names: {"source-name": "volume-<id>"} or
// {"source-id": "<id>"} (both must then agree). Errors: EINVALID in Cinder's words for an
// invalid reference.
func referenceID(ref any) (string, error) {
	bad := func(reason string) error {
		b, _ := json.Marshal(ref)
		return invalid("Manage existing volume failed due to invalid backend reference %s: %s", b, reason)
	}
	m, ok := ref.(map[string]any)
	if !ok {
		return "", bad("Reference must contain source-name or source-id element.")
	}
	name, hasName := m["source-name"].(string)
	id, hasID := m["source-id"].(string)
	if hasName {
		fromName, ok := strings.CutPrefix(name, volumeNamePrefix)
		if !ok || !drivers.ValidID(fromName) {
			return "", bad(fmt.Sprintf("source-name must be %s<id>: the name under which Basalt's drivers keep a volume, as the manageable volumes list it.", volumeNamePrefix))
		}
		if hasID && id != fromName {
			return "", bad("source-name and source-id name different volumes.")
		}
		return fromName, nil
	}
	if !hasID {
		return "", bad("Reference must contain source-name or source-id element.")
	}
	if !drivers.ValidID(id) {
		return "", bad("source-id must be 1 to 64 letters, digits, '-' or '_'.")
	}
	return id, nil
}

// referenceName returns the name a reference compares by: its only value (Cinder sorts
// references by their smallest value).
func referenceName(ref map[string]string) string {
	var vals []string
	for _, v := range ref {
		vals = append(vals, v)
	}
	sort.Strings(vals)
	if len(vals) == 0 {
		return ""
	}
	return vals[0]
}

// A ManageableVolume is one volume a backend holds, as Cinder's manageable-volumes listing
// shows it. A volume that a record owns is not safe to manage: its reason is "already managed"
// and CinderID names the record.
type ManageableVolume struct {
	Reference     map[string]string
	Size          int
	SafeToManage  bool
	ReasonNotSafe *string
	CinderID      *string
	ExtraInfo     map[string]any
}

// ManageableQuery selects and orders the manageable volumes of one backend.
type ManageableQuery struct {
	// Host is host@backend, optionally with #pool: then only that pool's volumes are listed.
	Host string
	// Cluster names a cluster instead of a host, when Clusters (microversion 3.17) allows it.
	// Basalt has no clusters, so none is ever found.
	Cluster  string
	Clusters bool
	// Marker is the reference of the last volume of the previous page, as JSON.
	Marker string
	// Limit is the most volumes to return (at most MaxLimit; nil for MaxLimit), Offset how many to
	// skip after the marker.
	Limit  *int
	Offset int
	// SortKeys are reference or size (default reference); SortDirs asc or desc (default desc),
	// one per key.
	SortKeys []string
	SortDirs []string
}

// ManageableVolumes lists the volumes that q.Host's backend holds, as its agent last reported
// them (every capability interval), with those a record owns marked not safe to manage. It is
// for administrators. Errors: EFORBIDDEN; EINVALID (no host, or both a host and a cluster; sort
// keys or directions; the marker; a service that is disabled or down); ENOTFOUND (no such
// volume service, any cluster); EUNAVAILABLE.
func (p *Plane) ManageableVolumes(ctx context.Context, q ManageableQuery) ([]ManageableVolume, error) {
	if !CallerFrom(ctx).Admin {
		return nil, basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow volume_extension:list_manageable to be performed.")
	}
	if err := hostOrCluster(q.Host, q.Cluster, q.Clusters); err != nil {
		return nil, err
	}
	if len(q.SortKeys) == 0 {
		q.SortKeys = []string{"reference"}
	}
	for len(q.SortDirs) < len(q.SortKeys) {
		q.SortDirs = append(q.SortDirs, "desc")
	}
	if bad := unknown(q.SortKeys, "reference", "size"); len(bad) > 0 {
		return nil, invalid("Invalid sort keys passed: %s", strings.Join(bad, ", "))
	}
	if bad := unknown(q.SortDirs, "asc", "desc"); len(bad) > 0 {
		return nil, invalid("Invalid sort dirs passed: %s", strings.Join(bad, ", "))
	}
	if q.Cluster != "" {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Service cinder-volume could not be found in cluster %s: Basalt has no clusters.", q.Cluster)
	}
	svc, err := p.volumeService(ctx, q.Host)
	if err != nil {
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil, basalt.Errorf(basalt.ENOTFOUND, "Service cinder-volume could not be found on host %s.", q.Host)
		}
		return nil, err
	}
	backend, pool := svc.Host, poolOf(q.Host)
	inv, err := p.store.Inventory(ctx, backend)
	if err != nil {
		return nil, unavailable(p.logger, "read the backend's volumes", err)
	}
	var objects []basalt.VolumeSpec
	if inv != nil {
		for _, o := range inv.Volumes {
			if pool == "" || o.Pool == pool {
				objects = append(objects, o)
			}
		}
	}
	ids := make([]string, len(objects))
	for i, o := range objects {
		ids[i] = o.ID
	}
	owners, err := p.store.VolumesByID(ctx, ids)
	if err != nil {
		return nil, unavailable(p.logger, "read the backend's volumes", err)
	}
	out := make([]ManageableVolume, 0, len(objects))
	for _, o := range objects {
		out = append(out, manageable(o, owners[o.ID], backend))
	}
	sortManageable(out, q.SortKeys, q.SortDirs)
	return pageManageable(out, q)
}

// manageable describes object o of backend as the listing shows it; owner is the record with
// its id, if any.
func manageable(o basalt.VolumeSpec, owner *basalt.Volume, backend string) ManageableVolume {
	m := ManageableVolume{Reference: VolumeReference(o.ID), Size: o.SizeGB, SafeToManage: owner == nil}
	if owner == nil {
		return m
	}
	reason := "already managed"
	if b := owner.Backend(); b != "" && b != backend {
		// A record elsewhere has the object's id, which an adoption would keep.
		reason = fmt.Sprintf("volume id %s is taken by a volume on %s", o.ID, b)
	} else {
		m.CinderID = &owner.ID
	}
	m.ReasonNotSafe = &reason
	return m
}

// unknown returns the values of xs that are not among allowed.
func unknown(xs []string, allowed ...string) []string {
	var bad []string
	for _, x := range xs {
		if !slices.Contains(allowed, x) {
			bad = append(bad, x)
		}
	}
	return bad
}

// sortManageable orders vs by keys (reference or size), each in its direction, as Cinder's
// paginate_entries_list does: a stable sort that keeps the driver's order among equals.
func sortManageable(vs []ManageableVolume, keys, dirs []string) {
	sort.SliceStable(vs, func(i, j int) bool {
		for k, key := range keys {
			var c int
			switch key {
			case "reference":
				c = strings.Compare(referenceName(vs[i].Reference), referenceName(vs[j].Reference))
			case "size":
				c = cmpInt(int64(vs[i].Size), int64(vs[j].Size))
			}
			if c == 0 {
				continue
			}
			if dirs[k] == "asc" {
				return c < 0
			}
			return c > 0
		}
		return false
	})
}

// pageManageable applies q's marker, offset and limit as Cinder does: the page starts after the
// volume whose reference is the marker (a JSON object), skips Offset more, and holds at most
// Limit. Errors: EINVALID for a marker that is not JSON or names no listed volume.
func pageManageable(vs []ManageableVolume, q ManageableQuery) ([]ManageableVolume, error) {
	start := 0
	if q.Marker != "" {
		var parsed any
		if err := json.Unmarshal([]byte(q.Marker), &parsed); err != nil {
			return nil, invalid("Invalid input received: marker %s can not be analysed, please use json like format", q.Marker)
		}
		marker, _ := parsed.(map[string]any) // any other JSON value is no reference: not found
		start = slices.IndexFunc(vs, func(v ManageableVolume) bool { return marker != nil && sameReference(v.Reference, marker) })
		if start < 0 {
			return nil, invalid("Invalid input received: marker not found: %s", q.Marker)
		}
		start++
	}
	limit := MaxLimit
	if q.Limit != nil {
		limit = min(*q.Limit, MaxLimit)
	}
	from := min(start+q.Offset, len(vs))
	to := min(start+q.Offset+limit, len(vs))
	return vs[from:to], nil
}

// sameReference reports whether ref and marker hold the same keys and values.
func sameReference(ref map[string]string, marker map[string]any) bool {
	if len(ref) != len(marker) {
		return false
	}
	for k, v := range ref {
		if s, ok := marker[k].(string); !ok || s != v {
			return false
		}
	}
	return true
}

// hostOrCluster checks that a request names a host, or (when clusters may be named) exactly one
// of a host and a cluster, as Cinder's get_cluster_host does. Errors: EINVALID.
func hostOrCluster(host, cluster string, clusters bool) error {
	switch {
	case clusters && (host == "") == (cluster == ""):
		return invalid("Invalid input received: One and only one of cluster and host must be set.")
	case !clusters && host == "":
		return invalid("Invalid input received: Host field is missing.")
	}
	return nil
}

// poolOf returns the pool part of host@backend#pool, or "".
func poolOf(host string) string {
	_, pool, _ := strings.Cut(host, "#")
	return pool
}

// volumeService returns the volume service of host (host@backend, any #pool ignored). Errors:
// ENOTFOUND when there is none; EINVALID "Service is unavailable at this time." when it is
// disabled or down, as Cinder refuses to manage on such a service; EUNAVAILABLE.
func (p *Plane) volumeService(ctx context.Context, host string) (*basalt.Service, error) {
	backend, _, _ := strings.Cut(host, "#")
	svcs, err := p.store.Services(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "read services", err)
	}
	for _, s := range svcs {
		if s.Binary != basalt.BinaryVolume || s.Host != backend {
			continue
		}
		if s.Disabled || !s.Up(p.store.Now(), p.cfg.ServiceDownTime) {
			return nil, invalid("Service is unavailable at this time.")
		}
		return s, nil
	}
	return nil, basalt.Errorf(basalt.ENOTFOUND, "Service cinder-volume could not be found on host %s.", host)
}

// VolumeManage is a request to adopt a backend object as a volume.
type VolumeManage struct {
	// Host is host@backend, optionally with #pool (which must be the object's pool).
	Host string
	// Cluster names a cluster instead, when Clusters (microversion 3.16) allows it: Basalt has
	// none.
	Cluster  string
	Clusters bool
	// Ref names the object: {"source-name": "volume-<id>"} or {"source-id": "<id>"}.
	Ref              any
	Name             *string
	Description      *string
	VolumeType       string // name or id; "" for the default type
	AvailabilityZone string // "" for the zone of the backend's service
	Metadata         map[string]string
	Bootable         bool
}

func alreadyManaged() error {
	return invalid("Invalid volume: Unable to manage existing volume. The volume is already managed")
}

// ManageVolume adopts the backend object req.Ref names as a volume of the caller's project,
// with the object's id (administrators only). The object must be in the backend's latest
// inventory; its size is the volume's. Its quota is charged, the volume is recorded as managing
// (shown as creating), and the backend is asked to confirm the object (one transaction writes
// the record and the command): then the volume is counted on its pool's ledger and available,
// or error_managing (shown as error) with the reason and its quota returned (the results
// function, results.SettleManage). Errors: EFORBIDDEN; EINVALID (the host or cluster, a service
// disabled or down, the reference, the volume type, an id a volume already has, names and
// metadata); EOVERLIMIT (quota); EUNAVAILABLE (nothing is kept).
func (p *Plane) ManageVolume(ctx context.Context, req VolumeManage) (*basalt.Volume, error) {
	c := CallerFrom(ctx)
	if !c.Admin {
		return nil, basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow volume_extension:volume_manage to be performed.")
	}
	if err := hostOrCluster(req.Host, req.Cluster, req.Clusters); err != nil {
		return nil, err
	}
	if req.Cluster != "" {
		return nil, invalid("Cluster '%s' not found", req.Cluster)
	}
	svc, err := p.volumeService(ctx, req.Host)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil, invalid("Host '%s' not found", req.Host)
	}
	if err != nil {
		return nil, err
	}
	id, err := referenceID(req.Ref)
	if err != nil {
		return nil, err
	}
	if _, err := p.store.Volume(ctx, id); err == nil {
		return nil, alreadyManaged()
	} else if basalt.ErrorCode(err) != basalt.ENOTFOUND {
		return nil, unavailable(p.logger, "manage the volume", err)
	}
	for field, s := range map[string]*string{"name": req.Name, "description": req.Description} {
		if err := validateName(field, s); err != nil {
			return nil, err
		}
	}
	if err := p.validateMetadata(req.Metadata); err != nil {
		return nil, err
	}
	vt, err := p.ResolveType(ctx, req.VolumeType)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		return nil, invalid("Invalid volume type: Cannot find requested '%s' volume type", req.VolumeType)
	}
	if err != nil {
		return nil, err
	}
	backend := svc.Host
	obj, err := p.inventoried(ctx, backend, id, req.Ref)
	if err != nil {
		return nil, err
	}
	if pool := poolOf(req.Host); pool != "" && pool != obj.Pool {
		b, _ := json.Marshal(req.Ref)
		return nil, invalid("Manage existing volume failed due to invalid backend reference %s: the volume is in pool %s of %s, not in pool %s.", b, obj.Pool, backend, pool)
	}
	zone := req.AvailabilityZone
	if zone == "" {
		zone = svc.Zone
	}
	md := req.Metadata
	if md == nil {
		md = map[string]string{}
	}
	v := &basalt.Volume{ID: id, ProjectID: c.ProjectID, UserID: c.UserID, Name: req.Name, Description: req.Description,
		Size: obj.SizeGB, AttachStatus: basalt.AttachDetached, AvailabilityZone: zone,
		VolumeTypeID: vt.ID, VolumeTypeName: vt.Name, Host: basalt.PoolName(backend, obj.Pool), Metadata: md,
		Bootable: req.Bootable, Multiattach: isTrue(vt.ExtraSpecs["multiattach"]), CreatedAt: p.store.Now()}
	op := p.newOp(ctx, events.KindManageVolume, v, backend)
	basalt.VolumeTransitions[basalt.KindManageVolume].Begin(v, op.ID)
	// The charge is the operation's own until the adoption succeeds, when the results function
	// moves it into vol:<id> (results.SettleManage): the id may be another volume's until the
	// record below claims it, so its charge is never touched here.
	chargeID := results.ManageChargeID(op.ID)
	if err := p.charge(ctx, v.ProjectID, chargeID, quotaVolume(vt.Name, v.Size)); err != nil {
		return nil, err
	}
	enqueue(op, events.BackendTopic(backend), events.Command{OpID: op.ID, RequestID: c.RequestID,
		Kind: events.KindManageVolume, VolumeID: id, ProjectID: v.ProjectID, Backend: backend,
		Volume: basalt.VolumeSpec{ID: id, SizeGB: v.Size, Pool: obj.Pool}})
	if err := p.store.CreateVolumeIfAbsent(ctx, v, op, func(*basalt.Volume) error { return alreadyManaged() }); err != nil {
		p.refundAfter(ctx, chargeID, err)
		return nil, unavailable(p.logger, "manage the volume", err)
	}
	p.send(ctx, op)
	p.logger.Info("volume manage accepted", "volume_id", id, "op_id", op.ID, "request_id", c.RequestID,
		"backend", backend, "size", v.Size)
	return v, nil
}

// inventoried returns object id as backend's latest inventory lists it. Errors: EINVALID in
// Cinder's words when it is not there; EUNAVAILABLE.
func (p *Plane) inventoried(ctx context.Context, backend, id string, ref any) (basalt.VolumeSpec, error) {
	inv, err := p.store.Inventory(ctx, backend)
	if err != nil {
		return basalt.VolumeSpec{}, unavailable(p.logger, "read the backend's volumes", err)
	}
	b, _ := json.Marshal(ref)
	if inv == nil {
		return basalt.VolumeSpec{}, invalid("Manage existing volume failed due to invalid backend reference %s: %s has not reported its volumes yet.", b, backend)
	}
	for _, o := range inv.Volumes {
		if o.ID == id {
			return o, nil
		}
	}
	return basalt.VolumeSpec{}, invalid("Manage existing volume failed due to invalid backend reference %s: %s did not list it at %s.",
		b, backend, inv.Timestamp.UTC().Format(basalt.TimeLayout))
}

// UnmanageVolume lets volume id go without touching its object (administrators only, Cinder's
// os-unmanage): the volume goes to unmanaging, its backend removes its exports, then the record
// goes with its quota and capacity, and the object shows up among the manageable volumes again.
// A volume that was never placed (or whose adoption failed) has no object of its own: its
// record goes at once. The volume must be deletable (available, error, ...), detached, without
// snapshots and not the source of a copy in flight. Errors: EFORBIDDEN, ENOTFOUND, EINVALID,
// EUNAVAILABLE (nothing was changed).
func (p *Plane) UnmanageVolume(ctx context.Context, id string) error {
	c := CallerFrom(ctx)
	v, err := p.Volume(ctx, id)
	if err != nil {
		return err
	}
	if !c.Admin {
		return basalt.Errorf(basalt.EFORBIDDEN, "Policy doesn't allow volume_extension:volume_unmanage to be performed.")
	}
	if v.Host == "" && v.Status != basalt.StatusCreating {
		return p.deleteUnplaced(ctx, id, false)
	}
	var op *basalt.Operation
	var replaced string
	unmanage := basalt.VolumeTransitions[basalt.KindUnmanageVolume]
	_, err = p.store.UpdateVolumeWithOp(ctx, id, func(v *basalt.Volume) error {
		if v.AttachStatus == basalt.AttachAttached || !unmanage.CanStart(v.Status, false) || v.Snapshots > 0 {
			return invalid("%s", deleteRefusal)
		}
		if v.Copies = p.pendingCopies(ctx, v.Copies); len(v.Copies) > 0 {
			return refuseCopied("volume", id, v.Copies)
		}
		if v.Host == "" {
			return basalt.Errorf(basalt.ECONFLICT, "Volume %s changed during the unmanage; try again.", id)
		}
		op = p.newOp(ctx, events.KindUnmanageVolume, v, v.Backend())
		enqueue(op, events.BackendTopic(v.Backend()), events.Command{OpID: op.ID, RequestID: c.RequestID,
			Kind: events.KindUnmanageVolume, VolumeID: id, ProjectID: v.ProjectID, Backend: v.Backend(),
			Volume: basalt.VolumeSpec{ID: id, SizeGB: v.Size}})
		replaced = v.OpID
		unmanage.Begin(v, op.ID)
		return nil
	}, func(*basalt.Volume) *basalt.Operation { return op })
	if err != nil {
		return unavailable(p.logger, "unmanage the volume", err)
	}
	if replaced != "" {
		p.endAndSettle(ctx, replaced, id, "replaced by an unmanage")
	}
	p.send(ctx, op)
	p.logger.Info("volume unmanage accepted", "volume_id", id, "op_id", op.ID, "request_id", c.RequestID)
	return nil
}
