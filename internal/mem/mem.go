// Package mem holds small memory helpers the engine shares. It is one of
// the project's few files that use unsafe (for a size).
package mem

import "unsafe"

// Prefault writes the zero value over every 4 KiB of s, so the kernel
// backs freshly allocated memory now rather than at its first use: a
// structure sized at Open for the whole cache would otherwise cost the
// first writeback pass tens of MB of page faults that later passes do
// not pay.
func Prefault[T any](s []T) {
	var zero T
	if len(s) == 0 {
		return
	}
	stride := max(1, 4096/int(unsafe.Sizeof(zero)))
	for i := 0; i < len(s); i += stride {
		s[i] = zero
	}
}
