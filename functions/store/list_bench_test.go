package store_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

var listSizes = flag.String("list.sizes", "10000,100000,1000000", "volume counts of BenchmarkList")

// BenchmarkList times one page of a volume listing through the store on a real redis-server
// (its own, without persistence), at each volume count of -list.sizes, unfiltered and
// filtered, and reports the median and 99th percentile per page (p50-ms, p99-ms). Every volume
// is in one project. The volumes are written as the code before the indexes wrote them (a
// pipelined fill), then indexed by ReindexVolumes, the upgrade's backfill; both are timed in
// the log. Run it with a fixed count per page, e.g.
//
//	go test -run '^$' -bench List -benchtime 200x ./functions/store/
//
// The "scan" rows are the listing before the indexes (every volume of the project read,
// filtered and sorted in memory); they run at 100,000 volumes and fewer.
func BenchmarkList(b *testing.B) {
	for _, s := range strings.Split(*listSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			b.Fatalf("-list.sizes: %v", err)
		}
		b.Run(fmt.Sprintf("volumes=%d", n), func(b *testing.B) { benchList(b, n) })
	}
}

// benchVolume is volume i of the benchmark's data: 80 % available, 15 % in-use, 4 % error,
// 1 % creating; 30 % bootable; 1-1000 GiB; metadata tier (gold 10 %, silver 30 %, bronze 60 %)
// and app (one of 1,000); unique names but 0.1 % named "web"; 90 % in zone nova.
func benchVolume(r *rand.Rand, i int, t0 time.Time) *basalt.Volume {
	name := fmt.Sprintf("vol-%07d", i)
	if r.IntN(1000) == 0 {
		name = "web"
	}
	status := basalt.StatusAvailable
	switch x := r.IntN(100); {
	case x < 1:
		status = basalt.StatusCreating
	case x < 5:
		status = basalt.StatusError
	case x < 20:
		status = basalt.StatusInUse
	}
	tier := "bronze"
	switch x := r.IntN(10); {
	case x < 1:
		tier = "gold"
	case x < 4:
		tier = "silver"
	}
	zone := "nova"
	if r.IntN(10) == 0 {
		zone = "az2"
	}
	created := t0.Add(time.Duration(i) * time.Millisecond)
	updated := created.Add(time.Duration(r.IntN(1_000_000)) * time.Millisecond)
	return &basalt.Volume{ID: fmt.Sprintf("%08x-0000-4000-8000-%012d", r.Uint32(), i), ProjectID: "big", UserID: "u",
		Name: &name, Size: 1 + r.IntN(1000), Status: status, AttachStatus: "detached", AvailabilityZone: zone,
		VolumeTypeID: "8c9a2ce4-3ad8-4a09-a1a4-b7d1ecf0a1aa", VolumeTypeName: "__DEFAULT__", Host: "host1@lvm#pool",
		Metadata: map[string]string{"tier": tier, "app": fmt.Sprintf("app-%d", r.IntN(1000))},
		Bootable: r.IntN(10) < 3, CreatedAt: created, UpdatedAt: &updated}
}

func benchList(b *testing.B, n int) {
	ctx := context.Background()
	rdb := benchRedis(b)
	st := store.New(rdb, nil)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	// Fill: records and creation-time sets, as before the indexes, in pipelines of 2,000
	// volumes.
	start := time.Now()
	var ids []string
	for i := 0; i < n; {
		pipe := rdb.Pipeline()
		var zs []redis.Z
		for ; i < n && len(zs) < 2000; i++ {
			v := benchVolume(r, i, t0)
			data, _ := json.Marshal(v)
			pipe.Set(ctx, events.PrefixOf(v.ID)+"vol:"+v.ID, data, 0)
			z := redis.Z{Score: float64(v.CreatedAt.UnixMicro()), Member: v.ID}
			pipe.ZAdd(ctx, events.PrefixOf(v.ID)+"vols", z)
			zs = append(zs, z)
			ids = append(ids, v.ID)
		}
		pipe.ZAdd(ctx, events.PrefixOf("big")+"proj:big:vols", zs...)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	fill := time.Since(start)
	before := usedMemory(b, rdb)
	start = time.Now()
	if got, err := st.ReindexVolumes(ctx); err != nil || got != n {
		b.Fatalf("ReindexVolumes = %d, %v", got, err)
	}
	reindex := time.Since(start)
	after := usedMemory(b, rdb)
	b.Logf("%d volumes: fill %v, ReindexVolumes %v (%.0f volumes/s); Redis memory %.0f MiB before the indexes, %.0f MiB after (%.0f bytes/volume for the indexes)",
		n, fill.Round(time.Millisecond), reindex.Round(time.Millisecond), float64(n)/reindex.Seconds(),
		float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(n))

	web := func(v *basalt.Volume) bool { return v.Name != nil && *v.Name == "web" }
	status := func(s basalt.VolumeStatus) func(v *basalt.Volume) bool {
		return func(v *basalt.Volume) bool { return v.Status == s }
	}
	var deep string // a marker in the middle of the creation order
	type query struct {
		name string
		q    store.VolumeQuery
		scan bool // the listing before the indexes
		page bool // VolumePage, the unfiltered listing of the API
	}
	eq := func(q store.VolumeQuery, match func(*basalt.Volume) bool, eqs ...store.VolumeEq) store.VolumeQuery {
		q.Eq, q.Match, q.Exact = eqs, match, true
		if q.Project == "" {
			q.Project = "big"
		}
		return q
	}
	queries := []query{
		{name: "unfiltered", q: store.VolumeQuery{Project: "big"}},
		{name: "unfiltered_VolumePage", q: store.VolumeQuery{Project: "big"}, page: true},
		{name: "status=available", q: eq(store.VolumeQuery{}, status("available"), store.EqStatus("available"))},
		{name: "status=error", q: eq(store.VolumeQuery{}, status("error"), store.EqStatus("error"))},
		{name: "status=creating", q: eq(store.VolumeQuery{}, status("creating"), store.EqStatus("creating"))},
		{name: "name=web", q: eq(store.VolumeQuery{}, web, store.EqName("web"))},
		{name: "name=unique", q: eq(store.VolumeQuery{}, func(v *basalt.Volume) bool { return *v.Name == "vol-0000123" },
			store.EqName("vol-0000123"))},
		{name: "bootable=true", q: eq(store.VolumeQuery{}, func(v *basalt.Volume) bool { return v.Bootable }, store.EqBootable(true))},
		{name: "metadata_tier=gold", q: eq(store.VolumeQuery{}, func(v *basalt.Volume) bool { return v.Metadata["tier"] == "gold" },
			store.EqMetadata("tier", "gold"))},
		{name: "metadata_app=app-7", q: eq(store.VolumeQuery{}, func(v *basalt.Volume) bool { return v.Metadata["app"] == "app-7" },
			store.EqMetadata("app", "app-7"))},
		{name: "status=available&bootable=true", q: eq(store.VolumeQuery{},
			func(v *basalt.Volume) bool { return v.Status == "available" && v.Bootable },
			store.EqStatus("available"), store.EqBootable(true))},
		{name: "status=error&metadata_tier=gold", q: eq(store.VolumeQuery{},
			func(v *basalt.Volume) bool { return v.Status == "error" && v.Metadata["tier"] == "gold" },
			store.EqStatus("error"), store.EqMetadata("tier", "gold"))},
		{name: "sort=name:asc", q: store.VolumeQuery{Project: "big", Sort: "name", Asc: true}},
		{name: "sort=size:desc", q: store.VolumeQuery{Project: "big", Sort: "size"}},
		{name: "sort=updated_at:desc", q: store.VolumeQuery{Project: "big", Sort: "updated_at"}},
		{name: "sort=id:asc", q: store.VolumeQuery{Project: "big", Sort: "id", Asc: true}},
		{name: "status=available&sort=name:asc", q: eq(store.VolumeQuery{Sort: "name", Asc: true}, status("available"), store.EqStatus("available"))},
		{name: "status=error&sort=size:asc", q: eq(store.VolumeQuery{Sort: "size", Asc: true}, status("error"), store.EqStatus("error"))},
		{name: "status=creating&sort=size:asc", q: eq(store.VolumeQuery{Sort: "size", Asc: true}, status("creating"), store.EqStatus("creating"))},
		{name: "metadata_app=app-7&sort=size:asc", q: eq(store.VolumeQuery{Sort: "size", Asc: true},
			func(v *basalt.Volume) bool { return v.Metadata["app"] == "app-7" }, store.EqMetadata("app", "app-7"))},
		{name: "all_tenants&status=available", q: func() store.VolumeQuery {
			q := eq(store.VolumeQuery{}, status("available"), store.EqStatus("available"))
			q.Project = "" // every project: every partition answers, the pages are merged
			return q
		}()},
		{name: "all_tenants", q: store.VolumeQuery{}},
		{name: "all_tenants_VolumePage", q: store.VolumeQuery{}, page: true},
		{name: "status=available&with_count", q: func() store.VolumeQuery {
			q := eq(store.VolumeQuery{}, status("available"), store.EqStatus("available"))
			q.Count = true
			return q
		}()},
		{name: "status=error&bootable=true&with_count", q: func() store.VolumeQuery {
			q := eq(store.VolumeQuery{}, func(v *basalt.Volume) bool { return v.Status == "error" && v.Bootable },
				store.EqStatus("error"), store.EqBootable(true))
			q.Count = true
			return q
		}()},
		{name: "status=available&marker=middle", q: func() store.VolumeQuery {
			q := eq(store.VolumeQuery{}, status("available"), store.EqStatus("available"))
			return q
		}()},
		{name: "unindexed_filter_size_odd", q: store.VolumeQuery{Project: "big", Match: func(v *basalt.Volume) bool { return v.Size%2 == 1 }}},
		{name: "scan:status=available", q: store.VolumeQuery{Project: "big"}, scan: true},
	}
	// The marker row pages from the middle: its marker is the first available volume there.
	for i := n / 2; ; i++ {
		if v, err := st.Volume(ctx, ids[i]); err != nil {
			b.Fatal(err)
		} else if v.Status == "available" {
			deep = v.ID
			break
		}
	}
	for i := range queries {
		if strings.HasSuffix(queries[i].name, "marker=middle") {
			queries[i].q.Marker = deep
		}
	}
	for _, limit := range []int{1000, 100} {
		for _, qu := range queries {
			if qu.scan && (n > 100_000 || limit != 1000) {
				continue
			}
			q := qu.q
			q.Limit = limit
			b.Run(fmt.Sprintf("limit=%d/%s", limit, qu.name), func(b *testing.B) {
				lat := make([]time.Duration, 0, b.N)
				got := 0
				b.ResetTimer()
				for range b.N {
					t := time.Now()
					if qu.page {
						vs, err := st.VolumePage(ctx, q.Project, "", 0, limit)
						if err != nil {
							b.Fatal(err)
						}
						got = len(vs)
					} else if qu.scan {
						all, err := st.Volumes(ctx, "big")
						if err != nil {
							b.Fatal(err)
						}
						var out []*basalt.Volume
						for _, v := range all {
							if v.Status == "available" {
								out = append(out, v)
							}
						}
						got = len(out[:min(len(out), limit)])
					} else {
						res, err := st.ListVolumes(ctx, q)
						if err != nil {
							b.Fatal(err)
						}
						got = len(res.Items)
					}
					lat = append(lat, time.Since(t))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
				b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
				b.ReportMetric(float64(got), "vols/page")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// benchRedis starts a redis-server without persistence on a free loopback port, for this
// benchmark alone, and stops it when the benchmark ends.
func benchRedis(b *testing.B) *redis.Client {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BASALT_REQUIRE_REDIS") != "" {
			b.Fatalf("redis-server not found: %v", err)
		}
		b.Skip("redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", b.TempDir())
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	b.Cleanup(func() { rdb.Close() })
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			b.Fatal("redis-server did not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return rdb
}
