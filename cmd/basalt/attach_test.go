package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/agents"
)

// The attach state machine on the real binary, with the local target protocol (the volume's
// path handed to consumers on the host): the attachments API, the legacy actions, multiattach,
// and the refusals an attached volume gets.

const mv = "OpenStack-API-Version"

// attachStack starts a stack with one file backend on host h1 that exports with protocol.
func attachStack(t *testing.T, protocol string) *stack {
	s := newStack(t, stackOptions{env: []string{"BASALT_CALL_TIMEOUT=10s"}})
	b := fileBackend("b1")
	b.TargetProtocol = protocol
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{b}})
	return s
}

func (s *stack) availableVolume(token, body string) string {
	s.t.Helper()
	id := s.createVolume(token, body)
	if v := s.waitFinal(id, 20*time.Second); v["status"] != "available" {
		s.t.Fatalf("volume %s = %v (%v), want available", id, v["status"], v["status_reason"])
	}
	return id
}

// attachment returns attachment id's detailed view.
func (s *stack) attachment(token, id string) map[string]any {
	s.t.Helper()
	r := s.do(token, "GET", "/v3/attachments/"+id, "", mv, "volume 3.54")
	if r.status != 200 {
		s.t.Fatalf("show attachment %s = %d %s", id, r.status, r.raw)
	}
	return r.body["attachment"].(map[string]any)
}

func TestE2EAttachmentsAPI(t *testing.T) {
	s := attachStack(t, "local")
	vid := s.availableVolume("alice:p1", `{"volume":{"size":1}}`)

	// Before 3.27 there is no attachments API.
	if r := s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q}}`, vid)); r.status != 404 {
		t.Errorf("create attachment at 3.0 = %d %s, want 404", r.status, r.raw)
	}
	// Reserve without a connector: the volume is reserved.
	r := s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"inst-1"}}`, vid), mv, "volume 3.54")
	if r.status != 200 {
		t.Fatalf("create attachment = %d %s", r.status, r.raw)
	}
	att := r.body["attachment"].(map[string]any)
	aid := att["id"].(string)
	if att["status"] != "reserved" || att["instance"] != "inst-1" || att["attach_mode"] != "null" || att["attached_at"] != "" {
		t.Errorf("new attachment = %v, want reserved for inst-1, attach_mode null, attached_at \"\"", att)
	}
	if v := s.volume(vid); v["status"] != "reserved" {
		t.Errorf("volume after reserve = %v, want reserved", v["status"])
	}
	// A second attachment of this non-multiattach volume by another instance is refused.
	r = s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"inst-2"}}`, vid), mv, "volume 3.54")
	if r.status != 400 || !strings.Contains(r.raw, "status must be available to reserve, but the current status is reserved") {
		t.Errorf("second attachment = %d %s, want 400 naming the status", r.status, r.raw)
	}
	// The same instance may (a live migration).
	r = s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"inst-1"}}`, vid), mv, "volume 3.54")
	if r.status != 200 {
		t.Fatalf("same-instance attachment = %d %s, want 200", r.status, r.raw)
	}
	migr := r.body["attachment"].(map[string]any)["id"].(string)
	if r := s.do("alice:p1", "DELETE", "/v3/attachments/"+migr, "", mv, "volume 3.54"); r.status != 200 || !strings.Contains(r.raw, aid) {
		t.Errorf("delete the migration attachment = %d %s, want 200 listing %s", r.status, r.raw, aid)
	}

	// Connect it: the agent answers with the connection info.
	connector := `{"initiator":"iqn.1993-08.org.debian:01:abc","host":"compute-1","ip":"127.0.0.1","mountpoint":"/dev/vdb"}`
	r = s.do("alice:p1", "PUT", "/v3/attachments/"+aid, `{"attachment":{"connector":`+connector+`}}`, mv, "volume 3.54")
	if r.status != 200 {
		t.Fatalf("update attachment = %d %s", r.status, r.raw)
	}
	ci := r.body["attachment"].(map[string]any)["connection_info"].(map[string]any)
	if ci["driver_volume_type"] != "local" || ci["attachment_id"] != aid || !strings.HasSuffix(fmt.Sprint(ci["device_path"]), vid) ||
		ci["access_mode"] != "rw" || ci["encrypted"] != false {
		t.Errorf("connection_info = %v, want flat local info with device_path, attachment_id, access_mode rw", ci)
	}
	if a := s.attachment("alice:p1", aid); a["status"] != "attaching" {
		t.Errorf("attachment after update = %v, want attaching", a["status"])
	}
	if v := s.volume(vid); v["status"] != "attaching" {
		t.Errorf("volume after update = %v, want attaching", v["status"])
	}
	// os-complete is 3.44+.
	if r := s.do("alice:p1", "POST", "/v3/attachments/"+aid+"/action", `{"os-complete":null}`, mv, "volume 3.43"); r.status != 400 {
		t.Errorf("os-complete at 3.43 = %d %s, want 400", r.status, r.raw)
	}
	if r := s.do("alice:p1", "POST", "/v3/attachments/"+aid+"/action", `{"os-complete":null}`, mv, "volume 3.44"); r.status != 204 {
		t.Fatalf("os-complete = %d %s, want 204", r.status, r.raw)
	}
	a := s.attachment("alice:p1", aid)
	if a["status"] != "attached" || a["attached_at"] == "" {
		t.Errorf("attachment after complete = %v, want attached with attached_at", a)
	}
	v := s.volume(vid)
	atts := v["attachments"].([]any)
	if v["status"] != "in-use" || len(atts) != 1 {
		t.Fatalf("volume after complete = %v with %v, want in-use with one attachment", v["status"], atts)
	}
	va := atts[0].(map[string]any)
	if va["attachment_id"] != aid || va["server_id"] != "inst-1" || va["device"] != "/dev/vdb" || va["host_name"] != "compute-1" || va["id"] != vid {
		t.Errorf("volume's attachment = %v", va)
	}

	// An in-use volume is neither deleted nor reverted.
	if r := s.do("alice:p1", "DELETE", "/v3/volumes/"+vid, ""); r.status != 400 {
		t.Errorf("delete in-use volume = %d %s, want 400", r.status, r.raw)
	}
	if r := s.do("alice:p1", "POST", "/v3/snapshots", fmt.Sprintf(`{"snapshot":{"volume_id":%q,"force":true}}`, vid)); r.status == 202 {
		sid := r.body["snapshot"].(map[string]any)["id"].(string)
		s.eventually(20*time.Second, func() (bool, string) {
			r := s.do("alice:p1", "GET", "/v3/snapshots/"+sid, "")
			return r.body["snapshot"].(map[string]any)["status"] == "available", r.raw
		}, "snapshot available")
		if r := s.do("alice:p1", "POST", "/v3/volumes/"+vid+"/action", fmt.Sprintf(`{"revert":{"snapshot_id":%q}}`, sid), mv, "volume 3.40"); r.status != 409 {
			t.Errorf("revert in-use volume = %d %s, want 409 as Cinder answers", r.status, r.raw)
		}
	}

	// Filters and listing.
	r = s.do("alice:p1", "GET", "/v3/attachments?volume_id="+vid+"&instance_id=inst-1", "", mv, "volume 3.27")
	if list := r.body["attachments"].([]any); r.status != 200 || len(list) != 1 || list[0].(map[string]any)["status"] != "attached" {
		t.Errorf("list by volume and instance = %d %s", r.status, r.raw)
	}
	if r := s.do("alice:p1", "GET", "/v3/attachments?status=reserved", "", mv, "volume 3.27"); len(r.body["attachments"].([]any)) != 0 {
		t.Errorf("list status=reserved = %s, want none", r.raw)
	}
	if r := s.do("bob:p2", "GET", "/v3/attachments/"+aid, "", mv, "volume 3.27"); r.status != 404 {
		t.Errorf("another project shows the attachment: %d", r.status)
	}
	if r := s.do("admin:admin", "GET", "/v3/attachments/detail?all_tenants=1", "", mv, "volume 3.27"); !strings.Contains(r.raw, aid) {
		t.Errorf("admin all_tenants list lacks the attachment: %s", r.raw)
	}

	// Delete: 200 with what remains, and the volume is available again.
	r = s.do("alice:p1", "DELETE", "/v3/attachments/"+aid, "", mv, "volume 3.27")
	if r.status != 200 || len(r.body["attachments"].([]any)) != 0 {
		t.Errorf("delete attachment = %d %s, want 200 with no attachments", r.status, r.raw)
	}
	if v := s.volume(vid); v["status"] != "available" || len(v["attachments"].([]any)) != 0 {
		t.Errorf("volume after delete = %v %v, want available without attachments", v["status"], v["attachments"])
	}
	if r := s.do("alice:p1", "GET", "/v3/attachments/"+aid, "", mv, "volume 3.27"); r.status != 404 {
		t.Errorf("deleted attachment shows %d", r.status)
	}

	// Create with a connector and mode ro (3.54): one call, connected, read-only.
	r = s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"inst-3","mode":"ro","connector":%s}}`, vid, connector), mv, "volume 3.54")
	if r.status != 200 {
		t.Fatalf("create with connector = %d %s", r.status, r.raw)
	}
	att = r.body["attachment"].(map[string]any)
	if att["attach_mode"] != "ro" || att["connection_info"].(map[string]any)["access_mode"] != "ro" {
		t.Errorf("ro attachment = %v, want attach_mode ro and access_mode ro", att)
	}
	if r := s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"mode":"rx"}}`, vid), mv, "volume 3.54"); r.status != 400 {
		t.Errorf("mode rx = %d %s, want 400", r.status, r.raw)
	}
	s.do("alice:p1", "DELETE", "/v3/attachments/"+att["id"].(string), "", mv, "volume 3.54")

	// A volume in error is not attached.
	s.do("admin:admin", "POST", "/v3/volumes/"+vid+"/action", `{"os-reset_status":{"status":"error"}}`)
	if r := s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q}}`, vid), mv, "volume 3.54"); r.status != 400 || !strings.Contains(r.raw, "error state") {
		t.Errorf("attach a volume in error = %d %s, want 400", r.status, r.raw)
	}
}

func TestE2ELegacyAttach(t *testing.T) {
	s := attachStack(t, "local")
	vid := s.availableVolume("alice:p1", `{"volume":{"size":1}}`)
	act := func(body string, want int) response {
		t.Helper()
		r := s.do("alice:p1", "POST", "/v3/volumes/"+vid+"/action", body)
		if r.status != want {
			t.Fatalf("action %s = %d %s, want %d", body, r.status, r.raw, want)
		}
		return r
	}
	status := func(want string) {
		t.Helper()
		if v := s.volume(vid); v["status"] != want {
			t.Fatalf("volume status = %v, want %s", v["status"], want)
		}
	}
	// Nova's legacy attach: reserve, initialize_connection, attach.
	act(`{"os-reserve":{}}`, 202)
	status("attaching")
	act(`{"os-reserve":{}}`, 400) // already attaching
	act(`{"os-unreserve":{}}`, 202)
	status("available")
	act(`{"os-reserve":null}`, 202)
	r := act(`{"os-initialize_connection":{"connector":{"host":"compute-1","initiator":"iqn.x"}}}`, 200)
	ci := r.body["connection_info"].(map[string]any)
	data := ci["data"].(map[string]any)
	if ci["driver_volume_type"] != "local" || data["access_mode"] != "rw" || data["device_path"] == nil || ci["enforce_multipath"] != false {
		t.Errorf("connection_info = %v", ci)
	}
	status("attaching")
	act(`{"os-attach":{"instance_uuid":"inst-1","mountpoint":"/dev/vdb","host_name":"compute-1","mode":"rw"}}`, 202)
	status("in-use")
	v := s.volume(vid)
	if atts := v["attachments"].([]any); len(atts) != 1 || atts[0].(map[string]any)["server_id"] != "inst-1" {
		t.Fatalf("attachments = %v", atts)
	}
	aid := v["attachments"].([]any)[0].(map[string]any)["attachment_id"].(string)
	act(`{"os-attach":{"instance_uuid":"inst-2","mountpoint":"/dev/vdc","mode":"rw"}}`, 400) // not multiattach
	// Nova's detach: begin_detaching, terminate_connection, detach.
	act(`{"os-begin_detaching":{}}`, 202)
	status("detaching")
	act(`{"os-roll_detaching":{}}`, 202)
	status("in-use")
	act(`{"os-begin_detaching":{}}`, 202)
	act(`{"os-terminate_connection":{"connector":{"host":"compute-1","initiator":"iqn.x"}}}`, 202)
	act(fmt.Sprintf(`{"os-detach":{"attachment_id":%q}}`, aid), 202)
	status("available")
	act(`{"os-detach":{"attachment_id":"nope"}}`, 400)

	// A read-only volume attaches ro only.
	act(`{"os-update_readonly_flag":{"readonly":true}}`, 202)
	act(`{"os-attach":{"instance_uuid":"inst-1","mountpoint":"/dev/vdb","mode":"rw"}}`, 400)
	act(`{"os-attach":{"instance_uuid":"inst-1","mountpoint":"/dev/vdb","mode":"ro"}}`, 202)
	status("in-use")
	r = act(`{"os-initialize_connection":{"connector":{"host":"compute-1"}}}`, 200)
	if m := r.body["connection_info"].(map[string]any)["data"].(map[string]any)["access_mode"]; m != "ro" {
		t.Errorf("read-only volume's access_mode = %v, want ro", m)
	}
	// force_detach is an admin's.
	if r := s.do("alice:p1", "POST", "/v3/volumes/"+vid+"/action", `{"os-force_detach":{}}`); r.status != 403 {
		t.Errorf("member force_detach = %d, want 403", r.status)
	}
	if r := s.do("admin:admin", "POST", "/v3/volumes/"+vid+"/action", `{"os-force_detach":{}}`); r.status != 202 {
		t.Fatalf("admin force_detach = %d %s", r.status, r.raw)
	}
	status("available")
	if v := s.volume(vid); len(v["attachments"].([]any)) != 0 {
		t.Errorf("attachments after force_detach = %v", v["attachments"])
	}
}

func TestE2ELegacyReserveExpires(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"BASALT_OPERATION_TIMEOUT=2s"}})
	s.addAgent(agents.Config{Host: "h1", Backends: []agents.BackendConfig{fileBackend("b1")}})
	vid := s.availableVolume("alice:p1", `{"volume":{"size":1}}`)
	if r := s.do("alice:p1", "POST", "/v3/volumes/"+vid+"/action", `{"os-reserve":{}}`); r.status != 202 {
		t.Fatalf("reserve = %d %s", r.status, r.raw)
	}
	// Nothing follows the reserve: the reconciler ends it, and the volume is available again.
	s.eventually(15*time.Second, func() (bool, string) {
		st := s.volume(vid)["status"].(string)
		return st == "available", st
	}, "an abandoned reserve expires")
}

func TestE2EMultiattach(t *testing.T) {
	s := attachStack(t, "local")
	if r := s.do("admin:admin", "POST", "/v3/types", `{"volume_type":{"name":"shared","extra_specs":{"multiattach":"<is> True"}}}`); r.status != 200 {
		t.Fatalf("create type = %d %s", r.status, r.raw)
	}
	r := s.do("alice:p1", "POST", "/v3/volumes", `{"volume":{"size":1,"volume_type":"shared"}}`)
	if r.status != 202 || r.body["volume"].(map[string]any)["multiattach"] != true {
		t.Fatalf("create multiattach volume = %d %s, want multiattach true", r.status, r.raw)
	}
	vid := r.body["volume"].(map[string]any)["id"].(string)
	if v := s.waitFinal(vid, 20*time.Second); v["status"] != "available" {
		t.Fatalf("multiattach volume = %v (%v)", v["status"], v["status_reason"])
	}
	var ids []string
	for i, host := range []string{"compute-1", "compute-2"} {
		r := s.do("alice:p1", "POST", "/v3/attachments", fmt.Sprintf(`{"attachment":{"volume_uuid":%q,"instance_uuid":"inst-%d","connector":{"host":%q,"initiator":"iqn.%d"}}}`, vid, i, host, i), mv, "volume 3.54")
		if r.status != 200 {
			t.Fatalf("attachment %d = %d %s", i, r.status, r.raw)
		}
		id := r.body["attachment"].(map[string]any)["id"].(string)
		ids = append(ids, id)
		if r := s.do("alice:p1", "POST", "/v3/attachments/"+id+"/action", `{"os-complete":{}}`, mv, "volume 3.54"); r.status != 204 {
			t.Fatalf("complete %d = %d %s", i, r.status, r.raw)
		}
	}
	v := s.volume(vid)
	if v["status"] != "in-use" || len(v["attachments"].([]any)) != 2 {
		t.Fatalf("multiattached volume = %v with %v, want in-use with two attachments", v["status"], v["attachments"])
	}
	r = s.do("alice:p1", "DELETE", "/v3/attachments/"+ids[0], "", mv, "volume 3.54")
	if rest := r.body["attachments"].([]any); r.status != 200 || len(rest) != 1 || rest[0].(map[string]any)["id"] != ids[1] {
		t.Errorf("delete one of two = %d %s, want the other remaining", r.status, r.raw)
	}
	if v := s.volume(vid); v["status"] != "in-use" {
		t.Errorf("volume with one attachment left = %v, want in-use", v["status"])
	}
	s.do("alice:p1", "DELETE", "/v3/attachments/"+ids[1], "", mv, "volume 3.54")
	if v := s.volume(vid); v["status"] != "available" {
		t.Errorf("volume with none left = %v, want available", v["status"])
	}

	// A multiattach type lands only on pools that report multiattach: the fake driver's do not.
	s.addAgent(agents.Config{Host: "h2", Backends: []agents.BackendConfig{{Name: "f1", Driver: "fake"}}})
	for i := 0; i < 4; i++ {
		id := s.createVolume("alice:p1", `{"volume":{"size":1,"volume_type":"shared"}}`)
		v := s.waitFinal(id, 20*time.Second)
		if host, _ := v["os-vol-host-attr:host"].(string); v["status"] != "available" || !strings.HasPrefix(host, "h1@b1") {
			t.Errorf("multiattach volume %d on %q (%v), want h1@b1", i, host, v["status"])
		}
	}
	id := s.createVolume("alice:p1", `{"volume":{"size":1}}`)
	_ = s.waitFinal(id, 20*time.Second)
}
