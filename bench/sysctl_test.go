package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSysctls points the sysctls and the hold's lock file at a temp dir
// holding the given values (path → value).
func fakeSysctls(t *testing.T, vals map[string]string) (root string) {
	t.Helper()
	root = t.TempDir()
	for p, v := range vals {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldRoot, oldLock := sysctlRoot, holdLockPath
	sysctlRoot, holdLockPath = root, filepath.Join(root, "hold.lock")
	t.Cleanup(func() {
		RestoreSysctls()
		sysctlRoot, holdLockPath = oldRoot, oldLock
	})
	return root
}

func sysctlsNow(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, pair := range savedSysctls {
		for _, p := range pair {
			v, err := readSysctl(p)
			if err != nil {
				t.Fatal(err)
			}
			m[p] = v
		}
	}
	return m
}

var defaultDirty = map[string]string{
	"vm/dirty_background_ratio": "10", "vm/dirty_background_bytes": "0",
	"vm/dirty_ratio": "20", "vm/dirty_bytes": "0",
}

// TestHoldKernelWriteback: a hold raises the ratios, keeps the old
// values in its lock file while it lasts, and puts them back once, by
// Close's restore or by RestoreSysctls (the signal path).
func TestHoldKernelWriteback(t *testing.T) {
	fakeSysctls(t, defaultDirty)
	var notes []string
	logf := func(f string, a ...any) { notes = append(notes, f) }
	h, err := holdKernelWriteback(logf)
	if err != nil {
		t.Fatal(err)
	}
	now := sysctlsNow(t)
	if now["vm/dirty_background_ratio"] != "80" || now["vm/dirty_ratio"] != "90" {
		t.Fatalf("held: %v; want the ratios at 80 and 90", now)
	}
	if h.held["vm.dirty_ratio"] != "90" {
		t.Fatalf("held values %v", h.held)
	}
	lock, _ := os.ReadFile(holdLockPath)
	if !strings.Contains(string(lock), "vm/dirty_ratio=20\n") || !strings.Contains(string(lock), "vm/dirty_background_ratio=10\n") {
		t.Fatalf("lock file does not keep the old values:\n%s", lock)
	}
	if _, err := holdKernelWriteback(logf); err == nil {
		t.Fatal("a second hold in the same process was allowed")
	}
	if err := RestoreSysctls(); err != nil {
		t.Fatal(err)
	}
	if now := sysctlsNow(t); now["vm/dirty_background_ratio"] != "10" || now["vm/dirty_ratio"] != "20" {
		t.Fatalf("after RestoreSysctls: %v; want 10 and 20 back", now)
	}
	if lock, _ := os.ReadFile(holdLockPath); len(lock) != 0 {
		t.Fatalf("the lock file still holds values after the restore:\n%s", lock)
	}
	// A second restore (Close after the signal handler) changes nothing.
	writeSysctl("vm/dirty_ratio", "33")
	if err := h.restore(); err != nil {
		t.Fatal(err)
	}
	if v, _ := readSysctl("vm/dirty_ratio"); v != "33" {
		t.Fatalf("a second restore wrote vm.dirty_ratio again: %s", v)
	}
	if len(notes) != 0 {
		t.Fatalf("notices %q", notes)
	}
}

// TestHoldKernelWritebackBytes: where a _bytes setting was in force, it
// is the one put back (writing a ratio zeroes it in the kernel).
func TestHoldKernelWritebackBytes(t *testing.T) {
	fakeSysctls(t, map[string]string{
		"vm/dirty_background_ratio": "0", "vm/dirty_background_bytes": "1048576",
		"vm/dirty_ratio": "0", "vm/dirty_bytes": "4194304",
	})
	if _, err := holdKernelWriteback(func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	// The kernel zeroes the _bytes twin of a ratio written.
	writeSysctl("vm/dirty_background_bytes", "0")
	writeSysctl("vm/dirty_bytes", "0")
	if err := RestoreSysctls(); err != nil {
		t.Fatal(err)
	}
	if now := sysctlsNow(t); now["vm/dirty_background_bytes"] != "1048576" || now["vm/dirty_bytes"] != "4194304" {
		t.Fatalf("after restore: %v; want the _bytes values back", now)
	}
}

// TestHoldKernelWritebackLocked: while another wbbench holds the lock,
// a hold is refused (nothing changed); values a killed holder left in
// the lock file are put back before the next hold saves anything.
func TestHoldKernelWritebackLocked(t *testing.T) {
	fakeSysctls(t, defaultDirty)
	other, err := os.OpenFile(holdLockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	other.WriteString("wbbench pid 4242\n")
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = holdKernelWriteback(func(string, ...any) {})
	if !IsUsage(err) || !strings.Contains(err.Error(), "another wbbench holds kernel writeback now (wbbench pid 4242)") {
		t.Fatalf("hold while locked: %v", err)
	}
	if now := sysctlsNow(t); now["vm/dirty_ratio"] != "20" {
		t.Fatalf("a refused hold changed vm.dirty_ratio to %s", now["vm/dirty_ratio"])
	}
	// The other holder is killed with the sysctls held: its lock goes,
	// its record stays.
	other.Truncate(0)
	other.WriteAt([]byte("wbbench pid 4242\nvm/dirty_background_ratio=7\nvm/dirty_background_bytes=0\nvm/dirty_ratio=17\nvm/dirty_bytes=0\n"), 0)
	other.Close()
	writeSysctl("vm/dirty_background_ratio", "80")
	writeSysctl("vm/dirty_ratio", "90")
	var notes []string
	if _, err := holdKernelWriteback(func(f string, a ...any) { notes = append(notes, f) }); err != nil {
		t.Fatal(err)
	}
	if err := RestoreSysctls(); err != nil {
		t.Fatal(err)
	}
	if now := sysctlsNow(t); now["vm/dirty_background_ratio"] != "7" || now["vm/dirty_ratio"] != "17" {
		t.Fatalf("after a hold following a killed holder: %v; want the values it left (7, 17)", now)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "did not restore") {
		t.Fatalf("notices %q; want one saying what was put back", notes)
	}
}
