package bench

// A regular file named with -device may be someone's data: wbbench
// writes to it only if it is empty of data (all zero over every data
// extent), or wbbench wrote it before — it marks the files it writes
// with an extended attribute, and where the file system keeps none, it
// recognises its own pages — or with -force.

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ownXattr marks a regular file wbbench has written to (set before it
// writes).
const ownXattr = "user.wbbench"

// markOwn marks the file at path as one wbbench writes to. A file
// system without user extended attributes keeps no mark; wbbench then
// recognises the file by its pages (foreignData).
func markOwn(path string) {
	_ = unix.Setxattr(path, ownXattr, []byte("a wbbench target: its contents are wbbench's test pages"), 0)
}

// markedOwn reports whether wbbench marked the file at path.
func markedOwn(path string) bool {
	_, err := unix.Getxattr(path, ownXattr, nil)
	return err == nil || errors.Is(err, unix.ERANGE)
}

// ownBlock reports whether a 4 KiB block of a file is one wbbench could
// have left: all zero, or the start of a page it writes (its own pages,
// the verify format's, fio's pattern).
func ownBlock(b []byte) bool {
	if len(b) >= 8 {
		switch string(b[:8]) {
		case fillMagic, fioMagic, "WBENGPG1":
			return true
		}
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// foreignData finds data in the file f (of size bytes) that wbbench did
// not write: it reads each data extent (SEEK_DATA, SEEK_HOLE; holes read
// as zeros and are skipped) in 4 KiB blocks and returns the offset of
// the first block that is neither all zero nor the start of a wbbench
// page.
func foreignData(f *os.File, size int64) (off int64, found bool, err error) {
	const blk = 4096
	buf := make([]byte, 1<<20)
	fd := int(f.Fd())
	for pos := int64(0); pos < size; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return 0, false, nil // no data after pos
		}
		if err != nil {
			data = pos // no SEEK_DATA here: read it all
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		data -= data % blk
		for at := data; at < hole; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-at)], at)
			if err != nil && err != io.EOF {
				return 0, false, err
			}
			if n == 0 {
				break
			}
			for i := 0; i < n; i += blk {
				if !ownBlock(buf[i:min(i+blk, n)]) {
					return at + int64(i), true, nil
				}
			}
			at += int64(n)
		}
		pos = max(hole, pos+1)
	}
	return 0, false, nil
}

// checkOwnFile refuses a regular file that holds data wbbench did not
// write, naming it and its size.
func checkOwnFile(path string, f *os.File, size int64) error {
	if size == 0 || markedOwn(path) {
		return nil
	}
	off, found, err := foreignData(f, size)
	if err != nil {
		return fmt.Errorf("bench: check %s: %w", path, err)
	}
	if !found {
		return nil
	}
	return &RefusedError{Path: path, Reason: fmt.Sprintf(
		"it is a regular file of %s (%d bytes) holding data wbbench did not write (at byte %d: neither zeros nor a page wbbench writes)",
		fmtIBytes(size), size, off)}
}
