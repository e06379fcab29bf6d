package ring

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blkDiscard is BLKDISCARD, _IO(0x12, 119): discard a byte range of a
// block device (not in x/sys/unix).
const blkDiscard = 0x1277

// Discard tells the target that the bytes [off, off+length) no longer
// hold data: BLKDISCARD on a block device, a punched hole (keeping the
// size) in a file. Both must be aligned to the logical block size. A
// target that cannot discard returns an error wrapping ErrNotSupported.
func (t *Target) Discard(off, length int64) error {
	lbs := int64(max(t.LogicalBlockSize, 1))
	if off < 0 || length < 0 || off%lbs != 0 || length%lbs != 0 {
		return fmt.Errorf("%w: discard [%d, +%d) on %s: needs %d-byte alignment", ErrMisaligned, off, length, t.Path, lbs)
	}
	if off+length > t.Size {
		return fmt.Errorf("%w: discard [%d, +%d) on %s of %d bytes", ErrOutOfRange, off, length, t.Path, t.Size)
	}
	if length == 0 {
		return nil
	}
	var err error
	if t.Kind == KindBlock {
		rng := [2]uint64{uint64(off), uint64(length)}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(t.fd), blkDiscard, uintptr(unsafe.Pointer(&rng[0]))); e != 0 {
			err = e
		}
	} else {
		err = unix.Fallocate(t.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("%w: discard on %s: %v", ErrNotSupported, t.Path, err)
	}
	if err != nil {
		return fmt.Errorf("ring: discard [%d, +%d) on %s: %w", off, length, t.Path, err)
	}
	return nil
}
