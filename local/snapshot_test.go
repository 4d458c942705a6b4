package local

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

var discard = slog.New(slog.DiscardHandler)

// fill writes one key of every type Basalt uses, and a stream whose consumer groups have
// pending and acknowledged entries. It returns the ids of the stream's entries.
func fill(t *testing.T, ctx context.Context, rdb *redis.Client) []string {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rdb.Set(ctx, "str", "\x00\xff\x80 binary", 0).Err())
	must(rdb.Set(ctx, "ttl", "v", time.Hour).Err())
	must(rdb.HSet(ctx, "hash", "a", "1", "b", "\xfe").Err())
	must(rdb.RPush(ctx, "list", "x", "y", "x").Err())
	must(rdb.SAdd(ctx, "set", "m2", "m1").Err())
	must(rdb.ZAdd(ctx, "zset", redis.Z{Member: "a", Score: 1.5}, redis.Z{Member: "b", Score: -2}).Err())
	var ids []string
	for i := 0; i < 7; i++ {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "stream", Values: []string{"payload", string(rune('a' + i)), "meta", "\x81\xa1"}}).Result()
		must(err)
		ids = append(ids, id)
	}
	must(rdb.XGroupCreate(ctx, "stream", "g1", "0").Err())
	read := func(consumer string, n int64) {
		t.Helper()
		must(rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g1", Consumer: consumer, Streams: []string{"stream", ">"},
			Count: n, Block: -1}).Err())
	}
	read("c1", 2) // ids 0, 1
	read("c2", 2) // ids 2, 3
	must(rdb.XAck(ctx, "stream", "g1", ids[0], ids[3]).Err())
	must(rdb.XGroupCreate(ctx, "stream", "g2", "$").Err())
	must(rdb.XDel(ctx, "stream", ids[6]).Err()) // the last generated id is now past the last entry
	must(rdb.XGroupCreateMkStream(ctx, "empty", "g", "$").Err())
	return ids
}

// checkRestored checks, with plain commands, that rdb holds what fill wrote, and that the groups
// deliver what they would have.
func checkRestored(t *testing.T, ctx context.Context, rdb *redis.Client, ids []string) {
	t.Helper()
	for _, c := range []struct {
		cmd  redis.Cmder
		want string
	}{
		{rdb.Get(ctx, "str"), "\x00\xff\x80 binary"},
		{rdb.HGetAll(ctx, "hash"), "map[a:1 b:\xfe]"},
		{rdb.LRange(ctx, "list", 0, -1), "[x y x]"},
		{rdb.SMembers(ctx, "set"), "[m1 m2]"},
		{rdb.ZRangeWithScores(ctx, "zset", 0, -1), "[{-2 b} {1.5 a}]"},
		{rdb.XLen(ctx, "stream"), "6"},
		{rdb.XLen(ctx, "empty"), "0"},
	} {
		var got string
		switch v := c.cmd.(type) {
		case *redis.StringCmd:
			got = v.Val()
		case *redis.MapStringStringCmd:
			got = fmt.Sprint(v.Val())
		case *redis.StringSliceCmd:
			vals := v.Val()
			if c.cmd.Name() == "smembers" {
				slices.Sort(vals)
			}
			got = fmt.Sprint(vals)
		case *redis.ZSliceCmd:
			got = fmt.Sprint(v.Val())
		case *redis.IntCmd:
			got = fmt.Sprint(v.Val())
		}
		if c.cmd.Err() != nil || got != c.want {
			t.Errorf("%v = %q, %v; want %q", c.cmd.Args(), got, c.cmd.Err(), c.want)
		}
	}
	groups, err := rdb.XInfoGroups(ctx, "stream").Result()
	delivered := map[string]string{}
	for _, g := range groups {
		delivered[g.Name] = g.LastDeliveredID
	}
	if want := map[string]string{"g1": ids[3], "g2": ids[6]}; err != nil || !reflect.DeepEqual(delivered, want) {
		t.Errorf("XINFO GROUPS stream: last delivered %v, %v; want %v", delivered, err, want)
	}
	pend, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "stream", Group: "g1", Start: "-", End: "+", Count: 100}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pend {
		got = append(got, p.ID+"@"+p.Consumer)
	}
	if want := []string{ids[1] + "@c1", ids[2] + "@c2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("XPENDING stream g1 = %v, want %v", got, want)
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g1", Consumer: "c3", Streams: []string{"stream", ">"},
		Block: -1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Messages) != 2 || res[0].Messages[0].ID != ids[4] || res[0].Messages[1].ID != ids[5] {
		t.Errorf("XREADGROUP g1 > = %v, want the undelivered %s and %s", res, ids[4], ids[5])
	}
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "stream", Values: []string{"k", "v"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if compareIDs(id, ids[6]) <= 0 {
		t.Errorf("a new entry got id %s, not above the last generated id %s", id, ids[6])
	}
	if ttl := rdb.TTL(ctx, "ttl").Val(); ttl < 59*time.Minute || ttl > time.Hour+time.Second {
		t.Errorf("TTL ttl = %v, want about an hour", ttl)
	}
}

// sameKeys compares two snapshots' keys, expiries as the time left, to the minute.
func sameKeys(t *testing.T, got, want *snapshot) {
	t.Helper()
	norm := func(s *snapshot) []keyState {
		ks := append([]keyState(nil), s.Keys...)
		for i := range ks {
			if !ks[i].ExpireAt.IsZero() {
				ks[i].ExpireAt = time.Time{}.Add(time.Duration(ks[i].ExpireAt.Sub(s.TakenAt).Round(time.Minute)))
			}
		}
		return ks
	}
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Errorf("restored dataset:\n%+v\nwant\n%+v", g, w)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := miniredis.RunT(t)
	src.ClockTTL(true)
	a := redis.NewClient(&redis.Options{Addr: src.Addr()})
	defer a.Close()
	ids := fill(t, ctx, a)
	s, err := capture(ctx, a, discard)
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	var buf bytes.Buffer
	if err := s.encode(&buf); err != nil {
		t.Fatal(err)
	}
	s2, err := decodeSnapshot(&buf)
	if err != nil {
		t.Fatalf("decodeSnapshot: %v", err)
	}
	if !bytes.Equal(s2.content(), s.content()) {
		t.Fatal("a decoded snapshot differs from the one encoded")
	}
	for _, target := range []string{"miniredis", "redis-server"} {
		t.Run(target, func(t *testing.T) {
			var b *redis.Client
			if target == "miniredis" {
				dst := miniredis.RunT(t)
				dst.ClockTTL(true)
				b = redis.NewClient(&redis.Options{Addr: dst.Addr()})
			} else {
				b = redis.NewClient(redistest.Start(t).Options())
			}
			defer b.Close()
			n, err := s2.restore(ctx, b, time.Now())
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if n != len(s.Keys) {
				t.Errorf("restore wrote %d keys, want %d", n, len(s.Keys))
			}
			again, err := capture(ctx, b, discard)
			if err != nil {
				t.Fatalf("capture the restored dataset: %v", err)
			}
			sameKeys(t, again, s)
			checkRestored(t, ctx, b, ids)
		})
	}
}

// TestSnapshotSkipsExpired leaves out a key whose expiry passed while the stack was stopped.
func TestSnapshotSkipsExpired(t *testing.T) {
	ctx := context.Background()
	s := &snapshot{TakenAt: time.Now(), Keys: []keyState{
		{Name: "gone", Type: "string", Value: "v", ExpireAt: time.Now().Add(-time.Second)},
		{Name: "kept", Type: "string", Value: "v", ExpireAt: time.Now().Add(time.Hour)},
	}}
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	if n, err := s.restore(ctx, rdb, time.Now()); err != nil || n != 1 {
		t.Fatalf("restore = %d, %v; want 1 key", n, err)
	}
	if m.Exists("gone") || !m.Exists("kept") {
		t.Errorf("after restore: gone exists %v, kept exists %v; want only kept", m.Exists("gone"), m.Exists("kept"))
	}
}

// TestEmbeddedKeepsItsState stops an embedded store and starts another on its directory.
func TestEmbeddedKeepsItsState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := startEmbedded(ctx, dir, discard)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.m.Addr()})
	ids := fill(t, ctx, rdb)
	rdb.Close()
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e, err = startEmbedded(ctx, dir, discard)
	if err != nil {
		t.Fatalf("start again: %v", err)
	}
	defer e.Close()
	rdb = redis.NewClient(&redis.Options{Addr: e.m.Addr()})
	defer rdb.Close()
	if got := rdb.Get(ctx, "str").Val(); got != "\x00\xff\x80 binary" {
		t.Errorf("GET str = %q after a restart", got)
	}
	checkRestored(t, ctx, rdb, ids)
}

// TestEmbeddedRefusesRedisServerState: without redis-server, a directory that holds a
// redis-server's append-only files is an error, not an empty Redis.
func TestEmbeddedRefusesRedisServerState(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "appendonlydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if e, err := startEmbedded(context.Background(), dir, discard); err == nil {
		e.Close()
		t.Fatal("startEmbedded on a redis-server's directory succeeded, want an error")
	}
}
