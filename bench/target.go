package bench

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/internal/loopdev"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// DefaultSize is the size of a target wbbench makes itself.
const DefaultSize = 1 << 30

// Target is the device or file a benchmark writes to, probed before
// anything is written.
type Target struct {
	Path             string
	Kind             ring.Kind
	DeviceSize       int64 // the whole device or file
	Size             int64 // the part the benchmark uses: [0, Size)
	LogicalBlockSize int
	MaxSectorsKB     int
	WriteCache       string // "write back", "write through"; "" for files
	NeedsFlush       bool
	Dev              string // name under /sys/block ("" for files)
	// Made says what wbbench made for this run ("" when the user named
	// the target); Close removes it.
	Made string

	loop *loopdev.Dev
	file string // a temporary file wbbench made
}

// TargetOptions say which target to use.
type TargetOptions struct {
	Device   string // "" = make one
	Size     int64  // bytes to use; 0 = the whole device, or DefaultSize for a made one
	PageSize int
	Force    bool // skip the safety checks
	// TempDirs are where a temporary file may go when no loop device can
	// be made (default /dev/shm, then os.TempDir()).
	TempDirs []string
	// NoLoop makes a temporary file even where a loop device could be
	// made (tests).
	NoLoop bool
}

// PrepareTarget finds or makes the target and checks it before anything
// is written: a named device must exist, be a block device or regular
// file, take O_DIRECT, have room for Size, take the page size, and pass
// CheckTarget unless Force. Bad values come back as *UsageError, unsafe
// targets as *RefusedError. With no Device it makes a target of Size
// (default 1 GiB): as root a loop device over a file in /dev/shm, else
// a temporary file under /dev/shm or the temp dir. Close removes it.
func PrepareTarget(o TargetOptions) (*Target, error) {
	ps := o.PageSize
	if ps < pages.MinPageSize || ps > pages.MaxPageSize || ps&(ps-1) != 0 {
		return nil, usagef("-page-size %d: must be a power of two from %d to %s", ps, pages.MinPageSize, humanize.IBytes(pages.MaxPageSize))
	}
	if o.Size < 0 {
		return nil, usagef("-size %d: must not be negative", o.Size)
	}
	if o.Size > 0 && o.Size < int64(ps) {
		return nil, usagef("-size %d: less than one %d-byte page", o.Size, ps)
	}
	o.Size -= o.Size % int64(ps) // whole pages
	if o.Device == "" {
		return makeTarget(o)
	}
	fi, err := os.Stat(o.Device)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usagef("-device %s: no such device or file", o.Device)
		}
		return nil, usagef("-device %s: %v", o.Device, err)
	}
	if m := fi.Mode(); !m.IsRegular() && m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0 {
		return nil, usagef("-device %s: not a block device or regular file", o.Device)
	}
	// Nothing opens the target before the checks that need no open: a
	// mounted device is refused as mounted, also where it cannot be
	// opened at all.
	if !o.Force {
		if err := checkUnopened(o.Device); err != nil {
			return nil, err
		}
	}
	if err := checkEmpty(o.Device, fi); err != nil {
		return nil, err
	}
	t, err := probe(o.Device)
	if err != nil {
		return nil, err
	}
	if err := t.fit(o); err != nil {
		return nil, err
	}
	if !o.Force {
		if err := checkOpened(o.Device, t.DeviceSize); err != nil {
			return nil, err
		}
	}
	if t.Kind == ring.KindFile {
		markOwn(o.Device) // from now on it holds wbbench's pages
	}
	return t, nil
}

// checkEmpty refuses an empty target (a file of 0 bytes, a loop device
// with no backing file) and says how to give it a size.
func checkEmpty(path string, fi os.FileInfo) error {
	if fi.Mode().IsRegular() {
		if fi.Size() == 0 {
			return usagef("-device %s: the file is empty (0 bytes); give it a size first (truncate -s 1G %s), or omit -device and wbbench makes a 1 GiB target of its own", path, path)
		}
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && blockSize(uint64(st.Rdev)) == 0 {
		return usagef("-device %s: the block device is empty (0 bytes; a loop device with no file attached?); attach one (losetup %s FILE), or omit -device and wbbench makes a 1 GiB target of its own", path, path)
	}
	return nil
}

// probe reads a target's size and limits without writing (read-only,
// no O_EXCL).
func probe(path string) (*Target, error) {
	rt, err := ring.OpenTarget(path, ring.TargetOptions{ReadOnly: true})
	if err != nil {
		return nil, usagef("-device %s: %v", path, err)
	}
	defer rt.Close()
	return &Target{
		Path:             path,
		Kind:             rt.Kind,
		DeviceSize:       rt.Size,
		LogicalBlockSize: rt.LogicalBlockSize,
		MaxSectorsKB:     rt.MaxSectorsKB,
		WriteCache:       rt.WriteCache,
		NeedsFlush:       rt.NeedsFlush(),
		Dev:              rt.Dev,
	}, nil
}

// fit checks the page size and the size against the target and sets Size.
func (t *Target) fit(o TargetOptions) error {
	ps := o.PageSize
	if ps%t.LogicalBlockSize != 0 {
		return usagef("-page-size %d: %s has %d-byte logical blocks; the page size must be a multiple of that", ps, t.Path, t.LogicalBlockSize)
	}
	switch {
	case o.Size > t.DeviceSize:
		return usagef("-size %s (%d bytes) is past the end of %s, which holds %s (%d bytes)",
			humanize.IBytes(uint64(o.Size)), o.Size, t.Path, humanize.IBytes(uint64(t.DeviceSize)), t.DeviceSize)
	case o.Size > 0:
		t.Size = o.Size
	default:
		t.Size = t.DeviceSize - t.DeviceSize%int64(ps)
	}
	if t.Size < int64(ps) {
		return usagef("%s holds %d bytes, less than one %d-byte page", t.Path, t.DeviceSize, ps)
	}
	return nil
}

// makeTarget makes a loop device over a /dev/shm file (root) or a
// temporary file.
func makeTarget(o TargetOptions) (*Target, error) {
	size := o.Size
	if size == 0 {
		size = DefaultSize
	}
	o.Size = size
	var loopWhy error
	if o.NoLoop {
		loopWhy = errors.New("not asked for")
	} else if loopWhy = loopdev.Available(); loopWhy == nil {
		d, err := loopdev.Create("", size, 0)
		if err != nil {
			return nil, fmt.Errorf("bench: making a loop device: %w", err)
		}
		preallocate(d.File, size)
		t, err := probe(d.Path)
		if err == nil {
			err = t.fit(o)
		}
		if err != nil {
			d.Remove()
			return nil, err
		}
		t.loop = d
		t.Made = fmt.Sprintf("a loop device over %s, made for this run", d.File)
		return t, nil
	}
	dirs := o.TempDirs
	if len(dirs) == 0 {
		dirs = []string{"/dev/shm", os.TempDir()}
	}
	var errs []error
	for _, dir := range dirs {
		f, err := os.CreateTemp(dir, "wbbench-*.img")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := f.Name()
		err = f.Truncate(size)
		f.Close()
		if err == nil {
			preallocate(name, size)
		}
		var t *Target
		if err == nil {
			t, err = probe(name)
		}
		if err == nil {
			err = t.fit(o)
		}
		if err != nil {
			os.Remove(name)
			errs = append(errs, fmt.Errorf("%s: %w", dir, err))
			continue
		}
		t.file = name
		t.Made = fmt.Sprintf("a temporary file, made for this run (no loop device: %v)", loopWhy)
		return t, nil
	}
	return nil, fmt.Errorf("bench: no place for a temporary target: %w", errors.Join(errs...))
}

// Close removes what PrepareTarget made (a loop device and its file, or
// a temporary file). It is safe to call more than once.
func (t *Target) Close() error {
	var errs []error
	if t.loop != nil {
		errs = append(errs, t.loop.Remove())
		t.loop = nil
	}
	if t.file != "" {
		if err := os.Remove(t.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		t.file = ""
	}
	return errors.Join(errs...)
}

// KindName describes the target's kind for reports.
func (t *Target) KindName() string {
	if t.Kind == ring.KindBlock {
		return "block"
	}
	return "file"
}

// preallocate gives a file wbbench made its blocks now (fallocate), so
// that the first system to write is not the one that pays for the
// backing file's allocation (on tmpfs, the memory behind it). Where the
// file system cannot, the file stays sparse.
func preallocate(name string, size int64) {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_ = fallocate(f, size)
	// Write every page once: on tmpfs, fallocate reserves pages but the
	// first write to each still pays for clearing it, and whichever
	// system ran first would pay for all of them.
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return
		}
	}
}

func fmtIBytes(n int64) string { return humanize.IBytes(uint64(n)) }
