package ring

// Raw pwritev2/preadv2/fdatasync and iovec arithmetic for the pool and
// wrapper backends. This is the only file of those backends that uses
// unsafe: x/sys/unix's Pwritev2 takes [][]byte and allocates an iovec
// array per call, while the engine already hands us iovecs.

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

// iovAdvance drops the first n bytes from iov, rewriting the iovec where
// n falls inside one, and returns what is left. n must be at most the
// total length.
func iovAdvance(iov []unix.Iovec, n int64) []unix.Iovec {
	for len(iov) > 0 && n > 0 {
		l := int64(iov[0].Len)
		if n < l {
			iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[0].Base), n))
			iov[0].Len = uint64(l - n)
			return iov
		}
		n -= l
		iov = iov[1:]
	}
	// Skip empty iovecs so a caller can test len(iov) == 0.
	for len(iov) > 0 && iov[0].Len == 0 {
		iov = iov[1:]
	}
	return iov
}

// iovRange sets dst to the iovecs covering bytes [from, to) of src and
// returns it (dst's array is reused when large enough). src is not
// changed.
func iovRange(dst, src []unix.Iovec, from, to int64) []unix.Iovec {
	dst = dst[:0]
	var pos int64
	for _, v := range src {
		l := int64(v.Len)
		s, e := max(from, pos), min(to, pos+l)
		if s < e {
			base := (*byte)(unsafe.Add(unsafe.Pointer(v.Base), s-pos))
			dst = append(dst, unix.Iovec{Base: base, Len: uint64(e - s)})
		}
		pos += l
		if pos >= to {
			break
		}
	}
	return dst
}

// iovArrayAddr is the address of iov's first iovec, for an SQE's addr field.
// The caller keeps iov reachable until the request completes. (Only the
// iceber backend, built with -tags iceber, uses it; it lives here with
// the package's other unsafe code.)
//
//lint:ignore U1000 used by iceber.go under the iceber build tag
func iovArrayAddr(iov []unix.Iovec) uint64 {
	if len(iov) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&iov[0])))
}
