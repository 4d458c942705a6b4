package scheduler

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
)

// cinderCases are decisions Cinder's own scheduler code made on seeded random pools
// (testdata/cindergen.py). want is true/false, a ranking, or "raises <Exception>" where Cinder
// fails the whole request.
type cinderCases struct {
	Capacity []struct {
		Caps   basalt.Capabilities `json:"caps"`
		Size   int                 `json:"size"`
		Extend bool                `json:"extend"`
		Thick  bool                `json:"thick"`
		Auto   bool                `json:"auto"`
		Want   any                 `json:"want"`
	} `json:"capacity"`
	Capabilities []struct {
		Caps     basalt.Capabilities `json:"caps"`
		Specs    map[string]string   `json:"specs"`
		Extend   bool                `json:"extend"`
		Attached bool                `json:"attached"`
		Want     any                 `json:"want"`
	} `json:"capabilities"`
	Place []struct {
		Pools []struct {
			Name string              `json:"name"`
			Zone string              `json:"zone"`
			Caps basalt.Capabilities `json:"caps"`
		} `json:"pools"`
		Size        int                `json:"size"`
		Specs       map[string]string  `json:"specs"`
		Zone        string             `json:"zone"`
		Weighers    []string           `json:"weighers"`
		Multipliers map[string]float64 `json:"multipliers"`
		Auto        bool               `json:"auto"`
		Want        any                `json:"want"`
	} `json:"place"`
	Round [][2]float64 `json:"round"`
}

func loadCinderCases(t *testing.T) *cinderCases {
	t.Helper()
	f, err := os.Open("testdata/cinder_cases.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var c cinderCases
	if err := json.NewDecoder(z).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// names returns the names of d's candidates, best first.
func names(d *Decision) []string {
	var out []string
	for _, c := range d.Ranked {
		out = append(out, c.Pool.Name)
	}
	return out
}

func raises(want any) (string, bool) {
	s, ok := want.(string)
	return strings.TrimPrefix(s, "raises "), ok
}

// TestCinderGolden replays decisions made by Cinder's own code: Basalt must decide the same
// wherever Cinder decides, and not panic where Cinder raises.
func TestCinderGolden(t *testing.T) {
	c := loadCinderCases(t)

	for i, tc := range c.Capacity {
		r := &Request{SizeGB: tc.Size, Type: &basalt.VolumeType{ExtraSpecs: map[string]string{}}}
		if tc.Thick {
			r.Type.ExtraSpecs["provisioning:type"] = "thick"
		}
		if tc.Extend {
			r.Operation = OpExtendVolume
		}
		p := &basalt.Pool{Name: "h@b#p", Capabilities: tc.Caps}
		got, why := CapacityFilter{AutoOverSubscription: tc.Auto}.Fits(r, p)
		if exc, ok := raises(tc.Want); ok {
			if exc == "ZeroDivisionError" && got {
				t.Errorf("capacity case %d: Fits(%v, size %d) = true; Cinder divides by zero, Basalt must reject", i, tc.Caps, tc.Size)
			}
			continue
		}
		if got != tc.Want.(bool) {
			t.Errorf("capacity case %d: Fits(%v, size %d, thick %v, extend %v, auto %v) = %v (%s), Cinder %v",
				i, tc.Caps, tc.Size, tc.Thick, tc.Extend, tc.Auto, got, why, tc.Want)
		}
	}

	for i, tc := range c.Capabilities {
		r := &Request{SizeGB: 1, Type: &basalt.VolumeType{ExtraSpecs: tc.Specs}, Attached: tc.Attached}
		if tc.Extend {
			r.Operation = OpExtendVolume
		}
		p := &basalt.Pool{Name: "h@b#p", Capabilities: tc.Caps}
		got, why := CapabilitiesFilter{}.Fits(r, p)
		if exc, ok := raises(tc.Want); ok {
			if exc == "IndexError" && got {
				t.Errorf("capabilities case %d: Fits(%v, %v) = true; Cinder raises IndexError, Basalt must reject", i, tc.Caps, tc.Specs)
			}
			continue
		}
		if got != tc.Want.(bool) {
			t.Errorf("capabilities case %d: Fits(%v, %v, extend %v, attached %v) = %v (%s), Cinder %v",
				i, tc.Caps, tc.Specs, tc.Extend, tc.Attached, got, why, tc.Want)
		}
	}

	walks := 0 // place cases Rank walked instead of ranking in full
	for i, tc := range c.Place {
		s, err := New(Config{Weighers: tc.Weighers, Multipliers: tc.Multipliers, AutoOverSubscription: tc.Auto})
		if err != nil {
			t.Fatal(err)
		}
		pools := make([]basalt.Pool, len(tc.Pools))
		for j, p := range tc.Pools {
			pools[j] = basalt.Pool{Name: p.Name, Zone: p.Zone, Capabilities: p.Caps}
		}
		r := &Request{ID: fmt.Sprint(i), SizeGB: tc.Size, Zone: tc.Zone, Type: &basalt.VolumeType{ExtraSpecs: tc.Specs}}
		d := s.Place(r, pools)
		// The same through Rank on a prepared set: with one weigher it walks the set's order
		// and must yield Cinder's ranking as well (the weights only when it ranks in full).
		k := s.Rank(r, s.Prepare(pools))
		var walked []string
		for {
			c, ok := k.Next(0)
			if !ok {
				break
			}
			walked = append(walked, c.Pool.Name)
		}
		if !k.Full() {
			walks++
		}
		if _, ok := raises(tc.Want); ok {
			if want := names(d); !slices.Equal(walked, want) {
				t.Errorf("place case %d: Rank() yielded %v, Place() ranked %v", i, walked, want)
			}
			for _, c := range d.Ranked {
				if w := c.Weights["CapacityWeigher"]; w != 0 {
					t.Errorf("place case %d: Place() gave %s CapacityWeigher %v; where Cinder raises every pool is infinite and weighs 0", i, c.Pool.Name, w)
				}
			}
			continue
		}
		want := tc.Want.([]any)
		var got, wantS []string
		for _, c := range d.Ranked {
			got = append(got, fmt.Sprintf("%s %v", c.Pool.Name, c.Weight))
		}
		for _, w := range want {
			w := w.([]any)
			wantS = append(wantS, fmt.Sprintf("%s %v", w[0], w[1].(float64)))
		}
		var wantNames []string
		for _, w := range want {
			wantNames = append(wantNames, w.([]any)[0].(string))
		}
		if !slices.Equal(walked, wantNames) {
			t.Errorf("place case %d: Rank(weighers %v %v) yielded %v, Cinder ranked %v", i, tc.Weighers, tc.Multipliers, walked, wantNames)
		}
		if strings.Join(got, "\n") != strings.Join(wantS, "\n") {
			t.Errorf("place case %d: Place(size %d, specs %v, zone %q, weighers %v %v) ranked\n%s\nCinder\n%s\n%s",
				i, tc.Size, tc.Specs, tc.Zone, tc.Weighers, tc.Multipliers,
				strings.Join(got, "\n"), strings.Join(wantS, "\n"), d.Explain())
		}
	}

	if walks < len(c.Place)/4 {
		t.Errorf("Rank walked %d of %d place cases; want the single-weigher ones", walks, len(c.Place))
	}
	t.Logf("Rank walked %d of %d place cases", walks, len(c.Place))

	for _, tc := range c.Round {
		if got := round2(tc[0]); got != tc[1] {
			t.Errorf("round2(%v) = %v, Python round(x, 2) = %v", tc[0], got, tc[1])
		}
	}
}
