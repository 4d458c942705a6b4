package basalt_test

import (
	"testing"

	"github.com/basalt-storage/basalt"
)

func TestRecomputeAttachStatus(t *testing.T) {
	att := func(statuses ...string) []*basalt.Attachment {
		var out []*basalt.Attachment
		for i, s := range statuses {
			out = append(out, &basalt.Attachment{ID: string(rune('a' + i)), Status: s})
		}
		return out
	}
	cases := []struct {
		name       string
		status     basalt.VolumeStatus
		atts       []*basalt.Attachment
		wantStatus basalt.VolumeStatus
		wantAttach string
	}{
		{"none left", basalt.StatusInUse, nil, basalt.StatusAvailable, basalt.AttachDetached},
		{"one attached", basalt.StatusAttaching, att("attached"), basalt.StatusInUse, basalt.AttachAttached},
		{"attached wins over reserved", basalt.StatusReserved, att("reserved", "attached"), basalt.StatusInUse, basalt.AttachAttached},
		{"attaching before reserved", basalt.StatusInUse, att("reserved", "attaching"), basalt.StatusAttaching, basalt.AttachAttaching},
		{"reserved only", basalt.StatusAvailable, att("reserved"), basalt.StatusReserved, basalt.AttachReserved},
		{"errors are ignored", basalt.StatusAttaching, att("error_attaching"), basalt.StatusAvailable, basalt.AttachDetached},
		{"an operation keeps its status", basalt.StatusExtending, nil, basalt.StatusExtending, "was"},
		{"error keeps its status", basalt.StatusError, att("attached"), basalt.StatusError, "was"},
	}
	for _, c := range cases {
		v := &basalt.Volume{Status: c.status, AttachStatus: "was", Attachments: c.atts}
		v.RecomputeAttachStatus()
		if v.Status != c.wantStatus || v.AttachStatus != c.wantAttach {
			t.Errorf("%s: RecomputeAttachStatus() = %s/%s, want %s/%s", c.name, v.Status, v.AttachStatus, c.wantStatus, c.wantAttach)
		}
	}
}

func TestVolumeAttachments(t *testing.T) {
	v := &basalt.Volume{Attachments: []*basalt.Attachment{{ID: "a"}, {ID: "b"}, {ID: "c"}}}
	if v.Attachment("b") == nil || v.Attachment("x") != nil {
		t.Errorf("Attachment lookup wrong: b=%v x=%v", v.Attachment("b"), v.Attachment("x"))
	}
	if !v.RemoveAttachment("b") || v.RemoveAttachment("b") || len(v.Attachments) != 2 || v.Attachments[1].ID != "c" {
		t.Errorf("RemoveAttachment(b) left %v", v.Attachments)
	}
}
