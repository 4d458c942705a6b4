package basalt

import (
	"errors"
	"fmt"
)

// Error codes. Each names a class of failure that the API maps to exactly one HTTP fault
// (functions/api does the mapping, in one function).
const (
	EINVALID     = "invalid"     // the caller's request is wrong: 400
	EFORBIDDEN   = "forbidden"   // the caller may not do this: 403
	ENOTFOUND    = "not_found"   // the resource does not exist or is not the caller's: 404
	ECONFLICT    = "conflict"    // the resource's state forbids it right now: 409
	EOVERLIMIT   = "over_limit"  // a quota or size limit: 413
	EUNAVAILABLE = "unavailable" // a dependency is down; retry later: 503
	EINTERNAL    = "internal"    // a bug or an unexpected failure: 500
)

// Error is a domain error: a code from the list above and a message meant for the user.
// Messages are full sentences in Cinder's wording where Cinder has one.
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for any other
// non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the user-facing message of the first *Error in err's chain. Other errors
// are internal: their text may leak implementation details, so a generic sentence is returned.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	default:
		return "The server has either erred or is incapable of performing the requested operation."
	}
}
