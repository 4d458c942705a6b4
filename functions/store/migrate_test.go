package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

const (
	oldP          = events.KeyPrefix // every key of the old layout
	layoutKey     = oldP + "layout"
	layoutLockKey = oldP + "layout:lock"
)

// An oldDeployment is the state a version before the partitioned layout wrote, by hand.
type oldDeployment struct {
	now             time.Time
	a1, a2, b1      string // volumes: a1 and a2 of proj-a, b1 of proj-b
	snap, att, msg  string // a snapshot and an attachment of a1, a message of proj-b
	op1, op2        string // pending operations: op1 (proj-a) overdue and unsent, op2 (proj-b) not
	typeID          string
	backend, pool   string
	journal         map[string]string
	caps, inventory string
	global          []string  // the keys (suffixes) that stay where they are
	total           int       // keys written
	misaligned      int       // volumes not in their project's partition
	beat            time.Time // the last heartbeat of the backend's service
	busy            int
	op2Deadline     time.Time // in the pending set
}

// testID returns a fixed UUID for name; with aligned, one in project's partition, as the ids
// this version draws (events.NewID); without, most fall in another partition, as the ids an
// older version drew.
func testID(name, project string, aligned bool) string {
	for i := 0; ; i++ {
		id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s/%d", name, i)).String()
		if !aligned || events.ShardOf(id) == events.ShardOf(project) {
			return id
		}
	}
}

func writeOldDeployment(t *testing.T, rdb redis.UniversalClient, aligned bool) *oldDeployment {
	t.Helper()
	ctx := context.Background()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	fx := &oldDeployment{now: now,
		a1: testID("a1", "proj-a", aligned), a2: testID("a2", "proj-a", aligned), b1: testID("b1", "proj-b", aligned),
		snap: testID("snap", "proj-a", aligned), att: testID("att", "proj-a", aligned), msg: testID("msg", "proj-b", aligned),
		op1: "op-" + testID("op1", "proj-a", aligned), op2: "op-" + testID("op2", "proj-b", aligned),
		typeID: testID("type", "", false), backend: "host1@b1", pool: "host1@b1#pool", beat: now, busy: 2,
		op2Deadline: now.Add(time.Hour)}
	for _, v := range []struct{ id, pr string }{{fx.a1, "proj-a"}, {fx.a2, "proj-a"}, {fx.b1, "proj-b"}} {
		if events.ShardOf(v.id) != events.ShardOf(v.pr) {
			fx.misaligned++
		}
	}
	str := func(s string) *string { return &s }
	us := func(t time.Time) float64 { return float64(t.UnixMicro()) }
	ms := func(t time.Time) float64 { return float64(t.UnixMilli()) }

	attAt := now.Add(-150 * time.Minute)
	a1 := &basalt.Volume{ID: fx.a1, ProjectID: "proj-a", Name: str("alpha"), Size: 10, Status: basalt.StatusInUse,
		AvailabilityZone: "nova", Metadata: map[string]string{"app": "db"}, CreatedAt: now.Add(-3 * time.Hour),
		Host: fx.pool, Snapshots: 1,
		Attachments: []*basalt.Attachment{{ID: fx.att, VolumeID: fx.a1, ProjectID: "proj-a", Status: "attached", CreatedAt: attAt}}}
	a2 := &basalt.Volume{ID: fx.a2, ProjectID: "proj-a", Name: str("beta"), Size: 5, Status: basalt.StatusError,
		AvailabilityZone: "nova", Metadata: map[string]string{}, CreatedAt: now.Add(-2 * time.Hour)}
	b1 := &basalt.Volume{ID: fx.b1, ProjectID: "proj-b", Name: str("gamma"), Size: 1, Status: basalt.StatusAvailable,
		AvailabilityZone: "nova", Metadata: map[string]string{}, CreatedAt: now.Add(-1 * time.Hour)}
	sn := &basalt.Snapshot{ID: fx.snap, ProjectID: "proj-a", VolumeID: fx.a1, Name: str("snap"), Size: 10,
		Status: "available", Metadata: map[string]string{}, CreatedAt: now.Add(-140 * time.Minute)}
	cmd := fmt.Sprintf(`{"op_id":%q,"kind":"create_volume"}`, fx.op1)
	op1 := &basalt.Operation{ID: fx.op1, Kind: "create_volume", VolumeID: fx.a2, ProjectID: "proj-a", State: basalt.OpPending,
		Owner: fx.backend, Topic: events.HostTopic("host1"), Command: json.RawMessage(cmd),
		Deadline: now.Add(-time.Minute), CreatedAt: now.Add(-10 * time.Minute), UpdatedAt: now.Add(-5 * time.Minute)}
	op2 := &basalt.Operation{ID: fx.op2, Kind: "extend_volume", VolumeID: fx.b1, ProjectID: "proj-b", State: basalt.OpPending,
		Owner: "scheduler", Deadline: fx.op2Deadline, CreatedAt: now, UpdatedAt: now}
	msg := &basalt.Message{ID: fx.msg, ProjectID: "proj-b", EventID: basalt.EventUnknownError, UserMessage: "it failed",
		Level: "ERROR", ResourceType: "VOLUME", ResourceUUID: fx.b1, CreatedAt: now.Add(-30 * time.Minute),
		ExpiresAt: now.Add(30 * 24 * time.Hour)}
	vt := &basalt.VolumeType{ID: fx.typeID, Name: "lvm", IsPublic: true, ExtraSpecs: map[string]string{}, CreatedAt: now.Add(-24 * time.Hour)}
	fx.journal = map[string]string{fx.op1: cmd}
	fx.caps = fmt.Sprintf(`{"backend":%q,"zone":"nova","pools":[{"pool_name":"pool"}]}`, fx.backend)
	fx.inventory = fmt.Sprintf(`{"backend":%q,"volumes":[]}`, fx.backend)
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }

	type kv struct {
		key string
		fn  func(pipe redis.Pipeliner, key string)
	}
	set := func(v string, ttl time.Duration) func(redis.Pipeliner, string) {
		return func(pipe redis.Pipeliner, k string) { pipe.Set(ctx, k, v, ttl) }
	}
	hash := func(ttl time.Duration, fv ...any) func(redis.Pipeliner, string) {
		return func(pipe redis.Pipeliner, k string) {
			pipe.HSet(ctx, k, fv...)
			if ttl > 0 {
				pipe.Expire(ctx, k, ttl)
			}
		}
	}
	zset := func(zs ...redis.Z) func(redis.Pipeliner, string) {
		return func(pipe redis.Pipeliner, k string) { pipe.ZAdd(ctx, k, zs...) }
	}
	z := func(score float64, m string) redis.Z { return redis.Z{Score: score, Member: m} }
	week := 7 * 24 * time.Hour
	moving := []kv{
		{"vol:" + fx.a1, set(js(a1), 0)}, {"vol:" + fx.a2, set(js(a2), 0)}, {"vol:" + fx.b1, set(js(b1), 0)},
		{"vols", zset(z(us(a1.CreatedAt), fx.a1), z(us(a2.CreatedAt), fx.a2), z(us(b1.CreatedAt), fx.b1))},
		{"proj:proj-a:vols", zset(z(us(a1.CreatedAt), fx.a1), z(us(a2.CreatedAt), fx.a2))},
		{"proj:proj-b:vols", zset(z(us(b1.CreatedAt), fx.b1))},
		// The list indexes and their version, which ReindexVolumes rebuilds.
		{"vols:by:status", zset(z(0, "stale entry"))},
		{"proj:proj-a:vols:by:name", zset(z(0, "stale entry"))},
		{"vols:index-version", set("1", 0)},
		{"snap:" + fx.snap, set(js(sn), 0)}, {"snaps", zset(z(us(sn.CreatedAt), fx.snap))},
		{"proj:proj-a:snaps", zset(z(us(sn.CreatedAt), fx.snap))},
		{"vol:" + fx.a1 + ":snaps", zset(z(us(sn.CreatedAt), fx.snap))},
		{"att:" + fx.att, set(fx.a1, 0)}, {"atts", zset(z(us(attAt), fx.att))},
		{"proj:proj-a:atts", zset(z(us(attAt), fx.att))},
		{"op:" + fx.op1, set(js(op1), week)}, {"op:" + fx.op2, set(js(op2), week)},
		{"ops:pending", zset(z(ms(op1.Deadline), fx.op1), z(ms(op2.Deadline), fx.op2))},
		{"outbox", zset(z(ms(op1.UpdatedAt), fx.op1))},
		{"reply:" + fx.op1, func(pipe redis.Pipeliner, k string) { pipe.RPush(ctx, k, "the reply"); pipe.Expire(ctx, k, time.Hour) }},
		{"decision:" + fx.a1, set("placed on host1@b1#pool", week)},
		{"charge:vol:" + fx.a1, hash(0, ".project", "proj-a", "volumes", 1, "gigabytes", 10)},
		{"charge:vol:" + fx.a2, hash(0, ".project", "proj-a", "volumes", 1, "gigabytes", 5)},
		{"charge:vol:" + fx.b1, hash(0, ".project", "proj-b", "volumes", 1, "gigabytes", 1)},
		{"charges:unbound", zset(z(ms(now), "vol:"+fx.a2))},
		{"quota:proj-a:usage", hash(0, "volumes", 2, "gigabytes", 15)},
		{"quota:proj-a:limits", hash(0, "volumes", 20)},
		{"quota:proj-b:usage", hash(0, "volumes", 1, "gigabytes", 1)},
		{"msg:" + fx.msg, set(js(msg), 30*24*time.Hour)},
		{"proj:proj-b:msgs", zset(z(us(msg.CreatedAt), fx.msg))},
		{"idem:0123456789abcdef", hash(24*time.Hour, "token", "t", "fingerprint", "f", "done", "0")},
		{"agent:" + fx.backend + ":inflight", hash(0, fx.op1, cmd)},
		{"svc:cinder-volume:" + fx.backend, hash(0, "zone", "nova", "created_at", now.Add(-time.Hour).UnixNano(),
			"updated_at", now.UnixNano(), "busy", 2)},
		{"caps:" + fx.backend, set(fx.caps, 0)},
		{"inventory:" + fx.backend, set(fx.inventory, 0)},
	}
	staying := []kv{
		{"type:" + fx.typeID, set(js(vt), 0)}, {"typename:lvm", set(fx.typeID, 0)},
		{"types", zset(z(us(vt.CreatedAt), fx.typeID))}, {"default_type", set(fx.typeID, 0)},
		{"services", func(pipe redis.Pipeliner, k string) { pipe.SAdd(ctx, k, "cinder-volume|"+fx.backend) }},
		{"services:version", set("3", 0)},
		{"svc:beats", zset(z(ms(now), "cinder-volume|"+fx.backend))},
		{"svcadmin:cinder-volume:" + fx.backend, hash(0, "disabled", "1", "reason", "maintenance")},
		{"caps:updated", zset(z(ms(now), fx.backend))},
		{"ledger:" + fx.pool, set("10", 0)},
		{"alloc:" + fx.a1, hash(0, "pool", fx.pool, "size", 10)},
	}
	pipe := rdb.Pipeline() // one node: every key is in the old layout's slot
	for _, e := range append(moving, staying...) {
		e.fn(pipe, oldP+e.key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("write the old layout: %v", err)
	}
	for _, e := range staying {
		fx.global = append(fx.global, e.key)
	}
	fx.total = len(moving) + len(staying)
	return fx
}

// checkMigrated checks, through the Store, what users and processes see of a migrated
// oldDeployment, then that no key of the old layout is left but the global ones.
func checkMigrated(t *testing.T, st *store.Store, rdb redis.UniversalClient, fx *oldDeployment) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.ReindexVolumes(ctx); err != nil {
		t.Fatalf("ReindexVolumes after the migration: %v", err)
	}
	for _, id := range []string{fx.a1, fx.a2, fx.b1} {
		if v, err := st.Volume(ctx, id); err != nil || v.ID != id {
			t.Errorf("Volume(%s) = %v, %v", id, v, err)
		}
	}
	ids := func(vs []*basalt.Volume) []string {
		var out []string
		for _, v := range vs {
			out = append(out, v.ID)
		}
		return out
	}
	for _, c := range []struct {
		name string
		q    store.VolumeQuery
		want []string
	}{
		{"all tenants", store.VolumeQuery{Count: true}, []string{fx.b1, fx.a2, fx.a1}},
		{"proj-a", store.VolumeQuery{Project: "proj-a", Count: true}, []string{fx.a2, fx.a1}},
		{"proj-b", store.VolumeQuery{Project: "proj-b"}, []string{fx.b1}},
		{"all tenants, status=in-use", store.VolumeQuery{Eq: []store.VolumeEq{store.EqStatus("in-use")}, Exact: true,
			Match: func(v *basalt.Volume) bool { return v.Status == basalt.StatusInUse }}, []string{fx.a1}},
		{"proj-a, status=error", store.VolumeQuery{Project: "proj-a", Eq: []store.VolumeEq{store.EqStatus("error")}, Exact: true,
			Match: func(v *basalt.Volume) bool { return v.Status == basalt.StatusError }}, []string{fx.a2}},
		{"all tenants, by size", store.VolumeQuery{Sort: "size", Asc: true}, []string{fx.b1, fx.a2, fx.a1}},
		{"all tenants, metadata app=db", store.VolumeQuery{Eq: []store.VolumeEq{store.EqMetadata("app", "db")}, Exact: true,
			Match: func(v *basalt.Volume) bool { return v.Metadata["app"] == "db" }}, []string{fx.a1}},
	} {
		got, err := st.ListVolumes(ctx, c.q)
		if err != nil || !slices.Equal(ids(got.Items), c.want) || (c.q.Count && got.Count != len(c.want)) {
			t.Errorf("ListVolumes %s = %v (count %d), %v; want %v", c.name, ids(got.Items), got.Count, err, c.want)
		}
	}
	if diffs, err := st.VerifyVolumeIndexes(ctx); err != nil || len(diffs) > 0 {
		t.Errorf("VerifyVolumeIndexes = %v, %v", diffs, err)
	}

	if sn, err := st.Snapshot(ctx, fx.snap); err != nil || sn.VolumeID != fx.a1 {
		t.Errorf("Snapshot = %v, %v", sn, err)
	}
	for name, list := range map[string]func() ([]*basalt.Snapshot, error){
		"of a1":        func() ([]*basalt.Snapshot, error) { return st.VolumeSnapshots(ctx, fx.a1) },
		"of proj-a":    func() ([]*basalt.Snapshot, error) { return st.Snapshots(ctx, "proj-a") },
		"all tenants,": func() ([]*basalt.Snapshot, error) { return st.Snapshots(ctx, "") },
	} {
		if sns, err := list(); err != nil || len(sns) != 1 || sns[0].ID != fx.snap {
			t.Errorf("snapshots %s = %v, %v; want %s", name, sns, err, fx.snap)
		}
	}
	for _, pr := range []string{"proj-a", ""} {
		if as, err := st.Attachments(ctx, pr); err != nil || len(as) != 1 || as[0].ID != fx.att {
			t.Errorf("Attachments(%q) = %v, %v; want %s", pr, as, err, fx.att)
		}
	}
	if vid, err := st.AttachmentVolume(ctx, fx.att); err != nil || vid != fx.a1 {
		t.Errorf("AttachmentVolume = %q, %v; want %s", vid, err, fx.a1)
	}
	if ms, err := st.Messages(ctx, "proj-b"); err != nil || len(ms) != 1 || ms[0].ID != fx.msg {
		t.Errorf("Messages(proj-b) = %v, %v; want %s", ms, err, fx.msg)
	}
	if d, err := st.Decision(ctx, fx.a1); err != nil || d != "placed on host1@b1#pool" {
		t.Errorf("Decision = %q, %v", d, err)
	}

	// Operations: the records (with their expiry), the sweeps, the outbox, the reply.
	for _, id := range []string{fx.op1, fx.op2} {
		if op, err := st.Op(ctx, id); err != nil || op.State != basalt.OpPending {
			t.Errorf("Op(%s) = %v, %v", id, op, err)
		}
		if ttl := rdb.PTTL(ctx, events.OperationKey(id)).Val(); ttl <= 6*24*time.Hour || ttl > 7*24*time.Hour {
			t.Errorf("the record of %s expires in %v, want the week it had left", id, ttl)
		}
	}
	if ids, err := st.OverdueOps(ctx, fx.now); err != nil || !slices.Equal(ids, []string{fx.op1}) {
		t.Errorf("OverdueOps(now) = %v, %v; want [%s]", ids, err, fx.op1)
	}
	if ids, err := st.OverdueOps(ctx, fx.op2Deadline.Add(-time.Millisecond)); err != nil || !slices.Equal(ids, []string{fx.op1}) {
		t.Errorf("OverdueOps(just before op2's deadline) = %v, %v; want [%s]", ids, err, fx.op1)
	}
	if ids, err := st.OverdueOps(ctx, fx.op2Deadline); err != nil || len(ids) != 2 {
		t.Errorf("OverdueOps(op2's deadline) = %v, %v; want both operations", ids, err)
	}
	// Expiring keys keep the time they had left.
	for key, ttl := range map[string]time.Duration{events.PrefixOf(fx.op1) + "reply:" + fx.op1: time.Hour,
		events.PrefixOf(fx.msg) + "msg:" + fx.msg: 30 * 24 * time.Hour} {
		if got := rdb.PTTL(ctx, key).Val(); got <= ttl-time.Hour/2 || got > ttl {
			t.Errorf("%s expires in %v, want the %v it had left", key, got, ttl)
		}
	}
	if ids, err := st.Unsent(ctx, fx.now); err != nil || !slices.Equal(ids, []string{fx.op1}) {
		t.Errorf("Unsent = %v, %v; want [%s]", ids, err, fx.op1)
	}
	if r, err := st.WaitReply(ctx, fx.op1, time.Second); err != nil || string(r) != "the reply" {
		t.Errorf("WaitReply = %q, %v", r, err)
	}

	// Quota: usage and limits, and a migrated charge's refund gives back to the usage moved.
	if u, err := st.QuotaUsage(ctx, "proj-a"); err != nil || u["volumes"] != 2 || u["gigabytes"] != 15 {
		t.Errorf("QuotaUsage(proj-a) = %v, %v", u, err)
	}
	if l, err := st.QuotaLimits(ctx, "proj-a"); err != nil || l["volumes"] != 20 {
		t.Errorf("QuotaLimits(proj-a) = %v, %v", l, err)
	}
	if pr, amounts, err := st.Charged(ctx, "vol:"+fx.a1); err != nil || pr != "proj-a" || len(amounts) != 2 || amounts["gigabytes"] != 10 {
		t.Errorf("Charged(vol:a1) = %q %v, %v", pr, amounts, err)
	}
	if err := st.Refund(ctx, "vol:"+fx.a1); err != nil {
		t.Fatalf("Refund of a migrated charge: %v", err)
	}
	if u, _ := st.QuotaUsage(ctx, "proj-a"); u["volumes"] != 1 || u["gigabytes"] != 5 || len(u) != 2 {
		t.Errorf("after the refund of vol:a1, QuotaUsage(proj-a) = %v, want 1 volume and 5 GB", u)
	}
	if pr, _, _ := st.Charged(ctx, "vol:"+fx.a1); pr != "" {
		t.Errorf("the refunded charge is still held by %q", pr)
	}
	// The unbound charge (a2, whose volume exists) is found by the sweep and bound.
	if refunded, err := st.SweepCharges(ctx, fx.now.Add(time.Hour)); err != nil || len(refunded) != 0 {
		t.Errorf("SweepCharges = %v, %v; want nothing refunded", refunded, err)
	}
	if err := st.Refund(ctx, "vol:"+fx.b1); err != nil {
		t.Fatalf("Refund of vol:b1: %v", err)
	}
	if u, _ := st.QuotaUsage(ctx, "proj-b"); len(u) != 0 {
		t.Errorf("after the refund of vol:b1, QuotaUsage(proj-b) = %v, want nothing in use", u)
	}

	// What hosts wrote, in their hosts' slots.
	if j, err := rdb.HGetAll(ctx, events.JournalKey(fx.backend)).Result(); err != nil || !maps.Equal(j, fx.journal) {
		t.Errorf("the journal of %s = %v, %v; want %v", fx.backend, j, err, fx.journal)
	}
	if c, err := rdb.Get(ctx, events.CapabilitiesKey(fx.backend)).Result(); err != nil || c != fx.caps {
		t.Errorf("the capability report = %q, %v", c, err)
	}
	if c, err := rdb.Get(ctx, events.InventoryKey(fx.backend)).Result(); err != nil || c != fx.inventory {
		t.Errorf("the inventory = %q, %v", c, err)
	}
	svcs, err := st.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Zone != "nova" || svcs[0].Busy != fx.busy || !svcs[0].UpdatedAt.Equal(fx.beat) ||
		!svcs[0].CreatedAt.Equal(fx.now.Add(-time.Hour)) || !svcs[0].Disabled {
		t.Errorf("Services = %+v, %v; want the heartbeat of %s, disabled", svcs, err, fx.backend)
	}

	// What stays global.
	if vt, err := st.TypeByName(ctx, "lvm"); err != nil || vt.ID != fx.typeID {
		t.Errorf("TypeByName(lvm) = %v, %v", vt, err)
	}
	if id, err := st.DefaultTypeID(ctx); err != nil || id != fx.typeID {
		t.Errorf("DefaultTypeID = %q, %v", id, err)
	}
	if g, err := st.Ledger(ctx, fx.pool); err != nil || g != 10 {
		t.Errorf("Ledger = %v, %v", g, err)
	}

	// Nothing is left in the old layout's slot but the global keys, the layout's version and
	// the index version ReindexVolumes wrote.
	want := append(slices.Clone(fx.global), "layout", "vols:index-version")
	slices.Sort(want)
	var got []string
	for _, k := range allKeys(t, rdb, oldP+"*") {
		got = append(got, strings.TrimPrefix(k, oldP))
	}
	if !slices.Equal(got, want) {
		t.Errorf("keys left under %s:\n got %q\nwant %q", oldP, got, want)
	}
}

// allKeys returns the keys matching pattern, on every master of a Cluster, sorted.
func allKeys(t *testing.T, rdb redis.UniversalClient, pattern string) []string {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var keys []string
	scan := func(ctx context.Context, c *redis.Client) error {
		ks, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return err
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// dumpDB returns every key's type, content and whether it expires, to compare two databases.
func dumpDB(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, k := range allKeys(t, rdb, "*") {
		if k == layoutLockKey {
			continue // a crashed run's lock, left to expire
		}
		typ := rdb.Type(ctx, k).Val()
		var content any
		switch typ {
		case "string":
			content = rdb.Get(ctx, k).Val()
		case "hash":
			content = rdb.HGetAll(ctx, k).Val()
		case "set":
			ms := rdb.SMembers(ctx, k).Val()
			slices.Sort(ms)
			content = ms
		case "zset":
			content = rdb.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "list":
			content = rdb.LRange(ctx, k, 0, -1).Val()
		}
		out[k] = fmt.Sprintf("%s %v expires=%v", typ, content, rdb.PTTL(ctx, k).Val() > 0)
	}
	return out
}

func diffDB(got, want map[string]string) []string {
	var out []string
	for k, v := range want {
		if got[k] != v {
			out = append(out, fmt.Sprintf("%s: got %q, want %q", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s: got %q, want no key", k, v))
		}
	}
	slices.Sort(out)
	return out
}

func TestMigrateLayout(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	fx := writeOldDeployment(t, rdb, false)
	if fx.misaligned == 0 {
		t.Fatal("every volume of the fixture is in its project's partition; old ids are not")
	}
	// An agent of this version journaled a command in the new layout already: the journal
	// moved joins it.
	rdb.HSet(ctx, events.JournalKey(fx.backend), "op-new", "a command")
	fx.journal["op-new"] = "a command"
	// It heartbeated too, since the old layout's last heartbeat: the newer heartbeat stands.
	fx.beat, fx.busy = fx.now.Add(time.Minute), 0
	rdb.HSet(ctx, events.ServiceKey("cinder-volume", fx.backend), "zone", "nova", "updated_at", fx.beat.UnixNano(), "busy", 0)
	// And it renewed the lease of op2: the later deadline stands.
	fx.op2Deadline = fx.now.Add(3 * time.Hour)
	rdb.ZAdd(ctx, events.PendingOpsKey(fx.op2), redis.Z{Score: float64(fx.op2Deadline.UnixMilli()), Member: fx.op2})
	st := store.New(rdb, func() time.Time { return fx.now })
	moved, err := st.MigrateLayout(ctx)
	if err != nil {
		t.Fatalf("MigrateLayout: %v", err)
	}
	if want := fx.total - len(fx.global); moved != want {
		t.Errorf("MigrateLayout moved %d keys, want %d", moved, want)
	}
	if v := rdb.Get(ctx, layoutKey).Val(); v != "2" {
		t.Errorf("the layout version is %q, want 2", v)
	}
	if n := rdb.Exists(ctx, layoutLockKey).Val(); n != 0 {
		t.Error("the migration's lock outlived it")
	}
	checkMigrated(t, st, rdb, fx)

	if moved, err := st.MigrateLayout(ctx); moved != 0 || err != nil {
		t.Errorf("a second MigrateLayout = %d, %v; want 0", moved, err)
	}
	// Without its version key, the new layout holds nothing to move: the run changes nothing
	// (not even the index version) but the version key.
	before := dumpDB(t, rdb)
	rdb.Del(ctx, layoutKey)
	if moved, err := st.MigrateLayout(ctx); moved != 0 || err != nil {
		t.Errorf("MigrateLayout of the new layout without its version = %d, %v; want 0", moved, err)
	}
	if d := diffDB(dumpDB(t, rdb), before); len(d) > 0 {
		t.Errorf("MigrateLayout of the new layout changed:\n%s", strings.Join(d, "\n"))
	}

	// A version this one does not know is an error, not a migration.
	rdb.Set(ctx, layoutKey, "3", 0)
	if _, err := st.MigrateLayout(ctx); err == nil || !strings.Contains(err.Error(), `"3"`) {
		t.Errorf("MigrateLayout of layout 3 = %v, want an error naming it", err)
	}
}

// TestMigrateLayoutFresh: a deployment without keys of the old layout gets the version key.
func TestMigrateLayoutFresh(t *testing.T) {
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	st := store.New(rdb, nil)
	if moved, err := st.MigrateLayout(ctx); moved != 0 || err != nil {
		t.Fatalf("MigrateLayout of an empty Redis = %d, %v", moved, err)
	}
	if keys := allKeys(t, rdb, "*"); !slices.Equal(keys, []string{layoutKey}) {
		t.Errorf("keys after MigrateLayout of an empty Redis: %q, want the version key alone", keys)
	}
}

var errCrash = errors.New("crashed")

// crashAfter is a client hook that lets budget commands through, then fails every command as
// a process that died would never send them. A pipeline runs as far as the budget goes; a
// transaction runs whole or not at all.
type crashAfter struct{ budget int }

func (h *crashAfter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *crashAfter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.budget <= 0 {
			cmd.SetErr(errCrash)
			return errCrash
		}
		h.budget--
		return next(ctx, cmd)
	}
}

func (h *crashAfter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		k := min(h.budget, len(cmds))
		if cmds[0].Name() == "multi" && k < len(cmds) {
			k = 0
		}
		h.budget -= k
		if k == len(cmds) {
			return next(ctx, cmds)
		}
		if k > 0 {
			_ = next(ctx, cmds[:k])
		}
		for _, c := range cmds[k:] {
			c.SetErr(errCrash)
		}
		h.budget = 0
		return errCrash
	}
}

// TestMigrateLayoutResumes stops a migration after each number of commands in turn, as a
// process that dies there, lets its lock expire, and runs it again: the result is the
// uninterrupted migration's, key for key, and the two runs together move as many keys.
func TestMigrateLayoutResumes(t *testing.T) {
	t.Run("redis-server", func(t *testing.T) { testMigrateLayoutResumes(t, redistest.Start(t).Options()) })
	// Where keys other than strings are copied by type (TestMigrateLayoutMiniredis).
	t.Run("miniredis", func(t *testing.T) { testMigrateLayoutResumes(t, &redis.Options{Addr: miniredis.RunT(t).Addr()}) })
}

func testMigrateLayoutResumes(t *testing.T, opts *redis.Options) {
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	fresh := func() *oldDeployment {
		t.Helper()
		rdb.FlushAll(ctx)
		return writeOldDeployment(t, rdb, false)
	}
	fx := fresh()
	st := store.New(rdb, func() time.Time { return fx.now })
	wantMoved, err := st.MigrateLayout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := dumpDB(t, rdb)

	crashes := 0
	for budget := 0; ; budget++ {
		fresh()
		c := redis.NewClient(opts)
		c.AddHook(&crashAfter{budget: budget})
		first, err := store.New(c, nil).MigrateLayout(ctx)
		c.Close()
		second := 0
		if err == nil {
			if d := diffDB(dumpDB(t, rdb), want); len(d) > 0 || first != wantMoved {
				t.Fatalf("a migration of %d commands moved %d keys (want %d); it differs from the reference:\n%s",
					budget, first, wantMoved, strings.Join(d, "\n"))
			}
			break // the budget sufficed: every earlier one stopped the migration somewhere
		}
		if !errors.Is(err, errCrash) {
			t.Fatalf("the migration stopped after %d commands with %v, want the crash", budget, err)
		}
		crashes++
		rdb.Del(ctx, layoutLockKey) // the dead process's lock expired
		second, err = st.MigrateLayout(ctx)
		if err != nil {
			t.Fatalf("the migration after a crash after %d commands: %v", budget, err)
		}
		if d := diffDB(dumpDB(t, rdb), want); len(d) > 0 {
			t.Fatalf("the migration resumed after a crash after %d commands differs from the uninterrupted one:\n%s",
				budget, strings.Join(d, "\n"))
		}
		if first+second != wantMoved {
			t.Fatalf("crash after %d commands: the runs moved %d + %d keys, want %d in all", budget, first, second, wantMoved)
		}
		if budget == 60 {
			// One resumed migration checked as users see it too.
			checkMigrated(t, store.New(rdb, func() time.Time { return fx.now }), rdb, fx)
		}
	}
	if crashes < 60 {
		t.Fatalf("only %d crash points: the sweep did not reach into the migration", crashes)
	}
	t.Logf("%d crash points", crashes)
}

// TestMigrateLayoutConcurrent: API processes that start together migrate once; one that finds
// the lock of a process that died waits for it to expire and migrates.
func TestMigrateLayoutConcurrent(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	fx := writeOldDeployment(t, rdb, false)
	wantMoved := fx.total - len(fx.global)

	var wg sync.WaitGroup
	var total, zero atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := redis.NewClient(srv.Options())
			defer c.Close()
			n, err := store.New(c, nil).MigrateLayout(ctx)
			if err != nil {
				t.Errorf("MigrateLayout: %v", err)
			}
			total.Add(int64(n))
			if n == 0 {
				zero.Add(1)
			}
		}()
	}
	wg.Wait()
	if total.Load() != int64(wantMoved) || zero.Load() != 3 {
		t.Errorf("4 concurrent migrations moved %d keys in all, %d of them none; want %d by one", total.Load(), zero.Load(), wantMoved)
	}
	want := dumpDB(t, rdb)

	rdb.FlushAll(ctx)
	writeOldDeployment(t, rdb, false)
	rdb.Set(ctx, layoutLockKey, "a process that died", 400*time.Millisecond)
	start := time.Now()
	if n, err := store.New(rdb, nil).MigrateLayout(ctx); err != nil || n != wantMoved {
		t.Errorf("MigrateLayout past a dead process's lock = %d, %v; want %d", n, err, wantMoved)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("MigrateLayout took the lock of another process after %v", waited)
	}
	if d := diffDB(dumpDB(t, rdb), want); len(d) > 0 {
		t.Errorf("the migration past a dead process's lock differs:\n%s", strings.Join(d, "\n"))
	}

	// A process that waits gives up with its context.
	rdb.Del(ctx, layoutKey)
	rdb.Set(ctx, layoutLockKey, "a live process", time.Minute)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := store.New(rdb, nil).MigrateLayout(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("MigrateLayout while another holds the lock, until ctx ends = %v", err)
	}
}

// TestMigrateLayoutCluster moves an old deployment out of its one slot into the partitions'
// slots across a Redis Cluster's masters. Its ids are in their projects' partitions (see
// MigrateLayout's limitation).
func TestMigrateLayoutCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	rdb := c.Client()
	defer rdb.Close()
	fx := writeOldDeployment(t, rdb, true)
	if fx.misaligned != 0 {
		t.Fatalf("%d volumes of the fixture are not in their project's partition", fx.misaligned)
	}
	st := store.New(rdb, func() time.Time { return fx.now })
	moved, err := st.MigrateLayout(context.Background())
	if err != nil {
		t.Fatalf("MigrateLayout on a Cluster: %v", err)
	}
	if want := fx.total - len(fx.global); moved != want {
		t.Errorf("MigrateLayout moved %d keys, want %d", moved, want)
	}
	checkMigrated(t, st, rdb, fx)
	if moved, err := st.MigrateLayout(context.Background()); moved != 0 || err != nil {
		t.Errorf("a second MigrateLayout = %d, %v; want 0", moved, err)
	}
}

// TestMigrateLayoutMiniredis migrates on the embedded server basalt local may run on, whose DUMP
// serializes strings only: the other keys are copied by type.
func TestMigrateLayoutMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	fx := writeOldDeployment(t, rdb, false)
	st := store.New(rdb, func() time.Time { return fx.now })
	moved, err := st.MigrateLayout(context.Background())
	if err != nil {
		t.Fatalf("MigrateLayout on miniredis: %v", err)
	}
	if want := fx.total - len(fx.global); moved != want {
		t.Errorf("MigrateLayout moved %d keys, want %d", moved, want)
	}
	checkMigrated(t, st, rdb, fx)
}

// TestMigrateLayoutRefusesMisalignedOnCluster: on a Redis Cluster, old resources whose ids are
// not in their project's partition could never be written again; the migration refuses before
// moving anything, with a message that says what to do, and leaves the old layout as it was.
func TestMigrateLayoutRefusesMisalignedOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	rdb := c.Client()
	defer rdb.Close()
	ctx := context.Background()
	fx := writeOldDeployment(t, rdb, false)
	if fx.misaligned == 0 {
		t.Fatal("the fixture's volumes are all in their projects' partitions; want some that are not")
	}
	node := c.MasterOf(c.Slot("basalt:{basalt}:x")).Client() // the old layout's one slot
	before, err := node.Keys(ctx, "basalt:{basalt}:*").Result()
	if err != nil || len(before) == 0 {
		t.Fatalf("the old layout's keys: %v, %v", before, err)
	}
	st := store.New(rdb, func() time.Time { return fx.now })
	moved, err := st.MigrateLayout(ctx)
	if err == nil || !strings.Contains(err.Error(), "single Redis") || moved != 0 {
		t.Fatalf("MigrateLayout on a Cluster with misaligned resources = %d, %v; want a refusal that moved nothing", moved, err)
	}
	after, _ := node.Keys(ctx, "basalt:{basalt}:*").Result()
	slices.Sort(before)
	slices.Sort(after)
	if !slices.Equal(before, after) {
		t.Errorf("the refused migration changed the old layout's keys:\nbefore %v\nafter  %v", before, after)
	}
}
