package ring

// Iovec arithmetic: the ring's only iovec code. An Iovec points at
// memory the kernel reads or writes; the helpers here build, trim and
// advance arrays of them without allocating (but for a trimmed attempt's
// scratch array, grown once).

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Iovec is one piece of a vectored transfer (struct iovec).
type Iovec = unix.Iovec

// IovecOf is the iovec covering b, which must not be empty.
func IovecOf(b []byte) Iovec { return Iovec{Base: &b[0], Len: uint64(len(b))} }

// AppendMem appends b to iov, extending the last iovec when b starts
// where it ends (memory adjacent pages share one iovec), and reports
// whether it took a new iovec.
func AppendMem(iov []Iovec, b []byte) ([]Iovec, bool) {
	if n := len(iov); n > 0 && Adjacent(iov, b) {
		iov[n-1].Len += uint64(len(b))
		return iov, false
	}
	return append(iov, IovecOf(b)), true
}

// Adjacent reports whether b starts where the last iovec of iov ends.
func Adjacent(iov []Iovec, b []byte) bool {
	last := &iov[len(iov)-1]
	return uintptr(unsafe.Pointer(last.Base))+uintptr(last.Len) == uintptr(unsafe.Pointer(&b[0]))
}

// advanceIov records that n more bytes of iov[first:] were transferred:
// it trims the partly transferred iovec in place and returns the index
// of the first iovec with bytes left (len(iov) when none are left). It
// never makes a pointer past the end of a buffer.
func advanceIov(iov []Iovec, first int, n int64) int {
	for n > 0 && first < len(iov) {
		l := int64(iov[first].Len)
		if n >= l {
			n -= l
			first++
			continue
		}
		iov[first].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[first].Base), n))
		iov[first].SetLen(int(l - n))
		n = 0
	}
	for first < len(iov) && iov[first].Len == 0 {
		first++
	}
	return first
}

// iovPrefix sets dst to the iovecs covering the first n bytes of src and
// returns it (dst's array is reused when large enough). src is not
// changed.
func iovPrefix(dst, src []Iovec, n int64) []Iovec {
	dst = dst[:0]
	for _, v := range src {
		if n <= 0 {
			break
		}
		l := min(int64(v.Len), n)
		dst = append(dst, Iovec{Base: v.Base, Len: uint64(l)})
		n -= l
	}
	return dst
}

// Bytes is the memory an iovec points to.
func Bytes(v Iovec) []byte { return unsafe.Slice(v.Base, v.Len) }

// iovAddr is the address an iovec points to, for alignment checks.
func iovAddr(v *Iovec) uintptr { return uintptr(unsafe.Pointer(v.Base)) }

// iovArrayAddr is the address of iov's first iovec, for an SQE's addr
// field. The caller keeps iov reachable until the request completes.
// Only the iceber backend uses it; it stays here with the rest of the
// iovec arithmetic.
//
//lint:ignore U1000 used by iceber.go (build tag iceber)
func iovArrayAddr(iov []Iovec) uint64 {
	if len(iov) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&iov[0])))
}
