package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/redis/go-redis/v9"
)

// Quota resources (Cinder's names). Per-type resources are the prefixes below followed by a
// volume type's name, e.g. gigabytes___DEFAULT__. A limit of -1 means unlimited.
const (
	QuotaVolumes            = "volumes"
	QuotaSnapshots          = "snapshots"
	QuotaGigabytes          = "gigabytes"
	QuotaBackups            = "backups"
	QuotaBackupGigabytes    = "backup_gigabytes"
	QuotaGroups             = "groups"
	QuotaPerVolumeGigabytes = "per_volume_gigabytes"
)

// QuotaResources lists the project-wide quota resources in the order Basalt checks them.
func QuotaResources() []string {
	return []string{QuotaVolumes, QuotaSnapshots, QuotaGigabytes, QuotaBackups, QuotaBackupGigabytes,
		QuotaGroups, QuotaPerVolumeGigabytes}
}

// TypeQuotaResources returns the per-type quota resources of the volume type named typeName.
func TypeQuotaResources(typeName string) []string {
	return []string{QuotaVolumes + "_" + typeName, QuotaSnapshots + "_" + typeName, QuotaGigabytes + "_" + typeName}
}

// DefaultQuotaLimits returns Cinder's default limits (quota_volumes, quota_snapshots, ...,
// per_volume_size_limit), as a new map. Per-type resources default to -1 (unlimited).
func DefaultQuotaLimits() map[string]int {
	return map[string]int{QuotaVolumes: 10, QuotaSnapshots: 10, QuotaGigabytes: 1000, QuotaBackups: 10,
		QuotaBackupGigabytes: 1000, QuotaGroups: 10, QuotaPerVolumeGigabytes: -1}
}

// QuotaDefault returns the default limit of resource: defaults[resource] when set, else
// Cinder's default; -1 for per-type and unknown resources.
func QuotaDefault(defaults map[string]int, resource string) int {
	if v, ok := defaults[resource]; ok {
		return v
	}
	if v, ok := DefaultQuotaLimits()[resource]; ok {
		return v
	}
	return -1
}

func quotaLimitsKey(project string) string {
	return events.PrefixOf(project) + "quota:" + project + ":limits"
}
func quotaUsageKey(project string) string {
	return events.PrefixOf(project) + "quota:" + project + ":usage"
}
func chargeKey(id string) string { return events.PrefixOf(id) + "charge:" + id }

// chargeProjectField holds the project in a charge record; it cannot clash with a resource name.
const chargeProjectField = ".project"

// chargeUsageField holds the name of the usage key a charge took from (its project's, in the
// project's partition), so that a refund gives back there without computing the name.
const chargeUsageField = ".usage"

// A QuotaRequest is what one operation takes from its project's quotas: counts and gigabytes to
// add. With TypeName set, the per-type resources of that type are charged as well. VolumeSizeGB,
// when positive, is the size of the volume being created or extended to: it is checked against
// per_volume_gigabytes and never accumulated.
type QuotaRequest struct {
	Volumes, Snapshots, Gigabytes    int
	Backups, BackupGigabytes, Groups int
	TypeName                         string
	VolumeSizeGB                     int
}

// deltas returns the resources r adds to, in checking order, zero amounts dropped.
func (r QuotaRequest) deltas() []quotaDelta {
	var out []quotaDelta
	add := func(res string, n int) {
		if n != 0 {
			out = append(out, quotaDelta{res, n})
		}
	}
	add(QuotaVolumes, r.Volumes)
	if r.TypeName != "" {
		add(QuotaVolumes+"_"+r.TypeName, r.Volumes)
	}
	add(QuotaSnapshots, r.Snapshots)
	if r.TypeName != "" {
		add(QuotaSnapshots+"_"+r.TypeName, r.Snapshots)
	}
	add(QuotaGigabytes, r.Gigabytes)
	if r.TypeName != "" {
		add(QuotaGigabytes+"_"+r.TypeName, r.Gigabytes)
	}
	add(QuotaBackups, r.Backups)
	add(QuotaBackupGigabytes, r.BackupGigabytes)
	add(QuotaGroups, r.Groups)
	return out
}

type quotaDelta struct {
	resource string
	n        int
}

// chargeScript checks and takes a request from a project's quotas, all or nothing, and records
// what it took under a charge id, listed as unbound until the sweep finds the record that owns
// it. KEYS: limits, usage, charge, unbound. ARGV: project, volume size (0 for none), default
// per_volume_gigabytes, now (ms), charge id, then triples of resource, amount, default limit.
// Returns {} when charged, or {resource, limit, in_use, requested} of the first resource over
// its limit.
var chargeScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[3], '.project')
if owner and owner ~= ARGV[1] then
  return redis.error_reply('charge is held by project ' .. owner)
end
if owner then
  return {} -- charged already: this is a repeat whose first reply was lost
end
local size = tonumber(ARGV[2])
if size > 0 then
  local lim = tonumber(redis.call('HGET', KEYS[1], 'per_volume_gigabytes') or ARGV[3])
  if lim >= 0 and size > lim then return {'per_volume_gigabytes', lim, 0, size} end
end
for i = 6, #ARGV, 3 do
  local lim = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or ARGV[i+2])
  local used = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  local n = tonumber(ARGV[i+1])
  if lim >= 0 and used + n > lim then return {ARGV[i], lim, used, n} end
end
for i = 6, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i+1])
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i+1])
end
redis.call('HSET', KEYS[3], '.project', ARGV[1], '.usage', KEYS[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
return {}
`)

// Charge takes r from project's quotas atomically and records it under chargeID (for example
// "vol:<id>" or "snap:<id>"): either every resource stays within its limit (the project's
// override, else defaults as QuotaDefault reads it) and all are taken, or nothing is. A charge
// id is charged once: charging it again (a retry after a lost reply, a redelivered message)
// changes nothing and succeeds, so each operation charges under an id of its own ("ext:<op>"
// for an extend, moved into the volume's charge by TransferCharge). Any number of callers may
// charge concurrently: usage never exceeds a limit.
//
// Errors: EOVERLIMIT with Cinder's message (VolumeLimitExceeded, SnapshotLimitExceeded,
// VolumeSizeExceedsAvailableQuota, VolumeSizeExceedsLimit, ...) naming the first resource over
// its limit; EINVALID for a negative amount; other errors when Redis fails or chargeID
// belongs to another project.
func (s *Store) Charge(ctx context.Context, project, chargeID string, r QuotaRequest, defaults map[string]int) error {
	args := []any{project, max(r.VolumeSizeGB, 0), QuotaDefault(defaults, QuotaPerVolumeGigabytes),
		s.Now().UnixMilli(), chargeID}
	for _, d := range r.deltas() {
		if d.n < 0 {
			return basalt.Errorf(basalt.EINVALID, "Quota charge %s of %s is negative (%d).", chargeID, d.resource, d.n)
		}
		args = append(args, d.resource, d.n, QuotaDefault(defaults, d.resource))
	}
	res, err := chargeScript.Run(ctx, s.rdb, []string{quotaLimitsKey(project), quotaUsageKey(project), chargeKey(chargeID), unboundChargesKey(chargeID)}, args...).Slice()
	if err != nil && strings.Contains(err.Error(), "charge is held by project") {
		return basalt.Errorf(basalt.ECONFLICT, "Quota charge %s belongs to another project.", chargeID)
	}
	if err != nil {
		return fmt.Errorf("charge %s to project %s: %w", chargeID, project, err)
	}
	if len(res) == 0 {
		return nil
	}
	if len(res) != 4 {
		return fmt.Errorf("charge %s to project %s: unexpected reply %v", chargeID, project, res)
	}
	resource, _ := res[0].(string)
	nums := make([]int, 3)
	for i, v := range res[1:] {
		n, _ := v.(int64)
		nums[i] = int(n)
	}
	return overLimit(resource, nums[0], nums[1], nums[2])
}

// ForceCharge records r under chargeID as Charge does, whatever the limits: for usage that
// exists already and that quota must count (an extend that completed on its backend after its
// operation had been failed). It is idempotent per charge id.
func (s *Store) ForceCharge(ctx context.Context, project, chargeID string, r QuotaRequest) error {
	args := []any{project, 0, -1, s.Now().UnixMilli(), chargeID}
	for _, d := range r.deltas() {
		if d.n < 0 {
			return basalt.Errorf(basalt.EINVALID, "Quota charge %s of %s is negative (%d).", chargeID, d.resource, d.n)
		}
		args = append(args, d.resource, d.n, -1)
	}
	// No limits key: an absent hash, so every limit is the default passed, -1 (unlimited).
	err := chargeScript.Run(ctx, s.rdb, []string{events.PrefixOf(project) + "quota:no-limits", quotaUsageKey(project), chargeKey(chargeID),
		unboundChargesKey(chargeID)}, args...).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("charge %s to project %s: %w", chargeID, project, err)
	}
	return nil
}

// overLimit returns the EOVERLIMIT error of a request for requested more of resource, whose
// limit is limit and of which used is in use, in Cinder's words.
func overLimit(resource string, limit, used, requested int) error {
	class, msg := "", ""
	switch {
	case resource == QuotaPerVolumeGigabytes:
		class = "VolumeSizeExceedsLimit"
		msg = fmt.Sprintf("Requested volume size %dG is larger than maximum allowed limit %dG.", requested, limit)
	case resource == QuotaBackupGigabytes:
		class = "VolumeBackupSizeExceedsAvailableQuota"
		msg = fmt.Sprintf("Requested backup exceeds allowed Backup gigabytes quota. Requested %dG, quota is %dG and %dG has been consumed.", requested, limit, used)
	case resource == QuotaGigabytes || strings.HasPrefix(resource, QuotaGigabytes+"_"):
		class = "VolumeSizeExceedsAvailableQuota"
		msg = fmt.Sprintf("Requested volume or snapshot exceeds allowed %s quota. Requested %dG, quota is %dG and %dG has been consumed.", resource, requested, limit, used)
	case resource == QuotaVolumes || strings.HasPrefix(resource, QuotaVolumes+"_"):
		class = "VolumeLimitExceeded"
		msg = fmt.Sprintf("Maximum number of volumes allowed (%d) exceeded for quota '%s'.", limit, resource)
	case resource == QuotaSnapshots || strings.HasPrefix(resource, QuotaSnapshots+"_"):
		// Cinder's SnapshotLimitExceeded does not name the quota.
		class = "SnapshotLimitExceeded"
		msg = fmt.Sprintf("Maximum number of snapshots allowed (%d) exceeded", limit)
	case resource == QuotaBackups:
		class = "BackupLimitExceeded"
		msg = fmt.Sprintf("Maximum number of backups allowed (%d) exceeded", limit)
	case resource == QuotaGroups:
		class = "GroupLimitExceeded"
		msg = fmt.Sprintf("Maximum number of groups allowed (%d) exceeded", limit)
	default:
		class = "UnexpectedOverQuota"
		msg = fmt.Sprintf("Unexpected over quota on %s.", resource)
	}
	return basalt.Errorf(basalt.EOVERLIMIT, "%s: %s", class, msg)
}

// refundScript gives back everything a charge took and deletes its record. KEYS: charge,
// unbound. ARGV: the key prefix of the charge's partition, charge id. The usage key is the one
// the record names (a record written before it named one: computed from the prefix and the
// record's project); it is in the charge's partition, so the script stays within one Cluster
// slot. Returns 1 when refunded, 0 when there was nothing to refund.
var refundScript = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[2])
local project = redis.call('HGET', KEYS[1], '.project')
if not project then return 0 end
local usage = redis.call('HGET', KEYS[1], '.usage') or (ARGV[1] .. 'quota:' .. project .. ':usage')
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if string.sub(h[i], 1, 1) ~= '.' then
    local left = redis.call('HINCRBY', usage, h[i], -tonumber(h[i+1]))
    if left <= 0 then redis.call('HDEL', usage, h[i]) end
  end
end
redis.call('DEL', KEYS[1])
return 1
`)

// Refund returns to its project exactly what was charged under chargeID and forgets the
// charge. It is idempotent: refunding a charge again, or one never made, does nothing, so
// redelivered results may refund freely.
func (s *Store) Refund(ctx context.Context, chargeID string) error {
	if err := refundScript.Run(ctx, s.rdb, []string{chargeKey(chargeID), unboundChargesKey(chargeID)}, events.PrefixOf(chargeID), chargeID).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("refund %s: %w", chargeID, err)
	}
	return nil
}

// transferScript moves a charge's amounts into another charge of the same project. KEYS:
// from, to, unbound. ARGV: from's charge id. Returns 1 when moved, 0 when from does not exist.
var transferScript = redis.NewScript(`
redis.call('ZREM', KEYS[3], ARGV[1])
local project = redis.call('HGET', KEYS[1], '.project')
if not project then return 0 end
local owner = redis.call('HGET', KEYS[2], '.project')
if owner and owner ~= project then
  return redis.error_reply('charges belong to different projects')
end
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if string.sub(h[i], 1, 1) ~= '.' then redis.call('HINCRBY', KEYS[2], h[i], h[i+1]) end
end
redis.call('HSET', KEYS[2], '.project', project)
local usage = redis.call('HGET', KEYS[1], '.usage')
if usage then redis.call('HSET', KEYS[2], '.usage', usage) end
redis.call('DEL', KEYS[1])
return 1
`)

// TransferCharge moves what was charged under from into the charge to, leaving usage as it is:
// an extend charges "extend:<op>" and, once the volume has grown, transfers it to "vol:<id>"
// (or refunds it when the extend failed). It is idempotent: a transfer whose source is gone
// does nothing. Both charges must belong to the same project.
func (s *Store) TransferCharge(ctx context.Context, from, to string) error {
	if err := transferScript.Run(ctx, s.rdb, []string{chargeKey(from), chargeKey(to), unboundChargesKey(from)}, from).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("transfer charge %s to %s: %w", from, to, err)
	}
	return nil
}

// unboundChargesKey indexes charges, by when they were made, until the sweep has seen the
// record that owns them (SweepCharges).
func unboundChargesKey(chargeID string) string { return events.PrefixOf(chargeID) + "charges:unbound" }

// SweepCharges settles every charge made before before that is still unbound: a charge whose
// owner exists (the volume of "vol:<id>", the snapshot of "snap:<id>", the operation of an
// operation's own charge such as "ext:<op>") is bound and left alone from then on; a charge
// whose owner was never written was made by a request that died between its charge and its
// record, and is refunded. before must be older than any request can live, so that no record
// is still on its way. It returns the ids refunded.
func (s *Store) SweepCharges(ctx context.Context, before time.Time) (refunded []string, err error) {
	ids, err := partitionsByScore(ctx, s.rdb, func(n int) string { return events.ShardPrefix(n) + "charges:unbound" },
		fmt.Sprint(before.UnixMilli()), 1000)
	if err != nil {
		return nil, fmt.Errorf("read unbound charges: %w", err)
	}
	for _, id := range ids {
		kind, rest, _ := strings.Cut(id, ":")
		key := opKey(rest)
		switch kind {
		case "vol":
			key = volumeKey(rest)
		case "snap":
			key = snapshotKey(rest)
		}
		n, err := s.rdb.Exists(ctx, key).Result()
		if err != nil {
			return refunded, fmt.Errorf("check the owner of charge %s: %w", id, err)
		}
		if n > 0 {
			if err := s.rdb.ZRem(ctx, unboundChargesKey(id), id).Err(); err != nil {
				return refunded, fmt.Errorf("bind charge %s: %w", id, err)
			}
			continue
		}
		if err := s.Refund(ctx, id); err != nil {
			return refunded, err
		}
		refunded = append(refunded, id)
	}
	return refunded, nil
}

// Charged returns the project and amounts recorded under chargeID; project is "" when there is
// no such charge.
func (s *Store) Charged(ctx context.Context, chargeID string) (project string, amounts map[string]int, err error) {
	h, err := s.rdb.HGetAll(ctx, chargeKey(chargeID)).Result()
	if err != nil {
		return "", nil, fmt.Errorf("read charge %s: %w", chargeID, err)
	}
	project = h[chargeProjectField]
	delete(h, chargeProjectField)
	delete(h, chargeUsageField)
	amounts, err = intMap(h)
	return project, amounts, err
}

// QuotaUsage returns what project has in use, by resource; resources not in use are absent.
func (s *Store) QuotaUsage(ctx context.Context, project string) (map[string]int, error) {
	h, err := s.rdb.HGetAll(ctx, quotaUsageKey(project)).Result()
	if err != nil {
		return nil, fmt.Errorf("read quota usage of %s: %w", project, err)
	}
	return intMap(h)
}

// QuotaLimits returns project's limit overrides, by resource; resources at their default are
// absent.
func (s *Store) QuotaLimits(ctx context.Context, project string) (map[string]int, error) {
	h, err := s.rdb.HGetAll(ctx, quotaLimitsKey(project)).Result()
	if err != nil {
		return nil, fmt.Errorf("read quota limits of %s: %w", project, err)
	}
	return intMap(h)
}

func intMap(h map[string]string) (map[string]int, error) {
	out := make(map[string]int, len(h))
	for k, v := range h {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("quota value %s=%q is not an integer", k, v)
		}
		out[k] = n
	}
	return out, nil
}

// setLimitsScript sets limit overrides unless one is below what is in use. KEYS: limits,
// usage. ARGV: pairs of resource and limit. Returns {} when set, or {resource, in_use, limit}
// of the first limit below usage.
var setLimitsScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local lim = tonumber(ARGV[i+1])
  if ARGV[i] ~= 'per_volume_gigabytes' and lim ~= -1 then
    local used = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
    if lim < used then return {ARGV[i], used, lim} end
  end
end
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return {}
`)

// SetQuotaLimits overrides project's limits, all or none, atomically with respect to charges.
// A limit other than -1 below what is in use is EINVALID with Cinder's message (per_volume_gigabytes
// has no usage and is never refused).
func (s *Store) SetQuotaLimits(ctx context.Context, project string, limits map[string]int) error {
	keys := make([]string, 0, len(limits))
	for k := range limits {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, limits[k])
	}
	res, err := setLimitsScript.Run(ctx, s.rdb, []string{quotaLimitsKey(project), quotaUsageKey(project)}, args...).Slice()
	if err != nil {
		return fmt.Errorf("set quota limits of %s: %w", project, err)
	}
	if len(res) == 3 {
		used, _ := res[1].(int64)
		lim, _ := res[2].(int64)
		return basalt.Errorf(basalt.EINVALID, "Quota %s limit must be equal or greater than existing resources. Current usage is %d and the requested limit is %d.", res[0], used, lim)
	}
	return nil
}

// DeleteQuotaLimits resets project's limits to the defaults. It is idempotent.
func (s *Store) DeleteQuotaLimits(ctx context.Context, project string) error {
	if err := s.rdb.Del(ctx, quotaLimitsKey(project)).Err(); err != nil {
		return fmt.Errorf("reset quota limits of %s: %w", project, err)
	}
	return nil
}
