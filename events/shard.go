package events

import (
	"hash/crc32"
	"strconv"

	"github.com/google/uuid"
)

// Shards is the number of partitions of Basalt's resource state. Every project's state (its
// volumes, snapshots, attachments, operations, messages, quota, charges and list indexes)
// lives in one partition, ShardOf(project), and each partition in one Redis Cluster slot (its
// keys share the hash tag of ShardPrefix), so that every transaction of a request touches one
// slot while the projects spread over a Cluster's masters. A Cluster grows to as many masters
// as there are partitions. The number is part of the key layout: it never changes.
const Shards = 16

// ShardOf returns the partition of a project, or of a resource by its id: resource ids are
// made (NewID) so that a resource's partition is its project's, which lets any process find a
// resource's keys from its id alone. A string that carries a UUID (a volume id, "op-<uuid>",
// "op-<uuid>-undo", the charge "vol:<uuid>") is in the partition of the first UUID it
// carries, so that ids derived from an id stay in its partition; any other string (a project
// id) is hashed whole.
func ShardOf(s string) int { return int(crc32.ChecksumIEEE([]byte(partitionKey(s))) % Shards) }

// partitionKey returns the first UUID (8-4-4-4-12 hexadecimal digits) in s, or s.
func partitionKey(s string) string {
	for i := 0; i+36 <= len(s); i++ {
		if isUUID(s[i : i+36]) {
			return s[i : i+36]
		}
	}
	return s
}

func isUUID(s string) bool {
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// shardPrefixes are the key prefixes of the partitions.
var shardPrefixes = func() [Shards]string {
	var out [Shards]string
	for i := range out {
		out[i] = "basalt:{s" + strconv.Itoa(i) + "}:"
	}
	return out
}()

// ShardPrefix returns the prefix of the keys of partition n.
func ShardPrefix(n int) string { return shardPrefixes[n] }

// PrefixOf returns the prefix of the keys of a project's state, or of a resource's by its id.
func PrefixOf(s string) string { return shardPrefixes[ShardOf(s)] }

// NewID returns a new random UUID (version 4) in project's partition: ShardOf(id) equals
// ShardOf(project). It draws UUIDs until one falls there (Shards draws on average).
func NewID(project string) string { return NewPrefixedID("", project) }

// NewPrefixedID returns prefix followed by a new random UUID, the whole in project's partition
// (operation ids are "op-<uuid>").
func NewPrefixedID(prefix, project string) string {
	want := ShardOf(project)
	for {
		id := prefix + uuid.NewString()
		if ShardOf(id) == want {
			return id
		}
	}
}
