package ring

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrOutOfRange: a request reaches past the end of the target (or
// starts before its beginning).
var ErrOutOfRange = errors.New("ring: past the end of the target")

// ErrTargetBusy: another writer holds the target: a block device that is
// mounted or open O_EXCL (the error also matches EBUSY), or a regular
// file another open holds an exclusive flock on (it also matches
// EWOULDBLOCK). One writer per target.
var ErrTargetBusy = errors.New("ring: target in use by another writer")

// TargetOptions are OpenTarget's options.
type TargetOptions struct {
	// ReadOnly opens the target O_RDONLY and, for a block device,
	// without O_EXCL, so a reader (wbbench check) can look at a device
	// another process may hold. Writers always get O_EXCL on block
	// devices.
	ReadOnly bool
}

// sysfsRoot is where sysfs is mounted; tests point it at a fake tree.
var sysfsRoot = "/sys"

// OpenTarget opens a block device (O_RDWR|O_DIRECT|O_EXCL: the open
// fails with EBUSY while the device is mounted or held exclusively) or a
// regular file (O_RDWR|O_DIRECT, then an exclusive flock, released when
// the target is closed: a second writer of the same file, in this
// process or another, fails instead of interleaving its writes with
// ours; both failures wrap ErrTargetBusy) and reads its size and limits once:
// for a block device, BLKGETSIZE64 and /sys/block/<disk>/queue/ (a
// partition's parent disk's queue, and Dev names that disk); for a
// file, st_size and the STATX_DIOALIGN offset alignment (or its memory
// alignment if that is larger, as CheckRequest holds addresses to the
// same LogicalBlockSize; 512 where the kernel does not report it).
// Anything else, an empty target, or a size that is not a multiple of
// the logical block size is an error wrapping ErrTarget; a failed open
// wraps the errno.
func OpenTarget(path string, opt TargetOptions) (*Target, error) {
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Stat(path, &st) }); err != nil {
		return nil, fmt.Errorf("ring: open %s: %w", path, err)
	}
	kind, what := kindOf(st.Mode)
	if kind == 0 {
		return nil, fmt.Errorf("ring: open %s: %w: it is %s, not a block device or a regular file", path, ErrTarget, what)
	}
	flags := unix.O_DIRECT | unix.O_CLOEXEC
	switch {
	case opt.ReadOnly:
		flags |= unix.O_RDONLY
	case kind == KindBlock:
		flags |= unix.O_RDWR | unix.O_EXCL
	default:
		flags |= unix.O_RDWR
	}
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Open(path, flags, 0)
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, unix.EBUSY) && kind == KindBlock:
		return nil, fmt.Errorf("ring: open %s: %w: %w (the device is mounted or held open exclusively)", path, ErrTargetBusy, err)
	case errors.Is(err, unix.EINVAL) && kind == KindFile:
		return nil, fmt.Errorf("ring: open %s: %w: its file system does not take O_DIRECT (%w)", path, ErrTarget, err)
	default:
		return nil, fmt.Errorf("ring: open %s: %w", path, err)
	}
	if kind == KindFile && !opt.ReadOnly {
		if err := lockFile(fd, path); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	t := &Target{Path: path, Kind: kind, fd: fd}
	if err := t.readLimits(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// lockFile takes an exclusive flock on a file target's open file
// description without waiting. The lock goes with the description: it
// is released when the target's fd is closed (or the process dies), and
// a second open of the file, even in this process, conflicts with it.
// Advisory: it keeps out writers that ask (every OpenTarget), not a
// program that writes the file without asking.
func lockFile(fd int, path string) error {
	err := retryEINTR(func() error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return fmt.Errorf("ring: open %s: %w: another open of the file holds its exclusive lock (flock: %w)", path, ErrTargetBusy, err)
	default:
		return fmt.Errorf("ring: open %s: flock: %w", path, err)
	}
}

// kindOf maps a file mode to a target kind, or 0 and what it is.
func kindOf(mode uint32) (Kind, string) {
	switch mode & unix.S_IFMT {
	case unix.S_IFBLK:
		return KindBlock, "a block device"
	case unix.S_IFREG:
		return KindFile, "a regular file"
	case unix.S_IFDIR:
		return 0, "a directory"
	case unix.S_IFCHR:
		return 0, "a character device"
	case unix.S_IFIFO:
		return 0, "a FIFO"
	case unix.S_IFSOCK:
		return 0, "a socket"
	case unix.S_IFLNK:
		return 0, "a symbolic link"
	}
	return 0, fmt.Sprintf("of unknown type %#o", mode&unix.S_IFMT)
}

// readLimits fills t's size and limits from its open fd.
func (t *Target) readLimits() error {
	var st unix.Stat_t
	if err := unix.Fstat(t.fd, &st); err != nil {
		return fmt.Errorf("ring: fstat %s: %w", t.Path, err)
	}
	if k, what := kindOf(st.Mode); k != t.Kind {
		return fmt.Errorf("ring: open %s: %w: it changed while being opened and is now %s", t.Path, ErrTarget, what)
	}
	switch t.Kind {
	case KindBlock:
		size, err := unix.IoctlGetUint64(t.fd, unix.BLKGETSIZE64)
		if err != nil {
			return fmt.Errorf("ring: %s: BLKGETSIZE64: %w (%w)", t.Path, err, ErrTarget)
		}
		t.Size = int64(size)
		dev, queue, err := queueDir(st.Rdev)
		if err != nil {
			return fmt.Errorf("ring: %s: %w", t.Path, err)
		}
		t.Dev = dev
		if err := t.readQueue(queue); err != nil {
			return fmt.Errorf("ring: %s: %w", t.Path, err)
		}
	case KindFile:
		t.Size = st.Size
		t.LogicalBlockSize = 512
		var sx unix.Statx_t
		err := unix.Statx(t.fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
		if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
			if sx.Dio_offset_align == 0 {
				return fmt.Errorf("ring: %s: %w: its file system reports no direct I/O support (STATX_DIOALIGN 0)", t.Path, ErrTarget)
			}
			t.LogicalBlockSize = int(max(sx.Dio_offset_align, sx.Dio_mem_align))
		}
	}
	lbs := int64(t.LogicalBlockSize)
	switch {
	case lbs <= 0 || lbs&(lbs-1) != 0:
		return fmt.Errorf("ring: %s: %w: logical block size %d is not a power of two", t.Path, ErrTarget, lbs)
	case t.Size <= 0:
		return fmt.Errorf("ring: %s: %w: it is empty", t.Path, ErrTarget)
	case t.Size%lbs != 0:
		return fmt.Errorf("ring: %s: %w: its size %d is not a multiple of its logical block size %d", t.Path, ErrTarget, t.Size, lbs)
	}
	return nil
}

// queueDir finds the sysfs queue directory of the block device rdev
// through /sys/dev/block/MAJ:MIN; a partition has none of its own and
// uses its disk's. It returns the disk's name under /sys/block too.
func queueDir(rdev uint64) (dev, queue string, err error) {
	link := filepath.Join(sysfsRoot, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", "", fmt.Errorf("%w: no sysfs entry: %w", ErrTarget, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		dir = filepath.Dir(dir)
	}
	return filepath.Base(dir), filepath.Join(dir, "queue"), nil
}

// readQueue reads the limits in a sysfs queue directory. A kernel too
// old for fua or stable_writes reads as false.
func (t *Target) readQueue(dir string) error {
	var err error
	if t.LogicalBlockSize, err = sysfsInt(dir, "logical_block_size"); err != nil {
		return err
	}
	if t.MaxSectorsKB, err = sysfsInt(dir, "max_sectors_kb"); err != nil {
		return err
	}
	if n, err := sysfsInt(dir, "max_hw_sectors_kb"); err == nil {
		t.MaxHWSectorsKB = n
	}
	// nr_requests is informational (a default queue depth); a queue
	// without it (no scheduler tags) leaves it 0.
	if n, err := sysfsInt(dir, "nr_requests"); err == nil {
		t.NrRequests = n
	}
	// max_segments bounds the engine's default write size (memory that is
	// not physically contiguous is one segment per memory page); a queue
	// without it leaves it 0, no bound.
	if n, err := sysfsInt(dir, "max_segments"); err == nil {
		t.MaxSegments = n
	}
	if t.WriteCache, err = sysfsString(dir, "write_cache"); err != nil {
		return err
	}
	switch t.WriteCache {
	case "write back", "write through":
	default:
		return fmt.Errorf("%w: %s: unexpected %q", ErrTarget, filepath.Join(dir, "write_cache"), t.WriteCache)
	}
	for _, f := range []struct {
		name string
		v    *bool
	}{{"fua", &t.FUA}, {"stable_writes", &t.StableWrites}} {
		n, err := sysfsInt(dir, f.name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		*f.v = n != 0
	}
	return nil
}

func sysfsString(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("%w: limits: %w", ErrTarget, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func sysfsInt(dir, name string) (int, error) {
	s, err := sysfsString(dir, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %s: not a count: %q", ErrTarget, filepath.Join(dir, name), s)
	}
	return n, nil
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Fd is the target's file descriptor (-1 once closed). Rings use it;
// callers must not close it.
func (t *Target) Fd() int { return t.fd }

// Close closes the target. Close the rings on it first. It is safe to
// call more than once, but not concurrently.
func (t *Target) Close() error {
	if t.fd < 0 {
		return nil
	}
	fd := t.fd
	t.fd = -1
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("ring: close %s: %w", t.Path, err)
	}
	return nil
}

// NeedsFlush reports whether completed writes can sit in a volatile
// cache, so durability needs an OpFlush: always, except on a block
// device whose write_cache is "write through".
func (t *Target) NeedsFlush() bool {
	return !(t.Kind == KindBlock && t.WriteCache == "write through")
}

// CheckRequest reports whether r fits the target: for a read or write,
// the offset, every iovec length and every iovec address must be
// multiples of LogicalBlockSize (ErrMisaligned), and [Off, Off+Len)
// must lie inside the target (ErrOutOfRange). Flushes and NOPs always
// fit. It does not allocate when r fits.
func (t *Target) CheckRequest(r *Request) error {
	switch r.Op {
	case OpFlush, OpNop:
		return nil
	case OpWrite, OpRead:
	default:
		return fmt.Errorf("ring: %s: %w: unknown op %d", t.Path, ErrBadConfig, r.Op)
	}
	a := int64(t.LogicalBlockSize)
	if r.Off < 0 {
		return fmt.Errorf("ring: %s: %s at offset %d: %w: negative offset", t.Path, r.Op, r.Off, ErrOutOfRange)
	}
	if r.Off%a != 0 {
		return fmt.Errorf("ring: %s: %s at offset %d: %w: offset is not a multiple of the logical block size %d", t.Path, r.Op, r.Off, ErrMisaligned, a)
	}
	var n int64
	for i := range r.Iov {
		v := &r.Iov[i]
		l := int64(v.Len)
		if l%a != 0 {
			return fmt.Errorf("ring: %s: %s at offset %d: %w: iovec %d length %d is not a multiple of the logical block size %d", t.Path, r.Op, r.Off, ErrMisaligned, i, l, a)
		}
		if addr := iovAddr(v); l > 0 && int64(addr)%a != 0 {
			return fmt.Errorf("ring: %s: %s at offset %d: %w: iovec %d address %#x is not aligned to the logical block size %d", t.Path, r.Op, r.Off, ErrMisaligned, i, addr, a)
		}
		n += l
	}
	if r.Off+n > t.Size {
		return fmt.Errorf("ring: %s: %s of %d bytes at offset %d: %w (%d bytes)", t.Path, r.Op, n, r.Off, ErrOutOfRange, t.Size)
	}
	return nil
}
