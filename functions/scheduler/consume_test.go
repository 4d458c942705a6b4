package scheduler

import (
	"testing"

	"github.com/basalt-storage/basalt"
)

// TestConsumeSpreadsLikeCinder: after each placement the set counts the volume, as Cinder's
// host manager does, so the capacity weigher spreads consecutive creates instead of sending
// each to the pool that looked emptiest at the last report; a pool that fills up is filtered.
func TestConsumeSpreadsLikeCinder(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name string, free float64) basalt.Pool {
		return basalt.Pool{Name: "h@b#" + name, Backend: "h@b", Zone: "nova", Capabilities: basalt.Capabilities{
			"total_capacity_gb": 100.0, "free_capacity_gb": free, "allocated_capacity_gb": 100 - free,
			"provisioned_capacity_gb": 100 - free, "reserved_percentage": 0.0}}
	}
	reports := []basalt.Pool{pool("a", 50), pool("b", 45)}
	orig := reports[0].Capabilities
	set := s.Prepare(reports)
	var got []string
	for i := 0; i < 4; i++ {
		d := s.PlaceSet(&Request{SizeGB: 10}, set)
		if len(d.Ranked) == 0 {
			t.Fatalf("placement %d: nothing fits: %v", i, d.Rejections())
		}
		name := d.Ranked[0].Pool.Name
		got = append(got, name)
		if !set.Consume(name, 10) {
			t.Fatalf("Consume(%s) = false", name)
		}
	}
	want := []string{"h@b#a", "h@b#b", "h@b#a", "h@b#b"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("placements %v, want %v (free 50/45 GB, 10 GB each)", got, want)
		}
	}
	if orig["free_capacity_gb"] != 50.0 {
		t.Errorf("the report's own map changed: %v", orig)
	}
	p := set.Pools()[0]
	if p.Capabilities["free_capacity_gb"] != 30.0 || p.Capabilities["allocated_capacity_gb"] != 70.0 ||
		p.Capabilities["provisioned_capacity_gb"] != 70.0 {
		t.Errorf("pool a after two volumes: %v, want free 30, allocated 70, provisioned 70", p.Capabilities)
	}
	// 25 GB fits only pool a (30 free); b (25 free, ratio 1 thick: free must exceed the size) is filtered.
	d := s.PlaceSet(&Request{SizeGB: 26}, set)
	if len(d.Ranked) != 1 || d.Ranked[0].Pool.Name != "h@b#a" {
		t.Fatalf("26 GB after the consumption: ranked %v, want only h@b#a", d.Ranked)
	}
	if set.Consume("h@b#nope", 1) {
		t.Error("Consume of an unknown pool = true")
	}
}

// TestConsumeKeepsColumnsCurrent: a capability that a volume type's extra spec filters on, and
// that a placement changes (free_capacity_gb here), is seen as it is after Consume by the
// cached column CapabilitiesFilter reads.
func TestConsumeKeepsColumnsCurrent(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	set := s.Prepare([]basalt.Pool{{Name: "h@b#a", Backend: "h@b", Zone: "nova", Capabilities: basalt.Capabilities{
		"total_capacity_gb": 100.0, "free_capacity_gb": 50.0, "reserved_percentage": 0.0}}})
	vt := &basalt.VolumeType{ID: "t", Name: "roomy", ExtraSpecs: map[string]string{"capabilities:free_capacity_gb": ">= 45"}}
	if d := s.PlaceSet(&Request{SizeGB: 1, Type: vt}, set); len(d.Ranked) != 1 {
		t.Fatalf("before: %v, want the pool (50 GB free >= 45)", d.Rejections())
	}
	set.Consume("h@b#a", 10)
	if d := s.PlaceSet(&Request{SizeGB: 1, Type: vt}, set); len(d.Ranked) != 0 {
		t.Fatalf("after 10 GB were placed: ranked %v, want none (40 GB free < 45)", d.Ranked)
	}
}
