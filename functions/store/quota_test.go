package store_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/store"
)

func TestChargeNeverExceedsLimit(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.SetQuotaLimits(ctx, "p", map[string]int{"volumes": 100}); err != nil {
		t.Fatal(err)
	}
	var won atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.Charge(ctx, "p", fmt.Sprintf("vol:%d", i), store.QuotaRequest{Volumes: 1, Gigabytes: 1}, nil)
			switch basalt.ErrorCode(err) {
			case "":
				won.Add(1)
			case basalt.EOVERLIMIT:
			default:
				t.Errorf("Charge(vol:%d) = %v, want nil or EOVERLIMIT", i, err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 100 {
		t.Errorf("%d of 200 concurrent charges of 1 volume won under a limit of 100, want 100", won.Load())
	}
	usage, err := st.QuotaUsage(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if usage["volumes"] != 100 || usage["gigabytes"] != 100 {
		t.Errorf("QuotaUsage = %v, want 100 volumes and 100 gigabytes", usage)
	}
}

func TestChargeAllOrNothing(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	defaults := map[string]int{"gigabytes": 10}
	if err := st.Charge(ctx, "p", "vol:a", store.QuotaRequest{Volumes: 1, Gigabytes: 8, TypeName: "gold", VolumeSizeGB: 8}, defaults); err != nil {
		t.Fatal(err)
	}
	// volumes fits, gigabytes does not: nothing is taken.
	err := st.Charge(ctx, "p", "vol:b", store.QuotaRequest{Volumes: 1, Gigabytes: 3, TypeName: "gold", VolumeSizeGB: 3}, defaults)
	want := "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 3G, quota is 10G and 8G has been consumed."
	if basalt.ErrorCode(err) != basalt.EOVERLIMIT || basalt.ErrorMessage(err) != want {
		t.Errorf("Charge(vol:b) = %v, want EOVERLIMIT %q", err, want)
	}
	usage, _ := st.QuotaUsage(ctx, "p")
	if wantUsage := map[string]int{"volumes": 1, "volumes_gold": 1, "gigabytes": 8, "gigabytes_gold": 8}; !maps.Equal(usage, wantUsage) {
		t.Errorf("QuotaUsage after a refused charge = %v, want %v", usage, wantUsage)
	}
	if project, _, _ := st.Charged(ctx, "vol:b"); project != "" {
		t.Errorf("refused charge vol:b left a record of project %q", project)
	}
}

func TestChargeMessages(t *testing.T) {
	for _, c := range []struct {
		name   string
		limits map[string]int
		used   store.QuotaRequest
		req    store.QuotaRequest
		want   string
	}{
		{"volumes", map[string]int{"volumes": 1}, store.QuotaRequest{Volumes: 1}, store.QuotaRequest{Volumes: 1},
			"VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'."},
		{"volumes per type", map[string]int{"volumes_gold": 0}, store.QuotaRequest{}, store.QuotaRequest{Volumes: 1, TypeName: "gold"},
			"VolumeLimitExceeded: Maximum number of volumes allowed (0) exceeded for quota 'volumes_gold'."},
		{"gigabytes per type", map[string]int{"gigabytes_gold": 5}, store.QuotaRequest{Gigabytes: 2, TypeName: "gold"}, store.QuotaRequest{Gigabytes: 4, TypeName: "gold"},
			"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes_gold quota. Requested 4G, quota is 5G and 2G has been consumed."},
		{"snapshots", map[string]int{"snapshots": 2}, store.QuotaRequest{Snapshots: 2}, store.QuotaRequest{Snapshots: 1},
			"SnapshotLimitExceeded: Maximum number of snapshots allowed (2) exceeded"},
		{"per volume", map[string]int{"per_volume_gigabytes": 5}, store.QuotaRequest{}, store.QuotaRequest{Volumes: 1, Gigabytes: 6, VolumeSizeGB: 6},
			"VolumeSizeExceedsLimit: Requested volume size 6G is larger than maximum allowed limit 5G."},
		{"backups", map[string]int{"backups": 0}, store.QuotaRequest{}, store.QuotaRequest{Backups: 1},
			"BackupLimitExceeded: Maximum number of backups allowed (0) exceeded"},
		{"backup gigabytes", map[string]int{"backup_gigabytes": 3}, store.QuotaRequest{}, store.QuotaRequest{BackupGigabytes: 4},
			"VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. Requested 4G, quota is 3G and 0G has been consumed."},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := newStore(t)
			ctx := context.Background()
			if err := st.Charge(ctx, "p", "first", c.used, nil); err != nil {
				t.Fatal(err)
			}
			if err := st.SetQuotaLimits(ctx, "p", c.limits); err != nil {
				t.Fatal(err)
			}
			err := st.Charge(ctx, "p", "second", c.req, nil)
			if basalt.ErrorCode(err) != basalt.EOVERLIMIT || basalt.ErrorMessage(err) != c.want {
				t.Errorf("Charge(%+v) = %v, want EOVERLIMIT %q", c.req, err, c.want)
			}
		})
	}
}

func TestUnlimitedAndPerVolume(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	// -1 is unlimited; per_volume_gigabytes is checked against the size, never accumulated.
	defaults := map[string]int{"volumes": -1, "gigabytes": -1, "per_volume_gigabytes": 5}
	for i := 0; i < 30; i++ {
		if err := st.Charge(ctx, "p", fmt.Sprintf("vol:%d", i), store.QuotaRequest{Volumes: 1, Gigabytes: 5, VolumeSizeGB: 5}, defaults); err != nil {
			t.Fatalf("Charge %d under unlimited quotas = %v", i, err)
		}
	}
	usage, _ := st.QuotaUsage(ctx, "p")
	if usage["volumes"] != 30 || usage["gigabytes"] != 150 || usage["per_volume_gigabytes"] != 0 {
		t.Errorf("QuotaUsage = %v, want 30 volumes, 150 gigabytes, no per_volume_gigabytes", usage)
	}
}

func TestRefundIsExactAndIdempotent(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.Charge(ctx, "p", "vol:a", store.QuotaRequest{Volumes: 1, Gigabytes: 2, TypeName: "t", VolumeSizeGB: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Charge(ctx, "p", "vol:b", store.QuotaRequest{Volumes: 1, Gigabytes: 3, TypeName: "t", VolumeSizeGB: 3}, nil); err != nil {
		t.Fatal(err)
	}
	// An extend charges its growth under its own id, which then moves into the volume's charge.
	if err := st.Charge(ctx, "p", "ext:op1", store.QuotaRequest{Gigabytes: 4, TypeName: "t", VolumeSizeGB: 6}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.TransferCharge(ctx, "ext:op1", "vol:a"); err != nil {
		t.Fatal(err)
	}
	project, amounts, err := st.Charged(ctx, "vol:a")
	if want := map[string]int{"volumes": 1, "volumes_t": 1, "gigabytes": 6, "gigabytes_t": 6}; err != nil || project != "p" || !maps.Equal(amounts, want) {
		t.Errorf("Charged(vol:a) = %q %v %v, want p %v", project, amounts, err, want)
	}
	for range 3 { // results are delivered at least once
		if err := st.Refund(ctx, "vol:a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Refund(ctx, "never-charged"); err != nil {
		t.Errorf("Refund of an unknown charge = %v, want nil", err)
	}
	usage, _ := st.QuotaUsage(ctx, "p")
	if want := map[string]int{"volumes": 1, "volumes_t": 1, "gigabytes": 3, "gigabytes_t": 3}; !maps.Equal(usage, want) {
		t.Errorf("QuotaUsage after refunding vol:a = %v, want %v", usage, want)
	}
	if err := st.Refund(ctx, "vol:b"); err != nil {
		t.Fatal(err)
	}
	if usage, _ := st.QuotaUsage(ctx, "p"); len(usage) != 0 {
		t.Errorf("QuotaUsage after refunding everything = %v, want empty", usage)
	}
}

func TestTransferCharge(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.Charge(ctx, "p", "vol:a", store.QuotaRequest{Volumes: 1, Gigabytes: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Charge(ctx, "p", "extend:op1", store.QuotaRequest{Gigabytes: 4}, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := st.TransferCharge(ctx, "extend:op1", "vol:a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, amounts, _ := st.Charged(ctx, "vol:a"); amounts["gigabytes"] != 5 || amounts["volumes"] != 1 {
		t.Errorf("Charged(vol:a) after transfer = %v, want 1 volume, 5 gigabytes", amounts)
	}
	if err := st.Charge(ctx, "q", "vol:q", store.QuotaRequest{Volumes: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Charge(ctx, "p", "vol:q", store.QuotaRequest{Volumes: 1}, nil); err == nil {
		t.Errorf("Charge to another project's charge = nil, want an error")
	}
	if err := st.Refund(ctx, "vol:a"); err != nil {
		t.Fatal(err)
	}
	if usage, _ := st.QuotaUsage(ctx, "p"); len(usage) != 0 {
		t.Errorf("QuotaUsage of p after refunding = %v, want empty", usage)
	}
}

func TestSetQuotaLimitsBelowUsage(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.Charge(ctx, "p", "vol:a", store.QuotaRequest{Volumes: 3, Gigabytes: 30}, nil); err != nil {
		t.Fatal(err)
	}
	err := st.SetQuotaLimits(ctx, "p", map[string]int{"snapshots": 5, "volumes": 2})
	want := "Quota volumes limit must be equal or greater than existing resources. Current usage is 3 and the requested limit is 2."
	if basalt.ErrorCode(err) != basalt.EINVALID || basalt.ErrorMessage(err) != want {
		t.Errorf("SetQuotaLimits(volumes 2 < 3 in use) = %v, want EINVALID %q", err, want)
	}
	if limits, _ := st.QuotaLimits(ctx, "p"); len(limits) != 0 {
		t.Errorf("a refused SetQuotaLimits set %v, want nothing", limits)
	}
	if err := st.SetQuotaLimits(ctx, "p", map[string]int{"volumes": -1, "gigabytes": 30, "per_volume_gigabytes": 1}); err != nil {
		t.Errorf("SetQuotaLimits(-1, equal to usage, per_volume_gigabytes) = %v, want nil", err)
	}
	if err := st.DeleteQuotaLimits(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if limits, _ := st.QuotaLimits(ctx, "p"); len(limits) != 0 {
		t.Errorf("QuotaLimits after DeleteQuotaLimits = %v, want none", limits)
	}
}

func TestIdempotencyKeyRecords(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	rec, err := st.ClaimIdempotencyKey(ctx, "p", "k", "tok1", "fp", time.Minute)
	if err != nil || rec != nil {
		t.Fatalf("first ClaimIdempotencyKey = %v, %v, want a claim", rec, err)
	}
	rec, err = st.ClaimIdempotencyKey(ctx, "p", "k", "tok2", "fp", time.Minute)
	if err != nil || rec == nil || rec.Done || rec.Token != "tok1" {
		t.Fatalf("second ClaimIdempotencyKey = %+v, %v, want tok1's pending claim", rec, err)
	}
	// Another project's key of the same name is its own.
	if rec, _ := st.ClaimIdempotencyKey(ctx, "q", "k", "tok3", "fp", time.Minute); rec != nil {
		t.Errorf("ClaimIdempotencyKey of project q saw %+v, want a claim of its own", rec)
	}
	// A release by a stranger does nothing.
	if err := st.ReleaseIdempotencyKey(ctx, "p", "k", "tok2"); err != nil {
		t.Fatal(err)
	}
	ok, err := st.CompleteIdempotencyKey(ctx, "p", "k", &store.IdempotencyRecord{Token: "tok1", Fingerprint: "fp",
		Status: 202, Header: map[string]string{"Content-Type": "application/json"}, Body: []byte(`{"a":1}`)}, time.Hour)
	if err != nil || !ok {
		t.Fatalf("CompleteIdempotencyKey = %v, %v", ok, err)
	}
	rec, _ = st.ClaimIdempotencyKey(ctx, "p", "k", "tok4", "fp", time.Minute)
	if rec == nil || !rec.Done || rec.Status != 202 || string(rec.Body) != `{"a":1}` || rec.Header["Content-Type"] != "application/json" {
		t.Errorf("ClaimIdempotencyKey after completion = %+v, want the saved 202 response", rec)
	}
	// A release never removes a saved response.
	if err := st.ReleaseIdempotencyKey(ctx, "p", "k", "tok1"); err != nil {
		t.Fatal(err)
	}
	if rec, _ := st.ClaimIdempotencyKey(ctx, "p", "k", "tok5", "fp", time.Minute); rec == nil || !rec.Done {
		t.Errorf("saved response gone after a release: %+v", rec)
	}
}

func TestChargeIsAppliedOnce(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	r := store.QuotaRequest{Volumes: 1, Gigabytes: 5}
	// The same charge three times: a retry after a lost reply, then a redelivered message.
	for i := 0; i < 3; i++ {
		if err := st.Charge(ctx, "p1", "vol:a", r, nil); err != nil {
			t.Fatalf("Charge #%d: %v", i, err)
		}
	}
	usage, err := st.QuotaUsage(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if usage[store.QuotaVolumes] != 1 || usage[store.QuotaGigabytes] != 5 {
		t.Errorf("usage after a repeated charge = %v, want 1 volume and 5 GiB", usage)
	}
	if err := st.Refund(ctx, "vol:a"); err != nil {
		t.Fatal(err)
	}
	if usage, _ := st.QuotaUsage(ctx, "p1"); usage[store.QuotaVolumes] != 0 || usage[store.QuotaGigabytes] != 0 {
		t.Errorf("usage after the refund = %v, want nothing", usage)
	}
	// A charge id of another project is a conflict, and takes nothing from either.
	if err := st.Charge(ctx, "p1", "vol:b", r, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Charge(ctx, "p2", "vol:b", r, nil); basalt.ErrorCode(err) != basalt.ECONFLICT {
		t.Errorf("Charge of another project's id = %v, want ECONFLICT", err)
	}
	if usage, _ := st.QuotaUsage(ctx, "p2"); usage[store.QuotaVolumes] != 0 {
		t.Errorf("p2 usage = %v, want nothing", usage)
	}
}
