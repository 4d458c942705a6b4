package redistest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// AdminACL is the line StartWithACL gives the default user unless aclLines define it: every
// key, channel and command, no password. Options and Client connect as the default user, so
// they stay the test's administrator (and Restart's readiness check keeps working).
const AdminACL = "user default on nopass ~* &* +@all"

// StartWithACL is Start with Redis ACLs: it writes aclLines (ACL file lines, "user <name> ...")
// to an aclfile in the server's directory and starts redis-server with --aclfile, so that a
// test connects as a role's user (UserOptions) and sees what that user may not do fail with
// NOPERM. The default user is AdminACL unless aclLines have a "user default" line of their own;
// one that requires a password or is off leaves Options, Client and Restart without access.
func StartWithACL(t testing.TB, aclLines []string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BASALT_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found: %v", err)
		}
		t.Skip("redis-server not installed; set BASALT_REQUIRE_REDIS=1 to make this a failure")
	}
	s := &Server{Dir: t.TempDir(), t: t}
	s.writeACL(aclLines)
	s.args = []string{"--aclfile", s.aclFile()}
	s.Port = freePort(t)
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) aclFile() string { return filepath.Join(s.Dir, "users.acl") }

func (s *Server) writeACL(lines []string) {
	s.t.Helper()
	out := []string{}
	hasDefault := false
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "user" && f[1] == "default" {
			hasDefault = true
		}
	}
	if !hasDefault {
		out = append(out, AdminACL)
	}
	out = append(out, lines...)
	if err := os.WriteFile(s.aclFile(), []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		s.t.Fatalf("write the aclfile: %v", err)
	}
}

// SetACL replaces the server's aclfile with aclLines (and the default user as StartWithACL
// does) and loads it (ACL LOAD) as the default user: the users' rights change at once, and
// their connections stay open. A server not started by StartWithACL has no aclfile to load.
func (s *Server) SetACL(aclLines []string) {
	s.t.Helper()
	s.writeACL(aclLines)
	c := redis.NewClient(s.Options())
	defer c.Close()
	if err := c.Do(context.Background(), "ACL", "LOAD").Err(); err != nil {
		s.t.Fatalf("ACL LOAD: %v", err)
	}
}

// UserOptions returns client options for the server as ACL user user with password.
func (s *Server) UserOptions(user, password string) *redis.Options {
	o := s.Options()
	o.Username, o.Password = user, password
	return o
}

// ACLLog returns the server's ACL LOG (the most recent denials first), as the default user:
// what a test prints when a role was refused something it needs.
func (s *Server) ACLLog() []string {
	s.t.Helper()
	c := redis.NewClient(s.Options())
	defer c.Close()
	entries, err := c.ACLLog(context.Background(), 50).Result()
	if err != nil {
		return []string{"ACL LOG: " + err.Error()}
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Username+": "+e.Reason+" "+e.Context+" "+e.Object+" (x"+strconv.FormatInt(e.Count, 10)+")")
	}
	return out
}
