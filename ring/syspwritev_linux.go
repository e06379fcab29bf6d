package ring

// Raw pwritev2/preadv2/fdatasync for the pool backend: x/sys/unix's
// Pwritev2 takes [][]byte and allocates an iovec array per call, while
// the engine already hands us iovecs.

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// uintptrBits is the width of uintptr (the syscall ABI's long).
const uintptrBits = 32 << (^uintptr(0) >> 63)

// offHiLo splits off into the (pos_l, pos_h) pair pwritev2 and preadv2
// take; on 64-bit kernels pos_h is 0.
func offHiLo(off int64) (lo, hi uintptr) {
	return uintptr(off), uintptr(uint64(off) >> (uintptrBits - 1) >> 1)
}

// pwritev2 writes the n iovecs at iov to fd at off with RWF flags. It
// returns the errno without allocating.
func pwritev2(fd int, iov *unix.Iovec, n int, off int64, flags uint32) (int64, unix.Errno) {
	lo, hi := offHiLo(off)
	r, _, e := unix.Syscall6(unix.SYS_PWRITEV2, uintptr(fd), uintptr(unsafe.Pointer(iov)), uintptr(n), lo, hi, uintptr(flags))
	return int64(r), e
}

// preadv2 reads into the n iovecs at iov from fd at off with RWF flags.
func preadv2(fd int, iov *unix.Iovec, n int, off int64, flags uint32) (int64, unix.Errno) {
	lo, hi := offHiLo(off)
	r, _, e := unix.Syscall6(unix.SYS_PREADV2, uintptr(fd), uintptr(unsafe.Pointer(iov)), uintptr(n), lo, hi, uintptr(flags))
	return int64(r), e
}

// fdatasync flushes fd, returning the errno without allocating.
func fdatasync(fd int) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_FDATASYNC, uintptr(fd), 0, 0)
	return e
}
