package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterWait bounds every wait for the cluster to converge: forming, failing over, migrating.
const clusterWait = 30 * time.Second

// migrateBatch is how many keys MigrateSlot moves with one MIGRATE.
const migrateBatch = 10

// Cluster is a Redis Cluster of real redis-server processes, each the test's own, so tests can
// fail nodes over, kill and restart them, and move slots while clients write.
type Cluster struct {
	// Addrs are the addresses of all nodes, masters and replicas, in start order.
	Addrs []string

	nodes []*Node
	t     testing.TB

	// afterMigrate, when set, is called after each MIGRATE batch of MigrateSlot with the keys
	// it moved, while the slot is still migrating. Tests use it to write during that window.
	afterMigrate func(keys []string)
}

// Node is one redis-server of a Cluster.
type Node struct {
	// Addr is the node's host:port; its cluster bus listens on port+10000.
	Addr string
	// ID is the node's cluster ID. It survives Restart (it is kept in nodes.conf).
	ID string
	// Port is the node's client port.
	Port int
	// Dir is the node's data directory: nodes.conf, its append-only files and redis.log.
	Dir string

	c      *Cluster
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	admin  *redis.Client // the helper's own connection pool, for polling and commands
}

// StartCluster starts masters*(1+replicasPerMaster) redis-server processes in cluster mode with
// append-only persistence (fsync always), forms them into a cluster with redis-cli (masters
// needs to be at least 3), waits until every node reports cluster_state:ok and every replica's
// link to its master is up, and stops every node when the test ends. Like Start, it skips the
// test when redis-server or redis-cli is missing unless BASALT_REQUIRE_REDIS is set.
func StartCluster(t testing.TB, masters, replicasPerMaster int) *Cluster {
	t.Helper()
	needBinaries(t, "redis-server", "redis-cli")
	if masters < 3 || replicasPerMaster < 0 {
		t.Fatalf("a Redis Cluster needs at least 3 masters and no negative replica count; got %d and %d",
			masters, replicasPerMaster)
	}
	c := &Cluster{t: t}
	for range masters * (1 + replicasPerMaster) {
		n := c.startNewNode()
		c.nodes = append(c.nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	c.create(replicasPerMaster)
	for _, n := range c.nodes {
		id, err := n.admin.ClusterMyID(context.Background()).Result()
		if err != nil {
			t.Fatalf("CLUSTER MYID on %s: %v", n.Addr, err)
		}
		n.ID = id
	}
	c.waitFor("cluster to form", func() error {
		v, err := c.healthy()
		if err != nil {
			return err
		}
		if got := len(v.masters()); got != masters {
			return fmt.Errorf("%d masters serve slots, want %d", got, masters)
		}
		return nil
	})
	return c
}

// needBinaries skips the test when one of the named programs is not installed, or fails it
// when BASALT_REQUIRE_REDIS is set.
func needBinaries(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("BASALT_REQUIRE_REDIS") != "" {
				t.Fatalf("%s not found: %v", name, err)
			}
			t.Skipf("%s not installed; set BASALT_REQUIRE_REDIS=1 to make this a failure", name)
		}
	}
}

// startNewNode starts an empty cluster node in a fresh directory on fresh ports. It retries on
// new ports when the chosen ones were taken between the check and the server's bind.
func (c *Cluster) startNewNode() *Node {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		n := &Node{Dir: c.t.TempDir(), Port: clusterPort(c.t), c: c}
		n.Addr = "127.0.0.1:" + strconv.Itoa(n.Port)
		n.admin = redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: time.Second,
			ReadTimeout: 3 * time.Second, MaxRetries: -1})
		c.t.Cleanup(func() { n.admin.Close() })
		c.t.Cleanup(n.Kill)
		err := n.start()
		if err == nil {
			return n
		}
		if attempt == 4 || !strings.Contains(n.logTail(50), "in use") {
			c.t.Fatalf("%v\n%s", err, n.logTail(30))
		}
		n.Kill()
	}
}

var (
	portsMu    sync.Mutex
	portsTaken = map[int]bool{} // client ports handed out in this test process
)

// clusterPort returns a port P such that P and its cluster bus port P+10000 are both free. P is
// drawn from [10000, 22768), so both lie below Linux's default ephemeral range (32768 and up):
// no outgoing connection is given either port while a killed node is down, and Restart can
// bind them again. Ports are never handed out twice in one test process.
func clusterPort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 10000 + rand.IntN(12768)
		if portsTaken[p] || portsTaken[p+10000] || portsTaken[p-10000] {
			continue
		}
		if !canListen(p) || !canListen(p+10000) {
			continue
		}
		portsTaken[p] = true
		return p
	}
	t.Fatalf("no free port pair P, P+10000 below 32768")
	return 0
}

// canListen reports whether port is free on the loopback address.
func canListen(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// start runs redis-server for the node on its port and directory and waits until it answers
// PING (after loading its append-only file, on a restart).
func (n *Node) start() error {
	n.cmd = exec.Command("redis-server", "--port", strconv.Itoa(n.Port), "--bind", "127.0.0.1",
		"--dir", n.Dir, "--logfile", filepath.Join(n.Dir, "redis.log"),
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		// Replicas sync at once instead of waiting 5 s for more replicas to share a transfer.
		"--repl-diskless-sync-delay", "0")
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server on %s: %v", n.Addr, err)
	}
	exited := make(chan struct{})
	n.exited = exited
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(n.cmd)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := n.admin.Ping(context.Background()).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited at start", n.Addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer: %v", n.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// create forms the cluster from the started nodes with redis-cli --cluster create.
func (c *Cluster) create(replicas int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("redis-cli --cluster create: %v\n%s\n%s", err, out, c.logTails())
	}
}

// Client returns a new cluster client on all nodes' addresses. The caller closes it.
func (c *Cluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: slices.Clone(c.Addrs)})
}

// URL returns the URL Basalt accepts for the cluster: redis+cluster://FIRST?addr=SECOND&addr=...,
// naming every node. Without the "+cluster" in its scheme it is what redis.ParseClusterURL reads.
func (c *Cluster) URL() string {
	var b strings.Builder
	b.WriteString("redis+cluster://" + c.Addrs[0])
	for i, a := range c.Addrs[1:] {
		if i == 0 {
			b.WriteString("?addr=" + a)
		} else {
			b.WriteString("&addr=" + a)
		}
	}
	return b.String()
}

// Nodes returns all nodes, masters and replicas, in start order.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// Slot returns the hash slot of key, as the cluster computes it (CLUSTER KEYSLOT).
func (c *Cluster) Slot(key string) int {
	c.t.Helper()
	slot, err := c.anyLive().admin.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		c.t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
	}
	return int(slot)
}

// MasterOf returns the master that serves slot, in the view of the first running node.
func (c *Cluster) MasterOf(slot int) *Node {
	c.t.Helper()
	v := c.viewOf(c.anyLive())
	n := c.byID(v.owner(slot))
	if n == nil {
		c.t.Fatalf("no node serves slot %d", slot)
	}
	return n
}

// ReplicaOf returns a running replica of master, in the view of the first running node, or nil
// when it has none.
func (c *Cluster) ReplicaOf(master *Node) *Node {
	c.t.Helper()
	v := c.viewOf(c.anyLive())
	for _, n := range c.nodes {
		if l := v.byID(n.ID); l != nil && n.running() && l.master == master.ID {
			return n
		}
	}
	return nil
}

// Failover makes a replica of slot's master take over from it with CLUSTER FAILOVER, the planned
// handover: the master stops taking writes until the replica has caught up, so no acknowledged
// write is lost and clients that follow MOVED keep working throughout. It waits until the replica
// is a master, every node agrees it serves slot, and the cluster is settled (see healthy).
func (c *Cluster) Failover(slot int) {
	c.t.Helper()
	old := c.MasterOf(slot)
	r := c.ReplicaOf(old)
	if r == nil {
		c.t.Fatalf("failover of slot %d: master %s has no running replica", slot, old.Addr)
	}
	if err := r.admin.Do(context.Background(), "CLUSTER", "FAILOVER").Err(); err != nil {
		c.t.Fatalf("CLUSTER FAILOVER on %s: %v", r.Addr, err)
	}
	c.waitFor(fmt.Sprintf("%s to take slot %d over from %s", r.Addr, slot, old.Addr), func() error {
		if role, err := r.role(); err != nil || role != "master" {
			return fmt.Errorf("%s is %q (%v), not yet master", r.Addr, role, err)
		}
		return c.settledWithOwner(slot, r)
	})
}

// KillMaster kills slot's master with SIGKILL, an unplanned failure, waits until the cluster has
// promoted one of its replicas to serve slot and is settled again, and returns the killed node.
func (c *Cluster) KillMaster(slot int) *Node {
	c.t.Helper()
	m := c.MasterOf(slot)
	if c.ReplicaOf(m) == nil {
		c.t.Fatalf("kill master of slot %d: %s has no running replica to promote", slot, m.Addr)
	}
	m.Kill()
	c.waitFor(fmt.Sprintf("a replica of killed %s to take slot %d over", m.Addr, slot), func() error {
		v, err := c.healthy()
		if err != nil {
			return err
		}
		if v.owner(slot) == m.ID {
			return fmt.Errorf("slot %d is still assigned to killed %s", slot, m.Addr)
		}
		return nil
	})
	return m
}

// MigrateSlot moves slot and its keys from its master to the master to, live, by the standard
// protocol: SETSLOT IMPORTING on to and MIGRATING on the source, MIGRATE of the keys in batches
// until the source has none left in slot, then SETSLOT NODE on to, the source and the other
// masters. Clients that follow ASK and MOVED (go-redis does) keep reading and writing the slot's
// keys throughout. It waits until every node agrees to serves slot and the cluster is settled.
func (c *Cluster) MigrateSlot(slot int, to *Node) {
	c.t.Helper()
	ctx := context.Background()
	from := c.MasterOf(slot)
	if from == to {
		return
	}
	if !to.IsMaster() {
		c.t.Fatalf("migrate slot %d: %s is not a master", slot, to.Addr)
	}
	c.do(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.ID)
	c.do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.ID)
	host, port, _ := net.SplitHostPort(to.Addr)
	for {
		keys, err := from.admin.ClusterGetKeysInSlot(ctx, slot, migrateBatch).Result()
		if err != nil {
			c.t.Fatalf("CLUSTER GETKEYSINSLOT %d on %s: %v", slot, from.Addr, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		c.do(from, args...)
		if c.afterMigrate != nil {
			c.afterMigrate(keys)
		}
	}
	c.do(to, "CLUSTER", "SETSLOT", slot, "NODE", to.ID)
	c.do(from, "CLUSTER", "SETSLOT", slot, "NODE", to.ID)
	for _, m := range c.nodes {
		if m != to && m != from && m.running() && m.IsMaster() {
			c.do(m, "CLUSTER", "SETSLOT", slot, "NODE", to.ID)
		}
	}
	c.waitFor(fmt.Sprintf("slot %d to move from %s to %s", slot, from.Addr, to.Addr), func() error {
		return c.settledWithOwner(slot, to)
	})
}

// do runs a command on n and fails the test on an error.
func (c *Cluster) do(n *Node, args ...any) {
	c.t.Helper()
	if err := n.admin.Do(context.Background(), args...).Err(); err != nil {
		c.t.Fatalf("%v on %s: %v", args, n.Addr, err)
	}
}

// Client returns a client of this node alone, closed when the test ends. In a cluster a node
// answers MOVED for keys of slots it does not serve; a replica answers reads after READONLY.
func (n *Node) Client() *redis.Client {
	cl := redis.NewClient(&redis.Options{Addr: n.Addr})
	n.c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Kill kills the node with SIGKILL and waits for it to exit. It is idempotent.
func (n *Node) Kill() {
	if !n.running() {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
	n.cmd = nil
}

// Restart starts a killed node again from its data directory, on its port, and waits until it
// has rejoined: every node sees it as healthy and agrees on its role and, when it is a replica
// (as a killed master is once the cluster has failed it over), its link to its master is up.
func (n *Node) Restart() {
	n.c.t.Helper()
	if n.running() {
		n.c.t.Fatalf("restart %s: it is running", n.Addr)
	}
	if err := n.start(); err != nil {
		n.c.t.Fatalf("%v\n%s", err, n.logTail(30))
	}
	n.c.waitFor(fmt.Sprintf("restarted %s to rejoin", n.Addr), func() error {
		_, err := n.c.healthy()
		return err
	})
}

// IsMaster reports whether the node, by its own ROLE, is a master. The node must be running.
func (n *Node) IsMaster() bool {
	n.c.t.Helper()
	role, err := n.role()
	if err != nil {
		n.c.t.Fatalf("ROLE on %s: %v", n.Addr, err)
	}
	return role == "master"
}

// role returns the first element of the node's ROLE reply: "master" or "slave".
func (n *Node) role() (string, error) {
	r, err := n.admin.Do(context.Background(), "ROLE").Slice()
	if err != nil {
		return "", err
	}
	if len(r) == 0 {
		return "", errors.New("empty ROLE reply")
	}
	s, _ := r[0].(string)
	return s, nil
}

// running reports whether the node's process has been started and not killed.
func (n *Node) running() bool { return n.cmd != nil }

// logTail returns the last lines of the node's log.
func (n *Node) logTail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "redis.log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logTails returns the last lines of every node's log, each under its address.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "--- %s (%s) log tail:\n%s\n", n.Addr, n.ID, n.logTail(15))
	}
	return b.String()
}

// waitFor polls cond until it returns nil, failing the test with cond's last error and the
// nodes' log tails when that takes longer than clusterWait.
func (c *Cluster) waitFor(what string, cond func() error) {
	c.t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: %v\n%s", what, err, c.logTails())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settledWithOwner returns nil when the cluster is settled and every node agrees that owner
// serves slot.
func (c *Cluster) settledWithOwner(slot int, owner *Node) error {
	v, err := c.healthy()
	if err != nil {
		return err
	}
	if got := v.owner(slot); got != owner.ID {
		return fmt.Errorf("slot %d is served by %s, want %s", slot, got, owner.ID)
	}
	return nil
}

// healthy returns the cluster's view when it is settled: every running node says
// cluster_state:ok, has no slot importing or migrating, sees every running node without a
// fail, handshake or noaddr flag, and agrees with the others on who serves which slots and which
// nodes replicate which; and every running replica's link to its master is up.
func (c *Cluster) healthy() (view, error) {
	ctx := context.Background()
	var first view
	var firstSum string
	var firstNode *Node
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		info, err := n.admin.ClusterInfo(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("CLUSTER INFO on %s: %v", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return nil, fmt.Errorf("%s: cluster_state is not ok", n.Addr)
		}
		v, err := n.view()
		if err != nil {
			return nil, err
		}
		if err := c.checkView(n, v); err != nil {
			return nil, err
		}
		sum := v.summary()
		if first == nil {
			first, firstSum, firstNode = v, sum, n
		} else if sum != firstSum {
			return nil, fmt.Errorf("views differ:\n%s sees:\n%s%s sees:\n%s", firstNode.Addr, firstSum, n.Addr, sum)
		}
	}
	if first == nil {
		return nil, errors.New("no node is running")
	}
	return first, nil
}

// checkView returns an error when n's own view v shows a migration in progress, a running node
// failed or unknown, or n as a replica whose link to its master is down.
func (c *Cluster) checkView(n *Node, v view) error {
	self := v.self()
	if self == nil {
		return fmt.Errorf("%s: no myself line in CLUSTER NODES", n.Addr)
	}
	if len(self.open) > 0 {
		return fmt.Errorf("%s: slots in migration: %v", n.Addr, self.open)
	}
	for _, m := range c.nodes {
		if !m.running() {
			continue
		}
		l := v.byID(m.ID)
		if l == nil {
			return fmt.Errorf("%s does not know %s", n.Addr, m.Addr)
		}
		for _, f := range []string{"fail", "fail?", "handshake", "noaddr"} {
			if l.flags[f] {
				return fmt.Errorf("%s flags %s %s", n.Addr, m.Addr, f)
			}
		}
	}
	if self.flags["slave"] {
		info, err := n.admin.Info(context.Background(), "replication").Result()
		if err != nil {
			return fmt.Errorf("INFO replication on %s: %v", n.Addr, err)
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica %s: link to its master is not up", n.Addr)
		}
	}
	return nil
}

// anyLive returns the first running node.
func (c *Cluster) anyLive() *Node {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.running() {
			return n
		}
	}
	c.t.Fatalf("no node of the cluster is running")
	return nil
}

// byID returns the node with cluster ID id, or nil.
func (c *Cluster) byID(id string) *Node {
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// viewOf returns n's CLUSTER NODES view, failing the test on an error.
func (c *Cluster) viewOf(n *Node) view {
	c.t.Helper()
	v, err := n.view()
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

// view is one node's CLUSTER NODES reply, a line per node it knows.
type view []nodeLine

// nodeLine is one line of CLUSTER NODES.
type nodeLine struct {
	id, addr string
	flags    map[string]bool
	master   string   // ID of the master a replica replicates; "" for a master
	slots    []string // slot ranges served, as "a-b" or "a"
	open     []string // importing or migrating slots, as "[slot->-id]" or "[slot-<-id]" (myself only)
}

// view returns the node's parsed CLUSTER NODES reply.
func (n *Node) view() (view, error) {
	s, err := n.admin.ClusterNodes(context.Background()).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER NODES on %s: %v", n.Addr, err)
	}
	return parseView(s)
}

// parseView parses a CLUSTER NODES reply:
// <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
func parseView(s string) (view, error) {
	var v view
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("bad CLUSTER NODES line %q", line)
		}
		l := nodeLine{id: f[0], addr: strings.SplitN(f[1], "@", 2)[0], flags: map[string]bool{}}
		for _, fl := range strings.Split(f[2], ",") {
			l.flags[fl] = true
		}
		if f[3] != "-" {
			l.master = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				l.open = append(l.open, r)
			} else {
				l.slots = append(l.slots, r)
			}
		}
		v = append(v, l)
	}
	return v, nil
}

// self returns the line of the node that gave the view.
func (v view) self() *nodeLine {
	for i := range v {
		if v[i].flags["myself"] {
			return &v[i]
		}
	}
	return nil
}

// byID returns the line of node id, or nil.
func (v view) byID(id string) *nodeLine {
	for i := range v {
		if v[i].id == id {
			return &v[i]
		}
	}
	return nil
}

// masters returns the IDs of the nodes that serve slots.
func (v view) masters() []string {
	var ids []string
	for _, l := range v {
		if len(l.slots) > 0 {
			ids = append(ids, l.id)
		}
	}
	return ids
}

// owner returns the ID of the node serving slot, or "".
func (v view) owner(slot int) string {
	for _, l := range v {
		for _, r := range l.slots {
			lo, hi, _ := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if hi != "" {
				b, _ = strconv.Atoi(hi)
			}
			if a <= slot && slot <= b {
				return l.id
			}
		}
	}
	return ""
}

// summary renders what all nodes must agree on: per node, its role, its master and its slots.
// A failed node's role reads "failed": others keep its last role, and it has no view of its own.
func (v view) summary() string {
	lines := make([]string, 0, len(v))
	for _, l := range v {
		role := "master"
		if l.flags["slave"] {
			role = "replica of " + l.master
		}
		if l.flags["fail"] || l.flags["fail?"] {
			role = "failed"
		}
		lines = append(lines, fmt.Sprintf("%s %s %s slots %v\n", l.id, l.addr, role, l.slots))
	}
	slices.Sort(lines)
	return strings.Join(lines, "")
}
