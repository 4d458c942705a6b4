package events_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRedisCallsHaveDeadlines freezes a real redis-server: every call, retries and fresh
// connections included, fails within its deadline instead of waiting for Redis; blocking
// commands keep their block time; after the thaw the same client works again.
func TestRedisCallsHaveDeadlines(t *testing.T) {
	rs := redistest.Start(t)
	const timeout = 300 * time.Millisecond
	opts := rs.Options()
	opts.ReadTimeout, opts.WriteTimeout, opts.DialTimeout, opts.PoolTimeout = timeout, timeout, timeout, timeout
	rdb := events.NewRedisClient(events.Single(opts))
	defer rdb.Close()
	ctx := context.Background()

	// A blocking command waits longer than the timeout, as asked.
	go func() {
		time.Sleep(2 * timeout)
		rs.Client().RPush(ctx, "reply", "x")
	}()
	if v, err := rdb.BLPop(ctx, 3*time.Second, "reply").Result(); err != nil || v[1] != "x" {
		t.Fatalf("BLPop(3s) with a push after %v = %v, %v; want the value", 2*timeout, v, err)
	}
	start := time.Now()
	if err := rdb.BLPop(ctx, time.Second, "none").Err(); !errors.Is(err, redis.Nil) || time.Since(start) < time.Second {
		t.Fatalf("BLPop(1s) on an empty list = %v after %v; want redis.Nil after 1s", err, time.Since(start))
	}

	// Fill the pool with idle connections, which retries would find and wait on one by one.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rdb.BLPop(ctx, time.Second, "none")
		}()
	}
	wg.Wait()
	rs.Freeze()
	defer rs.Thaw()
	const bound = 4 * timeout // the deadline plus generous scheduling slack
	calls := []struct {
		name string
		run  func() error
	}{
		{"GET", func() error { return rdb.Get(ctx, "k").Err() }},
		{"SET", func() error { return rdb.Set(ctx, "k", "v", 0).Err() }},
		{"MULTI/EXEC", func() error {
			_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Incr(ctx, "n")
				return nil
			})
			return err
		}},
		{"XADD", func() error { return rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"a", "b"}}).Err() }},
		{"BLPOP 1s", func() error { return rdb.BLPop(ctx, time.Second, "none").Err() }},
	}
	for round := 0; round < 2; round++ { // the second round starts without idle connections
		for _, c := range calls {
			start := time.Now()
			err := c.run()
			d := time.Since(start)
			limit := bound
			if c.name == "BLPOP 1s" {
				limit += time.Second
			}
			if err == nil || d > limit {
				t.Errorf("%s on a frozen Redis = %v after %v; want an error within %v", c.name, err, d, limit)
			}
		}
	}

	rs.Thaw()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := rdb.Set(ctx, "k", "v", 0).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SET after the thaw = %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
