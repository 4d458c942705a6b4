package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
)

// FuzzNegotiate reads OpenStack-API-Version headers (one or two of them, comma-separated
// lists): a version is within [MinVersion, MaxVersion], a refusal is a 400 (malformed) or a
// 406 (out of range), and a parsed version reads back from its String.
func FuzzNegotiate(f *testing.F) {
	for _, s := range [][2]string{{"volume 3.0", ""}, {"volume latest", ""}, {"compute 2.1, volume 3.27", ""},
		{"volume 3.999", ""}, {"volume 2.0", ""}, {"volume three", ""}, {"volume 3.", ""}, {"volume -3.-1", ""},
		{"volume  03.010 ", "volume 3.1"}, {"identity 3.0", "volume 3.+5"}, {"volume 3.99999999999999999999", ""},
		{"VOLUME 3.1,volume\t3.2", ""}, {"volume 3.1 extra", "volume"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, h1, h2 string) {
		v, ok, verr := negotiate([]string{h1, h2})
		switch {
		case verr != nil:
			if ok || (verr.status != http.StatusBadRequest && verr.status != http.StatusNotAcceptable) || verr.msg == "" {
				t.Fatalf("negotiate(%q, %q) = %v, %v, %+v", h1, h2, v, ok, *verr)
			}
		case ok:
			if v.less(MinVersion) || MaxVersion.less(v) {
				t.Fatalf("negotiate(%q, %q) = %v, outside [%v, %v]", h1, h2, v, MinVersion, MaxVersion)
			}
		case v != Version{}:
			t.Fatalf("negotiate(%q, %q) = %v without a version given", h1, h2, v)
		}
		for _, s := range []string{h1, h2} {
			if pv, pok := parseVersion(s); pok {
				if back, bok := parseVersion(pv.String()); !bok || back != pv || pv.Major < 0 || pv.Minor < 0 {
					t.Fatalf("parseVersion(%q) = %v, which reads back as %v, %v", s, pv, back, bok)
				}
			}
		}
	})
}

// FuzzListOptions reads a list query (paging, sort, sort_key/sort_dir, all_tenants,
// with_count and filters) at any microversion: a refusal is a 400, paging is never negative,
// the reserved parameters are not filters, and every sort key comes from the query.
func FuzzListOptions(f *testing.F) {
	for _, s := range []string{"", "limit=10&offset=5&marker=abc", "sort=name:asc,size:desc", "sort_key=size&sort_dir=ASC",
		"sort=name&sort_key=size", "sort=name:sideways", "limit=-1", "offset=1e3", "limit=99999999999999999999",
		"all_tenants=1&project_id=p", "all_tenants=maybe", "all_tenants=True&with_count=yes", "with_count=false&name~=x",
		"metadata={'k':'v'}&status=available&status=error", "sort=,,", "sort=%20name%20:%20desc%20"} {
		f.Add(s, 0, false)
		f.Add(s, 54, true)
	}
	f.Fuzz(func(t *testing.T, raw string, minor int, admin bool) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		if minor < 0 {
			minor = -minor
		}
		ctx := context.WithValue(context.Background(), infoKey{}, reqInfo{version: Version{3, minor % (MaxVersion.Minor + 1)}})
		ctx = control.WithCaller(ctx, control.Caller{UserID: "u", ProjectID: "p", Admin: admin})
		o, err := listOptions(ctx, q)
		if err == nil {
			err = withCount(ctx, q, &o)
		}
		if err != nil {
			if basalt.ErrorCode(err) != basalt.EINVALID {
				t.Fatalf("listOptions(%q) = %v (%s), want an invalid-input error", raw, err, basalt.ErrorCode(err))
			}
			return
		}
		if o.Limit < 0 || o.Offset < 0 || (o.AllTenants && !admin) {
			t.Fatalf("listOptions(%q) = %+v", raw, o)
		}
		for _, k := range []string{"marker", "limit", "offset", "sort", "sort_key", "sort_dir", "all_tenants"} {
			if _, ok := o.Filters[k]; ok {
				t.Fatalf("listOptions(%q): %s is a filter", raw, k)
			}
		}
		sorts := q.Get("sort")
		if sorts == "" && q.Get("sort_key") != "" {
			sorts = q.Get("sort_key")
		}
		if q.Get("sort") == "" && (q.Get("sort_key") != "" || q.Get("sort_dir") != "") {
			// The legacy pair: one key (created_at when only a direction is given), never a list.
			if len(o.Sort) > 1 || (len(o.Sort) == 1 && strings.TrimSpace(q.Get("sort_key")) == "" && o.Sort[0].Key != "created_at") {
				t.Fatalf("listOptions(%q): sorts %+v, want the one legacy key", raw, o.Sort)
			}
			sorts += " created_at"
		}
		for _, k := range o.Sort {
			if !strings.Contains(sorts, k.Key) {
				t.Fatalf("listOptions(%q): sort key %q not in the query", raw, k.Key)
			}
		}
	})
}
