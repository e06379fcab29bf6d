package loopdev

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCreateRemove(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("skipping TestCreateRemove: %v", err)
	}
	d, err := Create("", 16<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	path, file := d.Path, d.File
	sz, err := os.ReadFile("/sys/block/" + d.Name() + "/queue/logical_block_size")
	if err != nil {
		d.Remove()
		t.Fatal(err)
	}
	if got, want := string(sz), "4096\n"; got != want {
		t.Errorf("logical_block_size = %q, want %q", got, want)
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("backing file %s still there after Remove: %v", file, err)
	}
	if b, err := os.ReadFile("/sys/block/" + path[len("/dev/"):] + "/loop/backing_file"); err == nil {
		t.Errorf("%s still attached to %s", path, b)
	}
}

// TestCrashLeavesNothing: a process that dies without Remove leaves no
// attached device (autoclear), and the next Create removes its file.
func TestCrashLeavesNothing(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("skipping TestCrashLeavesNothing: %v", err)
	}
	if os.Getenv("LOOPDEV_CHILD") == "1" {
		d, err := Create("", 1<<20, 0)
		if err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString(d.Path + " " + d.File + "\n")
		os.Exit(0) // no Remove: as if the process crashed
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLeavesNothing$")
	cmd.Env = append(os.Environ(), "LOOPDEV_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("child printed %q", out)
	}
	dev, file := f[0], f[1]
	if !waitDetached(dev, file, 5*time.Second) {
		t.Fatalf("%s still attached to %s after its creator died", dev, file)
	}
	d, err := Create("", 1<<20, 0) // sweeps
	if err != nil {
		t.Fatal(err)
	}
	defer d.Remove()
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the dead creator's file %s is still there: %v", file, err)
	}
}

// TestSweepFiles: files named prefix+PID of a process that is gone are
// removed; those of a live process, names without a PID and other
// prefixes are left. It needs no root: plain files in a temp dir.
func TestSweepFiles(t *testing.T) {
	dir := t.TempDir()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Skipf("skipping TestSweepFiles: no process to outlive (%v)", err)
	}
	dead := gone.ProcessState.Pid()
	if processAlive(dead) {
		t.Skipf("skipping TestSweepFiles: pid %d was reused at once", dead)
	}
	names := map[string]bool{ // name -> swept
		"wbengine-test-" + strconv.Itoa(dead) + "-123.img":        true,
		"wbengine-test-" + strconv.Itoa(os.Getpid()) + "-456.img": false,
		"wbengine-test-789.img":                                   false, // no PID field
		"wbengine-loop-" + strconv.Itoa(dead) + "-1.img":          false, // another prefix
	}
	for n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	SweepFiles(dir, "wbengine-test-")
	for n, swept := range names {
		_, err := os.Stat(filepath.Join(dir, n))
		if gone := os.IsNotExist(err); gone != swept {
			t.Errorf("%s: removed %v, want %v", n, gone, swept)
		}
	}
}
