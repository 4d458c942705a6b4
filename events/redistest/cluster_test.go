package redistest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestClusterFormsAndShardsKeys checks that StartCluster forms a 3x1 cluster, that a cluster
// client spreads keys over all masters and reads them back, and that URL names every node.
func TestClusterFormsAndShardsKeys(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3, 1)
	ctx := context.Background()
	if len(c.Nodes()) != 6 || len(c.Addrs) != 6 {
		t.Fatalf("cluster has %d nodes and %d addrs, want 6", len(c.Nodes()), len(c.Addrs))
	}
	masters := 0
	for _, n := range c.Nodes() {
		if n.IsMaster() {
			masters++
			if c.ReplicaOf(n) == nil {
				t.Errorf("master %s has no replica", n.Addr)
			}
		}
	}
	if masters != 3 {
		t.Fatalf("%d masters, want 3", masters)
	}

	cc := c.Client()
	defer cc.Close()
	const keys = 60
	for i := range keys {
		if err := cc.Set(ctx, fmt.Sprint("key:", i), i, 0).Err(); err != nil {
			t.Fatalf("SET key:%d: %v", i, err)
		}
	}
	holders := map[*Node]bool{}
	for i := range keys {
		k := fmt.Sprint("key:", i)
		if got, err := cc.Get(ctx, k).Int(); err != nil || got != i {
			t.Fatalf("GET %s through the cluster client = %d, %v; want %d", k, got, err, i)
		}
		m := c.MasterOf(c.Slot(k))
		if got, err := m.Client().Get(ctx, k).Int(); err != nil || got != i {
			t.Fatalf("GET %s on its master %s = %d, %v; want %d", k, m.Addr, got, err, i)
		}
		holders[m] = true
	}
	if len(holders) != 3 {
		t.Errorf("keys landed on %d masters, want all 3", len(holders))
	}

	u := c.URL()
	if !strings.HasPrefix(u, "redis+cluster://") {
		t.Fatalf("URL %q lacks the redis+cluster scheme", u)
	}
	opt, err := redis.ParseClusterURL(strings.Replace(u, "redis+cluster://", "redis://", 1))
	if err != nil {
		t.Fatalf("ParseClusterURL(%q): %v", u, err)
	}
	if !slices.Equal(opt.Addrs, c.Addrs) {
		t.Fatalf("URL %q parses to addrs %v, want %v", u, opt.Addrs, c.Addrs)
	}
	fromURL := redis.NewClusterClient(opt)
	defer fromURL.Close()
	if got, err := fromURL.Get(ctx, "key:7").Int(); err != nil || got != 7 {
		t.Fatalf("GET key:7 through a client from URL = %d, %v", got, err)
	}
}

// TestClusterFailoverMovesSlot checks that Failover hands a slot to the former replica while a
// client keeps incrementing a key in it, that keys written before are readable after, and that
// no acknowledged increment is lost.
func TestClusterFailoverMovesSlot(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3, 1)
	ctx := context.Background()
	cc := c.Client()
	defer cc.Close()
	slot := c.Slot("{fo}")
	old := c.MasterOf(slot)
	rep := c.ReplicaOf(old)
	for i := range 50 {
		if err := cc.Set(ctx, fmt.Sprint("{fo}k", i), i, 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}

	w := startIncr(t, cc, "{fo}counter")
	w.waitProgress(t, 20)
	c.Failover(slot)
	w.waitProgress(t, 20) // writes go on, to the new master
	w.stop()

	if got := c.MasterOf(slot); got != rep {
		t.Fatalf("slot %d is served by %s after failover, want the former replica %s", slot, got.Addr, rep.Addr)
	}
	if !rep.IsMaster() || old.IsMaster() {
		t.Fatalf("after failover %s master=%v and %s master=%v; want them swapped",
			rep.Addr, rep.IsMaster(), old.Addr, old.IsMaster())
	}
	if got := c.ReplicaOf(rep); got != old {
		t.Errorf("replica of the new master is %v, want the old master %s", got, old.Addr)
	}
	for i := range 50 {
		k := fmt.Sprint("{fo}k", i)
		if got, err := cc.Get(ctx, k).Int(); err != nil || got != i {
			t.Fatalf("GET %s after failover = %d, %v; want %d", k, got, err, i)
		}
	}
	w.check(t, cc, "{fo}counter")
}

// TestClusterMigrateSlotUnderWrites checks that MigrateSlot moves a slot with its keys while a
// client keeps incrementing a key in it, that the client was redirected by ASK while the slot
// was half moved, and that no acknowledged increment is lost.
func TestClusterMigrateSlotUnderWrites(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3, 0)
	ctx := context.Background()
	const hot = "{mig}hot"
	slot := c.Slot(hot)
	from := c.MasterOf(slot)
	var to *Node
	for _, n := range c.Nodes() {
		if n != from {
			to = n
			break
		}
	}

	cc := c.Client()
	defer cc.Close()
	var asks atomic.Int64
	cc.OnNewNode(func(n *redis.Client) { n.AddHook(askCounter{&asks}) })
	const fill = 200
	for i := range fill {
		if err := cc.Set(ctx, fmt.Sprint("{mig}fill", i), i, 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}

	w := startIncr(t, cc, hot)
	w.waitProgress(t, 20)
	hotMoved := false
	c.afterMigrate = func(keys []string) {
		if !slices.Contains(keys, hot) {
			return
		}
		// The hot key is on the target, the slot still migrating: writes must follow ASK.
		hotMoved = true
		before := asks.Load()
		deadline := time.Now().Add(5 * time.Second)
		for asks.Load() < before+20 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.MigrateSlot(slot, to)
	w.waitProgress(t, 20)
	w.stop()

	if !hotMoved {
		t.Fatalf("MIGRATE never moved %s", hot)
	}
	if got := c.MasterOf(slot); got != to {
		t.Fatalf("slot %d is served by %s after migration, want %s", slot, got.Addr, to.Addr)
	}
	if n := asks.Load(); n < 20 {
		t.Errorf("the client followed %d ASK redirects while the slot migrated, want at least 20", n)
	}
	t.Logf("%d increments, %d followed ASK", w.ok.Load(), asks.Load())
	if n, err := from.Client().ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != 0 {
		t.Errorf("source %s keeps %d keys (%v) in slot %d, want 0", from.Addr, n, err, slot)
	}
	if n, err := to.Client().ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != fill+1 {
		t.Errorf("target %s has %d keys (%v) in slot %d, want %d", to.Addr, n, err, slot, fill+1)
	}
	for i := range fill {
		k := fmt.Sprint("{mig}fill", i)
		if got, err := cc.Get(ctx, k).Int(); err != nil || got != i {
			t.Fatalf("GET %s after migration = %d, %v; want %d", k, got, err, i)
		}
	}
	w.check(t, cc, hot)
}

// TestClusterKillMasterKeepsAcknowledgedWrites checks that writes a replica acknowledged (WAIT)
// survive SIGKILL of their master, and that the killed node, restarted, rejoins as a replica of
// its successor with the same data.
func TestClusterKillMasterKeepsAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3, 1)
	ctx := context.Background()
	slot := c.Slot("{kill}")
	m := c.MasterOf(slot)
	rep := c.ReplicaOf(m)

	const keys = 100
	// One pipeline is one connection, so WAIT covers the SETs before it.
	var wait *redis.Cmd
	_, err := m.Client().Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range keys {
			p.Set(ctx, fmt.Sprint("{kill}k", i), i, 0)
		}
		wait = p.Do(ctx, "WAIT", 1, 1000)
		return nil
	})
	if err != nil {
		t.Fatalf("SET+WAIT on %s: %v", m.Addr, err)
	}
	if acks, err := wait.Int(); err != nil || acks < 1 {
		t.Fatalf("WAIT 1 1000 = %d, %v; want the replica's acknowledgement", acks, err)
	}

	killed := c.KillMaster(slot)
	if killed != m {
		t.Fatalf("KillMaster killed %s, want the master %s", killed.Addr, m.Addr)
	}
	if got := c.MasterOf(slot); got != rep {
		t.Fatalf("slot %d is served by %s after the kill, want the replica %s", slot, got.Addr, rep.Addr)
	}
	cc := c.Client()
	defer cc.Close()
	readAll := func(when string, get func(string) *redis.StringCmd) {
		t.Helper()
		for i := range keys {
			k := fmt.Sprint("{kill}k", i)
			if got, err := get(k).Int(); err != nil || got != i {
				t.Fatalf("GET %s %s = %d, %v; want %d", k, when, got, err, i)
			}
		}
	}
	readAll("after the kill", func(k string) *redis.StringCmd { return cc.Get(ctx, k) })

	killed.Restart()
	if killed.IsMaster() {
		t.Fatalf("restarted %s is a master, want a replica", killed.Addr)
	}
	if got := c.ReplicaOf(rep); got != killed {
		t.Fatalf("replica of the new master is %v, want the restarted %s", got, killed.Addr)
	}
	// Read the restarted replica itself: READONLY and GETs on one connection.
	conn := killed.Client().Conn()
	defer conn.Close()
	if err := conn.ReadOnly(ctx).Err(); err != nil {
		t.Fatalf("READONLY on %s: %v", killed.Addr, err)
	}
	readAll("on the restarted replica", func(k string) *redis.StringCmd { return conn.Get(ctx, k) })
}

// incrWriter INCRs one key in a loop through a cluster client, counting the INCRs that
// succeeded and those that failed.
type incrWriter struct {
	ok, errs atomic.Int64
	lastErr  atomic.Value
	done     chan struct{}
	wg       sync.WaitGroup
}

// startIncr starts an incrWriter on key; stop ends it.
func startIncr(t *testing.T, cc *redis.ClusterClient, key string) *incrWriter {
	w := &incrWriter{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.done:
				return
			default:
			}
			if err := cc.Incr(context.Background(), key).Err(); err != nil {
				w.errs.Add(1)
				w.lastErr.Store(err.Error())
			} else {
				w.ok.Add(1)
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

// waitProgress waits until n more INCRs have succeeded, failing the test after 10 s.
func (w *incrWriter) waitProgress(t *testing.T, n int64) {
	t.Helper()
	want := w.ok.Load() + n
	deadline := time.Now().Add(10 * time.Second)
	for w.ok.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("writer stalled: %d INCRs succeeded, %d failed (last: %v)", w.ok.Load(), w.errs.Load(), w.lastErr.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the writer and waits for it. It is idempotent.
func (w *incrWriter) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}

// check stops the writer and fails the test unless key holds exactly the number of INCRs
// acknowledged, and no INCR failed.
func (w *incrWriter) check(t *testing.T, cc *redis.ClusterClient, key string) {
	t.Helper()
	w.stop()
	got, err := cc.Get(context.Background(), key).Int64()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if ok := w.ok.Load(); got != ok {
		t.Errorf("%s = %d, but %d INCRs were acknowledged", key, got, ok)
	}
	if n := w.errs.Load(); n != 0 {
		t.Errorf("%d INCRs failed; last: %v", n, w.lastErr.Load())
	}
}

// askCounter is a hook counting the pipelines a cluster client sends to follow ASK redirects
// (ASKING then the command).
type askCounter struct{ n *atomic.Int64 }

func (askCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (askCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h askCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "asking" {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}
