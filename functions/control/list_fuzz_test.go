package control

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
)

// filtersOf reads a raw query string as the API turns it into filters: the last value of
// each key.
func filtersOf(raw string) map[string]string {
	q, _ := url.ParseQuery(raw)
	f := map[string]string{}
	for k, vs := range q {
		if len(vs) > 0 {
			f[k] = vs[len(vs)-1]
		}
	}
	return f
}

// FuzzListFilters checks the filters of a volume listing (?name=..&metadata={'k':'v'}&size=..):
// checkFilters refuses exactly the keys a member may not use, with a 400, or drops them when
// lenient, and never touches an admin's; volumeIndexFilters never says "no volume matches"
// of filters a volume built from them matches.
func FuzzListFilters(f *testing.F) {
	for _, s := range []string{
		"name=vol1&status=available",
		"display_name~=VoL&availability_zone=nova",
		"metadata=%7B%27k%27%3A+%27v%27%2C+%27k2%27%3A+%27v2%27%7D",
		`metadata={"a":"b"}`,
		"metadata={'RESKEY:availability_zones': 'az1,az2'}",
		"size=01&bootable=maybe",
		"size=10&bootable=true&host=h@b%23p",
		"project_id=p&volume_type=lvm&with_count=true",
		"name=&name~=&status=&foo=bar&glance_metadata=x",
		"metadata={'k'",
		"size=-0&size=%2B1",
	} {
		f.Add(s, false, false)
		f.Add(s, true, false)
		f.Add(s, false, true)
	}
	f.Fuzz(func(t *testing.T, raw string, admin, lenient bool) {
		filters := filtersOf(raw)
		orig := maps.Clone(filters)
		err := checkFilters(Caller{UserID: "u", ProjectID: "p", Admin: admin}, ListOptions{Filters: filters, Lenient: lenient}, volumeFilters)
		var bad []string
		for k := range orig {
			if !slices.Contains(volumeFilters, strings.TrimSuffix(k, "~")) {
				bad = append(bad, k)
			}
		}
		switch {
		case admin || len(bad) == 0:
			if err != nil || !maps.Equal(filters, orig) {
				t.Fatalf("checkFilters(admin %v, %v) = %v, filters now %v", admin, orig, err, filters)
			}
		case lenient:
			if err != nil || len(filters) != len(orig)-len(bad) {
				t.Fatalf("checkFilters(lenient, %v) = %v, filters now %v", orig, err, filters)
			}
		default:
			if basalt.ErrorCode(err) != basalt.EINVALID {
				t.Fatalf("checkFilters(%v) = %v, want an invalid-input error naming %v", orig, err, bad)
			}
		}

		_, _, never := volumeIndexFilters(orig)
		name := orig["name"]
		if n, ok := orig["display_name"]; ok {
			name = n
		}
		v := &basalt.Volume{Name: &name, Status: basalt.VolumeStatus(orig["status"]),
			AvailabilityZone: orig["availability_zone"], ProjectID: orig["project_id"], Host: orig["host"],
			VolumeTypeName: orig["volume_type"], VolumeTypeID: orig["volume_type_id"],
			Metadata: parseDictLiteral(orig["metadata"])}
		v.Size, _ = strconv.Atoi(orig["size"])
		v.Bootable, _ = strconv.ParseBool(orig["bootable"])
		if never && volumeMatches(v, orig) {
			t.Fatalf("volumeIndexFilters(%v) says no volume matches, but %+v does", orig, v)
		}
	})
}

// FuzzSortKeys checks the sort keys of a listing (?sort=name:asc,size or sort_key/sort_dir, as
// the API splits them): sortKeys ends at id, repeats no key, adds only created_at and id, keeps
// the first key's direction; indexedSort and lessVolume take any of them.
func FuzzSortKeys(f *testing.F) {
	for _, s := range []string{"", "name:asc", "display_name:desc,name", "size:asc,created_at:desc,id",
		"id,name", "created_at", "status:asc,status:desc", "updated_at:asc,bogus", ",,:", "name:ASC"} {
		f.Add(s)
	}
	a, b := "a", "b"
	va := &basalt.Volume{ID: "1", Name: &a, Size: 1}
	vb := &basalt.Volume{ID: "2", Name: &b, Size: 2, Bootable: true}
	f.Fuzz(func(t *testing.T, sort string) {
		var in []SortKey
		if sort != "" {
			for _, part := range strings.Split(sort, ",") {
				k, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
				in = append(in, SortKey{Key: strings.TrimSpace(k), Desc: !strings.EqualFold(strings.TrimSpace(dir), "asc")})
			}
		}
		out := sortKeys(in)
		if len(out) == 0 || out[len(out)-1].Key != "id" {
			t.Fatalf("sortKeys(%v) = %v, not ending at id", in, out)
		}
		if len(in) > 0 && out[0].Desc != in[0].Desc {
			t.Fatalf("sortKeys(%v) = %v, first direction changed", in, out)
		}
		seen := map[string]bool{}
		for _, k := range out {
			if seen[k.Key] || k.Key == "display_name" {
				t.Fatalf("sortKeys(%v) = %v", in, out)
			}
			seen[k.Key] = true
			if k.Key != "created_at" && k.Key != "id" && k.Key != "name" &&
				!slices.ContainsFunc(in, func(s SortKey) bool { return s.Key == k.Key }) {
				t.Fatalf("sortKeys(%v) = %v, added %q", in, out, k.Key)
			}
		}
		_, _ = indexedSort(out)
		if lessVolume(va, vb, out) && lessVolume(vb, va, out) {
			t.Fatalf("lessVolume(%v) is not a strict order", out)
		}
		if lessVolume(va, va, out) {
			t.Fatalf("lessVolume(%v) says a volume is before itself", out)
		}
	})
}

// FuzzParseDictLiteral reads the Python dict literal of a metadata or extra_specs filter. Any
// input is read without panic, and one quoted pair without the quote in it reads back.
func FuzzParseDictLiteral(f *testing.F) {
	for _, s := range [][2]string{{"k", "v"}, {"RESKEY:availability_zones", "az1,az2"}, {"", ""}, {" a ", " b "},
		{"{", "}"}, {"k:v", "x,y"}, {`"`, `"`}} {
		f.Add(s[0], s[1], "{'"+s[0]+"': '"+s[1]+"'}")
	}
	f.Add("a", "b", `{"a":"b", 'c' : d ,e:'f}`)
	f.Fuzz(func(t *testing.T, k, v, raw string) {
		_ = parseDictLiteral(raw)
		if strings.Contains(k, "'") || strings.Contains(v, "'") {
			return
		}
		for _, lit := range []string{"{'" + k + "': '" + v + "'}", "{'" + k + "':'" + v + "'}"} {
			if got := parseDictLiteral(lit); len(got) != 1 || got[k] != v {
				t.Fatalf("parseDictLiteral(%q) = %q, want {%q: %q}", lit, got, k, v)
			}
		}
	})
}
