package events_test

import (
	"testing"

	"github.com/basalt-storage/basalt/events"
)

// TestNewIDIsInItsProjectsPartition: the ids made for a project, and the ids derived from them
// (operation ids, their undo operations, quota charges), are in the project's partition, and
// the projects spread over every partition.
func TestNewIDIsInItsProjectsPartition(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 200; i++ {
		project := "project-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		want := events.ShardOf(project)
		seen[want] = true
		id := events.NewID(project)
		op := events.NewPrefixedID("op-", project)
		for _, s := range []string{id, op, op + "-undo", "vol:" + id, "ext:" + op} {
			if got := events.ShardOf(s); got != want {
				t.Fatalf("ShardOf(%q) = %d, want %d, project %q's partition", s, got, want, project)
			}
			if events.PrefixOf(s) != events.ShardPrefix(want) {
				t.Fatalf("PrefixOf(%q) = %q, want %q", s, events.PrefixOf(s), events.ShardPrefix(want))
			}
		}
		if len(id) != 36 || id[14] != '4' {
			t.Fatalf("NewID = %q, want a version 4 UUID", id)
		}
	}
	if len(seen) != events.Shards {
		t.Errorf("200 projects fell in %d partitions, want all %d", len(seen), events.Shards)
	}
}
