package control_test

import (
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
)

// items returns n metadata items named prefix0..prefix<n-1>.
func items(prefix string, n int) map[string]string {
	md := map[string]string{}
	for i := range n {
		md[fmt.Sprintf("%s%d", prefix, i)] = "v"
	}
	return md
}

// wantRefused checks that err is EINVALID with a message containing every one of parts.
func wantRefused(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if basalt.ErrorCode(err) != basalt.EINVALID {
		t.Errorf("%s = %v (%s), want EINVALID", what, err, basalt.ErrorCode(err))
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s = %q, want it to contain %q", what, err.Error(), p)
		}
	}
}

func ptr(s string) *string { return &s }

// TestStoredTextRefusesControlCharacters: names, descriptions, metadata values, type names and
// descriptions, extra-spec keys and values with a control character or invalid UTF-8 are
// refused with EINVALID naming the field, by every path, and nothing is stored; the same
// strings without it (255 characters included) pass.
func TestStoredTextRefusesControlCharacters(t *testing.T) {
	b := newBench(t)
	bad := map[string]string{"NUL": "a\x00b", "newline": "a\nb", "unit separator": "a\x1f", "DEL": "a\x7fb", "invalid UTF-8": "a\xffb"}
	for what, s := range bad {
		want := "must not contain control characters"
		if what == "invalid UTF-8" {
			want = "must be valid UTF-8"
		}
		_, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Name: ptr(s)})
		wantRefused(t, "create volume with a name with "+what, err, "field/attribute name", want)
		if what != "newline" { // a description may hold line breaks and tabs (below)
			_, err = b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Description: ptr(s)})
			wantRefused(t, "create volume with a description with "+what, err, "field/attribute description", want)
		}
		_, err = b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Metadata: map[string]string{"k": s}})
		wantRefused(t, "create volume with a metadata value with "+what, err, "field/attribute metadata", `"k"`, want)
		_, err = b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Metadata: map[string]string{s: "v"}})
		wantRefused(t, "create volume with a metadata key with "+what, err, "field/attribute metadata")
		_, err = b.p.CreateType(b.root, control.TypeCreate{Name: s})
		wantRefused(t, "create type named with "+what, err, "field/attribute name", want)
		_, err = b.p.CreateType(b.root, control.TypeCreate{Name: "t", ExtraSpecs: map[string]string{"k": s}})
		wantRefused(t, "create type with an extra-spec value with "+what, err, "field/attribute extra_specs", want)
		_, err = b.p.CreateType(b.root, control.TypeCreate{Name: "t", ExtraSpecs: map[string]string{s: "v"}})
		wantRefused(t, "create type with an extra-spec key with "+what, err, "field/attribute extra_specs", want)
	}
	if vols, err := b.st.Volumes(b.member, ""); err != nil || len(vols) != 0 {
		t.Errorf("volumes after refused creates = %d, %v; want none", len(vols), err)
	}
	if n := b.inUse(t, "volumes"); n != 0 {
		t.Errorf("volumes charged after refused creates = %d, want 0", n)
	}
	if types, err := b.st.Types(b.member); err != nil || len(types) > 1 {
		t.Errorf("types after refused creates = %d, %v; want at most the default", len(types), err)
	}

	// At the limits, and with characters that are not control characters, everything passes.
	long := strings.Repeat("é", 127) + "x" // 255 bytes
	if _, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Name: ptr(long), Description: ptr("tab-free text, ünïcödé ✓"),
		Metadata: map[string]string{strings.Repeat("k", 255): long}}); err != nil {
		t.Fatalf("create volume at the limits = %v", err)
	}
	vt, err := b.p.CreateType(b.root, control.TypeCreate{Name: long, Description: ptr(long), ExtraSpecs: map[string]string{strings.Repeat("k", 255): long}})
	if err != nil {
		t.Fatalf("create type at the limits = %v", err)
	}

	// Updates and metadata changes are checked the same way, and change nothing when refused.
	v := b.volume(t, 1, basalt.StatusAvailable)
	sn := b.snapshot(t, v.ID)
	_, err = b.p.UpdateVolume(b.member, v.ID, control.VolumeUpdate{Name: ptr("x\x00")})
	wantRefused(t, "rename a volume with NUL", err, "field/attribute name")
	_, err = b.p.UpdateVolume(b.member, v.ID, control.VolumeUpdate{Metadata: map[string]string{"k": "\x00"}})
	wantRefused(t, "update a volume's metadata with NUL", err, "field/attribute metadata")
	for _, replace := range []bool{false, true} {
		_, err = b.p.SetVolumeMetadata(b.member, v.ID, map[string]string{"k": "x\ty"}, replace)
		wantRefused(t, fmt.Sprintf("set volume metadata (replace %v) with a tab", replace), err, "field/attribute metadata")
		_, err = b.p.SetSnapshotMetadata(b.member, sn.ID, map[string]string{"k": "x\x00"}, replace)
		wantRefused(t, fmt.Sprintf("set snapshot metadata (replace %v) with NUL", replace), err, "field/attribute metadata")
	}
	_, err = b.p.UpdateSnapshot(b.member, sn.ID, control.SnapshotUpdate{Description: ptr("\x00")})
	wantRefused(t, "describe a snapshot with NUL", err, "field/attribute description")
	_, err = b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: v.ID, Force: true, Name: ptr("\x1b[31m")})
	wantRefused(t, "create a snapshot named with ESC", err, "field/attribute name")
	if got := b.get(t, v.ID); got.Name != nil || len(got.Metadata) != 0 {
		t.Errorf("volume after refused changes: name %v metadata %v, want unchanged", got.Name, got.Metadata)
	}
	if got := b.getSnap(t, sn.ID); got.Description != nil || len(got.Metadata) != 0 {
		t.Errorf("snapshot after refused changes: description %v metadata %v, want unchanged", got.Description, got.Metadata)
	}
	if n := b.inUse(t, "snapshots"); n != 1 {
		t.Errorf("snapshots charged = %d, want 1 (the refused create charges nothing)", n)
	}
	_, err = b.p.UpdateType(b.root, vt.ID, control.TypeUpdate{Name: ptr("g\x00ld")})
	wantRefused(t, "rename a type with NUL", err, "field/attribute name")
	_, err = b.p.UpdateType(b.root, vt.ID, control.TypeUpdate{Description: ptr("\x7f")})
	wantRefused(t, "describe a type with DEL", err, "field/attribute description")
	_, err = b.p.SetExtraSpecs(b.root, vt.ID, map[string]string{"k": "\x00"})
	wantRefused(t, "set an extra spec with NUL", err, "field/attribute extra_specs")
	if got, _ := b.st.Type(b.root, vt.ID); got.Name != long || *got.Description != long || len(got.ExtraSpecs) != 1 {
		t.Errorf("type after refused changes = %+v, want unchanged", got)
	}
	// A multi-line description, as Cinder's clients write one, is kept.
	if v, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Description: ptr("line one\n\tline two\r\n")}); err != nil ||
		v.Description == nil || *v.Description != "line one\n\tline two\r\n" {
		t.Errorf("create volume with a multi-line description = %v, %v; want it kept", v, err)
	}
}

// TestMetadataAndExtraSpecCaps: a create, an update, a replace or a merge that would leave a
// volume or a snapshot with more metadata items than MaxMetadataItems, or a type with more
// extra specs than MaxExtraSpecs, is refused with the cap and the count, and stores nothing;
// exactly the cap passes, and so does a merge that only overwrites.
func TestMetadataAndExtraSpecCaps(t *testing.T) {
	b := newBench(t)
	b.p = control.New(control.Config{MaxMetadataItems: 3, MaxExtraSpecs: 2}, b.st, b.pub, slog.New(slog.DiscardHandler))

	_, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Metadata: items("k", 4)})
	wantRefused(t, "create a volume with 4 metadata items", err, "Invalid input received: metadata would have 4 items, more than the 3 allowed.")
	if vols, _ := b.st.Volumes(b.member, ""); len(vols) != 0 || b.inUse(t, "volumes") != 0 {
		t.Errorf("after a refused create: %d volumes, %d charged; want none", len(vols), b.inUse(t, "volumes"))
	}
	if _, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Metadata: items("k", 3)}); err != nil {
		t.Errorf("create a volume with 3 metadata items = %v, want it accepted", err)
	}

	v := b.volume(t, 1, basalt.StatusAvailable)
	_, err = b.p.UpdateVolume(b.member, v.ID, control.VolumeUpdate{Metadata: items("k", 4)})
	wantRefused(t, "update a volume to 4 metadata items", err, "would have 4 items", "3 allowed")
	if _, err := b.p.UpdateVolume(b.member, v.ID, control.VolumeUpdate{Metadata: items("a", 2)}); err != nil {
		t.Fatalf("update a volume to 2 metadata items = %v", err)
	}
	// The merge is counted on its result: 2 + 1 new passes, then 1 more new does not.
	if md, err := b.p.SetVolumeMetadata(b.member, v.ID, items("b", 1), false); err != nil || len(md) != 3 {
		t.Fatalf("merge a third item = %v, %v; want 3 items", md, err)
	}
	_, err = b.p.SetVolumeMetadata(b.member, v.ID, map[string]string{"a0": "new", "c0": "v"}, false)
	wantRefused(t, "merge a fourth item", err, "Invalid input received: metadata would have 4 items, more than the 3 allowed.")
	want := map[string]string{"a0": "v", "a1": "v", "b0": "v"}
	if got := b.get(t, v.ID).Metadata; !maps.Equal(got, want) {
		t.Errorf("metadata after the refused merge = %v, want %v", got, want)
	}
	if md, err := b.p.SetVolumeMetadata(b.member, v.ID, map[string]string{"a0": "w", "b0": "w"}, false); err != nil || len(md) != 3 {
		t.Errorf("merge that only overwrites at the cap = %v, %v; want accepted", md, err)
	}
	_, err = b.p.SetVolumeMetadata(b.member, v.ID, items("z", 4), true)
	wantRefused(t, "replace with 4 items", err, "would have 4 items")
	if md, err := b.p.SetVolumeMetadata(b.member, v.ID, items("z", 3), true); err != nil || len(md) != 3 {
		t.Errorf("replace with 3 items = %v, %v; want accepted", md, err)
	}

	_, err = b.p.CreateSnapshot(b.member, control.SnapshotCreate{VolumeID: v.ID, Force: true, Metadata: items("k", 4)})
	wantRefused(t, "create a snapshot with 4 metadata items", err, "would have 4 items", "3 allowed")
	if n := b.inUse(t, "snapshots"); n != 0 {
		t.Errorf("snapshots charged after a refused create = %d, want 0", n)
	}
	sn := b.snapshot(t, v.ID)
	if _, err := b.p.SetSnapshotMetadata(b.member, sn.ID, items("a", 3), false); err != nil {
		t.Fatalf("merge 3 items into a snapshot = %v", err)
	}
	_, err = b.p.SetSnapshotMetadata(b.member, sn.ID, items("b", 1), false)
	wantRefused(t, "merge a fourth item into a snapshot", err, "would have 4 items", "3 allowed")
	if got := b.getSnap(t, sn.ID).Metadata; !maps.Equal(got, items("a", 3)) {
		t.Errorf("snapshot metadata after the refused merge = %v, want %v", got, items("a", 3))
	}

	_, err = b.p.CreateType(b.root, control.TypeCreate{Name: "big", ExtraSpecs: items("k", 3)})
	wantRefused(t, "create a type with 3 extra specs", err, "Invalid input received: extra_specs would have 3 items, more than the 2 allowed.")
	if _, err := b.st.TypeByName(b.root, "big"); basalt.ErrorCode(err) != basalt.ENOTFOUND {
		t.Errorf("type after a refused create: %v, want ENOTFOUND", err)
	}
	vt, err := b.p.CreateType(b.root, control.TypeCreate{Name: "gold", ExtraSpecs: items("k", 1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.p.SetExtraSpecs(b.root, vt.ID, items("m", 1)); err != nil {
		t.Fatalf("merge a second extra spec = %v", err)
	}
	_, err = b.p.SetExtraSpecs(b.root, vt.ID, items("n", 1))
	wantRefused(t, "merge a third extra spec", err, "extra_specs would have 3 items, more than the 2 allowed")
	if got, _ := b.st.Type(b.root, vt.ID); !maps.Equal(got.ExtraSpecs, map[string]string{"k0": "v", "m0": "v"}) {
		t.Errorf("extra specs after the refused merge = %v", got.ExtraSpecs)
	}
}

// TestMetadataCapDefault: without configuration the cap is 128 items.
func TestMetadataCapDefault(t *testing.T) {
	b := newBench(t)
	if c := b.p.Config(); c.MaxMetadataItems != 128 || c.MaxExtraSpecs != 128 {
		t.Errorf("default caps = %d metadata items, %d extra specs; want 128 and 128", c.MaxMetadataItems, c.MaxExtraSpecs)
	}
	if _, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Metadata: items("k", 128)}); err != nil {
		t.Errorf("create with 128 items = %v", err)
	}
	_, err := b.p.CreateVolume(b.member, control.VolumeCreate{Size: 1, Metadata: items("k", 40000)})
	wantRefused(t, "create with 40000 items", err, "metadata would have 40000 items, more than the 128 allowed")
}
