package events

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestBlockTime(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		cmd      redis.Cmder
		block    time.Duration
		blocking bool
	}{
		{redis.NewStringCmd(ctx, "get", "k"), 0, false},
		{redis.NewStringSliceCmd(ctx, "blpop", "a", "b", int64(5)), 5 * time.Second, true},
		{redis.NewStringSliceCmd(ctx, "BRPOP", "a", "0.5"), 500 * time.Millisecond, true},
		{redis.NewStringSliceCmd(ctx, "blpop", "a", int64(0)), 0, true},
		{redis.NewStringCmd(ctx, "blmove", "a", "b", "left", "right", float64(2)), 2 * time.Second, true},
		{redis.NewXStreamSliceCmd(ctx, "xreadgroup", "group", "g", "c", "count", int64(1), "block", int64(100), "streams", "s", ">"),
			100 * time.Millisecond, true},
		{redis.NewXStreamSliceCmd(ctx, "xreadgroup", "group", "g", "c", "count", int64(1), "streams", "s", ">"), 0, false},
		{redis.NewXStreamSliceCmd(ctx, "xread", "block", int64(0), "streams", "s", "$"), 0, true},
		{redis.NewIntCmd(ctx, "wait", int64(1), int64(250)), 250 * time.Millisecond, true},
	}
	for _, tt := range tests {
		block, blocking := blockTime(tt.cmd)
		if block != tt.block || blocking != tt.blocking {
			t.Errorf("blockTime(%v) = %v, %v; want %v, %v", tt.cmd.Args(), block, blocking, tt.block, tt.blocking)
		}
	}
}
