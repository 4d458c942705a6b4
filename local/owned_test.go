package local

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/functions/process"
	"go.uber.org/goleak"
)

// TestStoppedStackLeavesNothing runs the whole stack (embedded Redis, agents, scheduler, API)
// until it is up, stops it, and checks that Run returns and leaves no goroutine behind.
func TestStoppedStackLeavesNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Process: process.Config{Listen: "127.0.0.1:0", ReportInterval: 100 * time.Millisecond},
			DataDir: t.TempDir(), Store: StoreMemory, Driver: "fake", Out: io.Discard,
			Ready: func(addr string) { ready <- addr }}, discard)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run = %v before the stack was up", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the stack is not up after 20s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	goleak.VerifyNone(t, ignore)
}
