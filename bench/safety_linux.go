package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The safety checks run before anything is written to a target the
// user named: CheckTarget refuses a block device that is mounted (it or
// one of its partitions), used as swap, claimed by another block device
// (device mapper, RAID: /sys/.../holders), or held open exclusively
// (an O_EXCL open fails with EBUSY); a regular file that backs a loop
// device, or holds data wbbench did not write (ownfile_linux.go); and
// any target whose first or last MiB carries a file-system, volume or
// partition-table signature.

// procRoot and sysRoot are where proc and sysfs are mounted; tests may
// point them elsewhere.
var (
	procRoot = "/proc"
	sysRoot  = "/sys"
)

// CheckTarget returns a *RefusedError saying why path (a block device
// or regular file of size bytes) must not be written to, or nil. Other
// errors (an unreadable device) are returned as they are. The checks
// that need no open of the device (checkUnopened) run first.
func CheckTarget(path string, size int64) error {
	if err := checkUnopened(path); err != nil {
		return err
	}
	return checkOpened(path, size)
}

// checkUnopened runs the checks that need no open of the target, from
// its stat, /proc and /sys alone: a block device mounted (it or one of
// its partitions), used as swap, or claimed by a stacked device; a
// regular file backing a loop device. PrepareTarget runs them before
// anything opens the target, so a mounted device is refused as mounted
// even where it cannot be opened at all.
func checkUnopened(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("bench: check %s: %w", path, err)
	}
	refuse := func(format string, args ...any) error {
		return &RefusedError{Path: path, Reason: fmt.Sprintf(format, args...)}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		devs, err := blockFamily(st.Rdev)
		if err != nil {
			return err
		}
		if where, dev := mountedAt(devs, path); where != "" {
			return refuse("%s is mounted on %s", dev, where)
		}
		if dev := swapOn(devs); dev != "" {
			return refuse("%s is in use as swap (/proc/swaps)", dev)
		}
		for _, d := range devs {
			if h := holders(d.sys); len(h) > 0 {
				return refuse("%s is in use by %s (device mapper, RAID or another stacked device: %s)",
					d.name, strings.Join(h, ", "), filepath.Join(d.sys, "holders"))
			}
		}
	case unix.S_IFREG:
		if loop := loopBacked(&st); loop != "" {
			return refuse("it is the backing file of loop device %s", loop)
		}
	}
	return nil
}

// checkOpened runs the checks that open the target (read-only): a
// block device held open exclusively by another program (an O_EXCL open
// fails with EBUSY); a signature in its first or last MiB; a regular
// file holding data wbbench did not write.
func checkOpened(path string, size int64) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("bench: check %s: %w", path, err)
	}
	refuse := func(format string, args ...any) error {
		return &RefusedError{Path: path, Reason: fmt.Sprintf(format, args...)}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EBUSY) {
			return refuse("it is held open exclusively by another program (an O_EXCL open failed: %v)", err)
		}
		if err != nil {
			return fmt.Errorf("bench: check %s: %w", path, err)
		}
		unix.Close(fd)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bench: check %s: %w", path, err)
	}
	defer f.Close()
	if sig, err := findSignature(f, size); err != nil {
		return fmt.Errorf("bench: check %s: %w", path, err)
	} else if sig != "" {
		return refuse("it carries %s", sig)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return checkOwnFile(path, f, size)
	}
	return nil
}

// blockSize is a block device's size in bytes from sysfs (no open), or
// -1 when unknown.
func blockSize(rdev uint64) int64 {
	b, err := os.ReadFile(filepath.Join(sysRoot, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)), "size"))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n * 512
}

// blockDev is a block device and its sysfs directory.
type blockDev struct {
	majmin string // "8:0"
	name   string // "sda"
	sys    string // /sys/devices/.../sda
}

// blockFamily returns the block device rdev and its partitions.
func blockFamily(rdev uint64) ([]blockDev, error) {
	majmin := fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
	dir, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "dev", "block", majmin))
	if err != nil {
		return nil, fmt.Errorf("bench: block device %s has no sysfs entry: %w", majmin, err)
	}
	devs := []blockDev{{majmin: majmin, name: filepath.Base(dir), sys: dir}}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, "partition")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sub, "dev"))
		if err != nil {
			continue
		}
		devs = append(devs, blockDev{majmin: strings.TrimSpace(string(b)), name: e.Name(), sys: sub})
	}
	return devs, nil
}

// mountedAt returns where one of devs is mounted, and which, or "".
// A mountinfo line names the mounted device by major:minor (field 3)
// and by source (after the " - " separator); either may match.
func mountedAt(devs []blockDev, path string) (where, dev string) {
	f, err := os.Open(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		pre, post, _ := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		tail := strings.Fields(post)
		if len(fields) < 5 {
			continue
		}
		source := ""
		if len(tail) >= 2 {
			source = tail[1]
		}
		for _, d := range devs {
			if fields[2] == d.majmin || source == "/dev/"+d.name || (d.name == devs[0].name && source == path) {
				return unescapeMount(fields[4]), "/dev/" + d.name
			}
		}
	}
	return "", ""
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// swapOn returns the one of devs that is active swap, or "".
func swapOn(devs []blockDev) string {
	b, err := os.ReadFile(filepath.Join(procRoot, "swaps"))
	if err != nil {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fields[0], &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			continue
		}
		mm := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		for _, d := range devs {
			if d.majmin == mm {
				return "/dev/" + d.name
			}
		}
	}
	return ""
}

// holders lists the devices stacked on the one in sys.
func holders(sys string) []string {
	ents, _ := os.ReadDir(filepath.Join(sys, "holders"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// loopBacked returns the loop device whose backing file is the file st
// describes, or "".
func loopBacked(st *unix.Stat_t) string {
	files, _ := filepath.Glob(filepath.Join(sysRoot, "block", "loop*", "loop", "backing_file"))
	for _, bf := range files {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		var bst unix.Stat_t
		if unix.Stat(name, &bst) == nil && bst.Dev == st.Dev && bst.Ino == st.Ino {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(bf)))
		}
	}
	return ""
}

const sigSpan = 1 << 20 // the signature check reads the first and last MiB

// findSignature reads the first and last MiB of a target of size bytes
// and describes the first signature it finds there, or returns "".
func findSignature(r io.ReaderAt, size int64) (string, error) {
	head := make([]byte, min(size, sigSpan))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return "", err
	}
	tail := make([]byte, min(size, sigSpan))
	if _, err := r.ReadAt(tail, size-int64(len(tail))); err != nil && err != io.EOF {
		return "", err
	}
	return signature(head, tail), nil
}

// signature describes a file-system, volume or partition-table
// signature in head (the first bytes of a target) or tail (its last),
// or returns "".
func signature(head, tail []byte) string {
	at := func(b []byte, off int, magic string) bool {
		return off >= 0 && off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
	}
	if len(head) >= 1082 && binary.LittleEndian.Uint16(head[1080:]) == 0xEF53 {
		return "an ext2/3/4 file-system signature (superblock magic 0xEF53 at byte 1080)"
	}
	if at(head, 0, "XFSB") {
		return `an XFS file-system signature ("XFSB" at byte 0)`
	}
	if at(head, 65536+64, "_BHRfS_M") {
		return `a Btrfs file-system signature ("_BHRfS_M" at byte 65600)`
	}
	for _, ps := range []int{4096, 8192, 16384, 65536, os.Getpagesize()} {
		for _, magic := range []string{"SWAPSPACE2", "SWAP-SPACE"} {
			if at(head, ps-10, magic) {
				return fmt.Sprintf("a swap signature (%q at byte %d)", magic, ps-10)
			}
		}
	}
	for s := 0; s < 4; s++ {
		if at(head, s*512, "LABELONE") {
			return fmt.Sprintf(`an LVM physical-volume label ("LABELONE" in sector %d)`, s)
		}
	}
	if at(head, 0, "LUKS\xba\xbe") {
		return `a LUKS header ("LUKS\xba\xbe" at byte 0)`
	}
	for _, off := range []int{512, 4096} {
		if at(head, off, "EFI PART") {
			return fmt.Sprintf(`a GPT partition table ("EFI PART" at byte %d)`, off)
		}
	}
	for _, back := range []int{512, 4096} {
		if at(tail, len(tail)-back, "EFI PART") {
			return fmt.Sprintf(`a backup GPT header ("EFI PART" %d bytes before the end)`, back)
		}
	}
	if len(head) >= 512 && head[510] == 0x55 && head[511] == 0xAA {
		for i := 0; i < 4; i++ {
			e := head[446+16*i : 446+16*i+16]
			if e[4] != 0 && !bytes.Equal(e, make([]byte, 16)) {
				return fmt.Sprintf("an MBR partition table (0x55AA at byte 510, partition %d of type %#02x)", i+1, e[4])
			}
		}
	}
	return ""
}
