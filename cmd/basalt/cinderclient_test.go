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
	cinder := requireCinder(t)
	s := newStack(t, stackOptions{})
	s.addTopology()
	run := s.cinderRunner(cinder, "alice", "p1")
	// runFail runs a cinder command that must fail and returns what it printed.
	runFail := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, cinder, args...)
		cmd.Env = append(os.Environ(), "OS_AUTH_TYPE=noauth", "OS_USER_ID=alice", "OS_PROJECT_ID=p1",
			"CINDER_ENDPOINT="+s.base+"/v3")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("cinder %v succeeded, want it to fail; it printed:\n%s", args, out)
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

	// Snapshots.
	out = run("snapshot-create", "--name", "cc-snap", "--description", "from the cli", "--metadata", "purpose=test", id[1])
	sp := tableProps(out)
	snapID := sp["id"]
	if snapID == "" || sp["status"] != "creating" || sp["volume_id"] != id[1] || sp["name"] != "cc-snap" || sp["size"] != "1" ||
		!strings.Contains(sp["metadata"], "purpose") {
		t.Fatalf("cinder snapshot-create printed:\n%s\nwant a creating 1 GiB snapshot cc-snap of %s with its metadata", out, id[1])
	}
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("snapshot-list")
		r := tableRow(out, snapID)
		return r != nil && r["Status"] == "available", out
	}, "cinder snapshot-list shows the snapshot available")
	out = run("snapshot-list", "--volume-id", id[1])
	if r := tableRow(out, snapID); r == nil || r["Volume ID"] != id[1] || r["Name"] != "cc-snap" || r["Size"] != "1" || len(tableRows(out)) != 1 {
		t.Errorf("cinder snapshot-list --volume-id %s:\n%s\nwant only cc-snap, 1 GiB, of the volume", id[1], out)
	}
	if out := run("snapshot-list", "--volume-id", "00000000-0000-0000-0000-000000000000"); len(tableRows(out)) != 0 {
		t.Errorf("cinder snapshot-list --volume-id of no volume:\n%s\nwant no rows", out)
	}

	// Extend: the size grows and the volume comes back available.
	run("extend", id[1], "2")
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("list")
		r := tableRow(out, id[1])
		return r != nil && r["Status"] == "available" && r["Size"] == "2", out
	}, "cinder list shows the volume extended to 2 GiB and available")
	if out := runFail("extend", id[1], "2"); !strings.Contains(out, "New size for extend must be greater than current size") || !strings.Contains(out, "HTTP 400") {
		t.Errorf("cinder extend to the same size printed:\n%s\nwant the server's refusal (HTTP 400)", out)
	}
	out = run("list")
	if r := tableRow(out, id[1]); r == nil || r["Name"] != "from-cinderclient" || r["Size"] != "2" || r["Status"] != "available" || r["Bootable"] != "false" {
		t.Errorf("cinder list after extend:\n%s\nwant from-cinderclient, available, 2 GiB, not bootable", out)
	}
	if r := tableRow(out, id[1]); r != nil && r["Volume Type"] != "__DEFAULT__" {
		t.Errorf("cinder list Volume Type = %q, want __DEFAULT__", r["Volume Type"])
	}

	// A volume with a snapshot is not deleted; once the snapshot is gone, it is.
	if out := runFail("delete", id[1]); !strings.Contains(out, "snapshots") || !strings.Contains(out, "HTTP 400") {
		t.Errorf("cinder delete of a volume with a snapshot printed:\n%s\nwant the server's refusal naming snapshots (HTTP 400)", out)
	}
	run("snapshot-delete", snapID)
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("snapshot-list")
		return tableRow(out, snapID) == nil, out
	}, "the snapshot is gone from cinder snapshot-list")
	run("delete", id[1])
	s.eventually(20*time.Second, func() (bool, string) {
		out := run("list")
		return !strings.Contains(out, id[1]), out
	}, "the volume is gone from cinder list")
	if out := run("list"); len(tableRows(out)) != 0 {
		t.Errorf("cinder list after every delete:\n%s\nwant no rows", out)
	}
}

// tableRows parses the rows of a table the cinder CLI prints (prettytable): a map from each
// column's header to the row's cell, in order.
func tableRows(out string) []map[string]string {
	var header []string
	var rows []map[string]string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		row := map[string]string{}
		for i, c := range cells {
			if i < len(header) {
				row[header[i]] = c
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// tableRow returns the row whose ID column is id, or nil.
func tableRow(out, id string) map[string]string {
	for _, r := range tableRows(out) {
		if r["ID"] == id {
			return r
		}
	}
	return nil
}

// tableProps reads a Property | Value table into a map.
func tableProps(out string) map[string]string {
	props := map[string]string{}
	for _, r := range tableRows(out) {
		props[r["Property"]] = r["Value"]
	}
	return props
}

// requireCinder returns the path of the cinder CLI (python3-cinderclient). It skips the test when
// the CLI is missing, or fails it when BASALT_REQUIRE_CINDERCLIENT is set.
func requireCinder(t *testing.T) string {
	t.Helper()
	cinder, err := exec.LookPath("cinder")
	if err != nil {
		if os.Getenv("BASALT_REQUIRE_CINDERCLIENT") != "" {
			t.Fatalf("cinder (python3-cinderclient) not found: %v", err)
		}
		t.Skip("python3-cinderclient not installed")
	}
	return cinder
}

// cinderRunner returns a function that runs the cinder CLI with noauth as user in project
// against s, and fails the test when the command fails.
func (s *stack) cinderRunner(cinder, user, project string) func(args ...string) string {
	return func(args ...string) string {
		s.t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, cinder, args...)
		cmd.Env = append(os.Environ(), "OS_AUTH_TYPE=noauth", "OS_USER_ID="+user, "OS_PROJECT_ID="+project,
			"CINDER_ENDPOINT="+s.base+"/v3")
		out, err := cmd.CombinedOutput()
		if err != nil {
			s.t.Fatalf("cinder %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
}
