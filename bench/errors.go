package bench

import (
	"errors"
	"fmt"
)

// UsageError is a bad flag value, a missing device, a size past the end
// of the device or a page size it cannot take: the message names the
// value. wbbench prints it as one line and exits with status 2, having
// written nothing.
type UsageError struct {
	Msg string
}

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// RefusedError is a target wbbench will not write to without -force:
// it is mounted, held open exclusively, in use by another block device,
// or carries a file-system or partition-table signature.
type RefusedError struct {
	Path   string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refusing to write to %s: %s; writing would destroy what is on it (pass -force to write anyway)", e.Path, e.Reason)
}

// IsUsage reports whether err is a UsageError or a RefusedError: the
// run wrote nothing, and wbbench exits with status 2.
func IsUsage(err error) bool {
	var u *UsageError
	var r *RefusedError
	return errors.As(err, &u) || errors.As(err, &r)
}
