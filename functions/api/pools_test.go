package api_test

import (
	"context"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/control"
)

// TestPoolListShowsReportAsCinder: the pool listing shows a pool as Cinder's scheduler holds it
// (the pool's keys, the four backend-level keys Cinder copies, nothing else of the backend
// level), with storage_protocol, which the scheduler holds expanded to its variants, reduced to
// the first variant as Cinder's view does.
func TestPoolListShowsReportAsCinder(t *testing.T) {
	srv, plane := newPlaneServer(t, control.Config{}, &recordingPub{})
	ctx := context.Background()
	pr := events.NewPresence(plane.Store().Redis(), nil)
	if err := pr.Heartbeat(ctx, basalt.BinaryVolume, "h@b", "nova", 0); err != nil {
		t.Fatal(err)
	}
	rep := events.CapabilityReport{Backend: "h@b", Zone: "nova",
		Capabilities: basalt.Capabilities{"volume_backend_name": "vb", "vendor_name": "Acme", "storage_protocol": "iscsi",
			"online_extend_support": false},
		Pools: []basalt.Capabilities{{"pool_name": "p", "total_capacity_gb": 10, "free_capacity_gb": "infinite"}}}
	if err := pr.Report(ctx, rep); err != nil {
		t.Fatal(err)
	}
	r := do(t, srv, "admin:admin", "GET", "/v3/scheduler-stats/get_pools?detail=true", "")
	if r.status != 200 {
		t.Fatalf("get_pools = %d %s", r.status, r.raw)
	}
	pools := r.body["pools"].([]any)
	if len(pools) != 1 {
		t.Fatalf("get_pools = %s, want one pool", r.raw)
	}
	c := pools[0].(map[string]any)["capabilities"].(map[string]any)
	for k, want := range map[string]any{"storage_protocol": "iSCSI", "volume_backend_name": "vb", "vendor_name": "Acme",
		"driver_version": nil, "free_capacity_gb": "infinite", "pool_name": "p"} {
		if got, ok := c[k]; !ok || got != want {
			t.Errorf("get_pools capabilities %s = %#v (present %v), want %#v", k, got, ok, want)
		}
	}
	if v, ok := c["online_extend_support"]; ok {
		t.Errorf("get_pools shows the backend-level online_extend_support %v in the pool; Cinder does not", v)
	}
}
