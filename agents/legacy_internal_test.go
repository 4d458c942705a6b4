package agents

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestLegacyWork: which legacy backend topics an upgraded agent reads. The stream ids compare as
// numbers, not strings ("9-0" before "10-0").
func TestLegacyWork(t *testing.T) {
	last := func(id string) []redis.XMessage { return []redis.XMessage{{ID: id}} }
	agents := func(lastDelivered string, pending int64) []redis.XInfoGroup {
		return []redis.XInfoGroup{{Name: "other", LastDeliveredID: "0-0", Pending: 5},
			{Name: "agents", LastDeliveredID: lastDelivered, Pending: pending}}
	}
	for _, c := range []struct {
		name   string
		groups []redis.XInfoGroup
		last   []redis.XMessage
		want   bool
	}{
		{"empty stream, no group", nil, nil, false},
		{"entries, no group: a subscription reads them from the start", nil, last("5-0"), true},
		{"entries, another group only", []redis.XInfoGroup{{Name: "other", LastDeliveredID: "5-0"}}, last("5-0"), true},
		{"all delivered and acknowledged", agents("10-0", 0), last("10-0"), false},
		{"an entry after the last delivered", agents("9-0", 0), last("10-0"), true},
		{"same ms, later sequence", agents("10-0", 0), last("10-1"), true},
		{"delivered, not acknowledged", agents("10-0", 1), last("10-0"), true},
		{"pending, entries trimmed away", agents("10-0", 1), nil, true},
		{"emptied stream, all acknowledged", agents("10-0", 0), nil, false},
	} {
		if got := legacyWork(c.groups, c.last); got != c.want {
			t.Errorf("%s: legacyWork = %v, want %v", c.name, got, c.want)
		}
	}
}
