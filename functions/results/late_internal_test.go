package results

import (
	"testing"

	"github.com/basalt-storage/basalt"
)

func TestUnowned(t *testing.T) {
	op := func(state string) *basalt.Operation { return &basalt.Operation{State: state} }
	vol := func(host string, status basalt.VolumeStatus) *basalt.Volume {
		return &basalt.Volume{Host: host, Status: status}
	}
	const backend = "h@b"
	for _, c := range []struct {
		name string
		op   *basalt.Operation
		v    *basalt.Volume
		want bool
	}{
		{"record gone", op(basalt.OpFailed), nil, true},
		{"record gone, operation gone", nil, nil, true},
		{"pending, placed here", op(basalt.OpPending), vol("h@b#pool", basalt.StatusCreating), false},
		{"pending, being placed again", op(basalt.OpPending), vol("", basalt.StatusCreating), false},
		{"pending, placed elsewhere since", op(basalt.OpPending), vol("g@b#pool", basalt.StatusCreating), true},
		{"failed here (lease ran out)", op(basalt.OpFailed), vol("h@b#pool", basalt.StatusError), true},
		{"failed, being deleted", op(basalt.OpFailed), vol("h@b#pool", basalt.StatusDeleting), true},
		{"failed, placement found nothing after", op(basalt.OpFailed), vol("", basalt.StatusError), true},
		{"failed, reset to available since", op(basalt.OpFailed), vol("h@b#pool", basalt.StatusAvailable), false},
		{"done here (a redelivery)", op(basalt.OpDone), vol("h@b#pool", basalt.StatusAvailable), false},
		{"done here, in error since (a failed revert)", op(basalt.OpDone), vol("h@b#pool", basalt.StatusError), false},
		{"done elsewhere", op(basalt.OpDone), vol("g@b#pool", basalt.StatusAvailable), true},
		{"operation expired, here", nil, vol("h@b#pool", basalt.StatusError), false},
	} {
		if got := unowned(c.op, c.v, backend); got != c.want {
			t.Errorf("%s: unowned(%+v, %+v, %s) = %v, want %v", c.name, c.op, c.v, backend, got, c.want)
		}
	}
}
