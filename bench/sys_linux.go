package bench

// This file holds the system calls the baselines and the measurement
// make directly: resource usage, buffered and O_DIRECT opens, pwritev,
// fdatasync, BLKFLSBUF and the device's I/O counters. The engine's own
// I/O goes through package ring.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cpuTimes is the process's user and system CPU time so far.
func cpuTimes() cpuUsage {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return cpuUsage{}
	}
	return cpuUsage{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

func retry(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// openTarget opens path for writing: O_DIRECT or buffered. It never
// uses O_EXCL: the engine holds that claim for the whole run.
func openTarget(path string, direct bool) (int, error) {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if direct {
		flags |= unix.O_DIRECT
	}
	var fd int
	err := retry(func() (err error) {
		fd, err = unix.Open(path, flags, 0)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// pwriteAll writes b at off with pwritev, resuming short writes.
func pwriteAll(fd int, b []byte, off int64) error {
	iov := [][]byte{b}
	for len(iov[0]) > 0 {
		var n int
		err := retry(func() (err error) {
			n, err = unix.Pwritev(fd, iov, off)
			return err
		})
		if err != nil {
			return fmt.Errorf("pwritev of %d bytes at %d: %w", len(iov[0]), off, err)
		}
		if n == 0 {
			return fmt.Errorf("pwritev of %d bytes at %d: wrote nothing", len(iov[0]), off)
		}
		iov[0] = iov[0][n:]
		off += int64(n)
	}
	return nil
}

func fdatasync(fd int) error {
	if err := retry(func() error { return unix.Fdatasync(fd) }); err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	return nil
}

// dropCache drops a block device's page cache (BLKFLSBUF: write back,
// then invalidate its buffered pages).
func dropCache(fd int) error {
	if err := retry(func() error { return unix.IoctlSetInt(fd, unix.BLKFLSBUF, 0) }); err != nil {
		return fmt.Errorf("BLKFLSBUF: %w", err)
	}
	return nil
}

// diskStat is a block device's write counters (/sys/block/DEV/stat).
type diskStat struct {
	writes, sectors int64
	ticks           int64 // ms spent on writes
}

// readDiskStat reads the write I/Os completed, sectors written and
// milliseconds spent writing of the disk dev (fields 5, 7 and 8 of
// /sys/block/DEV/stat).
func readDiskStat(dev string) (diskStat, bool) {
	if dev == "" {
		return diskStat{}, false
	}
	b, err := os.ReadFile(filepath.Join(sysRoot, "block", dev, "stat"))
	if err != nil {
		return diskStat{}, false
	}
	f := strings.Fields(string(b))
	if len(f) < 8 {
		return diskStat{}, false
	}
	w, err1 := strconv.ParseInt(f[4], 10, 64)
	s, err2 := strconv.ParseInt(f[6], 10, 64)
	ms, err3 := strconv.ParseInt(f[7], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return diskStat{}, false
	}
	return diskStat{w, s, ms}, true
}

// alignedBuf is page-aligned memory off the Go heap, for O_DIRECT.
type alignedBuf struct {
	b []byte
}

func newAlignedBuf(size int) (*alignedBuf, error) {
	if size <= 0 {
		size = 1
	}
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("bench: mmap %d bytes: %w", size, err)
	}
	return &alignedBuf{b: b}, nil
}

func (a *alignedBuf) free() {
	if a != nil && a.b != nil {
		unix.Munmap(a.b)
		a.b = nil
	}
}

// memAvailable is MemAvailable from /proc/meminfo in bytes (0 when
// unknown).
func memAvailable() int64 { return meminfo("MemAvailable:") }

// meminfo reads a line of /proc/meminfo (its name with the colon) in
// bytes, 0 when unknown.
func meminfo(name string) int64 {
	b, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
}

// fallocate allocates [0, size) of f (mode 0: the size does not change).
func fallocate(f *os.File, size int64) error {
	return retry(func() error { return unix.Fallocate(int(f.Fd()), 0, 0, size) })
}

// zeroRange makes [0, size) of a target read as zeros before a -verify
// run writes it, and says how. A block device: fallocate
// FALLOC_FL_ZERO_RANGE, which the kernel serves as it serves BLKZEROOUT
// (blkdev_issue_zeroout: the device's write-zeroes command, else
// written zero pages) and which drops the device's cached pages. A
// file: FALLOC_FL_ZERO_RANGE, else a punched hole (tmpfs takes only
// that), else written zeros. Either way fdatasync follows.
func zeroRange(path string, block bool, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return "", fmt.Errorf("bench: zeroing %s: %w", path, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	how := ""
	err = retry(func() error { return unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 0, size) })
	switch {
	case err == nil && block:
		how = "fallocate FALLOC_FL_ZERO_RANGE (blkdev_issue_zeroout, as BLKZEROOUT)"
	case err == nil:
		how = "fallocate FALLOC_FL_ZERO_RANGE"
	case !block:
		err = retry(func() error {
			return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, size)
		})
		if err == nil {
			how = "fallocate FALLOC_FL_PUNCH_HOLE"
		}
	}
	if err != nil {
		// Neither: write zeros.
		zero := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(zero)) {
			n := min(int64(len(zero)), size-off)
			if _, err := f.WriteAt(zero[:n], off); err != nil {
				return "", fmt.Errorf("bench: zeroing %s: %w", path, err)
			}
		}
		how = "written zeros"
	}
	if err := fdatasync(fd); err != nil {
		return "", fmt.Errorf("bench: zeroing %s: %w", path, err)
	}
	return how, nil
}
