package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// TrimStream removes from stream the entries that every consumer group has been given and
// acknowledged (those before the oldest entry a group has not been delivered yet, or has
// pending). A stream without consumer groups (the dead letters) is trimmed by age: entries
// older than maxAge go (0: none). An entry some group still needs is never removed, however old.
// It returns how many entries went.
//
// The publisher's MAXLEN cap (about 100,000 entries a stream) stays as a backstop; this is what
// keeps a stream small: what consumers still need stays, what they are done with goes.
func TrimStream(ctx context.Context, rdb redis.UniversalClient, stream string, maxAge time.Duration, now time.Time) (int64, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return 0, nil
		}
		return 0, fmt.Errorf("groups of %s: %w", stream, err)
	}
	var keep string // the oldest entry id some group still needs
	if len(groups) > 0 {
		for _, g := range groups {
			need := nextID(g.LastDeliveredID)
			if g.Pending > 0 {
				p, err := rdb.XPending(ctx, stream, g.Name).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					return 0, fmt.Errorf("pending of %s in %s: %w", g.Name, stream, err)
				}
				if p != nil && p.Count > 0 && lessID(p.Lower, need) {
					need = p.Lower
				}
			}
			if keep == "" || lessID(need, keep) {
				keep = need
			}
		}
	}
	if len(groups) == 0 && maxAge > 0 {
		keep = strconv.FormatInt(now.Add(-maxAge).UnixMilli(), 10) + "-0"
	}
	if keep == "" {
		return 0, nil
	}
	n, err := rdb.XTrimMinID(ctx, stream, keep).Result()
	if err != nil {
		return 0, fmt.Errorf("trim %s: %w", stream, err)
	}
	return n, nil
}

// nextID returns the stream id right after id.
func nextID(id string) string {
	ms, seq := splitID(id)
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
}

// lessID reports whether stream id a is before b.
func lessID(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}
