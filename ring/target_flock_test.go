package ring

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// A writer holds an exclusive flock on a file target from OpenTarget to
// Close: a second writer of the same file fails with ErrTargetBusy,
// naming the file, while the first holds it (the lock belongs to the open
// file description, so a second open in the same process conflicts too);
// a read-only open takes no lock; after Close the file opens again.
func TestOpenTargetFileLocked(t *testing.T) {
	path := loopdevtest.TempFile(t, 1<<20)
	tg, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	second, err := OpenTarget(path, TargetOptions{})
	if err == nil {
		second.Close()
		t.Fatal("second open of a file target succeeded while the first holds it")
	}
	if !errors.Is(err, ErrTargetBusy) || !errors.Is(err, unix.EWOULDBLOCK) || !strings.Contains(err.Error(), path) {
		t.Errorf("second open: %v, want ErrTargetBusy and EWOULDBLOCK naming %s", err, path)
	}
	t.Logf("second open: %v", err)
	// Another process is kept out too: flock(1) -n fails with exit 1.
	if flock, lerr := exec.LookPath("flock"); lerr == nil {
		out, err := exec.Command(flock, "-n", "-x", path, "true").CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("flock -n -x %s from another process: %v %s, want exit status 1 (lock held)", path, err, out)
		}
	}
	ro, err := OpenTarget(path, TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a locked file: %v", err)
	}
	ro.Close()
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatalf("open after the first writer closed: %v", err)
	}
	again.Close()
}

// A lock left by a writer that failed to open (a target it rejected
// after locking) is not left behind.
func TestOpenTargetFileLockReleasedOnError(t *testing.T) {
	path := loopdevtest.TempFile(t, 1<<20)
	if err := os.Truncate(path, 1<<20+100); err != nil { // not a multiple of the block size
		t.Fatal(err)
	}
	if tg, err := OpenTarget(path, TargetOptions{}); err == nil {
		tg.Close()
		t.Fatal("opened a target whose size is not a multiple of its block size")
	}
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatalf("open after a rejected open: %v (its lock was left behind?)", err)
	}
	tg.Close()
}

// A block device's second writer matches ErrTargetBusy as well as EBUSY.
func TestOpenTargetBlockBusy(t *testing.T) {
	d := loopdevtest.ForTest(t, 1<<20, 4096)
	tg, err := OpenTarget(d.Path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	_, err = OpenTarget(d.Path, TargetOptions{})
	if !errors.Is(err, ErrTargetBusy) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("second writer of %s: %v, want ErrTargetBusy and EBUSY", d.Path, err)
	}
}
