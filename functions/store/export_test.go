package store

import "github.com/basalt-storage/basalt"

// SortMemberForTest is sortMember ("" is created_at): a volume's key in a sort's order.
func SortMemberForTest(field string, v *basalt.Volume) string {
	if field == "" {
		field = ixCreated
	}
	return sortMember(field, v)
}
