package control

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
)

type nopPublisher struct{}

func (nopPublisher) PublishContext(context.Context, string, string, string, any) error { return nil }

// scanVolumes is the listing as it was before the indexes: every volume of the scope read,
// filtered by volumeMatches, sorted, paged. The indexed listing must answer the same.
func scanVolumes(ctx context.Context, st *store.Store, o ListOptions) (Page[*basalt.Volume], error) {
	c := CallerFrom(ctx)
	if err := checkFilters(c, o, volumeFilters); err != nil {
		return Page[*basalt.Volume]{}, err
	}
	project := c.ProjectID
	if c.Admin && o.AllTenants {
		project = o.Filters["project_id"]
		delete(o.Filters, "project_id")
	}
	all, err := st.Volumes(ctx, project)
	if err != nil {
		return Page[*basalt.Volume]{}, err
	}
	var out []*basalt.Volume
	for _, v := range all {
		if volumeMatches(v, o.Filters) {
			out = append(out, v)
		}
	}
	keys := sortKeys(o.Sort)
	slices.SortStableFunc(out, func(a, b *basalt.Volume) int {
		switch {
		case lessVolume(a, b, keys):
			return -1
		case lessVolume(b, a, keys):
			return 1
		}
		return 0
	})
	page, more, err := paginate(out, o, func(v *basalt.Volume) string { return v.ID })
	if err != nil {
		return Page[*basalt.Volume]{}, basalt.Errorf(basalt.ENOTFOUND, "Volume %s could not be found.", o.Marker)
	}
	return counted(Page[*basalt.Volume]{Items: page, More: more}, o, len(out)), nil
}

// TestVolumeListsMatchAScan: every filter, sort and page of the volume listing answers what a
// scan of every record does.
func TestVolumeListsMatchAScan(t *testing.T) {
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	st := store.New(redistest.Start(t).Client(), nil)
	p := New(Config{}, st, nopPublisher{}, slog.New(slog.DiscardHandler))

	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 240 {
		at = at.Add(time.Duration(r.IntN(3)) * time.Millisecond) // many created in the same instant
		v := &basalt.Volume{ID: fmt.Sprintf("%08x-%d", r.Uint32(), i), ProjectID: pick("p1", "p1", "p2"),
			Status: basalt.VolumeStatus(pick("available", "available", "in-use", "error", "creating")),
			Size:   1 + r.IntN(3), Bootable: r.IntN(3) == 0, AvailabilityZone: pick("nova", "az2"),
			Host: pick("h@b#p", "h2@b#p"), VolumeTypeName: pick("gold", "silver"), CreatedAt: at,
			Metadata: map[string]string{}}
		if r.IntN(5) > 0 {
			n := pick("web", "db", "Web-1", "")
			v.Name = &n
		}
		for _, k := range []string{"tier", "app"} {
			if r.IntN(2) == 0 {
				v.Metadata[k] = pick("a", "b", "c d")
			}
		}
		if err := st.CreateVolume(ctx, v, nil); err != nil {
			t.Fatal(err)
		}
		if r.IntN(3) == 0 {
			if _, err := st.UpdateVolume(ctx, v.ID, func(v *basalt.Volume) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}

	filterValues := map[string][]string{
		"name":              {"web", "db", "", "nope"},
		"display_name":      {"web"},
		"name~":             {"WEB", "b"},
		"status":            {"available", "error", "in-use"},
		"bootable":          {"true", "false", "1", "maybe"},
		"size":              {"1", "2", "02"},
		"availability_zone": {"nova", "az2"},
		"metadata":          {"{'tier': 'a'}", "{'tier':'a', 'app':'b'}", "{'app': ''}", "{}", `{"tier": "c d"}`},
		"host":              {"h@b#p"},
		"volume_type":       {"gold"},
		"project_id":        {"p1", "p2"},
		"created_at":        {"ignored"},
	}
	filterKeys := slices.Sorted(maps.Keys(filterValues))
	for round := range 150 {
		caller := Caller{UserID: "u", ProjectID: pick("p1", "p2"), Admin: r.IntN(2) == 0}
		o := ListOptions{Filters: map[string]string{}, Limit: []int{0, 1, 3, 7, 50}[r.IntN(5)], WithCount: r.IntN(3) == 0}
		o.AllTenants = caller.Admin && r.IntN(2) == 0
		for range r.IntN(4) {
			k := filterKeys[r.IntN(len(filterKeys))]
			if !caller.Admin && !slices.Contains(volumeFilters, k) && k != "name~" {
				continue
			}
			o.Filters[k] = pick(filterValues[k]...)
		}
		for range r.IntN(4) {
			o.Sort = append(o.Sort, SortKey{Key: volumeSortKeys[r.IntN(len(volumeSortKeys))], Desc: r.IntN(2) == 0})
		}
		if r.IntN(5) == 0 {
			o.Offset = r.IntN(5)
		}
		cctx := WithCaller(ctx, caller)
		for pages := 0; pages < 12; pages++ {
			clone := o
			clone.Filters = maps.Clone(o.Filters)
			want, werr := scanVolumes(cctx, st, clone)
			clone.Filters = maps.Clone(o.Filters)
			got, err := p.Volumes(cctx, clone)
			desc := fmt.Sprintf("round %d: %+v as %+v", round, o, caller)
			if basalt.ErrorCode(err) != basalt.ErrorCode(werr) {
				t.Fatalf("%s: error %v, want %v", desc, err, werr)
			}
			if werr != nil {
				break
			}
			gotIDs, wantIDs := volumeIDs(got.Items), volumeIDs(want.Items)
			if !slices.Equal(gotIDs, wantIDs) || got.More != want.More || got.Count != want.Count {
				t.Fatalf("%s:\nlisted %v more %v count %d\nwant   %v more %v count %d", desc,
					gotIDs, got.More, got.Count, wantIDs, want.More, want.Count)
			}
			if !want.More || len(wantIDs) == 0 {
				break
			}
			o.Marker = wantIDs[len(wantIDs)-1]
		}
	}
}

func volumeIDs(vs []*basalt.Volume) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.ID)
	}
	return out
}
