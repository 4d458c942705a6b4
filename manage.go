package basalt

// Statuses of adopting a backend object (Cinder's manage_existing) and of letting one go
// (unmanage). An adopted volume is managing until its backend confirms the object; a failed
// adoption is error_managing (StatusErrorManaging). An unmanaged volume is unmanaging until its
// backend has removed its exports, then its record is gone and the object stays.
const (
	StatusManaging        VolumeStatus = "managing"
	StatusUnmanaging      VolumeStatus = "unmanaging"
	StatusErrorUnmanaging VolumeStatus = "error_unmanaging"
)

// ShownStatus returns the status Cinder's API shows for s: the internal statuses of an
// adoption read as those of a create (managing as creating, error_managing as error), so that
// clients waiting for a create wait for an adoption alike. Every other status shows as itself.
func (s VolumeStatus) ShownStatus() VolumeStatus {
	switch s {
	case StatusManaging:
		return StatusCreating
	case StatusErrorManaging:
		return StatusError
	}
	return s
}
