package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/functions/api"
)

// TestE2ECinderclient drives the real binary with python-cinderclient (Debian's
// python3-cinderclient, noauth plugin). The client negotiates its microversion down to the
// one the server advertises.
func TestE2ECinderclient(t *testing.T) {
	cinder, err := exec.LookPath("cinder")
	if err != nil {
		if os.Getenv("BASALT_REQUIRE_CINDERCLIENT") != "" {
			t.Fatalf("cinder (python3-cinderclient) not found: %v", err)
		}
		t.Skip("python3-cinderclient not installed")
	}
	s := newStack(t, stackOptions{})
	s.addTopology()
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, cinder, args...)
		cmd.Env = append(os.Environ(), "OS_AUTH_TYPE=noauth", "OS_USER_ID=alice", "OS_PROJECT_ID=p1",
			"CINDER_ENDPOINT="+s.base+"/v3")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cinder %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("create", "--name", "from-cinderclient", "--metadata", "tier=gold", "1")
	if want := "downgrading to " + api.MaxVersion.String(); !strings.Contains(out, "from-cinderclient") || !strings.Contains(out, want) {
		t.Errorf("cinder create printed:\n%s\nwant the volume, and %q", out, want)
	}
	id := regexp.MustCompile(`\|\s+id\s+\|\s+([0-9a-f-]{36})`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no id in cinder create output:\n%s", out)
	}
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("show", id[1])
		return regexp.MustCompile(`\|\s+status\s+\|\s+available`).MatchString(out), out
	}, "cinder show says available")
	if out := run("list"); !strings.Contains(out, "from-cinderclient") || !strings.Contains(out, "available") {
		t.Errorf("cinder list:\n%s\nwant the available volume", out)
	}
	if out := run("list", "--name", "nothing-like-this"); strings.Contains(out, id[1]) {
		t.Errorf("cinder list --name filter still shows the volume:\n%s", out)
	}
	if out := run("type-list"); !strings.Contains(out, "__DEFAULT__") {
		t.Errorf("cinder type-list:\n%s\nwant __DEFAULT__", out)
	}
	run("delete", id[1])
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("list")
		return !strings.Contains(out, id[1]), out
	}, "the volume is gone from cinder list")
}
