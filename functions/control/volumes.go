package control

import (
	"context"
	"fmt"
	"github.com/basalt-storage/basalt/functions/results"
	"github.com/basalt-storage/basalt/functions/store"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/internal/crash"
)

// VolumeCreate is a validated-on-use request to create a volume.
type VolumeCreate struct {
	Size             int
	Name             *string
	Description      *string
	VolumeType       string // name or id; "" for the default type
	AvailabilityZone string
	Metadata         map[string]string
	// SnapshotID creates the volume from a snapshot; SourceVolID clones a volume. Size may
	// then be 0 (the source's size).
	SnapshotID  string
	SourceVolID string
}

var metadataKeyRE = regexp.MustCompile(`^[a-zA-Z0-9-_:. /]{1,255}$`)

// ValidateMetadata checks each key and value as Cinder does, and refuses control characters
// and invalid UTF-8 in values (the key pattern already excludes them). The number of items is
// checked by the Plane against Config.MaxMetadataItems.
func ValidateMetadata(md map[string]string) error {
	for k, v := range md {
		if !metadataKeyRE.MatchString(k) {
			return invalid("Invalid input for field/attribute metadata. Value: %q. Key %q must be 1 to 255 characters of letters, digits and -_:. /", k, k)
		}
		if len(v) > 255 {
			return invalid("Invalid input for field/attribute metadata. Value for key %q is longer than 255 characters.", k)
		}
		if why := badText(v); why != "" {
			return invalid("Invalid input for field/attribute metadata. Value for key %q %s.", k, why)
		}
	}
	return nil
}

// validateMetadata is ValidateMetadata plus the cap on the number of items, for metadata that
// is stored as given (a create, a replace).
func (p *Plane) validateMetadata(md map[string]string) error {
	if err := ValidateMetadata(md); err != nil {
		return err
	}
	return p.checkMetadataCount(len(md))
}

// checkMetadataCount refuses metadata of n items when n is over Config.MaxMetadataItems. A
// merge checks the merged result.
func (p *Plane) checkMetadataCount(n int) error {
	if n > p.cfg.MaxMetadataItems {
		return invalid("Invalid input received: metadata would have %d items, more than the %d allowed.", n, p.cfg.MaxMetadataItems)
	}
	return nil
}

// badText says why s may not be stored as a name, a description, a metadata value or an extra
// spec ("" when it may): control characters (U+0000 to U+001F, U+007F) and invalid UTF-8.
func badText(s string) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("must not contain control characters (%U found)", r)
		}
	}
	return ""
}

// validateName checks a name or description: at most 255 characters, no control characters
// (a description may hold tabs and line breaks, as Cinder's clients write multi-line ones).
func validateName(field string, s *string) error {
	if s == nil {
		return nil
	}
	if len(*s) > 255 {
		return invalid("Invalid input for field/attribute %s. Value is longer than 255 characters.", field)
	}
	text := *s
	if field == "description" && utf8.ValidString(text) {
		text = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, text)
	}
	if why := badText(text); why != "" {
		return invalid("Invalid input for field/attribute %s. It %s.", field, why)
	}
	return nil
}

// ResolveType returns the type named by nameOrID, or the default type when it is "". A private
// type is ENOTFOUND for members, as if it did not exist.
func (p *Plane) ResolveType(ctx context.Context, nameOrID string) (*basalt.VolumeType, error) {
	if nameOrID == "" {
		return p.DefaultType(ctx)
	}
	t, err := p.store.Type(ctx, nameOrID)
	if basalt.ErrorCode(err) == basalt.ENOTFOUND {
		t, err = p.store.TypeByName(ctx, nameOrID)
	}
	if err != nil {
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil, basalt.Errorf(basalt.ENOTFOUND, "Volume type with name %s could not be found.", nameOrID)
		}
		return nil, unavailable(p.logger, "read volume types", err)
	}
	if !t.IsPublic && !CallerFrom(ctx).Admin {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Volume type with name %s could not be found.", nameOrID)
	}
	return t, nil
}

// Zones returns the availability zones of every volume service, and whether each has at least
// one enabled service.
func (p *Plane) Zones(ctx context.Context) (map[string]bool, error) {
	svcs, err := p.store.Services(ctx)
	if err != nil {
		return nil, unavailable(p.logger, "read services", err)
	}
	zones := map[string]bool{}
	for _, s := range svcs {
		if s.Binary != basalt.BinaryVolume {
			continue
		}
		zones[s.Zone] = zones[s.Zone] || !s.Disabled
	}
	return zones, nil
}

// zoneCache keeps the zones of the volume services for zoneKnown.
type zoneCache struct {
	mu    sync.Mutex
	zones map[string]bool
	at    time.Time
}

// zoneTTL is how long zoneKnown answers from the zones it read.
const zoneTTL = time.Second

// zoneKnown reports whether some volume service is in zone. It answers from the zones read
// within zoneTTL, so a create naming a zone does not read every service; a zone not among them
// is looked up afresh before it is refused (a service may have just started there).
func (p *Plane) zoneKnown(ctx context.Context, zone string) (bool, error) {
	p.zones.mu.Lock()
	zones, at := p.zones.zones, p.zones.at
	p.zones.mu.Unlock()
	if zones != nil && time.Since(at) < zoneTTL {
		if _, ok := zones[zone]; ok {
			return true, nil
		}
	}
	zones, err := p.Zones(ctx)
	if err != nil {
		return false, err
	}
	p.zones.mu.Lock()
	p.zones.zones, p.zones.at = zones, time.Now()
	p.zones.mu.Unlock()
	_, ok := zones[zone]
	return ok, nil
}

// CreateVolume validates req, records a volume in status creating with its operation, and
// sends it to the scheduler. Errors: EINVALID (size, zone, metadata), ENOTFOUND (type),
// EOVERLIMIT (size above the limit), EUNAVAILABLE (Redis or the bus is down; nothing is kept).
func (p *Plane) CreateVolume(ctx context.Context, req VolumeCreate) (*basalt.Volume, error) {
	c := CallerFrom(ctx)
	src, err := p.createSource(ctx, &req)
	if err != nil {
		return nil, err
	}
	if req.Size <= 0 {
		return nil, invalid("Invalid volume size provided for create request: %d (size argument must be an integer (or string representation of an integer) and greater than zero).", req.Size)
	}
	if req.Size > p.cfg.MaxVolumeSizeGB {
		return nil, basalt.Errorf(basalt.EOVERLIMIT, "VolumeSizeExceedsLimit: Requested volume size %dG is larger than maximum allowed limit %dG.", req.Size, p.cfg.MaxVolumeSizeGB)
	}
	if src.size > 0 && req.Size < src.size {
		return nil, invalid("Invalid input received: Volume size '%d'GB cannot be smaller than the %s size %dGB. They must be >= original %s size.", req.Size, src.kind, src.size, src.kind)
	}
	if err := validateName("name", req.Name); err != nil {
		return nil, err
	}
	if err := validateName("description", req.Description); err != nil {
		return nil, err
	}
	if err := p.validateMetadata(req.Metadata); err != nil {
		return nil, err
	}
	vt, err := p.ResolveType(ctx, req.VolumeType)
	if err != nil {
		return nil, err
	}
	zone := req.AvailabilityZone
	if zone != "" {
		ok, err := p.zoneKnown(ctx, zone)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, invalid("Availability zone '%s' is invalid.", zone)
		}
	} else if src.zone != "" {
		zone = src.zone
	} else if len(vt.Zones()) == 0 {
		zone = p.cfg.DefaultZone
	}
	now := p.store.Now()
	md := req.Metadata
	if md == nil {
		md = map[string]string{}
	}
	v := &basalt.Volume{
		ID: events.NewID(c.ProjectID), ProjectID: c.ProjectID, UserID: c.UserID,
		Name: req.Name, Description: req.Description, Size: req.Size, AttachStatus: basalt.AttachDetached,
		AvailabilityZone: zone, VolumeTypeID: vt.ID, VolumeTypeName: vt.Name,
		Metadata: md, Multiattach: isTrue(vt.ExtraSpecs["multiattach"]), Bootable: src.bootable, CreatedAt: now,
	}
	if req.SnapshotID != "" {
		v.SnapshotID = &req.SnapshotID
	}
	if req.SourceVolID != "" {
		v.SourceVolID = &req.SourceVolID
	}
	op := p.newOp(ctx, events.KindCreateVolume, v, "scheduler")
	basalt.VolumeTransitions[basalt.KindCreateVolume].Begin(v, op.ID)
	if err := p.charge(ctx, v.ProjectID, "vol:"+v.ID, quotaVolume(vt.Name, v.Size)); err != nil {
		return nil, err
	}
	crash.Point("create.charged")
	if err := p.holdSource(ctx, req, op.ID); err != nil {
		p.refund(ctx, "vol:"+v.ID)
		return nil, unavailable(p.logger, "create the volume", err)
	}
	enqueue(op, events.TopicScheduler, events.Command{OpID: op.ID, RequestID: c.RequestID, Kind: events.KindCreateVolume,
		VolumeID: v.ID, ProjectID: v.ProjectID, Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size},
		SnapshotID: req.SnapshotID, SourceVolumeID: req.SourceVolID, SourcePool: src.pool})
	if err := p.store.CreateVolume(ctx, v, op); err != nil {
		// A transaction whose reply was lost may have landed: then the volume exists, and the
		// request succeeded.
		if got, gerr := p.store.Volume(ctx, v.ID); gerr != nil || got.OpID != op.ID {
			p.releaseSource(ctx, req, op.ID)
			p.refundAfter(ctx, "vol:"+v.ID, err)
			return nil, unavailable(p.logger, "create the volume", err)
		}
		p.logger.Warn("a create whose reply was lost had landed", "volume_id", v.ID, "op_id", op.ID, "err", err)
	}
	crash.Point("create.committed")
	p.send(ctx, op)
	p.logger.Info("volume create accepted", "volume_id", v.ID, "op_id", op.ID, "request_id", c.RequestID, "size", v.Size)
	return v, nil
}

// createSourceInfo describes the source of a clone or a volume from a snapshot.
type createSourceInfo struct {
	kind     string // "snapshot" or "source volume"
	size     int
	pool     string // host@backend#pool the new volume must share
	zone     string
	bootable bool
}

// createSource checks a create's source and fills in the defaults it implies: the size and
// the volume type of the source.
func (p *Plane) createSource(ctx context.Context, req *VolumeCreate) (createSourceInfo, error) {
	var info createSourceInfo
	switch {
	case req.SnapshotID != "" && req.SourceVolID != "":
		return info, invalid("Invalid input received: snapshot_id and source_volid cannot both be given.")
	case req.SnapshotID != "":
		sn, err := p.Snapshot(ctx, req.SnapshotID)
		if err != nil {
			return info, err
		}
		if sn.Status != basalt.SnapAvailable {
			return info, invalid("Invalid snapshot: Originating snapshot status must be one of 'available' values")
		}
		info = createSourceInfo{kind: "snapshot", size: sn.Size, pool: sn.Host}
		if vol, err := p.store.Volume(ctx, sn.VolumeID); err == nil {
			info.zone, info.bootable = vol.AvailabilityZone, vol.Bootable
			if req.VolumeType == "" {
				req.VolumeType = vol.VolumeTypeID
			}
		}
	case req.SourceVolID != "":
		src, err := p.Volume(ctx, req.SourceVolID)
		if err != nil {
			return info, err
		}
		if src.Status != basalt.StatusAvailable && src.Status != basalt.StatusInUse {
			return info, invalid("Invalid volume: Unable to clone volumes that are in an error state, or whose status is not available or in-use (status: %s).", src.Status)
		}
		info = createSourceInfo{kind: "source volume", size: src.Size, pool: src.Host, zone: src.AvailabilityZone, bootable: src.Bootable}
		if req.VolumeType == "" {
			req.VolumeType = src.VolumeTypeID
		}
	default:
		return info, nil
	}
	if req.Size == 0 {
		req.Size = info.size
	}
	return info, nil
}

func isTrue(spec string) bool {
	f := strings.Fields(spec)
	return len(f) == 2 && f[0] == "<is>" && strings.EqualFold(f[1], "true")
}

func (p *Plane) newOp(ctx context.Context, kind string, v *basalt.Volume, owner string) *basalt.Operation {
	now := p.store.Now()
	c := p.cfg
	return &basalt.Operation{ID: events.NewPrefixedID("op-", v.ProjectID), Kind: kind, VolumeID: v.ID, ProjectID: v.ProjectID,
		RequestID: CallerFrom(ctx).RequestID, State: basalt.OpPending, Owner: owner, Deadline: now.Add(c.OpTimeout),
		CreatedAt: now, UpdatedAt: now}
}

// Volume returns volume id if the caller may see it, else ENOTFOUND.
func (p *Plane) Volume(ctx context.Context, id string) (*basalt.Volume, error) {
	v, err := p.store.Volume(ctx, id)
	if err != nil {
		if basalt.ErrorCode(err) == basalt.ENOTFOUND {
			return nil, err
		}
		return nil, unavailable(p.logger, "read the volume", err)
	}
	c := CallerFrom(ctx)
	if !c.Admin && v.ProjectID != c.ProjectID {
		return nil, basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", id)
	}
	return v, nil
}

// ListOptions selects and orders a listing.
type ListOptions struct {
	AllTenants bool              // admin only: every project (then Filters["project_id"] narrows)
	Filters    map[string]string // exact-match filters
	Marker     string            // id of the last item of the previous page
	Limit      int               // 0 = the maximum (1000)
	Offset     int
	Sort       []SortKey
	// Lenient drops filters a member may not use instead of refusing them (before
	// microversion 3.31, as Cinder).
	Lenient bool
	// WithCount asks for the number of items that match the filters on every page (Cinder's
	// with_count, microversion 3.45).
	WithCount bool
}

// A Page is one page of a listing.
type Page[T any] struct {
	Items []T
	// More reports that a next link is due.
	More bool
	// Count is the number of items that match the filters on every page, when
	// ListOptions.WithCount asked for it.
	Count int
}

// counted adds the count of all matching items to pg when o asks for it. Cinder then decides
// the next link by comparing the limit with that count instead of with the page: every
// non-empty page gets a link when the limit does not exceed the count, the last one too.
func counted[T any](pg Page[T], o ListOptions, total int) Page[T] {
	if !o.WithCount {
		return pg
	}
	limit := o.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	pg.Count = total
	pg.More = o.Limit > 0 && len(pg.Items) > 0 && limit <= total
	return pg
}

// A SortKey orders a listing.
type SortKey struct {
	Key  string
	Desc bool
}

// MaxLimit is the largest page (Cinder's osapi_max_limit).
const MaxLimit = 1000

var volumeFilters = []string{"name", "status", "metadata", "bootable", "availability_zone", "size",
	"created_at", "updated_at", "migration_status", "group_id", "consumes_quota"}
var volumeSortKeys = []string{"created_at", "updated_at", "id", "name", "display_name", "size", "status", "availability_zone"}

// Volumes lists the volumes the caller may see, filtered, sorted and paged, with their count
// when o.WithCount. Errors: EINVALID (a filter or sort key not allowed), ENOTFOUND (marker).
func (p *Plane) Volumes(ctx context.Context, o ListOptions) (Page[*basalt.Volume], error) {
	c := CallerFrom(ctx)
	if err := checkFilters(c, o, volumeFilters); err != nil {
		return Page[*basalt.Volume]{}, err
	}
	for _, s := range o.Sort {
		if !slices.Contains(volumeSortKeys, s.Key) {
			return Page[*basalt.Volume]{}, invalid("Invalid sort key %s.", s.Key)
		}
	}
	project := c.ProjectID
	if c.Admin && o.AllTenants {
		project = o.Filters["project_id"]
		delete(o.Filters, "project_id")
	}
	if len(o.Filters) == 0 && len(o.Sort) == 0 && !o.WithCount {
		// The common listing (newest first, unfiltered) pages in Redis and reads only the page.
		// A count needs every volume, so it takes the path below.
		limit := o.Limit
		if limit <= 0 || limit > MaxLimit {
			limit = MaxLimit
		}
		page, err := p.store.VolumePage(ctx, project, o.Marker, o.Offset, limit)
		if err != nil {
			return Page[*basalt.Volume]{}, unavailable(p.logger, "list volumes", err)
		}
		return Page[*basalt.Volume]{Items: page, More: o.Limit > 0 && len(page) == limit}, nil
	}
	// Filters and sorts are answered from the store's indexes (store.ListVolumes): the filters
	// on indexed fields narrow the volumes read, and every filter is checked on the records.
	limit := o.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	q := store.VolumeQuery{Project: project, Marker: o.Marker, Offset: o.Offset, Limit: limit, Count: o.WithCount,
		Match: func(v *basalt.Volume) bool { return volumeMatches(v, o.Filters) }}
	var never bool
	q.Eq, q.Exact, never = volumeIndexFilters(o.Filters)
	if never {
		// No volume meets the filters (bootable=maybe, size=01), so no marker is on the list.
		if o.Marker != "" {
			return Page[*basalt.Volume]{}, basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", o.Marker)
		}
		return counted(Page[*basalt.Volume]{}, o, 0), nil
	}
	keys := sortKeys(o.Sort)
	if k, ok := indexedSort(keys); ok {
		q.Sort, q.Asc = k.Key, !k.Desc
	} else {
		q.Less = func(a, b *basalt.Volume) bool { return lessVolume(a, b, keys) }
	}
	res, err := p.store.ListVolumes(ctx, q)
	if err != nil {
		return Page[*basalt.Volume]{}, unavailable(p.logger, "list volumes", err)
	}
	more := o.Limit > 0 && len(res.Items) > 0 && len(res.Items) == limit
	return counted(Page[*basalt.Volume]{Items: res.Items, More: more}, o, res.Count), nil
}

// volumeIndexFilters returns the conditions of filters that the store's indexes answer, whether
// filters hold exactly when those conditions do (exact; then a count comes from the index), and
// whether no volume can meet filters (never). It mirrors volumeMatches.
func volumeIndexFilters(filters map[string]string) (eqs []store.VolumeEq, exact, never bool) {
	exact = true
	for k, want := range filters {
		switch k {
		case "name", "display_name":
			eqs = append(eqs, store.EqName(want))
			exact = exact && want != "" // the index holds a volume without a name as ""
		case "status":
			eqs = append(eqs, store.EqStatus(want))
		case "availability_zone":
			eqs = append(eqs, store.EqAvailabilityZone(want))
		case "size":
			n, err := strconv.Atoi(want)
			if err != nil || strconv.Itoa(n) != want {
				never = true
				continue
			}
			eqs = append(eqs, store.EqSize(n))
		case "bootable":
			b, err := strconv.ParseBool(want)
			if err != nil {
				never = true
				continue
			}
			eqs = append(eqs, store.EqBootable(b))
		case "metadata":
			for mk, mv := range parseDictLiteral(want) {
				if mv == "" {
					exact = false // a volume without the key matches too
					continue
				}
				eqs = append(eqs, store.EqMetadata(mk, mv))
			}
		case "name~", "display_name~", "project_id", "volume_type", "volume_type_id", "host":
			exact = false // checked on the records only
		}
	}
	return eqs, exact, never
}

// checkFilters refuses (or, lenient, drops) filters a member may not use. A key ending in "~"
// (inexact, 3.34) counts as its base key.
func checkFilters(c Caller, o ListOptions, allowed []string) error {
	if c.Admin {
		return nil
	}
	var bad []string
	for k := range o.Filters {
		if !slices.Contains(allowed, strings.TrimSuffix(k, "~")) {
			if o.Lenient {
				delete(o.Filters, k)
				continue
			}
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return invalid("Invalid filters %s are found in query options.", strings.Join(bad, ","))
	}
	return nil
}

// matchCommon applies the filters volumes and snapshots share: name (exact, or inexact with
// "~"), status and metadata. handled is false for any other key.
func matchCommon(k, want string, name *string, status string, md map[string]string) (handled, ok bool) {
	switch k {
	case "name", "display_name":
		return true, name != nil && *name == want
	case "name~", "display_name~":
		return true, name != nil && strings.Contains(strings.ToLower(*name), strings.ToLower(want))
	case "status":
		return true, status == want
	case "metadata":
		for mk, mv := range parseDictLiteral(want) {
			if md[mk] != mv {
				return true, false
			}
		}
		return true, true
	}
	return false, true
}

func volumeMatches(v *basalt.Volume, f map[string]string) bool {
	for k, want := range f {
		if handled, ok := matchCommon(k, want, v.Name, string(v.Status), v.Metadata); handled {
			if !ok {
				return false
			}
			continue
		}
		var have string
		switch k {
		case "availability_zone":
			have = v.AvailabilityZone
		case "size":
			have = strconv.Itoa(v.Size)
		case "bootable":
			b, err := strconv.ParseBool(want)
			if err != nil || b != v.Bootable {
				return false
			}
			continue
		case "project_id":
			have = v.ProjectID
		case "volume_type", "volume_type_id":
			if v.VolumeTypeName != want && v.VolumeTypeID != want {
				return false
			}
			continue
		case "host":
			have = v.Host
		default:
			continue
		}
		if have != want {
			return false
		}
	}
	return true
}

// parseDictLiteral reads the Python dict literal clients send as a metadata or extra_specs
// filter: {'k': 'v', 'k2': 'v2'} (cinderclient) or {'k':'v'} (gophercloud). JSON objects work
// too. A quoted key or value may hold ':' and ',' (RESKEY:availability_zones).
func parseDictLiteral(s string) map[string]string {
	out := map[string]string{}
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	for strings.TrimSpace(s) != "" {
		k, rest := literalToken(s, ':')
		rest, ok := strings.CutPrefix(strings.TrimSpace(rest), ":")
		if !ok {
			break
		}
		v, rest := literalToken(rest, ',')
		out[k] = v
		s = strings.TrimPrefix(strings.TrimSpace(rest), ",")
	}
	return out
}

// literalToken reads the key or value at the start of s: a string in single or double quotes,
// or else the text up to the byte stop. It returns the token and the rest of s after it.
func literalToken(s string, stop byte) (string, string) {
	s = strings.TrimSpace(s)
	if s != "" && (s[0] == '\'' || s[0] == '"') {
		if end := strings.IndexByte(s[1:], s[0]); end >= 0 {
			return s[1 : end+1], s[end+2:]
		}
	}
	i := strings.IndexByte(s, stop)
	if i < 0 {
		i = len(s)
	}
	return strings.Trim(strings.TrimSpace(s[:i]), `'"`), s[i:]
}

// sortKeys returns keys as Cinder orders by them (process_sort_params): name is display_name,
// and created_at and id follow unless already there, in the direction of the first key
// (created_at desc by default). Keys after id, which is unique, order nothing and are dropped,
// as are repeated keys.
func sortKeys(keys []SortKey) []SortKey {
	desc := len(keys) == 0 || keys[0].Desc
	out := make([]SortKey, 0, len(keys)+2)
	seen := map[string]bool{}
	for _, k := range append(slices.Clone(keys), SortKey{"created_at", desc}, SortKey{"id", desc}) {
		if k.Key == "display_name" {
			k.Key = "name"
		}
		if seen[k.Key] {
			continue
		}
		seen[k.Key] = true
		out = append(out, k)
		if k.Key == "id" {
			break
		}
	}
	return out
}

// indexedSort returns the key of a store index that orders as keys (from sortKeys) do: one key
// followed by created_at and id, all in one direction.
func indexedSort(keys []SortKey) (SortKey, bool) {
	d := keys[0].Desc
	for _, k := range keys {
		if k.Desc != d {
			return SortKey{}, false
		}
	}
	switch {
	case len(keys) == 1: // id
		return keys[0], true
	case len(keys) == 2 && keys[0].Key == "created_at": // created_at, id
		return keys[0], true
	case len(keys) == 3 && keys[1].Key == "created_at" && slices.Contains(store.VolumeSortKeys, keys[0].Key):
		return keys[0], true
	}
	return SortKey{}, false
}

// lessVolume orders volumes by keys (from sortKeys).
func lessVolume(a, b *basalt.Volume, keys []SortKey) bool {
	for _, k := range keys {
		c := compareVolume(a, b, k.Key)
		if c == 0 {
			continue
		}
		if k.Desc {
			return c > 0
		}
		return c < 0
	}
	return false
}

func compareVolume(a, b *basalt.Volume, key string) int {
	str := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	switch key {
	// Times compare to the microsecond, the precision the API shows and the indexes hold.
	case "created_at":
		return cmpInt(a.CreatedAt.UnixMicro(), b.CreatedAt.UnixMicro())
	case "updated_at":
		var ta, tb int64
		if a.UpdatedAt != nil && !a.UpdatedAt.IsZero() {
			ta = a.UpdatedAt.UnixMicro()
		}
		if b.UpdatedAt != nil && !b.UpdatedAt.IsZero() {
			tb = b.UpdatedAt.UnixMicro()
		}
		return cmpInt(ta, tb)
	case "id":
		return strings.Compare(a.ID, b.ID)
	case "name", "display_name":
		return strings.Compare(str(a.Name), str(b.Name))
	case "size":
		return cmpInt(int64(a.Size), int64(b.Size))
	case "status":
		return strings.Compare(string(a.Status), string(b.Status))
	case "availability_zone":
		return strings.Compare(a.AvailabilityZone, b.AvailabilityZone)
	}
	return 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// paginate applies marker, offset and limit. It reports whether the page is full (a next link
// is due, as Cinder emits one for every full page), and an error for an unknown marker.
func paginate[T any](items []T, o ListOptions, id func(T) string) ([]T, bool, error) {
	if o.Marker != "" {
		i := slices.IndexFunc(items, func(x T) bool { return id(x) == o.Marker })
		if i < 0 {
			return nil, false, fmt.Errorf("marker %s not found", o.Marker)
		}
		items = items[i+1:]
	}
	if o.Offset > 0 {
		if o.Offset >= len(items) {
			items = nil
		} else {
			items = items[o.Offset:]
		}
	}
	limit := o.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	if len(items) > limit {
		items = items[:limit]
	}
	return items, len(items) > 0 && len(items) == limit && o.Limit > 0, nil
}

// VolumeUpdate changes a volume's name, description or metadata; nil fields stay as they are.
type VolumeUpdate struct {
	Name        *string
	Description *string
	Metadata    map[string]string // replaces user metadata when non-nil
}

// UpdateVolume applies u. Errors: ENOTFOUND, EINVALID (bad metadata, maintenance status).
func (p *Plane) UpdateVolume(ctx context.Context, id string, u VolumeUpdate) (*basalt.Volume, error) {
	if _, err := p.Volume(ctx, id); err != nil {
		return nil, err
	}
	if err := validateName("name", u.Name); err != nil {
		return nil, err
	}
	if err := validateName("description", u.Description); err != nil {
		return nil, err
	}
	if err := p.validateMetadata(u.Metadata); err != nil {
		return nil, err
	}
	v, err := p.store.UpdateVolume(ctx, id, func(v *basalt.Volume) error {
		if v.Status == basalt.StatusMaintenance {
			return invalid("Invalid volume: Volume %s is in maintenance.", id)
		}
		if u.Name != nil {
			v.Name = u.Name
		}
		if u.Description != nil {
			v.Description = u.Description
		}
		if u.Metadata != nil {
			v.Metadata = u.Metadata
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(p.logger, "update the volume", err)
	}
	return v, nil
}

const deleteRefusal = "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer."

// DeleteVolume starts deleting volume id: a placed volume goes to deleting and its backend is
// told; a volume that was never placed is removed at once. force (admin) skips the status
// check; cascade deletes the volume's snapshots too (they must be available or error). Of
// concurrent deletes exactly one starts the work; the others get EINVALID.
func (p *Plane) DeleteVolume(ctx context.Context, id string, force, cascade bool) error {
	c := CallerFrom(ctx)
	if force {
		if err := requireAdmin(ctx); err != nil {
			return err
		}
	}
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	if v, _ := p.store.Volume(ctx, id); v != nil && v.Host == "" && v.Status != basalt.StatusCreating {
		return p.deleteUnplaced(ctx, id, force)
	}
	snaps, err := p.store.VolumeSnapshots(ctx, id)
	if err != nil {
		return unavailable(p.logger, "delete the volume", err)
	}
	snapIDs := make([]string, 0, len(snaps))
	for _, sn := range snaps {
		snapIDs = append(snapIDs, sn.ID)
	}
	var op *basalt.Operation
	var unplaced bool
	var replaced string // an operation a forced delete takes over from
	del, snapDel := basalt.VolumeTransitions[basalt.KindDeleteVolume], basalt.SnapshotTransitions[basalt.KindDeleteSnapshot]
	v, _, err := p.store.UpdateVolumeAndSnapshots(ctx, id, snapIDs, func(v *basalt.Volume, snaps []*basalt.Snapshot) error {
		if v.AttachStatus == basalt.AttachAttached || (!force && !del.CanStart(v.Status, false)) {
			return invalid("%s", deleteRefusal)
		}
		if !del.CanStart(v.Status, force) {
			return invalid("Invalid volume: Volume %s is already being deleted.", id)
		}
		if v.Snapshots != len(snaps) {
			return basalt.Errorf(basalt.ECONFLICT, "The volume's snapshots changed during the delete; try again.")
		}
		if v.Copies = p.pendingCopies(ctx, v.Copies); len(v.Copies) > 0 {
			return refuseCopied("volume", id, v.Copies)
		}
		for _, sn := range snaps {
			if sn.Copies = p.pendingCopies(ctx, sn.Copies); len(sn.Copies) > 0 {
				return refuseCopied("snapshot", sn.ID, sn.Copies)
			}
		}
		if len(snaps) > 0 && !cascade {
			return invalid("%s", deleteRefusal)
		}
		for _, sn := range snaps {
			if !snapDel.CanStart(sn.Status, false) {
				return invalid("Invalid volume: Snapshot %s of the volume is %s; a cascade delete needs every snapshot available or error.", sn.ID, sn.Status)
			}
		}
		unplaced = v.Host == ""
		if unplaced {
			return basalt.Errorf(basalt.ECONFLICT, "Volume %s changed during the delete; try again.", id)
		}
		op = p.newOp(ctx, events.KindDeleteVolume, v, v.Backend())
		enqueue(op, events.BackendTopic(v.Backend()), events.Command{OpID: op.ID, RequestID: c.RequestID,
			Kind: events.KindDeleteVolume, VolumeID: v.ID, ProjectID: v.ProjectID, Backend: v.Backend(),
			Snapshots: snapIDs, Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: v.Size}})
		replaced = v.OpID
		del.Begin(v, op.ID)
		for _, sn := range snaps {
			snapDel.Begin(sn, op.ID)
		}
		return nil
	}, func() *basalt.Operation { return op })
	if err != nil {
		return unavailable(p.logger, "delete the volume", err)
	}
	if replaced != "" {
		p.endAndSettle(ctx, replaced, v.ID, "replaced by a forced delete")
	}
	crash.Point("delete.committed")
	p.send(ctx, op)
	p.logger.Info("volume delete accepted", "volume_id", v.ID, "op_id", op.ID, "request_id", c.RequestID, "snapshots", len(snapIDs))
	return nil
}

// deleteUnplaced removes a volume that was never placed: nothing is on a backend, so the
// record goes in one compare-and-set, then its capacity claim and quota (both idempotent).
func (p *Plane) deleteUnplaced(ctx context.Context, id string, force bool) error {
	var opID string
	err := p.store.DeleteVolumeIf(ctx, id, func(v *basalt.Volume) error {
		if v.Host != "" || v.Status == basalt.StatusCreating {
			return basalt.Errorf(basalt.ECONFLICT, "Volume %s changed during the delete; try again.", id)
		}
		if v.AttachStatus == basalt.AttachAttached || (!force && !v.Status.Deletable()) || v.Snapshots > 0 {
			return invalid("%s", deleteRefusal)
		}
		opID = v.OpID
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "delete the volume", err)
	}
	p.endOp(ctx, opID, "the volume was deleted")
	if err := p.store.Release(ctx, id); err != nil {
		p.logger.Error("release capacity of a deleted volume", "volume_id", id, "err", err)
	}
	p.refund(ctx, "vol:"+id)
	return nil
}

// endAndSettle ends operation opID on volume volumeID (an admin took over) and settles what an
// extend had claimed, or what an adoption had charged.
func (p *Plane) endAndSettle(ctx context.Context, opID, volumeID, reason string) {
	p.endOp(ctx, opID, reason)
	if err := results.SettleExtend(ctx, p.store, opID, volumeID); err != nil {
		p.logger.Error("settle an ended operation", "op_id", opID, "err", err)
	}
	if err := results.SettleManage(ctx, p.store, opID, volumeID); err != nil {
		p.logger.Error("settle an ended adoption", "op_id", opID, "err", err)
	}
}

// ExtendVolume grows volume id to newSize GiB. The scheduler checks capacity on the volume's
// own pool, then its backend grows it. An available volume may be extended; an in-use one
// only when online is set (microversion 3.42) and its backend supports online extend.
// Errors: ENOTFOUND, EINVALID (size, status), EOVERLIMIT (quota).
func (p *Plane) ExtendVolume(ctx context.Context, id string, newSize int, online bool) error {
	c := CallerFrom(ctx)
	v, err := p.Volume(ctx, id)
	if err != nil {
		return err
	}
	if newSize > p.cfg.MaxVolumeSizeGB {
		return basalt.Errorf(basalt.EOVERLIMIT, "VolumeSizeExceedsLimit: Requested volume size %dG is larger than maximum allowed limit %dG.", newSize, p.cfg.MaxVolumeSizeGB)
	}
	if newSize <= v.Size {
		return invalid("Invalid input received: New size for extend must be greater than current size. (current: %d, extended: %d).", v.Size, newSize)
	}
	delta := newSize - v.Size
	// The growth is charged first, under the operation's own charge id; the state change and
	// the command then land together.
	op := p.newOp(ctx, events.KindExtendVolume, v, "scheduler")
	chargeID := "ext:" + op.ID
	if err := p.charge(ctx, v.ProjectID, chargeID, quotaGrow(v.VolumeTypeName, delta, newSize)); err != nil {
		return err
	}
	extend := basalt.VolumeTransitions[basalt.KindExtendVolume]
	_, err = p.store.UpdateVolumeWithOp(ctx, id, func(v *basalt.Volume) error {
		if !extend.CanStart(v.Status, online) {
			want := "available"
			if online {
				want = "available or in-use"
			}
			return invalid("Invalid volume: Volume %s status must be %s to extend, but current status is: %s.", v.ID, want, v.Status)
		}
		if newSize != v.Size+delta {
			return basalt.Errorf(basalt.ECONFLICT, "The volume's size changed during the request; try again.")
		}
		enqueue(op, events.TopicScheduler, events.Command{OpID: op.ID, RequestID: c.RequestID, Kind: events.KindExtendVolume,
			VolumeID: v.ID, ProjectID: v.ProjectID, SourcePool: v.Host, OldSizeGB: v.Size,
			Volume: basalt.VolumeSpec{ID: v.ID, SizeGB: newSize}})
		extend.Begin(v, op.ID)
		return nil
	}, func(*basalt.Volume) *basalt.Operation { return op })
	if err != nil {
		p.refundAfter(ctx, chargeID, err)
		return unavailable(p.logger, "extend the volume", err)
	}
	p.send(ctx, op)
	return nil
}

// RevertVolume restores volume id's bytes from snapshot snapID, which must be the volume's
// latest snapshot and of the same size (EINVALID otherwise). The volume goes to reverting and
// the snapshot to restoring; either not being available is ECONFLICT.
func (p *Plane) RevertVolume(ctx context.Context, id, snapID string) error {
	c := CallerFrom(ctx)
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	sn, err := p.Snapshot(ctx, snapID)
	if err != nil {
		return err
	}
	if sn.VolumeID != id {
		return invalid("Invalid snapshot: Snapshot %s does not belong to volume %s.", snapID, id)
	}
	snaps, err := p.store.VolumeSnapshots(ctx, id)
	if err != nil {
		return unavailable(p.logger, "revert the volume", err)
	}
	if len(snaps) == 0 || snaps[0].ID != snapID {
		return invalid("Invalid snapshot: Cannot revert volume %s to snapshot %s: it is not the volume's latest snapshot.", id, snapID)
	}
	var op *basalt.Operation
	revertVol, revertSnap := basalt.VolumeTransitions[basalt.KindRevert], basalt.SnapshotTransitions[basalt.KindRevert]
	_, _, err = p.store.UpdateVolumeAndSnapshots(ctx, id, []string{snapID}, func(v *basalt.Volume, ss []*basalt.Snapshot) error {
		s := ss[0]
		if v.Snapshots != len(snaps) {
			return basalt.Errorf(basalt.ECONFLICT, "Volume %s got a new snapshot during the request; try again.", id)
		}
		if v.Size != s.Size {
			return invalid("Invalid volume: Volume %s size %dG does not match snapshot %s size %dG; extend the volume from the snapshot instead.", id, v.Size, snapID, s.Size)
		}
		if v.Copies = p.pendingCopies(ctx, v.Copies); len(v.Copies) > 0 {
			return refuseCopied("volume", id, v.Copies)
		}
		if !revertVol.CanStart(v.Status, false) {
			return basalt.Errorf(basalt.ECONFLICT, "Volume %s status must be available to revert, but current status is: %s.", id, v.Status)
		}
		if !revertSnap.CanStart(s.Status, false) {
			return basalt.Errorf(basalt.ECONFLICT, "Snapshot %s status must be available to revert to, but current status is: %s.", snapID, s.Status)
		}
		op = p.newOp(ctx, events.KindRevert, v, v.Backend())
		op.SnapshotID = snapID
		enqueue(op, events.BackendTopic(v.Backend()), events.Command{OpID: op.ID, RequestID: c.RequestID,
			Kind: events.KindRevert, VolumeID: id, ProjectID: v.ProjectID, SnapshotID: snapID, Backend: v.Backend(),
			Volume: basalt.VolumeSpec{ID: id, SizeGB: v.Size}})
		revertVol.Begin(v, op.ID)
		revertSnap.Begin(s, op.ID)
		return nil
	}, func() *basalt.Operation { return op })
	if err != nil {
		return unavailable(p.logger, "revert the volume", err)
	}
	p.send(ctx, op)
	return nil
}

// SetBootable sets the volume's bootable flag. A volume in maintenance is EINVALID.
func (p *Plane) SetBootable(ctx context.Context, id string, bootable bool) error {
	return p.changeVolume(ctx, id, func(v *basalt.Volume) error {
		if v.Status == basalt.StatusMaintenance {
			return invalid("Invalid volume: Volume %s is in maintenance.", id)
		}
		v.Bootable = bootable
		return nil
	})
}

// SetReadOnly sets the volume's read-only flag; the volume must be available.
func (p *Plane) SetReadOnly(ctx context.Context, id string, readonly bool) error {
	return p.changeVolume(ctx, id, func(v *basalt.Volume) error {
		if v.Status != basalt.StatusAvailable {
			return invalid("Invalid volume: Volume %s status must be available to update readonly flag, but current status is: %s.", id, v.Status)
		}
		v.ReadOnly = readonly
		return nil
	})
}

// VolumeMetadata returns volume id's metadata.
func (p *Plane) VolumeMetadata(ctx context.Context, id string) (map[string]string, error) {
	v, err := p.Volume(ctx, id)
	if err != nil {
		return nil, err
	}
	return v.Metadata, nil
}

// SetVolumeMetadata merges md into volume id's metadata (replace: replaces it) and returns it.
func (p *Plane) SetVolumeMetadata(ctx context.Context, id string, md map[string]string, replace bool) (map[string]string, error) {
	if err := p.validateMetadata(md); err != nil {
		return nil, err
	}
	var out map[string]string
	err := p.changeVolume(ctx, id, func(v *basalt.Volume) error {
		if v.Status == basalt.StatusMaintenance {
			return invalid("Invalid volume: Volume %s is in maintenance.", id)
		}
		merged := mergeMetadata(v.Metadata, md, replace)
		if err := p.checkMetadataCount(len(merged)); err != nil {
			return err
		}
		v.Metadata = merged
		out = v.Metadata
		return nil
	})
	return out, err
}

// DeleteVolumeMetadata removes key from volume id's metadata (ENOTFOUND when absent).
func (p *Plane) DeleteVolumeMetadata(ctx context.Context, id, key string) error {
	return p.changeVolume(ctx, id, func(v *basalt.Volume) error {
		if _, ok := v.Metadata[key]; !ok {
			return basalt.Errorf(basalt.ENOTFOUND, "Metadata item was not found")
		}
		delete(v.Metadata, key)
		return nil
	})
}

func (p *Plane) changeVolume(ctx context.Context, id string, fn func(v *basalt.Volume) error) error {
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	if _, err := p.store.UpdateVolume(ctx, id, fn); err != nil {
		return unavailable(p.logger, "update the volume", err)
	}
	return nil
}

// ResetVolumeStatus sets a volume's status and/or attach status (admin), ending any operation
// in flight on it. Errors: EFORBIDDEN, ENOTFOUND, EINVALID (no field, an unknown status,
// "deleting", or in-use without attachments).
func (p *Plane) ResetVolumeStatus(ctx context.Context, id string, status, attachStatus *string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	if status == nil && attachStatus == nil {
		return invalid("Must specify 'status', 'attach_status' or 'migration_status' for update.")
	}
	var st basalt.VolumeStatus
	if status != nil {
		st = basalt.VolumeStatus(strings.ToLower(*status))
		if !slices.Contains(basalt.AllVolumeStatuses, st) {
			return invalid("Invalid input for field/attribute status. Value: %s. It must be one of the volume statuses.", *status)
		}
		if st == basalt.StatusDeleting {
			return invalid("Invalid input received: Cannot reset a volume's status to deleting.")
		}
	}
	if attachStatus != nil && *attachStatus != basalt.AttachAttached && *attachStatus != basalt.AttachDetached {
		return invalid("Invalid input for field/attribute attach_status. Value: %s. It must be attached or detached.", *attachStatus)
	}
	if _, err := p.Volume(ctx, id); err != nil {
		return err
	}
	var opID string
	var detached []*basalt.Attachment
	v, err := p.store.ChangeVolume(ctx, id, func(v *basalt.Volume, _ *store.VolumeChange) error {
		detached = nil
		if attachStatus != nil {
			v.AttachStatus = *attachStatus
			if v.AttachStatus == basalt.AttachDetached {
				// As Cinder: detached also deletes every attachment.
				detached, v.Attachments = v.Attachments, nil
			}
		}
		if st == basalt.StatusInUse && v.AttachStatus != basalt.AttachAttached {
			return invalid("Invalid volume: Volume %s has no attachments; it cannot be in-use.", id)
		}
		if st != "" {
			v.Status = st
			v.StatusReason = ""
		}
		opID, v.OpID = v.OpID, ""
		return nil
	})
	if err != nil {
		return unavailable(p.logger, "reset the volume's status", err)
	}
	p.endAndSettle(ctx, opID, id, "status reset by an administrator")
	for _, a := range detached {
		p.endOp(ctx, a.OpID, "status reset by an administrator")
	}
	if len(detached) > 0 {
		return p.teardown(ctx, v, "", true)
	}
	return nil
}
