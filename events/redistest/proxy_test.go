package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestProxyLosesTheReplyNotTheCommand: a lost reply reaches the client as an error while the
// command ran; the transaction of an EXEC is visible to the rule; a frozen proxy answers nothing
// until thawed.
func TestProxyLosesTheReplyNotTheCommand(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer c.Close()
	direct := s.Client()

	lost := p.LoseReplies(1, func(c Command) bool { return c.Name() == "INCR" && c.Mentions("counter") })
	if err := c.Incr(ctx, "counter").Err(); err == nil {
		t.Fatal("INCR through a lost reply succeeded")
	}
	if n, _ := direct.Get(ctx, "counter").Int(); n != 1 || lost() != 1 {
		t.Fatalf("counter = %d after a lost reply (lost %d), want 1: the command runs", n, lost())
	}
	if n, err := c.Incr(ctx, "counter").Result(); err != nil || n != 2 {
		t.Fatalf("INCR after the rule was used up = %d, %v; want 2", n, err)
	}

	p.LoseReplies(1, func(c Command) bool { return c.Name() == "EXEC" && c.Mentions("txkey") })
	_, err := c.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Set(ctx, "txkey", "v", 0)
		return nil
	})
	if err == nil {
		t.Fatal("a transaction whose EXEC reply was lost succeeded")
	}
	if v, _ := direct.Get(ctx, "txkey").Result(); v != "v" {
		t.Fatalf("txkey = %q, want the transaction applied", v)
	}

	p.Freeze()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	fc := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	defer fc.Close()
	if err := fc.Set(short, "frozen", "1", 0).Err(); err == nil {
		t.Fatal("SET through a frozen proxy succeeded")
	}
	p.Thaw()
	if err := fc.Set(ctx, "thawed", "1", 0).Err(); err != nil {
		t.Fatalf("SET after thaw: %v", err)
	}
}
