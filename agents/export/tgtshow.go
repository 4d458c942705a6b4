package export

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// tgtState is what a tgtd holds, as `tgtadm --op show` prints it.
type tgtState struct {
	targets  map[string]*tgtTarget // by IQN
	accounts []string              // incoming accounts
}

// tgtTarget is one target of a tgtd.
type tgtTarget struct {
	tid      int
	iqn      string
	luns     map[int]tgtLUN
	accounts []string // incoming accounts bound to the target
	acls     []string // initiator names and addresses allowed to log in
	nexuses  int      // sessions (I_T nexuses)
}

// tgtLUN is one logical unit of a target.
type tgtLUN struct {
	typ      string // "disk", "controller"
	bsType   string // "rdwr", "null"
	path     string
	readOnly bool
}

// freeTID returns the lowest target id that no target of s uses.
func (s *tgtState) freeTID() int {
	used := make(map[int]bool, len(s.targets))
	for _, t := range s.targets {
		used[t.tid] = true
	}
	tid := 1
	for used[tid] {
		tid++
	}
	return tid
}

var targetLine = regexp.MustCompile(`^Target (\d+): (\S+)$`)

// parseTargets reads the output of `tgtadm --lld iscsi --op show --mode target`:
//
//	Target 1: iqn.2010-10.org.openstack:volume-v1
//	    System information:
//	        Driver: iscsi
//	        State: ready
//	    I_T nexus information:
//	        I_T nexus: 1
//	            Initiator: iqn.1994-05.com.redhat:client1 alias: host
//	    LUN information:
//	        LUN: 1
//	            Type: disk
//	            Readonly: No
//	            Backing store type: rdwr
//	            Backing store path: /srv/volume-v1
//	    Account information:
//	        volume-v1
//	        out-user (outgoing)
//	    ACL information:
//	        iqn.1994-05.com.redhat:client1
//
// It reads sections by name and keys by name, so fields it does not know are skipped.
func parseTargets(out string) (map[string]*tgtTarget, error) {
	targets := map[string]*tgtTarget{}
	var (
		t       *tgtTarget
		section string
		lun     = -1
	)
	for n, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " \t"))
		text := strings.TrimSpace(line)
		if indent == 0 {
			m := targetLine.FindStringSubmatch(text)
			if m == nil {
				return nil, fmt.Errorf("tgtadm show, line %d: unexpected %q", n+1, line)
			}
			tid, _ := strconv.Atoi(m[1])
			t = &tgtTarget{tid: tid, iqn: m[2], luns: map[int]tgtLUN{}}
			targets[t.iqn] = t
			section, lun = "", -1
			continue
		}
		if t == nil {
			return nil, fmt.Errorf("tgtadm show, line %d: %q outside a target", n+1, line)
		}
		if indent <= 4 {
			section, lun = strings.TrimSuffix(text, ":"), -1
			continue
		}
		switch section {
		case "I_T nexus information":
			if strings.HasPrefix(text, "I_T nexus:") {
				t.nexuses++
			}
		case "LUN information":
			key, val, _ := strings.Cut(text, ":")
			val = strings.TrimSpace(val)
			if key == "LUN" {
				lun, _ = strconv.Atoi(val)
				t.luns[lun] = tgtLUN{}
				continue
			}
			if lun < 0 {
				continue
			}
			l := t.luns[lun]
			switch key {
			case "Type":
				l.typ = val
			case "Backing store type":
				l.bsType = val
			case "Backing store path":
				l.path = val
			case "Readonly":
				l.readOnly = val == "Yes"
			}
			t.luns[lun] = l
		case "Account information":
			if !strings.HasSuffix(text, " (outgoing)") {
				t.accounts = append(t.accounts, text)
			}
		case "ACL information":
			t.acls = append(t.acls, text)
		}
	}
	return targets, nil
}

// parseAccounts reads the incoming accounts from the output of `tgtadm --op show --mode
// account`:
//
//	Account list:
//	    volume-v1
//	    out-user (outgoing)
func parseAccounts(out string) []string {
	var users []string
	for _, line := range strings.Split(out, "\n") {
		text := strings.TrimSpace(line)
		if text == "" || text == "Account list:" || strings.HasSuffix(text, " (outgoing)") {
			continue
		}
		users = append(users, text)
	}
	slices.Sort(users)
	return users
}

// parsePortals reads the portals (host:port, without the portal group) from the output of
// `tgtadm --lld iscsi --op show --mode portal`: "Portal: 127.0.0.1:3260,1".
func parsePortals(out string) []string {
	var portals []string
	for _, line := range strings.Split(out, "\n") {
		p, ok := strings.CutPrefix(strings.TrimSpace(line), "Portal: ")
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(p, ','); i >= 0 {
			p = p[:i]
		}
		portals = append(portals, p)
	}
	return portals
}
