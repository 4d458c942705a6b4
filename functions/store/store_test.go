package store_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events/redistest"
	"github.com/basalt-storage/basalt/functions/store"
)

func newStore(t *testing.T) *store.Store {
	return store.New(redistest.Start(t).Client(), nil)
}

func TestReserveNeverExceedsLimit(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	const pool, limit = "h@b#p", 20.0
	var won atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := st.Reserve(ctx, fmt.Sprintf("vol-%d", i), pool, 1, limit)
			if err != nil {
				t.Errorf("Reserve(vol-%d) = %v", i, err)
			}
			if ok {
				won.Add(1)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 20 {
		t.Errorf("%d of 64 concurrent 1 GiB reservations won under a 20 GiB limit, want 20", won.Load())
	}
	if got, _ := st.Ledger(ctx, pool); got != 20 {
		t.Errorf("Ledger = %v, want 20", got)
	}
	// A volume that holds capacity reserves again without claiming twice.
	if ok, err := st.Reserve(ctx, "vol-0", pool, 1, limit); err != nil {
		t.Fatal(err)
	} else if owner, _ := st.Ledger(ctx, pool); ok && owner != 20 {
		t.Errorf("re-Reserve changed the ledger to %v", owner)
	}
	// Release is idempotent and frees capacity for another volume.
	for _, id := range []string{"vol-0", "vol-1", "vol-2", "vol-3"} {
		for range 2 {
			if err := st.Release(ctx, id); err != nil {
				t.Fatalf("Release(%s) = %v", id, err)
			}
		}
	}
	if got, _ := st.Ledger(ctx, pool); got > 20 || got < 16 {
		t.Errorf("Ledger after releases = %v, want between 16 and 20 (depends on which volumes won)", got)
	}
	if ok, _ := st.Reserve(ctx, "late", pool, 1, math.Inf(1)); !ok {
		t.Errorf("Reserve with no limit = false, want true")
	}
}

func TestReleaseReturnsExactly(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if ok, _ := st.Reserve(ctx, "a", "p#1", 5, 10); !ok {
		t.Fatal("Reserve(a, 5 of 10) = false")
	}
	if ok, _ := st.Reserve(ctx, "b", "p#1", 6, 10); ok {
		t.Fatal("Reserve(b, 6 more of 10) = true, want false")
	}
	if err := st.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Ledger(ctx, "p#1"); got != 0 {
		t.Errorf("Ledger after release = %v, want 0", got)
	}
	if ok, _ := st.Reserve(ctx, "b", "p#1", 6, 10); !ok {
		t.Errorf("Reserve(b, 6 of 10) after release = false, want true")
	}
}

func TestUpdateVolumeIsCompareAndSet(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	v := &basalt.Volume{ID: "v1", ProjectID: "p", Status: basalt.StatusAvailable, CreatedAt: time.Now()}
	if err := st.CreateVolume(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	var won atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.UpdateVolume(ctx, "v1", func(v *basalt.Volume) error {
				if v.Status != basalt.StatusAvailable {
					return basalt.Errorf(basalt.EINVALID, "not available")
				}
				v.Status = basalt.StatusDeleting
				return nil
			})
			if err == nil {
				won.Add(1)
			} else if basalt.ErrorCode(err) != basalt.EINVALID {
				t.Errorf("UpdateVolume = %v, want nil or EINVALID", err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Errorf("%d of 50 concurrent available→deleting changes won, want exactly 1", won.Load())
	}
	if _, err := st.UpdateVolume(ctx, "nope", func(*basalt.Volume) error { return nil }); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("UpdateVolume(nope) = %v, want ENOTFOUND", err)
	}
}

func TestOverdueOps(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	now := time.Now()
	for i, d := range []time.Duration{-time.Minute, time.Minute} {
		op := &basalt.Operation{ID: fmt.Sprintf("op%d", i), State: basalt.OpPending, Deadline: now.Add(d)}
		if err := st.PutOp(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := st.OverdueOps(ctx, now)
	if err != nil || len(ids) != 1 || ids[0] != "op0" {
		t.Fatalf("OverdueOps = %v, %v, want [op0]", ids, err)
	}
	if _, err := st.UpdateOp(ctx, "op0", func(op *basalt.Operation) error { op.State = basalt.OpDone; return nil }); err != nil {
		t.Fatal(err)
	}
	if ids, _ := st.OverdueOps(ctx, now); len(ids) != 0 {
		t.Errorf("OverdueOps after finishing op0 = %v, want none", ids)
	}
	if _, err := st.UpdateOp(ctx, "op0", func(*basalt.Operation) error { return nil }); err != store.ErrOpFinished {
		t.Errorf("UpdateOp on a finished op = %v, want ErrOpFinished", err)
	}
}
