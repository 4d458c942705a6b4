package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A snapshot is a point-in-time copy of database 0 of a Redis (Basalt uses no other): every
// key of the types Basalt writes (strings, hashes, lists, sets, sorted sets and streams with
// their consumer groups) with its expiry. Slices are sorted, so the encoding of an unchanged
// dataset is unchanged byte for byte.
type snapshot struct {
	TakenAt time.Time
	Keys    []keyState
}

type keyState struct {
	Name string
	Type string // string, hash, list, set, zset or stream
	// ExpireAt is when the key expires, rounded up to the second; zero for none. A key whose
	// time passed while basalt local was stopped is not restored, as Redis would have expired it.
	ExpireAt time.Time
	Value    string      // string
	Items    []string    // hash: field, value, ... sorted by field; list: in order; set: sorted
	Scored   []zMember   // zset, by score
	Stream   streamState // stream
}

type zMember struct {
	Member string
	Score  float64
}

// streamState is a stream with its consumer groups. Each group keeps its last-delivered id and
// its pending entries with their consumers: what a restarted consumer needs to get back the
// messages it had not acknowledged, and what stops acknowledged ones from coming back.
// Delivery counts and idle times are not kept (see restoreGroup).
type streamState struct {
	LastID  string // last generated id
	Entries []streamEntry
	Groups  []groupState
}

type streamEntry struct {
	ID     string
	Fields []string // field, value, ... in the entry's order
}

type groupState struct {
	Name          string
	LastDelivered string
	Pending       []pendingEntry // by id
}

type pendingEntry struct {
	ID       string
	Consumer string
}

// snapshotMagic starts a snapshot file; the rest is the gob encoding of a snapshot (gob keeps
// binary values, such as Watermill's msgpack metadata, intact).
const snapshotMagic = "basalt miniredis snapshot 1\n"

func (s *snapshot) encode(w io.Writer) error {
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return err
	}
	return gob.NewEncoder(w).Encode(s)
}

func decodeSnapshot(r io.Reader) (*snapshot, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, errors.New("not a basalt miniredis snapshot")
	}
	var s snapshot
	if err := gob.NewDecoder(br).Decode(&s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	return &s, nil
}

// content is the encoding of s without its time, to tell whether the dataset changed.
func (s *snapshot) content() []byte {
	var b bytes.Buffer
	_ = gob.NewEncoder(&b).Encode(s.Keys)
	return b.Bytes()
}

// captureScript copies database 0 in one step: miniredis, like Redis, runs a script with
// nothing else in between, so the copy is one moment's dataset (a volume never without its
// index entry, a command never journaled and still unacknowledged in the copy when it was the
// other way round), however busy the stack is. For each key it returns name, type, PTTL and
// the value: a string; a flat array for hashes, lists, sets and sorted sets (member, score, ...);
// for a stream {entries, last generated id, groups}, each group {name, last-delivered id,
// {pending id, consumer, ...}}; false for a type Basalt does not use.
var captureScript = redis.NewScript(`
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', k)
  if type(t) == 'table' then t = t.ok end
  local v = false
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'stream' then
    local last = '0-0'
    local info = redis.call('XINFO', 'STREAM', k)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
    local groups = {}
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do
      local name, delivered
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then delivered = g[i + 1] end
      end
      local pending = {}
      for _, p in ipairs(redis.call('XPENDING', k, name, '-', '+', 2147483647)) do
        table.insert(pending, p[1])
        table.insert(pending, p[2])
      end
      table.insert(groups, {name, delivered, pending})
    end
    v = {redis.call('XRANGE', k, '-', '+'), last, groups}
  end
  table.insert(out, {k, t, redis.call('PTTL', k), v})
end
return out
`)

// capture copies the dataset of rdb (see captureScript).
func capture(ctx context.Context, rdb redis.Scripter, logger *slog.Logger) (*snapshot, error) {
	raw, err := captureScript.Run(ctx, rdb, nil).Slice()
	if err != nil {
		return nil, fmt.Errorf("copy the dataset: %w", err)
	}
	s := &snapshot{TakenAt: time.Now()}
	for _, r := range raw {
		k, err := keyFrom(r, s.TakenAt)
		if err != nil {
			return nil, err
		}
		if k.Type == "" {
			continue
		}
		if k.Type == "unsupported" {
			logger.Warn("embedded Redis: a key of a type Basalt does not use is not kept", "key", k.Name)
			continue
		}
		s.Keys = append(s.Keys, k)
	}
	slices.SortFunc(s.Keys, func(a, b keyState) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// keyFrom decodes one key of captureScript's answer. A key that expired while the script ran
// comes back without a type.
func keyFrom(r any, takenAt time.Time) (keyState, error) {
	f, ok := r.([]any)
	if !ok || len(f) < 3 {
		return keyState{}, fmt.Errorf("copy the dataset: unexpected answer %v", r)
	}
	k := keyState{Name: str(f[0]), Type: str(f[1])}
	var v any
	if len(f) > 3 {
		v = f[3]
	}
	ttl, _ := f[2].(int64)
	if ttl == -2 { // expired while the script ran
		return keyState{}, nil
	}
	if ttl > 0 {
		// Rounded up to the second, so the copies of an unchanged dataset are equal.
		k.ExpireAt = takenAt.Add(time.Duration(ttl)*time.Millisecond + time.Second - 1).Truncate(time.Second)
	}
	switch k.Type {
	case "none":
		k.Type = ""
	case "string":
		k.Value = str(v)
	case "hash":
		items := strs(v)
		pairs := make([][2]string, 0, len(items)/2)
		for i := 0; i+1 < len(items); i += 2 {
			pairs = append(pairs, [2]string{items[i], items[i+1]})
		}
		slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		for _, p := range pairs {
			k.Items = append(k.Items, p[0], p[1])
		}
	case "list":
		k.Items = strs(v)
	case "set":
		k.Items = strs(v)
		slices.Sort(k.Items)
	case "zset":
		items := strs(v)
		for i := 0; i+1 < len(items); i += 2 {
			score, err := strconv.ParseFloat(items[i+1], 64)
			if err != nil {
				return k, fmt.Errorf("sorted set %s: score %q: %w", k.Name, items[i+1], err)
			}
			k.Scored = append(k.Scored, zMember{Member: items[i], Score: score})
		}
	case "stream":
		st, err := streamFrom(v)
		if err != nil {
			return k, fmt.Errorf("stream %s: %w", k.Name, err)
		}
		k.Stream = st
	default:
		k.Type = "unsupported"
	}
	return k, nil
}

// streamFrom decodes a stream of captureScript's answer.
func streamFrom(v any) (streamState, error) {
	f, ok := v.([]any)
	if !ok || len(f) != 3 {
		return streamState{}, fmt.Errorf("unexpected answer %v", v)
	}
	st := streamState{LastID: str(f[1])}
	if st.LastID == "" {
		st.LastID = "0-0" // miniredis, for a stream that never had an entry
	}
	entries, _ := f[0].([]any)
	for _, r := range entries {
		e, ok := r.([]any)
		if !ok || len(e) != 2 {
			return st, fmt.Errorf("entry %v", r)
		}
		st.Entries = append(st.Entries, streamEntry{ID: str(e[0]), Fields: strs(e[1])})
	}
	groups, _ := f[2].([]any)
	for _, r := range groups {
		g, ok := r.([]any)
		if !ok || len(g) != 3 {
			return st, fmt.Errorf("group %v", r)
		}
		gs := groupState{Name: str(g[0]), LastDelivered: str(g[1])}
		pending := strs(g[2])
		for i := 0; i+1 < len(pending); i += 2 {
			gs.Pending = append(gs.Pending, pendingEntry{ID: pending[i], Consumer: pending[i+1]})
		}
		slices.SortFunc(gs.Pending, func(a, b pendingEntry) int { return compareIDs(a.ID, b.ID) })
		st.Groups = append(st.Groups, gs)
	}
	slices.SortFunc(st.Groups, func(a, b groupState) int { return strings.Compare(a.Name, b.Name) })
	return st, nil
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

func strs(v any) []string {
	a, _ := v.([]any)
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = str(x)
	}
	return out
}

// restoreConsumer is the consumer name restoreGroup reads acknowledged entries with.
const restoreConsumer = "basalt-local-restore"

// restore writes s into rdb, whose database 0 must be empty, and returns how many keys it
// wrote. Keys whose expiry passed are left out; the others get the time they have left.
func (s *snapshot) restore(ctx context.Context, rdb redis.UniversalClient, now time.Time) (int, error) {
	pipe := rdb.Pipeline()
	n := 0
	flush := func(force bool) error {
		if pipe.Len() == 0 || (!force && pipe.Len() < 1000) {
			return nil
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			for _, c := range cmds {
				if c.Err() != nil {
					return fmt.Errorf("%v: %w", c.Args(), c.Err())
				}
			}
			return err
		}
		return nil
	}
	for _, k := range s.Keys {
		var left time.Duration
		if !k.ExpireAt.IsZero() {
			if left = k.ExpireAt.Sub(now); left <= 0 {
				continue
			}
		}
		if len(k.Items) == 0 && len(k.Scored) == 0 && k.Type != "string" && k.Type != "stream" {
			continue // Redis has no empty collections
		}
		switch k.Type {
		case "string":
			pipe.Set(ctx, k.Name, k.Value, 0)
		case "hash":
			pipe.HSet(ctx, k.Name, anys(k.Items)...)
		case "list":
			pipe.RPush(ctx, k.Name, anys(k.Items)...)
		case "set":
			pipe.SAdd(ctx, k.Name, anys(k.Items)...)
		case "zset":
			zs := make([]redis.Z, len(k.Scored))
			for i, z := range k.Scored {
				zs[i] = redis.Z{Member: z.Member, Score: z.Score}
			}
			pipe.ZAdd(ctx, k.Name, zs...)
		case "stream":
			restoreStream(ctx, pipe, k.Name, k.Stream)
		default:
			continue
		}
		if left > 0 {
			pipe.PExpire(ctx, k.Name, left)
		}
		n++
		if err := flush(false); err != nil {
			return 0, err
		}
	}
	return n, flush(true)
}

// restoreStream adds the entries of st with their ids, then moves the stream's last generated
// id to where it was (a placeholder entry, deleted at once), so new entries get ids above every
// id a group has seen, then restores the groups (creating the stream if it has no entries).
func restoreStream(ctx context.Context, pipe redis.Pipeliner, key string, st streamState) {
	last := "0-0"
	for _, e := range st.Entries {
		pipe.Do(ctx, append([]any{"XADD", key, e.ID}, anys(e.Fields)...)...)
		last = e.ID
	}
	placeholder := ""
	switch {
	case compareIDs(st.LastID, last) > 0:
		placeholder = st.LastID
	case len(st.Entries) == 0 && len(st.Groups) == 0:
		placeholder = "0-1" // the only way to make an empty stream without a group
	}
	if placeholder != "" {
		pipe.Do(ctx, "XADD", key, placeholder, "basalt-local", "placeholder")
		pipe.XDel(ctx, key, placeholder)
	}
	for _, g := range st.Groups {
		restoreGroup(ctx, pipe, key, st.Entries, g)
	}
}

// restoreGroup recreates a consumer group with its last-delivered id and its pending entries,
// each with the consumer it was delivered to: the group is created just before its oldest
// pending entry, and the entries from there up to its last-delivered id are read again through
// the group, a pending one by its consumer (so it is pending again, for that consumer to get it
// back when it restarts, or for another to claim), an acknowledged one by restoreConsumer and
// acknowledged again at once (so it is not delivered twice). The simplification: every pending
// entry comes back with a delivery count of 1 and an idle time counted from the restart
// (Basalt counts retries in the handler, not by delivery count), consumers without pending
// entries are not kept (a consumer is created by its first read), and a pending entry whose
// message was deleted from the stream is dropped (it cannot be delivered again anyway).
func restoreGroup(ctx context.Context, pipe redis.Pipeliner, key string, entries []streamEntry, g groupState) {
	owner := map[string]string{}
	for _, p := range g.Pending {
		owner[p.ID] = p.Consumer
	}
	first := slices.IndexFunc(entries, func(e streamEntry) bool { _, ok := owner[e.ID]; return ok })
	if first < 0 {
		pipe.XGroupCreateMkStream(ctx, key, g.Name, g.LastDelivered)
		return
	}
	start := "0-0"
	if first > 0 {
		start = entries[first-1].ID
	}
	pipe.XGroupCreateMkStream(ctx, key, g.Name, start)
	var run []string // ids of consecutive entries for one consumer
	runOwner := ""
	end := func() {
		if len(run) == 0 {
			return
		}
		pipe.Do(ctx, "XREADGROUP", "GROUP", g.Name, runOwner, "COUNT", len(run), "STREAMS", key, ">")
		if runOwner == restoreConsumer {
			pipe.XAck(ctx, key, g.Name, run...)
		}
		run = run[:0]
	}
	usedRestore := false
	for _, e := range entries[first:] {
		if compareIDs(e.ID, g.LastDelivered) > 0 {
			break
		}
		o, ok := owner[e.ID]
		if !ok {
			o, usedRestore = restoreConsumer, true
		}
		if o != runOwner {
			end()
			runOwner = o
		}
		run = append(run, e.ID)
	}
	end()
	if usedRestore {
		pipe.XGroupDelConsumer(ctx, key, g.Name, restoreConsumer)
	}
}

// compareIDs orders stream ids ("ms-seq").
func compareIDs(a, b string) int {
	pa, pb := parseID(a), parseID(b)
	if c := cmpUint(pa[0], pb[0]); c != 0 {
		return c
	}
	return cmpUint(pa[1], pb[1])
}

func parseID(id string) [2]uint64 {
	ms, seq, _ := strings.Cut(id, "-")
	a, _ := strconv.ParseUint(ms, 10, 64)
	b, _ := strconv.ParseUint(seq, 10, 64)
	return [2]uint64{a, b}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
