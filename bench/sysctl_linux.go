package bench

// -hold-kernel-writeback: the kernel's flusher starts writing a block
// device's dirty pages once they pass vm.dirty_background_*, so with
// the default settings the kernel baseline writes most of its pages
// back while they are being dirtied, and its timed fdatasync has little
// left to do. Holding writeback raises the thresholds for the run (as
// the reference measurement does) and puts the old values back on
// every exit path: Bench.Close, the first SIGINT or SIGTERM (wbbench
// calls RestoreSysctls from its signal handler), and a panic (wbbench
// defers RestoreSysctls). Only SIGKILL escapes; then the old values
// stay in the lock file, and the next wbbench that holds writeback
// puts them back first.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The sysctls a report records (vm.dirty_* decide when the kernel
// writes back; kernel.io_uring_disabled whether the engine may use
// io_uring), by their path under /proc/sys.
var reportSysctls = []string{
	"vm/dirty_background_ratio", "vm/dirty_background_bytes",
	"vm/dirty_ratio", "vm/dirty_bytes",
	"vm/dirty_expire_centisecs", "vm/dirty_writeback_centisecs",
	"kernel/io_uring_disabled",
}

// heldSysctls are what -hold-kernel-writeback sets: the reference
// measurement's values. Writing a ratio makes the kernel zero its
// _bytes twin.
var heldSysctls = [][2]string{
	{"vm/dirty_background_ratio", "80"},
	{"vm/dirty_ratio", "90"},
}

// savedSysctls are what a hold saves and restores: each ratio with its
// _bytes twin (only one of a pair is in force: the one that is not 0).
var savedSysctls = [][2]string{
	{"vm/dirty_background_ratio", "vm/dirty_background_bytes"},
	{"vm/dirty_ratio", "vm/dirty_bytes"},
}

// sysctlRoot is where sysctls live, and holdLockPath the lock file that
// keeps two wbbench runs from holding at once and keeps the old values;
// tests point them elsewhere.
var (
	sysctlRoot   = "/proc/sys"
	holdLockPath = "/run/wbbench-hold-kernel-writeback"
)

// sysctlName is a sysctl's dotted name (vm.dirty_ratio).
func sysctlName(path string) string { return strings.ReplaceAll(path, "/", ".") }

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysctlRoot, path))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(path, v string) error {
	f, err := os.OpenFile(filepath.Join(sysctlRoot, path), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readSysctls reads the sysctls a report records; one that cannot be
// read is left out.
func readSysctls() map[string]string {
	m := map[string]string{}
	for _, p := range reportSysctls {
		if v, err := readSysctl(p); err == nil {
			m[sysctlName(p)] = v
		}
	}
	return m
}

// sysctlHold is kernel writeback held back: the old values, and the
// lock file that holds them while the hold lasts.
type sysctlHold struct {
	lock  *os.File
	saved map[string]string // path → old value
	held  map[string]string // dotted name → value while held
}

var (
	holdMu     sync.Mutex
	activeHold *sysctlHold // the hold RestoreSysctls restores
)

// holdKernelWriteback raises the kernel's dirty thresholds for the run.
// It refuses while another wbbench holds them (the lock file), and puts
// back first what a holder killed before it restored left in the lock
// file (logf says so).
func holdKernelWriteback(logf func(string, ...any)) (*sysctlHold, error) {
	holdMu.Lock()
	defer holdMu.Unlock()
	if activeHold != nil {
		return nil, errors.New("bench: kernel writeback is already held by this process")
	}
	f, err := os.OpenFile(holdLockPath, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, usagef("-hold-kernel-writeback: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		who := ""
		if b, err := os.ReadFile(holdLockPath); err == nil {
			if pid, _, ok := strings.Cut(string(b), "\n"); ok {
				who = " (" + strings.TrimSpace(pid) + ")"
			}
		}
		return nil, usagef("-hold-kernel-writeback: another wbbench holds kernel writeback now%s (lock %s); wait for it to finish", who, holdLockPath)
	}
	h := &sysctlHold{lock: f, saved: map[string]string{}, held: map[string]string{}}
	fail := func(err error) (*sysctlHold, error) {
		h.restoreLocked()
		return nil, err
	}
	// A holder that was killed before it restored left its old values.
	if left, pid := parseHoldFile(f); len(left) > 0 {
		h.saved = left
		if err := h.writeSaved(); err != nil {
			return fail(usagef("-hold-kernel-writeback: putting back the values %s left: %v", pid, err))
		}
		logf("put back %s, left held by %s, which did not restore them", h.describeSaved(), pid)
	}
	h.saved = map[string]string{}
	for _, pair := range savedSysctls {
		for _, p := range pair {
			v, err := readSysctl(p)
			if err != nil {
				return fail(usagef("-hold-kernel-writeback: %v", err))
			}
			h.saved[p] = v
		}
	}
	var rec strings.Builder
	fmt.Fprintf(&rec, "wbbench pid %d\n", os.Getpid())
	for _, pair := range savedSysctls {
		for _, p := range pair {
			fmt.Fprintf(&rec, "%s=%s\n", p, h.saved[p])
		}
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(rec.String()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return fail(usagef("-hold-kernel-writeback: %s: %v", holdLockPath, err))
	}
	for _, kv := range heldSysctls {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return fail(usagef("-hold-kernel-writeback: writing %s: %v (it needs root)", filepath.Join(sysctlRoot, kv[0]), err))
		}
	}
	for _, pair := range savedSysctls {
		for _, p := range pair {
			if v, err := readSysctl(p); err == nil {
				h.held[sysctlName(p)] = v
			}
		}
	}
	activeHold = h
	return h, nil
}

// parseHoldFile reads the old values a lock file holds, and who left them.
func parseHoldFile(f *os.File) (map[string]string, string) {
	if _, err := f.Seek(0, 0); err != nil {
		return nil, ""
	}
	m := map[string]string{}
	who := "a wbbench"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "wbbench pid "); ok {
			who = "wbbench pid " + rest
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			m[k] = v
		}
	}
	for _, pair := range savedSysctls {
		for _, p := range pair {
			if _, ok := m[p]; !ok {
				return nil, who // not a whole record: ignore it
			}
		}
	}
	return m, who
}

// writeSaved writes the saved values back: of each ratio and its
// _bytes twin, the one that was in force (bytes when not 0).
func (h *sysctlHold) writeSaved() error {
	var errs []error
	for _, pair := range savedSysctls {
		ratio, bytes := pair[0], pair[1]
		p := ratio
		if v := h.saved[bytes]; v != "" && v != "0" {
			p = bytes
		}
		if h.saved[p] == "" {
			continue // never read: nothing to put back
		}
		if err := writeSysctl(p, h.saved[p]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *sysctlHold) describeSaved() string {
	var parts []string
	for _, pair := range savedSysctls {
		p := pair[0]
		if v := h.saved[pair[1]]; v != "" && v != "0" {
			p = pair[1]
		}
		parts = append(parts, sysctlName(p)+"="+h.saved[p])
	}
	return strings.Join(parts, " ")
}

// describeHeld says what the hold set, and what it will put back.
func (h *sysctlHold) describeHeld() string {
	var parts []string
	for _, kv := range heldSysctls {
		parts = append(parts, fmt.Sprintf("%s %s → %s", sysctlName(kv[0]), h.saved[kv[0]], kv[1]))
	}
	return strings.Join(parts, ", ") + " (was " + h.describeSaved() + ")"
}

// restore puts the old values back and lets the lock go. It is safe to
// call more than once, and from any goroutine.
func (h *sysctlHold) restore() error {
	holdMu.Lock()
	defer holdMu.Unlock()
	return h.restoreLocked()
}

func (h *sysctlHold) restoreLocked() error {
	if h.lock == nil {
		return nil
	}
	err := h.writeSaved()
	if err == nil {
		// Restored: the lock file no longer holds values to put back.
		h.lock.Truncate(0)
	}
	h.lock.Close() // lets the flock go
	h.lock = nil
	if activeHold == h {
		activeHold = nil
	}
	if err != nil {
		return fmt.Errorf("bench: restoring %s: %w (the old values stay in %s)", h.describeSaved(), err, holdLockPath)
	}
	return nil
}

// RestoreSysctls puts back the sysctls -hold-kernel-writeback changed,
// if a hold is active. wbbench calls it on the first SIGINT or SIGTERM,
// before anything else, and deferred in main; Bench.Close calls it too.
// It is safe to call at any time and more than once.
func RestoreSysctls() error {
	holdMu.Lock()
	defer holdMu.Unlock()
	if activeHold == nil {
		return nil
	}
	return activeHold.restoreLocked()
}
