package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLocalStackQuickstart runs what `make run` runs, on the embedded Redis, and follows the
// README: a create returns 202 and within two seconds the volume is available on one of the
// four backends of the example topology.
func TestLocalStackQuickstart(t *testing.T) {
	port := freePort(t)
	cmd := exec.Command(basaltBin, "local", "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "REDIS_URL=", fmt.Sprintf("BASALT_LISTEN=127.0.0.1:%d", port))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "/v3/volumes") {
				banner <- b.String()
			}
		}
	}()
	var text string
	select {
	case text = <-banner:
	case <-time.After(60 * time.Second):
		t.Fatal("basalt local printed no banner with a first command within 60s")
	}
	for _, want := range []string{fmt.Sprintf("http://127.0.0.1:%d/v3", port), "embedded", "curl"} {
		if !strings.Contains(text, want) {
			t.Errorf("banner %q lacks %q", text, want)
		}
	}
	s := &stack{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	id := s.createVolume("demo:demo", `{"volume": {"size": 1, "name": "first"}}`)
	deadline := time.Now().Add(2 * time.Second)
	var v map[string]any
	for time.Now().Before(deadline) {
		v = s.volume(id)
		if v["status"] == "available" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	backends := []string{"block1@lvmdriver-b1#", "block2@lvmdriver-b21#", "block2@lvmdriver-b22#", "network@lvmdriver-network#"}
	host, _ := v["os-vol-host-attr:host"].(string)
	ok := false
	for _, b := range backends {
		ok = ok || strings.HasPrefix(host, b)
	}
	if v["status"] != "available" || !ok {
		t.Errorf("two seconds after create: status %v on %q, want available on one of %v", v["status"], host, backends)
	}
}

// TestSchedulerExplain asks where a request would go without creating anything.
func TestSchedulerExplain(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.addTopology()
	s.do("admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"az1","extra_specs":{"RESKEY:availability_zones":"az1"}}}`)
	explain := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, basaltBin, append([]string{"scheduler", "explain"}, args...)...)
		cmd.Env = append(os.Environ(), s.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("basalt scheduler explain %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := explain("--size", "5", "--type", "az1")
	if !strings.Contains(out, "block1@lvmdriver-b1#pool: AvailabilityZoneFilter") || !strings.Contains(out, "=> block2@") {
		t.Errorf("explain for type az1:\n%s\nwant block1 rejected by AvailabilityZoneFilter and a block2 pool chosen", out)
	}
	out = explain("--size", "60000")
	if !strings.Contains(out, "CapacityFilter") || !strings.Contains(out, "=> No valid backend was found.") {
		t.Errorf("explain for 60000 GiB:\n%s\nwant every pool rejected by CapacityFilter", out)
	}
	if r := s.do("admin:admin", "GET", "/v3/volumes/detail?all_tenants=1", ""); len(r.body["volumes"].([]any)) != 0 {
		t.Errorf("explain created volumes: %s", r.raw)
	}
}
