package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// proxied returns a store that reaches a real redis-server through a fault-injecting proxy,
// with go-redis's default retries, and a direct client to check what Redis holds.
func proxied(t *testing.T, now func() time.Time) (*store.Store, *redistest.Proxy, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	p := redistest.StartProxy(t, srv.Addr)
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	t.Cleanup(func() { c.Close() })
	return store.New(c, now), p, srv.Client()
}

// TestLostRepliesApplyOnce: a charge and a compare-and-set whose replies are lost after they ran
// are retried or read back, and count once.
func TestLostRepliesApplyOnce(t *testing.T) {
	st, p, _ := proxied(t, nil)
	ctx := context.Background()

	// Each script runs once first: a lost reply must hit a run of the script (EVALSHA of a
	// loaded script), not the NOSCRIPT answer that makes go-redis send it.
	if err := st.Charge(ctx, "p", "vol:warm-up", store.QuotaRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if rec, err := st.ClaimIdempotencyKey(ctx, "p", "warm-up", "tok-0", "fp", time.Minute); rec != nil || err != nil {
		t.Fatalf("warm-up claim = %+v, %v", rec, err)
	}
	lost := p.LoseReplies(2, func(c redistest.Command) bool { return c.Mentions("charge:vol:v1") && c.Mentions(":limits") })
	if err := st.Charge(ctx, "p", "vol:v1", store.QuotaRequest{Volumes: 1, Gigabytes: 5}, nil); err != nil {
		t.Fatalf("Charge after two lost replies = %v, want the retry to succeed", err)
	}
	if usage, _ := st.QuotaUsage(ctx, "p"); lost() != 2 || usage[store.QuotaVolumes] != 1 || usage[store.QuotaGigabytes] != 5 {
		t.Fatalf("after %d lost replies: usage %v, want 1 volume and 5 GB", lost(), usage)
	}

	// A claim of an Idempotency-Key whose reply was lost is this request's own on the retry,
	// not "another request with this key is in progress".
	lost = p.LoseReplies(1, func(c redistest.Command) bool { return c.Mentions("tok-1") && c.Mentions("idem") })
	if rec, err := st.ClaimIdempotencyKey(ctx, "p", "key-1", "tok-1", "fp", time.Minute); rec != nil || err != nil || lost() != 1 {
		t.Fatalf("claim after a lost reply (lost %d) = %+v, %v; want the claim", lost(), rec, err)
	}
	if rec, _ := st.ClaimIdempotencyKey(ctx, "p", "key-1", "tok-2", "fp", time.Minute); rec == nil || rec.Token != "tok-1" {
		t.Fatalf("another request's claim = %+v, want the record held by tok-1", rec)
	}

	v := &basalt.Volume{ID: "v1", ProjectID: "p", Size: 5, Status: basalt.StatusAvailable, CreatedAt: time.Now()}
	if err := st.CreateVolume(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	lost = p.LoseReplies(1, func(c redistest.Command) bool { return c.Name() == "EXEC" && c.Mentions("renamed") })
	calls := 0
	_, err := st.UpdateVolumeWithOp(ctx, "v1", func(v *basalt.Volume) error {
		calls++
		name := "renamed"
		v.Name = &name
		v.Size++
		return nil
	}, nil)
	if err != nil || lost() != 1 {
		t.Fatalf("update whose EXEC reply was lost (lost %d) = %v, want success: it ran", lost(), err)
	}
	if got, _ := st.Volume(ctx, "v1"); got.Size != 6 || calls != 1 {
		t.Fatalf("size %d after %d attempts, want 6 after 1: the update applies once", got.Size, calls)
	}
}

// TestSweepChargesSettlesOrphans: a charge whose owner was never written is refunded once it
// is older than the grace; one whose owner exists is kept (and not looked at again); a young
// one is left alone.
func TestSweepChargesSettlesOrphans(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	st, _, direct := proxied(t, func() time.Time { return now })
	ctx := context.Background()
	charge := func(id string, gb int) {
		t.Helper()
		if err := st.Charge(ctx, "p", id, store.QuotaRequest{Volumes: 1, Gigabytes: gb}, nil); err != nil {
			t.Fatal(err)
		}
	}
	charge("vol:owned", 1)
	charge("vol:orphan", 2)
	if err := st.CreateVolume(ctx, &basalt.Volume{ID: "owned", ProjectID: "p", Size: 1, CreatedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(time.Minute)
	charge("vol:young", 4)

	refunded, err := st.SweepCharges(ctx, now.Add(-30*time.Second))
	if err != nil || len(refunded) != 1 || refunded[0] != "vol:orphan" {
		t.Fatalf("SweepCharges = %v, %v; want [vol:orphan]", refunded, err)
	}
	if usage, _ := st.QuotaUsage(ctx, "p"); usage[store.QuotaGigabytes] != 5 || usage[store.QuotaVolumes] != 2 {
		t.Fatalf("usage after the sweep = %v, want 5 GB in 2 volumes (owned and young)", usage)
	}
	var n int64
	for part := range events.Shards {
		k, _ := direct.ZCard(ctx, events.ShardPrefix(part)+"charges:unbound").Result()
		n += k
	}
	if n != 1 {
		t.Fatalf("%d charges still unbound, want 1 (the young one)", n)
	}
	// A refund unlists its charge: nothing is left to sweep.
	if err := st.Refund(ctx, "vol:young"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if refunded, err := st.SweepCharges(ctx, now); err != nil || len(refunded) != 0 {
		t.Fatalf("second sweep = %v, %v; want nothing", refunded, err)
	}
}
