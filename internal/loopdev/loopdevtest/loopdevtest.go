// Package loopdevtest is package loopdev for tests: a loop device, a
// regular file or a file in /dev/shm per test, removed when the test
// ends. It is apart from loopdev so that programs using loopdev.Create
// (wbbench's default target) do not link package testing.
package loopdevtest

import (
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/wbengine/wbengine/internal/loopdev"
)

// shmPrefix starts the names of ShmFile's files (then the PID).
const shmPrefix = "wbengine-test-"

// Dev is a loop device this process attached over a file it created.
type Dev = loopdev.Dev

// Available reports whether loop devices can be made here, and why not
// (loopdev.Available).
func Available() error { return loopdev.Available() }

// ForTest creates a loop device for a test and removes it in t.Cleanup
// (also when the test fails). It skips the test, naming what it skipped,
// when loop devices are unavailable.
func ForTest(t testing.TB, size int64, blockSize int) *Dev {
	t.Helper()
	if err := loopdev.Available(); err != nil {
		t.Skipf("skipping the loop-device part of %s: %v", t.Name(), err)
	}
	d, err := loopdev.Create("", size, blockSize)
	if err != nil {
		t.Fatalf("loop device: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Errorf("removing loop device: %v", err)
		}
	})
	return d
}

// TempFile creates a zero-filled regular file of size bytes for tests
// that run without root (an O_DIRECT target). It prefers the test's temp
// dir, which is on a disk file system that takes O_DIRECT; tmpfs does not.
func TempFile(t testing.TB, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "wbengine-*.img")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// ShmFile creates a zero-filled file of size bytes in /dev/shm (memory,
// like wbbench's default target without root) for a test, removed when
// the test ends. Its name carries the test process's PID, and files of
// test processes that died without cleaning up (killed by a timeout or
// a signal) are swept first. Where /dev/shm is missing or does not take
// O_DIRECT it falls back to TempFile.
func ShmFile(t testing.TB, size int64) string {
	t.Helper()
	loopdev.SweepFiles("/dev/shm", shmPrefix)
	f, err := os.CreateTemp("/dev/shm", fmt.Sprintf("%s%d-*.img", shmPrefix, os.Getpid()))
	if err != nil {
		return TempFile(t, size)
	}
	name := f.Name()
	t.Cleanup(func() { os.Remove(name) })
	err = f.Truncate(size)
	f.Close()
	if err == nil {
		var fd int
		if fd, err = syscall.Open(name, syscall.O_RDWR|syscall.O_DIRECT, 0); err == nil {
			syscall.Close(fd)
		}
	}
	if err != nil {
		return TempFile(t, size)
	}
	return name
}
