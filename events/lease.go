package events

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// PendingOpsKey is the sorted set of the pending operations of operation opID's partition, by
// deadline (Unix milliseconds). Functions write it with every operation record, agents through
// RenewLeases; the reconciler ends the operations whose deadline has passed.
func PendingOpsKey(opID string) string { return PrefixOf(opID) + "ops:pending" }

// PendingOpsIn is PendingOpsKey of partition n.
func PendingOpsIn(n int) string { return ShardPrefix(n) + "ops:pending" }

// renewScript extends the leases of pending operations of one owner, of one partition. KEYS[1] is
// the partition's PendingOpsKey and KEYS[2..] operation records; ARGV[1] is the owner, ARGV[2] the new deadline as Go writes a
// time in JSON, ARGV[3] the same in Unix milliseconds. It returns the ids renewed.
//
// It reads the record with cjson but never re-encodes it (cjson would turn the empty arrays of the
// command the record holds into objects): it replaces the text of the deadline field. The record's
// own field is the last one spelled so, because Go writes the command, which may hold user
// metadata named "deadline", before it.
var renewScript = redis.NewScript(`
local renewed = {}
for i = 2, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local ok, op = pcall(cjson.decode, raw)
    if ok and type(op) == 'table' and op.state == 'pending' and op.owner == ARGV[1]
        and type(op.deadline) == 'string' and type(op.id) == 'string' then
      local field = '"deadline":"' .. op.deadline .. '"'
      local at, last = 1, nil
      while true do
        local s = string.find(raw, field, at, true)
        if not s then break end
        last, at = s, s + 1
      end
      if last then
        redis.call('SET', KEYS[i], string.sub(raw, 1, last - 1) .. '"deadline":"' .. ARGV[2] .. '"' ..
          string.sub(raw, last + #field), 'KEEPTTL')
        redis.call('ZADD', KEYS[1], ARGV[3], op.id)
        renewed[#renewed + 1] = op.id
      end
    end
  end
end
return renewed
`)

// RenewLeases sets the deadline of each operation of opIDs that is pending and owned by owner
// (host@backend) to until, in its record and in PendingOpsKey, and returns the ids it renewed.
// Operations that ended, belong to another owner or have no record are left as they are, so a
// renewal never revives an operation. It is one atomic script: safe to repeat, and safe beside
// the functions' compare-and-set writes of the same records. It is the only write an agent
// makes to an operation, and it may shorten a deadline: once an agent holds an operation, the
// deadline is its lease.
func RenewLeases(ctx context.Context, rdb redis.Scripter, owner string, until time.Time, opIDs ...string) ([]string, error) {
	if len(opIDs) == 0 {
		return nil, nil
	}
	// One script per partition: each runs within its partition's slot.
	byShard := map[int][]string{}
	var shards []int
	for _, id := range opIDs {
		n := ShardOf(id)
		if byShard[n] == nil {
			shards = append(shards, n)
		}
		byShard[n] = append(byShard[n], id)
	}
	until = until.UTC()
	var out []string
	for _, n := range shards {
		keys := make([]string, 0, len(byShard[n])+1)
		keys = append(keys, PendingOpsIn(n))
		for _, id := range byShard[n] {
			keys = append(keys, OperationKey(id))
		}
		renewed, err := renewScript.Run(ctx, rdb, keys, owner, until.Format(time.RFC3339Nano), until.UnixMilli()).StringSlice()
		if err != nil {
			return out, fmt.Errorf("renew the leases of %d operations of %s: %w", len(byShard[n]), owner, err)
		}
		out = append(out, renewed...)
	}
	return out, nil
}
