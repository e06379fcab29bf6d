// Package invariants holds checks that cost nothing unless the program is
// built with the invariants build tag (make test does; so do race builds).
// Code guards expensive assertions with `if invariants.Enabled`, so the
// compiler drops them from normal builds.
package invariants

import "fmt"

// Failf reports a broken invariant: it panics with an "assertion failed"
// message. Callers use it only under `if Enabled`, or where the broken
// state would corrupt data if execution went on.
func Failf(format string, args ...any) {
	panic(fmt.Sprintf("assertion failed: "+format, args...))
}
