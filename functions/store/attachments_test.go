package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/store"
)

func TestAttachmentIndexFollowsTheVolume(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	now := st.Now()
	v := &basalt.Volume{ID: "v1", ProjectID: "p1", Status: basalt.StatusAvailable, CreatedAt: now}
	if err := st.CreateVolume(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	add := func(id string) {
		t.Helper()
		_, err := st.ChangeVolume(ctx, "v1", func(v *basalt.Volume, _ *store.VolumeChange) error {
			v.Attachments = append(v.Attachments, &basalt.Attachment{ID: id, VolumeID: "v1", ProjectID: "p1",
				Status: basalt.AttachReserved, CreatedAt: st.Now()})
			return nil
		})
		if err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
	}
	add("a1")
	add("a2")
	if vid, err := st.AttachmentVolume(ctx, "a2"); err != nil || vid != "v1" {
		t.Errorf("AttachmentVolume(a2) = %q, %v; want v1", vid, err)
	}
	list, err := st.Attachments(ctx, "p1")
	if err != nil || len(list) != 2 || list[0].ID != "a2" {
		t.Errorf("Attachments(p1) = %v, %v; want a2 then a1", list, err)
	}
	if list, _ := st.Attachments(ctx, "p2"); len(list) != 0 {
		t.Errorf("Attachments(p2) = %v, want none", list)
	}
	// A refused change writes nothing.
	refused := errors.New("no")
	if _, err := st.ChangeVolume(ctx, "v1", func(v *basalt.Volume, _ *store.VolumeChange) error {
		v.Attachments = nil
		return refused
	}); !errors.Is(err, refused) {
		t.Fatalf("refused change = %v", err)
	}
	if _, err := st.AttachmentVolume(ctx, "a1"); err != nil {
		t.Errorf("a refused change dropped the index: %v", err)
	}
	if _, err := st.ChangeVolume(ctx, "v1", func(v *basalt.Volume, _ *store.VolumeChange) error {
		v.RemoveAttachment("a1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AttachmentVolume(ctx, "a1"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("AttachmentVolume(a1) after removal = %v, want ENOTFOUND", err)
	}
	// Deleting the volume drops what is left of the index.
	v, _ = st.Volume(ctx, "v1")
	if err := st.DeleteVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.Attachments(ctx, ""); len(list) != 0 {
		t.Errorf("Attachments after the volume's delete = %v, want none", list)
	}
	if _, err := st.AttachmentVolume(ctx, "a2"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("AttachmentVolume(a2) after delete = %v, want ENOTFOUND", err)
	}
}

func TestReplyReachesTheWaiterOnce(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	op := &basalt.Operation{ID: "op-1", State: basalt.OpPending, Deadline: st.Now().Add(5 * time.Second)}
	if err := st.PutOp(ctx, op); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, err := st.WaitReply(ctx, "op-1", 5*time.Second)
		if err != nil {
			t.Errorf("WaitReply: %v", err)
		}
		got <- b
	}()
	time.Sleep(100 * time.Millisecond)
	if err := st.EndOpWithReply(ctx, "op-1", basalt.OpDone, "", []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != `{"ok":true}` {
		t.Errorf("WaitReply = %q, want the reply", b)
	}
	// A second outcome (a redelivery) finds the operation ended and pushes nothing.
	if err := st.EndOpWithReply(ctx, "op-1", basalt.OpFailed, "late", []byte(`{}`)); !errors.Is(err, store.ErrOpFinished) {
		t.Errorf("second EndOpWithReply = %v, want ErrOpFinished", err)
	}
	if op, _ := st.Op(ctx, "op-1"); op.State != basalt.OpDone {
		t.Errorf("op state = %s, want done", op.State)
	}
	if b, _ := st.WaitReply(ctx, "op-1", time.Second); b != nil {
		t.Errorf("a second reply was pushed: %q", b)
	}
	// No reply: WaitReply gives up at its timeout with nil.
	start := time.Now()
	if b, err := st.WaitReply(ctx, "op-none", time.Second); b != nil || err != nil || time.Since(start) < time.Second {
		t.Errorf("WaitReply without a reply = %q, %v after %v", b, err, time.Since(start))
	}
}
