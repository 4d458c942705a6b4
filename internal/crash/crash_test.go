package crash

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestPointCrashesOnTheNamedHit(t *testing.T) {
	var hits []string
	kill = func(name string) { hits = append(hits, name) }
	t.Cleanup(func() { Arm("") })

	Arm("a:2, b")
	Point("a")
	Point("c")
	if len(hits) != 0 {
		t.Fatalf("crashed at %v before any armed point's hit", hits)
	}
	Point("a")
	Point("b")
	Point("a")
	Point("b")
	if strings.Join(hits, ",") != "a,b" {
		t.Fatalf("crashes %v, want a (second hit) then b (first), once each", hits)
	}
	Arm("")
	Point("a")
	if len(hits) != 2 {
		t.Fatalf("a disarmed point crashed: %v", hits)
	}
}

// TestPointKillsTheProcess runs this test binary as a child with a point armed: the child
// must die of SIGKILL at the point, before the line after it.
func TestPointKillsTheProcess(t *testing.T) {
	if os.Getenv("CRASH_CHILD") != "" {
		Point("here")
		os.Stdout.WriteString("survived\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPointKillsTheProcess$")
	cmd.Env = append(os.Environ(), "CRASH_CHILD=1", "BASALT_CRASH_AT=here")
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), "survived") {
		t.Fatalf("child survived its crash point: err %v, output %s", err, out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
		t.Fatalf("child ended with %v, want killed by a signal; output %s", err, out)
	}
}
