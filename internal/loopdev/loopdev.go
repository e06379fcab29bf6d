// Package loopdev makes and removes loop block devices over files in
// /dev/shm, for tests and for wbbench's default target. It only ever
// touches devices it created itself: Remove detaches the loop device it
// attached and deletes the backing file it made.
//
// Nothing is left behind when a process dies without cleaning up (a
// panicking test): Create keeps the new device open and at once asks for
// it to be detached, which the kernel turns into "detach when the last
// opener closes" (autoclear), so the device goes away with the process.
// Backing files carry their creator's PID; Create removes those whose
// creator is gone.
//
// Creating a loop device needs root and losetup(8). The test helpers
// (a device or a file per test, removed when it ends) are in package
// loopdevtest, so that programs using Create do not link testing.
package loopdev

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrUnavailable: loop devices cannot be made here (not root, or no
// losetup).
var ErrUnavailable = errors.New("loopdev: loop devices unavailable")

// Dev is a loop device this process attached over a file it created.
type Dev struct {
	Path      string // /dev/loopN
	File      string // the backing file
	Size      int64
	BlockSize int // logical block size given to losetup -b (0: the default 512)

	holder *os.File // keeps the autoclearing device attached until Remove
}

const filePrefix = "wbengine-loop-"

// Available reports whether Create can work here, and why not.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnavailable)
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("%w: losetup not on PATH", ErrUnavailable)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("%w: no /dev/loop-control", ErrUnavailable)
	}
	return nil
}

// Create makes a sparse file of size bytes in dir (default /dev/shm) and
// attaches a loop device over it with direct I/O on the backing file off
// (tmpfs does not take O_DIRECT) and the given logical block size (0 keeps
// losetup's default of 512). The file is zero-filled by construction.
func Create(dir string, size int64, blockSize int) (*Dev, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("loopdev: size %d: must be positive", size)
	}
	if dir == "" {
		dir = "/dev/shm"
	}
	SweepFiles(dir, filePrefix)
	f, err := os.CreateTemp(dir, fmt.Sprintf("%s%d-*.img", filePrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("loopdev: %w", err)
	}
	name := f.Name()
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(name)
		return nil, fmt.Errorf("loopdev: size %s: %w", name, err)
	}
	f.Close()
	args := []string{"--find", "--show"}
	if blockSize > 0 {
		args = append(args, "--sector-size", fmt.Sprint(blockSize))
	}
	args = append(args, name)
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("loopdev: losetup %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	path := strings.TrimSpace(string(out))
	if !strings.HasPrefix(path, "/dev/loop") {
		os.Remove(name)
		return nil, fmt.Errorf("loopdev: losetup printed %q, not a loop device", path)
	}
	d := &Dev{Path: path, File: name, Size: size, BlockSize: blockSize}
	// Hold the device open and ask for it to be detached: the kernel
	// sets autoclear, so it detaches when the holder closes — in Remove,
	// or when the process dies.
	if d.holder, err = os.OpenFile(path, os.O_RDONLY, 0); err == nil {
		if out, err := exec.Command("losetup", "--detach", path).CombinedOutput(); err != nil {
			d.holder.Close()
			d.holder = nil
			d.Remove()
			return nil, fmt.Errorf("loopdev: losetup --detach %s (to set autoclear): %v: %s", path, err, strings.TrimSpace(string(out)))
		}
	} else {
		d.holder = nil
	}
	return d, nil
}

// SweepFiles removes the files in dir named prefix + PID + "-…" whose
// process is gone: backing files and test targets left by a process that
// died (was killed, or panicked) without cleaning up. Their loop devices
// autocleared when the holder died; any still attached are detached
// first. Files of live processes, and names without a PID, are left.
func SweepFiles(dir, prefix string) {
	for _, file := range Stale(dir, prefix) {
		if out, err := exec.Command("losetup", "--associated", file, "--output", "NAME", "--noheadings").Output(); err == nil {
			for _, dev := range strings.Fields(string(out)) {
				exec.Command("losetup", "--detach", dev).Run()
			}
		}
		os.Remove(file)
	}
}

// Stale lists the entries of dir named prefix + PID + "-…" whose process
// is gone (SweepFiles removes such files; tests that leave other things
// named so, tracefs instances, use it too).
func Stale(dir, prefix string) []string {
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Remove detaches the loop device and deletes its backing file. It is
// safe to call more than once.
func (d *Dev) Remove() error {
	if d == nil || d.Path == "" {
		return nil
	}
	var errs []error
	if d.holder != nil {
		// Autoclear is set: closing the last opener detaches it.
		d.holder.Close()
		d.holder = nil
		if !waitDetached(d.Path, d.File, 5*time.Second) {
			errs = append(errs, fmt.Errorf("loopdev: %s still attached to %s 5s after its last close by us: someone else holds it open (it detaches when they close it)", d.Path, d.File))
		}
	} else if out, err := exec.Command("losetup", "--detach", d.Path).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("loopdev: losetup --detach %s: %v: %s", d.Path, err, strings.TrimSpace(string(out))))
	}
	if err := os.Remove(d.File); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("loopdev: %w", err))
	}
	d.Path = ""
	return errors.Join(errs...)
}

// waitDetached waits until the loop device no longer has file as its
// backing file.
func waitDetached(dev, file string, d time.Duration) bool {
	sys := "/sys/block/" + filepath.Base(dev) + "/loop/backing_file"
	for deadline := time.Now().Add(d); ; {
		b, err := os.ReadFile(sys)
		if err != nil || strings.TrimSpace(string(b)) != file {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// Name is the device's name under /sys/block (loopN).
func (d *Dev) Name() string { return filepath.Base(d.Path) }
