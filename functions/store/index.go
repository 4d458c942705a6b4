package store

// Secondary indexes of volumes, so that a filtered or sorted listing reads about what it returns.
//
// Every index is a sorted set whose members all have score 0, so Redis orders them by their bytes
// (ZRANGEBYLEX). A member is
//
//	value ‖ created ‖ id
//
// where value is the indexed field's value encoded so that byte order is the field's order
// (strings escaped and terminated, numbers as 8 big-endian bytes with the sign bit flipped),
// created is the volume's creation time in microseconds (8 bytes, as value) and id the volume's
// id. One set per field and scope (each project's, and every project's for all_tenants):
//
//	proj:<p>:vols:by:<field>, vols:by:<field>
//
// for status, name, availability_zone, size, updated_at, bootable, metadata (one member per
// key=value pair, value = key ‖ value) and id. Members of one value are consecutive and ordered
// by (created, id), which is the order of the creation-time sets vols and proj:<p>:vols (score
// = created µs, then member = id). So one set answers both an equality filter on its field (the
// range of one value, read in the default newest-first order) and a sort on it (the whole set,
// ties broken by created_at then id, in the sort's direction, as Cinder's process_sort_params
// does). Sorting on created_at uses the creation-time sets.
//
// The entries of a volume are a function of its record (volumeIndexEntries). Every write of a
// volume record in this package computes them from the record it read (inside WATCH) and the
// record it writes, and queues the difference in the same MULTI/EXEC, so the indexes never
// disagree with the records. ReindexVolumes fills them for records written before they existed.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// The indexed fields, by their name in index keys (Cinder's sort and filter keys).
const (
	ixStatus   = "status"
	ixName     = "name"
	ixZone     = "availability_zone"
	ixSize     = "size"
	ixUpdated  = "updated_at"
	ixBootable = "bootable"
	ixMetadata = "metadata"
	ixID       = "id"
	ixCreated  = "created_at" // the creation-time sets vols and proj:<p>:vols
)

var volumeIndexFields = []string{ixStatus, ixName, ixZone, ixSize, ixUpdated, ixBootable, ixMetadata, ixID}

// statusSorts are the sort keys that have a composite index with status (`status+<key>`:
// member status ‖ value ‖ created ‖ id), so that a listing filtered on status and sorted on
// another key walks one index in order: Cinder's most common listing, "my volumes in error, by
// size", costs what an unfiltered page does.
var statusSorts = []string{ixName, ixZone, ixSize, ixUpdated, ixID}

// statusComposite names the composite index of status with sort key field.
func statusComposite(field string) string { return ixStatus + "+" + field }

// VolumeSortKeys are the sort keys ListVolumes answers from an index.
var VolumeSortKeys = []string{ixCreated, ixUpdated, ixID, ixName, ixSize, ixStatus, ixZone}

// volumeIndexVersion is written to volumeIndexVersionKey once every volume is indexed. A change
// of the entries' layout must bump it (and drop the old entries), so that ReindexVolumes runs
// again.
const (
	volumeIndexVersion    = "2" // 2: the composite status indexes
	volumeIndexVersionKey = p + "vols:index-version"
)

// volumeIndexKey is field's index of project's volumes, in the project's partition.
func volumeIndexKey(project, field string) string {
	if field == ixCreated {
		return projectVolumesKey(project)
	}
	return events.PrefixOf(project) + "proj:" + project + ":vols:by:" + field
}

// volumeIndexKeyIn is field's index of every volume of partition n, whatever its project.
func volumeIndexKeyIn(n int, field string) string {
	if field == ixCreated {
		return volumesIn(n)
	}
	return events.ShardPrefix(n) + "vols:by:" + field
}

// appendStr encodes s so that byte order is string order and the encoding ends itself: 0x00
// becomes 0x00 0xff, and 0x00 0x01 ends it. s is taken as a record holds it: a record is JSON,
// in which each byte that is not UTF-8 becomes U+FFFD.
func appendStr(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		var sb strings.Builder
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				sb.WriteRune(utf8.RuneError)
			} else {
				sb.WriteString(s[i : i+n])
			}
			i += n
		}
		s = sb.String()
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			b = append(b, 0, 0xff)
		} else {
			b = append(b, s[i])
		}
	}
	return append(b, 0, 1)
}

// strLen is the length of the encoded string at the start of m.
func strLen(m string) int {
	for i := 0; i+1 < len(m); i++ {
		if m[i] == 0 {
			if m[i+1] == 1 {
				return i + 2
			}
			i++
		}
	}
	return len(m)
}

// appendInt encodes n in 8 bytes whose byte order is n's order.
func appendInt(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(n)^(1<<63))
}

// updatedMicro is the microsecond of v's last update, 0 when it has none. Timestamps are indexed
// (and compared) to the microsecond, the precision the API shows.
func updatedMicro(v *basalt.Volume) int64 {
	if v.UpdatedAt == nil || v.UpdatedAt.IsZero() {
		return 0
	}
	return v.UpdatedAt.UnixMicro()
}

// indexValues returns the encoded values of field for v: one, or one per metadata pair.
func indexValues(field string, v *basalt.Volume) []string {
	var b []byte
	switch field {
	case ixStatus:
		b = appendStr(nil, string(v.Status))
	case ixName:
		name := ""
		if v.Name != nil {
			name = *v.Name
		}
		b = appendStr(nil, name)
	case ixZone:
		b = appendStr(nil, v.AvailabilityZone)
	case ixSize:
		b = appendInt(nil, int64(v.Size))
	case ixUpdated:
		b = appendInt(nil, updatedMicro(v))
	case ixBootable:
		b = []byte{0}
		if v.Bootable {
			b[0] = 1
		}
	case ixID:
		b = appendStr(nil, v.ID)
	case ixMetadata:
		out := make([]string, 0, len(v.Metadata))
		for _, k := range slices.Sorted(maps.Keys(v.Metadata)) {
			out = append(out, string(appendStr(appendStr(nil, k), v.Metadata[k])))
		}
		return out
	case ixCreated:
		return []string{""}
	}
	return []string{string(b)}
}

// valueLen is the length of the value at the start of a member of field's index.
func valueLen(field, m string) int {
	switch field {
	case ixSize, ixUpdated:
		return 8
	case ixBootable:
		return 1
	case ixMetadata:
		n := strLen(m)
		return n + strLen(m[n:])
	case ixCreated:
		return 0
	}
	return strLen(m)
}

// indexTail is the part of v's members after the value: created ‖ id.
func indexTail(v *basalt.Volume) string {
	return string(appendInt(nil, v.CreatedAt.UnixMicro())) + v.ID
}

// sortMember is v's member in field's index (for created_at: created ‖ id). Its byte order is
// the listing order of the sort on field, ascending.
func sortMember(field string, v *basalt.Volume) string {
	return indexValues(field, v)[0] + indexTail(v)
}

type ixEntry struct{ key, member string }

// volumeIndexEntries returns every index entry of v (none for nil).
func volumeIndexEntries(v *basalt.Volume) []ixEntry {
	if v == nil {
		return nil
	}
	tail := indexTail(v)
	// Every volume is in its partition's indexes of all projects, and in its project's.
	scopes := []func(field string) string{func(f string) string { return volumeIndexKeyIn(events.ShardOf(v.ID), f) }}
	if v.ProjectID != "" {
		scopes = append(scopes, func(f string) string { return volumeIndexKey(v.ProjectID, f) })
	}
	out := make([]ixEntry, 0, 2*(len(volumeIndexFields)+len(v.Metadata)))
	for _, scope := range scopes {
		for _, f := range volumeIndexFields {
			key := scope(f)
			for _, val := range indexValues(f, v) {
				out = append(out, ixEntry{key, val + tail})
			}
		}
		status := indexValues(ixStatus, v)[0]
		for _, f := range statusSorts {
			out = append(out, ixEntry{scope(statusComposite(f)), status + indexValues(f, v)[0] + tail})
		}
	}
	return out
}

// reindexVolume queues the change of the index entries from before (the entries of the record
// read, nil for a new volume) to those of v (nil for a deleted one), in the caller's transaction.
func reindexVolume(ctx context.Context, pipe redis.Pipeliner, before []ixEntry, v *basalt.Volume) {
	after := volumeIndexEntries(v)
	had := make(map[ixEntry]bool, len(before))
	for _, e := range before {
		had[e] = true
	}
	var added []ixEntry
	for _, e := range after {
		if had[e] {
			delete(had, e)
		} else {
			added = append(added, e)
		}
	}
	removed := slices.Collect(maps.Keys(had))
	slices.SortFunc(removed, func(a, b ixEntry) int { return strings.Compare(a.key+"\x00"+a.member, b.key+"\x00"+b.member) })
	for _, e := range removed {
		pipe.ZRem(ctx, e.key, e.member)
	}
	addEntries(ctx, pipe, added)
}

// addEntries queues the entries as one ZADD per key.
func addEntries(ctx context.Context, pipe redis.Pipeliner, entries []ixEntry) {
	byKey := map[string][]redis.Z{}
	var keys []string
	for _, e := range entries {
		if _, ok := byKey[e.key]; !ok {
			keys = append(keys, e.key)
		}
		byKey[e.key] = append(byKey[e.key], redis.Z{Member: e.member})
	}
	for _, k := range keys {
		pipe.ZAdd(ctx, k, byKey[k]...)
	}
}

// ReindexVolumes adds the index entries of every volume, unless the indexes are marked complete
// at the current version. It is idempotent and safe while other processes write volumes: each
// batch of records is read under WATCH and indexed in one transaction, so a record that changes
// meanwhile is read again. Volumes created after it starts are indexed by their own writes. It
// returns the number of volumes it indexed (0 when there was nothing to do).
//
// Writers that predate the indexes (a rolling upgrade) do not maintain them: run it (delete
// vols:index-version first) once every writer runs this version. VerifyVolumeIndexes reports
// entries that disagree with the records.
func (s *Store) ReindexVolumes(ctx context.Context) (int, error) {
	have, err := s.rdb.Get(ctx, volumeIndexVersionKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read the volume index version: %w", err)
	}
	if have == volumeIndexVersion {
		return 0, nil
	}
	// Three batches in flight, so that decoding and encoding here overlap Redis's work.
	var indexed atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for part := 0; part < events.Shards && gctx.Err() == nil; part++ {
		var cursor uint64
		for gctx.Err() == nil {
			// ZSCAN returns every member present from start to end (some perhaps twice, which
			// indexing twice does not mind), however the set changes meanwhile.
			res, next, err := s.rdb.ZScan(gctx, volumesIn(part), cursor, "", 1000).Result()
			if err != nil {
				g.Go(func() error { return fmt.Errorf("reindex volumes: %w", err) })
				break
			}
			ids := make([]string, 0, len(res)/2)
			for i := 0; i < len(res); i += 2 {
				ids = append(ids, res[i])
			}
			// A batch holds ids of one partition: its transaction stays in one slot.
			for len(ids) > 0 {
				batch := ids[:min(len(ids), 500)]
				ids = ids[len(batch):]
				g.Go(func() error {
					k, err := s.indexBatch(gctx, batch)
					indexed.Add(int64(k))
					return err
				})
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	if err := g.Wait(); err != nil {
		return int(indexed.Load()), err
	}
	n := int(indexed.Load())
	if err := s.rdb.Set(ctx, volumeIndexVersionKey, volumeIndexVersion, 0).Err(); err != nil {
		return n, fmt.Errorf("write the volume index version: %w", err)
	}
	return n, nil
}

// indexBatch indexes the volumes ids in one transaction that watches their records. A batch
// whose records keep changing is split, down to single volumes.
func (s *Store) indexBatch(ctx context.Context, ids []string) (int, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = volumeKey(id)
	}
	for attempt := 0; attempt < 100; attempt++ {
		n := 0
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, keys...).Result()
			if err != nil {
				return err
			}
			var entries []ixEntry
			for _, raw := range vals {
				str, ok := raw.(string)
				if !ok {
					continue // deleted since
				}
				var v basalt.Volume
				if err := json.Unmarshal([]byte(str), &v); err != nil {
					return fmt.Errorf("decode volume: %w", err)
				}
				entries = append(entries, volumeIndexEntries(&v)...)
				n++
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				addEntries(ctx, pipe, entries)
				return nil
			})
			return err
		}, keys...)
		switch {
		case err == nil:
			return n, nil
		case !errors.Is(err, redis.TxFailedErr):
			return 0, fmt.Errorf("reindex volumes: %w", err)
		case len(ids) > 1 && attempt >= 2:
			a, err := s.indexBatch(ctx, ids[:len(ids)/2])
			if err != nil {
				return a, err
			}
			b, err := s.indexBatch(ctx, ids[len(ids)/2:])
			return a + b, err
		}
	}
	return 0, basalt.Errorf(basalt.ECONFLICT, "Too many concurrent updates of volume %s; try again.", ids[0])
}

// VerifyVolumeIndexes compares every index entry with the entries the volume records call for
// and describes each difference (an entry missing, or one that no record calls for). It reads
// every record and every index; it is for tests and for checking a deployment by hand.
func (s *Store) VerifyVolumeIndexes(ctx context.Context) ([]string, error) {
	want := map[ixEntry]bool{}
	for part := 0; part < events.Shards; part++ {
		var cursor uint64
		for {
			res, next, err := s.rdb.ZScan(ctx, volumesIn(part), cursor, "", 1000).Result()
			if err != nil {
				return nil, err
			}
			var ids []string
			for i := 0; i < len(res); i += 2 {
				ids = append(ids, res[i])
			}
			vols, err := s.volumesByID(ctx, ids)
			if err != nil {
				return nil, err
			}
			for _, v := range vols {
				for _, e := range volumeIndexEntries(v) {
					want[e] = true
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	var diffs []string
	keys, err := scanKeys(ctx, s.rdb, "basalt:*vols:by:*")
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		members, err := s.rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		if err != nil {
			return nil, err
		}
		for _, z := range members {
			e := ixEntry{k, z.Member.(string)}
			if !want[e] {
				diffs = append(diffs, fmt.Sprintf("%s has %q, which no volume calls for", k, e.member))
			} else if z.Score != 0 {
				diffs = append(diffs, fmt.Sprintf("%s has %q with score %v, not 0", k, e.member, z.Score))
			}
			delete(want, e)
		}
	}
	for e := range want {
		diffs = append(diffs, fmt.Sprintf("%s lacks %q", e.key, e.member))
	}
	slices.Sort(diffs)
	return diffs, nil
}

// ---- listing from the indexes ----

// listAcross answers a query of every project: every partition answers the query at once and
// the pages are merged in the query's order; a count is the sum of the partitions'.
//
// A partition is first asked for about twice its share of the offset + limit volumes wanted
// (need). The merge is complete when no partition that returned all it was asked for could hold
// a volume before the merge's need-th: each one that could is asked again for need (a second
// round, rare when the volumes spread over the partitions). With Less, each partition reads
// every match anyway, and the marker is placed in the merge.
func (s *Store) listAcross(ctx context.Context, q VolumeQuery, field string) (VolumeList, error) {
	need := q.Offset + q.Limit
	pages := make([]VolumeList, events.Shards)
	asked := make([]int, events.Shards)
	for n := range asked {
		asked[n] = min(need, 2*need/events.Shards+8)
		if q.Less != nil {
			asked[n] = math.MaxInt32
		}
	}
	before := func(a, b *basalt.Volume) int { // the merge's order
		if q.Less != nil {
			switch {
			case q.Less(a, b):
				return -1
			case q.Less(b, a):
				return 1
			}
			return 0
		}
		c := strings.Compare(sortMember(field, a), sortMember(field, b))
		if !q.Asc {
			c = -c
		}
		return c
	}
	todo := make([]bool, events.Shards)
	for n := range todo {
		todo[n] = true
	}
	var all []*basalt.Volume
	for round := 0; ; round++ {
		g, gctx := errgroup.WithContext(ctx)
		for n := range pages {
			if !todo[n] {
				continue
			}
			g.Go(func() error {
				qn := q
				qn.partition, qn.Offset, qn.Limit = n+1, 0, asked[n]
				if q.Less != nil {
					qn.Marker = ""
				}
				var err error
				pages[n], err = s.ListVolumes(gctx, qn)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return VolumeList{}, err
		}
		all = all[:0]
		for _, pg := range pages {
			all = append(all, pg.Items...)
		}
		slices.SortStableFunc(all, before)
		if q.Less != nil || len(all) < need && round > 0 {
			break
		}
		again := false
		for n, pg := range pages {
			todo[n] = false
			if len(pg.Items) < asked[n] || asked[n] >= need {
				continue // it gave all it has, or all that can be wanted of it
			}
			if len(all) < need || before(pg.Items[len(pg.Items)-1], all[need-1]) < 0 {
				todo[n], asked[n], again = true, need, true
			}
		}
		if !again {
			break
		}
	}
	var out VolumeList
	for _, pg := range pages {
		out.Count += pg.Count
	}
	if q.Less != nil && q.Marker != "" {
		i := slices.IndexFunc(all, func(v *basalt.Volume) bool { return v.ID == q.Marker })
		if i < 0 {
			return VolumeList{}, volumeNotFound(q.Marker)
		}
		all = all[i+1:]
	}
	all = all[min(q.Offset, len(all)):]
	out.Items = all[:min(q.Limit, len(all))]
	return out, nil
}

// A VolumeEq is an equality condition on an indexed field (see EqStatus and the others).
type VolumeEq struct{ field, prefix string }

// EqStatus holds for volumes in status.
func EqStatus(status string) VolumeEq { return VolumeEq{ixStatus, string(appendStr(nil, status))} }

// EqName holds for volumes named name. The index holds a volume without a name as named "":
// EqName("") holds for those too.
func EqName(name string) VolumeEq { return VolumeEq{ixName, string(appendStr(nil, name))} }

// EqAvailabilityZone holds for volumes in zone.
func EqAvailabilityZone(zone string) VolumeEq {
	return VolumeEq{ixZone, string(appendStr(nil, zone))}
}

// EqSize holds for volumes of size GiB.
func EqSize(size int) VolumeEq { return VolumeEq{ixSize, string(appendInt(nil, int64(size)))} }

// EqBootable holds for volumes whose bootable flag is b.
func EqBootable(b bool) VolumeEq {
	v := basalt.Volume{Bootable: b}
	return VolumeEq{ixBootable, indexValues(ixBootable, &v)[0]}
}

// EqMetadata holds for volumes whose metadata maps key to value.
func EqMetadata(key, value string) VolumeEq {
	return VolumeEq{ixMetadata, string(appendStr(appendStr(nil, key), value))}
}

// A VolumeQuery selects, orders and pages volumes.
type VolumeQuery struct {
	Project string // "" for every project
	// Eq are conditions the indexes answer; a volume must meet them all.
	Eq []VolumeEq
	// Match is the whole filter, checked on every record read (nil: every volume matches). It
	// must imply every condition of Eq. The marker must match it.
	Match func(v *basalt.Volume) bool
	// Exact says that Match holds exactly when every condition of Eq does: then a count with
	// at most one condition is read from the index instead of counting records.
	Exact bool
	// Sort is one of VolumeSortKeys ("" is created_at), ties broken by created_at then id,
	// all in the direction Asc.
	Sort string
	Asc  bool
	// Less, when set, orders the volumes instead of Sort (a total order): every match is read,
	// as by a count, and sorted in memory.
	Less func(a, b *basalt.Volume) bool
	// Marker is the id of the last volume of the previous page; Offset more are skipped.
	Marker string
	Offset int
	Limit  int // at most this many volumes (1000 when 0)
	Count  bool

	// partition is, with Project "", 1 + the one partition the query reads (0: every one).
	partition int
}

// indexKey is field's index in q's scope.
func (q VolumeQuery) indexKey(field string) string {
	if q.Project != "" {
		return volumeIndexKey(q.Project, field)
	}
	return volumeIndexKeyIn(q.partition-1, field)
}

// A VolumeList is one page of a VolumeQuery.
type VolumeList struct {
	Items []*basalt.Volume
	// Count is the number of volumes that match on every page (when VolumeQuery.Count).
	Count int
}

// A volSource is a run of an index's members that holds every match: the range of one value of
// an equality condition, or the whole scope in a sort order.
type volSource struct {
	key    string
	field  string
	prefix string // the value of an equality condition; "" for a whole index
	count  int64
	eq     int // index of its condition in VolumeQuery.Eq, -1 for the sort's index
	// composite: the index is statusComposite(field), whose members are prefix ‖ the field's
	// value ‖ created ‖ id: the condition's volumes in field's order.
	composite bool
}

func (src volSource) lexRange() (lo, hi string) {
	if src.prefix == "" {
		return "-", "+"
	}
	end := []byte(src.prefix)
	for len(end) > 0 && end[len(end)-1] == 0xff {
		end = end[:len(end)-1]
	}
	if len(end) == 0 {
		return "[" + src.prefix, "+"
	}
	end[len(end)-1]++
	return "[" + src.prefix, "(" + string(end)
}

// tail returns created ‖ id of a member of src.
func (src volSource) tail(member string) string {
	if src.composite {
		rest := member[len(src.prefix):]
		return rest[valueLen(src.field, rest):]
	}
	if src.prefix != "" {
		return member[len(src.prefix):]
	}
	return member[valueLen(src.field, member):]
}

// Costs, in units of one index member read and checked: a record read and decoded costs about
// recordCost members.
const recordCost = 8

// ListVolumes returns one page of q. Errors: ENOTFOUND for a marker that is not a volume of the
// scope that matches.
//
// Work, for a page of need = offset + limit volumes out of N in the scope:
//   - no condition, or conditions whose index is in the requested order (any condition with
//     the default or created_at order; a condition on the sort field): it walks the smallest
//     such index, checks the other conditions on the index (ZMSCORE, no record read) and reads
//     records only for candidates, in chunks sized by the pass rate seen so far, until the
//     page is full. With one condition that costs what an unfiltered page does. The worst
//     case is conditions that each hold often but rarely together: the walk reads up to the
//     smallest condition's count of index members.
//   - conditions none of whose indexes is in the requested order (status=error with
//     sort=size): it either reads every record of the smallest condition and sorts them, or
//     walks the sort's index checking the conditions on the index, whichever reads less. The
//     worst case is a condition holding for about sqrt(need*N/recordCost) volumes.
//   - filters no index answers (Match alone: name~, host, volume_type...): the walk reads
//     records until the page is full, up to every record of the scope.
//   - a count reads the index's count when q.Exact with at most one condition; with more, it
//     walks the smallest condition's members checking the others on the index (no record
//     read); without q.Exact it reads every record that meets the conditions, as Less does.
func (s *Store) ListVolumes(ctx context.Context, q VolumeQuery) (VolumeList, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	if q.Match == nil {
		q.Match = func(*basalt.Volume) bool { return true }
	}
	field := q.Sort
	if field == "" {
		field = ixCreated
	}
	if !slices.Contains(VolumeSortKeys, field) {
		return VolumeList{}, basalt.Errorf(basalt.EINVALID, "Invalid sort key %s.", q.Sort)
	}
	if q.Project == "" && q.partition == 0 {
		return s.listAcross(ctx, q, field)
	}
	var marker *basalt.Volume
	if q.Marker != "" {
		m, err := getJSON[basalt.Volume](ctx, s.rdb, volumeKey(q.Marker))
		if err != nil {
			return VolumeList{}, fmt.Errorf("list volumes: %w", err)
		}
		if m == nil || (q.Project != "" && m.ProjectID != q.Project) || !q.Match(m) {
			return VolumeList{}, volumeNotFound(q.Marker)
		}
		marker = m
	}

	// The sizes of the candidate runs, in one round trip.
	sources := make([]volSource, 0, len(q.Eq)+1)
	cmds, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.ZCard(ctx, q.indexKey(ixCreated))
		for _, eq := range q.Eq {
			src := volSource{key: q.indexKey(eq.field), field: eq.field, prefix: eq.prefix}
			lo, hi := src.lexRange()
			pipe.ZLexCount(ctx, src.key, lo, hi)
		}
		return nil
	})
	if err != nil {
		return VolumeList{}, fmt.Errorf("list volumes: %w", err)
	}
	total := cmds[0].(*redis.IntCmd).Val()
	sortSrc := volSource{key: q.indexKey(field), field: field, count: total, eq: -1}
	matches := total // an upper bound of the matches
	for i, eq := range q.Eq {
		src := volSource{key: q.indexKey(eq.field), field: eq.field, prefix: eq.prefix,
			count: cmds[i+1].(*redis.IntCmd).Val(), eq: i}
		sources = append(sources, src)
		matches = min(matches, src.count)
	}
	var out VolumeList
	if q.Count && q.Exact && len(q.Eq) <= 1 {
		out.Count = int(matches)
	}
	if matches == 0 {
		return out, nil
	}
	smallest := sortSrc
	for _, src := range sources {
		if src.count < smallest.count {
			smallest = src
		}
	}
	if q.Count && q.Exact && len(q.Eq) > 1 && q.Less == nil {
		// Every condition is on an index: count there, reading no record.
		if out.Count, err = s.countPassing(ctx, smallest, sources); err != nil {
			return VolumeList{}, err
		}
	}
	if q.Less != nil || (q.Count && !q.Exact) {
		all, err := s.collect(ctx, smallest, sources, q.Match)
		if err != nil {
			return VolumeList{}, err
		}
		if q.Count {
			out.Count = len(all)
		}
		out.Items, err = pageOf(all, q, field, marker)
		return out, err
	}

	// Pick the cheaper of walking the smallest source in the requested order and reading the
	// smallest other one whole.
	need := int64(q.Offset + q.Limit)
	walk := sortSrc
	var whole *volSource
	for i, src := range sources {
		if field == ixCreated || src.field == field {
			if src.count < walk.count {
				walk = src
			}
		} else if whole == nil || src.count < whole.count {
			whole = &sources[i]
		}
		if src.field == ixStatus && slices.Contains(statusSorts, field) {
			// The status condition's volumes in the sort's order: its composite index.
			comp := volSource{key: q.indexKey(statusComposite(field)), field: field, prefix: src.prefix,
				count: src.count, eq: src.eq, composite: true}
			if comp.count < walk.count {
				walk = comp
			}
		}
	}
	// Both check the other conditions on the index and read records for candidates only: the
	// walk about need of them, the whole source about every match.
	walkCost := min(walk.count, need*walk.count/matches) + need*recordCost
	if whole != nil && whole.count+matches*recordCost < walkCost {
		all, err := s.collect(ctx, *whole, sources, q.Match)
		if err != nil {
			return VolumeList{}, err
		}
		out.Items, err = pageOf(all, q, field, marker)
		return out, err
	}
	out.Items, err = s.walk(ctx, walk, sources, q, field, marker, matches)
	return out, err
}

// pageOf sorts every match and returns the page after the marker.
func pageOf(all []*basalt.Volume, q VolumeQuery, field string, marker *basalt.Volume) ([]*basalt.Volume, error) {
	if q.Less != nil {
		slices.SortStableFunc(all, func(a, b *basalt.Volume) int {
			switch {
			case q.Less(a, b):
				return -1
			case q.Less(b, a):
				return 1
			}
			return 0
		})
		if marker != nil {
			i := slices.IndexFunc(all, func(v *basalt.Volume) bool { return v.ID == marker.ID })
			if i < 0 {
				return nil, volumeNotFound(marker.ID)
			}
			all = all[i+1:]
		}
	} else {
		type keyed struct {
			k string
			v *basalt.Volume
		}
		ks := make([]keyed, 0, len(all))
		var mk string
		if marker != nil {
			mk = sortMember(field, marker)
		}
		for _, v := range all {
			k := sortMember(field, v)
			if marker != nil && (k == mk || (k < mk) == q.Asc) {
				continue // at or before the marker
			}
			ks = append(ks, keyed{k, v})
		}
		slices.SortFunc(ks, func(a, b keyed) int {
			if q.Asc {
				return strings.Compare(a.k, b.k)
			}
			return strings.Compare(b.k, a.k)
		})
		all = all[:0]
		for _, k := range ks {
			all = append(all, k.v)
		}
	}
	if q.Offset >= len(all) {
		return []*basalt.Volume{}, nil
	}
	all = all[q.Offset:]
	return all[:min(len(all), q.Limit)], nil
}

// A cursor reads a source in order: a lex range by member, the creation-time set by rank.
type cursor struct {
	rdb   redis.UniversalClient
	src   volSource
	asc   bool
	after string // lex: the last member read ("" before the first)
	rank  int64  // creation-time set: the next rank
	skip  int64  // lex: members to skip on the first read
	done  bool
}

// next returns the tails (created ‖ id) of up to n more members.
func (c *cursor) next(ctx context.Context, n int) ([]string, error) {
	if c.done {
		return nil, nil
	}
	if c.src.field == ixCreated {
		stop := c.rank + int64(n) - 1
		var zs []redis.Z
		var err error
		if c.asc {
			zs, err = c.rdb.ZRangeWithScores(ctx, c.src.key, c.rank, stop).Result()
		} else {
			zs, err = c.rdb.ZRevRangeWithScores(ctx, c.src.key, c.rank, stop).Result()
		}
		if err != nil {
			return nil, err
		}
		c.rank += int64(len(zs))
		c.done = len(zs) < n
		out := make([]string, len(zs))
		for i, z := range zs {
			out[i] = string(appendInt(nil, int64(z.Score))) + z.Member.(string)
		}
		return out, nil
	}
	lo, hi := c.src.lexRange()
	if c.after != "" {
		if c.asc {
			lo = "(" + c.after
		} else {
			hi = "(" + c.after
		}
	}
	by := &redis.ZRangeBy{Min: lo, Max: hi, Offset: c.skip, Count: int64(n)}
	c.skip = 0
	var ms []string
	var err error
	if c.asc {
		ms, err = c.rdb.ZRangeByLex(ctx, c.src.key, by).Result()
	} else {
		ms, err = c.rdb.ZRevRangeByLex(ctx, c.src.key, by).Result()
	}
	if err != nil {
		return nil, err
	}
	c.done = len(ms) < n
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = c.src.tail(m)
	}
	if len(ms) > 0 {
		c.after = ms[len(ms)-1]
	}
	return out, nil
}

// candidates reads up to n more members of c, keeps those that meet every condition of the
// other sources (on the index), and returns their records that match.
func (s *Store) candidates(ctx context.Context, c *cursor, others []volSource, match func(*basalt.Volume) bool, n int) (
	scanned int, vols []*basalt.Volume, err error) {
	scanned, ids, err := s.passing(ctx, c, others, n)
	if err != nil || len(ids) == 0 {
		return scanned, nil, err
	}
	vs, err := s.volumesByID(ctx, ids)
	if err != nil {
		return 0, nil, err
	}
	vols = vs[:0]
	for _, v := range vs {
		if match(v) {
			vols = append(vols, v)
		}
	}
	return scanned, vols, nil
}

// passing reads up to n more members of c and returns the ids of those that meet every
// condition of the other sources, checked on the indexes (ZMSCORE of the member each would have
// there).
func (s *Store) passing(ctx context.Context, c *cursor, others []volSource, n int) (scanned int, ids []string, err error) {
	tails, err := c.next(ctx, n)
	if err != nil || len(tails) == 0 {
		return 0, nil, err
	}
	keep := make([]bool, len(tails))
	for i := range keep {
		keep[i] = true
	}
	if len(others) > 0 {
		cmds, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, o := range others {
				args := make([]any, 0, 2+len(tails))
				args = append(args, "zmscore", o.key)
				for _, t := range tails {
					args = append(args, o.prefix+t)
				}
				pipe.Do(ctx, args...)
			}
			return nil
		})
		if err != nil {
			return 0, nil, err
		}
		for _, cmd := range cmds {
			scores, err := cmd.(*redis.Cmd).Slice()
			if err != nil {
				return 0, nil, err
			}
			for i, sc := range scores {
				if sc == nil {
					keep[i] = false
				}
			}
		}
	}
	ids = make([]string, 0, len(tails))
	for i, t := range tails {
		if keep[i] {
			ids = append(ids, t[8:])
		}
	}
	return len(tails), ids, nil
}

// countPassing counts the members of src that meet every condition of the other sources, on
// the indexes alone.
func (s *Store) countPassing(ctx context.Context, src volSource, sources []volSource) (int, error) {
	c := &cursor{rdb: s.rdb, src: src, asc: true}
	rest := others(sources, src)
	n := 0
	for !c.done {
		_, ids, err := s.passing(ctx, c, rest, 4096)
		if err != nil {
			return 0, fmt.Errorf("count volumes: %w", err)
		}
		n += len(ids)
	}
	return n, nil
}

func others(sources []volSource, src volSource) []volSource {
	out := make([]volSource, 0, len(sources))
	for _, o := range sources {
		if o.eq != src.eq {
			out = append(out, o)
		}
	}
	return out
}

// collect returns every match in src, in no particular order.
func (s *Store) collect(ctx context.Context, src volSource, sources []volSource, match func(*basalt.Volume) bool) ([]*basalt.Volume, error) {
	c := &cursor{rdb: s.rdb, src: src, asc: true}
	rest := others(sources, src)
	var all []*basalt.Volume
	for !c.done {
		_, vs, err := s.candidates(ctx, c, rest, match, 2000)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		all = append(all, vs...)
	}
	return all, nil
}

// countBefore returns how many members of the creation-time index key come before v in the
// order asc (ascending, else descending), v itself not being one of them.
func (s *Store) countBefore(ctx context.Context, key string, v *basalt.Volume, asc bool) (int64, error) {
	at := score(v.CreatedAt)
	pipe := s.rdb.Pipeline()
	var strict *redis.IntCmd
	if asc {
		strict = pipe.ZCount(ctx, key, "-inf", fmt.Sprintf("(%v", at))
	} else {
		strict = pipe.ZCount(ctx, key, fmt.Sprintf("(%v", at), "+inf")
	}
	ties := pipe.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: fmt.Sprint(at), Max: fmt.Sprint(at)})
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	n := strict.Val()
	for _, m := range ties.Val() {
		if (m < v.ID) == asc && m != v.ID {
			n++
		}
	}
	return n, nil
}

// walk reads src, which is in the requested order, from the marker on until the page is full.
func (s *Store) walk(ctx context.Context, src volSource, sources []volSource, q VolumeQuery, field string,
	marker *basalt.Volume, matches int64) ([]*basalt.Volume, error) {
	c := &cursor{rdb: s.rdb, src: src, asc: q.Asc}
	rest := others(sources, src)
	skip := q.Offset
	if q.Exact && len(rest) == 0 {
		// Every member of src matches: skip the offset in Redis.
		c.rank, c.skip, skip = int64(skip), int64(skip), 0
	}
	if marker != nil {
		switch {
		case src.field == ixCreated:
			var rank int64
			var err error
			if q.Asc {
				rank, err = s.rdb.ZRank(ctx, src.key, marker.ID).Result()
			} else {
				rank, err = s.rdb.ZRevRank(ctx, src.key, marker.ID).Result()
			}
			switch {
			case errors.Is(err, redis.Nil) && q.partition > 0:
				// A marker of another partition (listAcross): start where it would be.
				if rank, err = s.countBefore(ctx, src.key, marker, q.Asc); err != nil {
					return nil, fmt.Errorf("list volumes: %w", err)
				}
				c.rank += rank
			case errors.Is(err, redis.Nil):
				return nil, volumeNotFound(marker.ID)
			case err != nil:
				return nil, fmt.Errorf("list volumes: %w", err)
			default:
				c.rank += rank + 1
			}
		case src.composite:
			c.after = src.prefix + sortMember(field, marker)
		case src.prefix != "":
			c.after = src.prefix + indexTail(marker)
		default:
			c.after = sortMember(field, marker)
		}
	}
	// Read in chunks sized to fill the page at the pass rate expected, then at the rate seen.
	out := make([]*basalt.Volume, 0, q.Limit)
	want := func() int { return skip + q.Limit - len(out) }
	rate := float64(matches) / float64(max(src.count, 1))
	scanned, passed := 0, 0
	for !c.done && want() > 0 {
		if scanned > 0 {
			rate = max(float64(passed), 0.5) / float64(scanned)
		}
		n := int(min(max(float64(want())/rate*1.1, 16), 4096))
		if scanned == 0 && rate >= 1 {
			n = want() // every member matches: read the page at once
		}
		k, vs, err := s.candidates(ctx, c, rest, q.Match, n)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		scanned += k
		passed += len(vs)
		for _, v := range vs {
			if skip > 0 {
				skip--
				continue
			}
			if len(out) < q.Limit {
				out = append(out, v)
			}
		}
	}
	return out, nil
}
