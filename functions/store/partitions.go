package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// The resource state is partitioned by project (events.ShardOf): a request's transaction
// touches one partition, hence one Redis Cluster slot. What reads across projects (an
// administrator's listings, the sweeps of pending operations, the outbox and unbound charges)
// reads every partition, in one pipeline, which a Cluster's client sends each node its share of.

// getMany returns the values of keys (nil where a key is absent), reading each partition's
// keys with one MGET, all in one pipeline: one MGET across partitions would span slots.
func getMany(ctx context.Context, rdb redis.UniversalClient, keys []string) ([]any, error) {
	out := make([]any, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	byPart := map[string][]int{}
	var parts []string
	for i, k := range keys {
		part := partitionOfKey(k)
		if byPart[part] == nil {
			parts = append(parts, part)
		}
		byPart[part] = append(byPart[part], i)
	}
	if len(parts) == 1 {
		return rdb.MGet(ctx, keys...).Result()
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(parts))
	for j, part := range parts {
		ks := make([]string, len(byPart[part]))
		for n, i := range byPart[part] {
			ks[n] = keys[i]
		}
		cmds[j] = pipe.MGet(ctx, ks...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	for j, part := range parts {
		for n, i := range byPart[part] {
			out[i] = cmds[j].Val()[n]
		}
	}
	return out, nil
}

// partitionOfKey returns a key's hash tag (its Cluster slot's name), or the key when it has none.
func partitionOfKey(k string) string {
	if i := strings.IndexByte(k, '{'); i >= 0 {
		if j := strings.IndexByte(k[i+1:], '}'); j > 0 {
			return k[i+1 : i+1+j]
		}
	}
	return k
}

// rangeAcross returns the members of every partition's sorted set keyOf(n), highest score
// first (ties: highest member first, as ZREVRANGE orders them).
func rangeAcross(ctx context.Context, rdb redis.UniversalClient, keyOf func(n int) string) ([]string, error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, events.Shards)
	for n := range cmds {
		cmds[n] = pipe.ZRevRangeWithScores(ctx, keyOf(n), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var all []redis.Z
	for _, c := range cmds {
		all = append(all, c.Val()...)
	}
	sortDesc(all)
	out := make([]string, len(all))
	for i, z := range all {
		out[i] = z.Member.(string)
	}
	return out, nil
}

// sortDesc orders zs by score, then member, both descending.
func sortDesc(zs []redis.Z) {
	slices.SortFunc(zs, func(a, b redis.Z) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return -strings.Compare(a.Member.(string), b.Member.(string))
	})
}

// revPageAcross returns members skip+1 to skip+n of the merge of every partition's sorted set
// keyOf(n), highest score first, after the member after (with its score) when after is not
// nil: the page of an administrator's listing. Each partition is first asked for about twice
// its share of the skip+n members wanted, and only a partition that could hold more of them is
// asked again, for all of them.
func revPageAcross(ctx context.Context, rdb redis.UniversalClient, keyOf func(n int) string, after *redis.Z, skip, n int) ([]string, error) {
	max := "+inf"
	if after != nil {
		max = fmt.Sprint(after.Score)
	}
	// Members tied with the marker's score come first in each partition and are dropped below:
	// read that many more (ties are rare: scores are microseconds).
	const tieRoom = 16
	need := skip + n
	asked := make([]int, events.Shards)
	for p := range asked {
		asked[p] = min(need, 2*need/events.Shards+8) + tieRoom
	}
	got := make([][]redis.Z, events.Shards)
	full := make([]bool, events.Shards)
	todo := make([]bool, events.Shards)
	for p := range todo {
		todo[p] = true
	}
	var all []redis.Z
	for {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.ZSliceCmd, events.Shards)
		for p := range cmds {
			if todo[p] {
				cmds[p] = pipe.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: keyOf(p), Start: max, Stop: "-inf",
					ByScore: true, Rev: true, Count: int64(asked[p])})
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for p, c := range cmds {
			if c == nil {
				continue
			}
			full[p] = len(c.Val()) == asked[p]
			got[p] = got[p][:0]
			for _, z := range c.Val() {
				if after != nil && z.Score == after.Score && z.Member.(string) >= after.Member.(string) {
					continue // the marker, or before it
				}
				got[p] = append(got[p], z)
			}
		}
		all = all[:0]
		for _, zs := range got {
			all = append(all, zs...)
		}
		sortDesc(all)
		again := false
		for p := range todo {
			todo[p] = false
			if !full[p] || asked[p] >= need+tieRoom {
				continue // it gave all it has, or all that can be wanted of it
			}
			last := got[p]
			if len(all) < need || len(last) == 0 || zBefore(last[len(last)-1], all[need-1]) {
				todo[p], asked[p], again = true, need+tieRoom, true
			}
		}
		if !again {
			break
		}
	}
	all = all[min(skip, len(all)):]
	all = all[:min(n, len(all))]
	out := make([]string, len(all))
	for i, z := range all {
		out[i] = z.Member.(string)
	}
	return out, nil
}

// zBefore reports whether a comes before b in sortDesc's order.
func zBefore(a, b redis.Z) bool {
	if a.Score != b.Score {
		return a.Score > b.Score
	}
	return a.Member.(string) > b.Member.(string)
}

// scanKeys returns the keys matching pattern, on every master of a Cluster.
func scanKeys(ctx context.Context, rdb redis.UniversalClient, pattern string) ([]string, error) {
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			keys = append(keys, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
		return keys, err
	}
	return keys, scan(ctx, rdb)
}

// partitionsByScore returns up to limit members of each partition's sorted set keyOf(n) with a
// score at most max, lowest first within each partition (the sweeps' reading).
func partitionsByScore(ctx context.Context, rdb redis.UniversalClient, keyOf func(n int) string, max string, limit int64) ([]string, error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, events.Shards)
	for n := range cmds {
		cmds[n] = pipe.ZRangeByScore(ctx, keyOf(n), &redis.ZRangeBy{Min: "-inf", Max: max, Count: limit})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var out []string
	for _, c := range cmds {
		out = append(out, c.Val()...)
	}
	return out, nil
}
