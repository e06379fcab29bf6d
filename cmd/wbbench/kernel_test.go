package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// The vm.dirty_* sysctls these tests change, and the ones in force are
// put back in their cleanup, also when they fail.
var dirtySysctls = []string{"dirty_background_ratio", "dirty_background_bytes", "dirty_ratio", "dirty_bytes"}

func readVM(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, n := range dirtySysctls {
		b, err := os.ReadFile("/proc/sys/vm/" + n)
		if err != nil {
			t.Fatal(err)
		}
		m[n] = strings.TrimSpace(string(b))
	}
	return m
}

func writeVM(t *testing.T, name, v string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/"+name, []byte(v+"\n"), 0o644); err != nil {
		t.Fatalf("vm.%s=%s: %v", name, v, err)
	}
}

// restoreVM puts m back: of each ratio and its _bytes twin, the one in
// force.
func restoreVM(t *testing.T, m map[string]string) {
	t.Helper()
	for _, pair := range [][2]string{{"dirty_background_ratio", "dirty_background_bytes"}, {"dirty_ratio", "dirty_bytes"}} {
		if m[pair[1]] != "0" {
			writeVM(t, pair[1], m[pair[1]])
		} else {
			writeVM(t, pair[0], m[pair[0]])
		}
	}
}

// earlyWritebackSysctls makes the kernel write a block device's dirty
// pages back while they are being dirtied: background writeback from
// 1 MiB, writers throttled at 8 MiB. It saves the sysctls and puts them
// back when the test ends, and returns the values it set.
func earlyWritebackSysctls(t *testing.T) map[string]string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: changing vm.dirty_* needs root")
	}
	orig := readVM(t)
	t.Cleanup(func() { restoreVM(t, orig) })
	writeVM(t, "dirty_background_bytes", "1048576")
	writeVM(t, "dirty_bytes", "8388608")
	return readVM(t)
}

type kernelDoc struct {
	Warnings []string `json:"warnings"`
	Config   struct {
		HoldKernelWriteback bool              `json:"hold_kernel_writeback"`
		HeldSysctls         map[string]string `json:"held_sysctls"`
	} `json:"config"`
	Results []struct {
		Name           string `json:"name"`
		EarlyWriteback bool   `json:"early_writeback"`
		Runs           []struct {
			Bytes          int64 `json:"bytes"`
			IOs            int64 `json:"ios"`
			EarlyWriteback bool  `json:"early_writeback"`
			Device         *struct {
				WriteIOs        int64   `json:"write_ios"`
				WriteBytes      int64   `json:"write_bytes"`
				TimedWriteBytes int64   `json:"timed_write_bytes"`
				TimedShare      float64 `json:"timed_share"`
			} `json:"device"`
		} `json:"runs"`
	} `json:"results"`
}

// TestKernelWritebackAccounting: on a loop device, with the kernel set
// to write back early, the kernel baseline's report says how little of
// its bytes the block layer wrote inside its timed fdatasync (and
// warns); with -hold-kernel-writeback at least 95 % of them are, and
// the sysctls are back afterwards. The engine's bytes are the block
// layer's.
func TestKernelWritebackAccounting(t *testing.T) {
	set := earlyWritebackSysctls(t)
	d := loopdevtest.ForTest(t, 64<<20, 0)
	args := []string{"-device", d.Path, "-baseline", "kernel", "-runs", "2", "-json"}
	code, out, errOut := wb(t, args...)
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	var doc kernelDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range doc.Results {
		for i, s := range r.Runs {
			if s.Device == nil || s.Device.WriteBytes < s.Bytes {
				t.Fatalf("%s run %d: device %+v; want the block layer's count of at least %d bytes", r.Name, i+1, s.Device, s.Bytes)
			}
			switch r.Name {
			case "kernel":
				t.Logf("kernel run %d: %.1f%% of %d bytes written inside the timed fdatasync", i+1, 100*s.Device.TimedShare, s.Device.WriteBytes)
				if s.Device.TimedShare >= 0.95 || !s.EarlyWriteback {
					t.Fatalf("kernel run %d: %+v, early_writeback %v; want most bytes written before the timed fdatasync, flagged", i+1, *s.Device, s.EarlyWriteback)
				}
			case "engine":
				if s.Device.WriteBytes != s.Bytes || s.Device.TimedShare != 1 || s.EarlyWriteback {
					t.Fatalf("engine run %d: device %+v, reported %d bytes; want the same bytes, all inside the timed Sync", i+1, *s.Device, s.Bytes)
				}
			}
		}
	}
	if len(doc.Results) != 2 || !doc.Results[1].EarlyWriteback || len(doc.Warnings) == 0 || !strings.Contains(doc.Warnings[0], "kernel: in run ") ||
		!strings.Contains(doc.Warnings[0], "-hold-kernel-writeback") {
		t.Fatalf("results %+v, warnings %q; want the kernel flagged and a warning naming -hold-kernel-writeback", doc.Results, doc.Warnings)
	}
	code, text, _ := wb(t, "-device", d.Path, "-baseline", "kernel", "-runs", "2")
	if code != 0 || !strings.Contains(text, "warning  kernel: in run ") || !strings.Contains(text, "! only ") {
		t.Fatalf("text: status %d; want the warning and the mark in the table:\n%s", code, text)
	}

	code, out, errOut = wb(t, append(args, "-hold-kernel-writeback")...)
	if code != 0 {
		t.Fatalf("-hold-kernel-writeback: status %d: %s", code, errOut)
	}
	doc = kernelDoc{}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	k := doc.Results[1]
	for i, s := range k.Runs {
		t.Logf("held: kernel run %d: %.1f%% inside the timed fdatasync", i+1, 100*s.Device.TimedShare)
		if s.Device.TimedShare < 0.95 || s.EarlyWriteback {
			t.Fatalf("held: kernel run %d: %+v; want at least 95%% inside the timed fdatasync", i+1, *s.Device)
		}
	}
	if k.EarlyWriteback || len(doc.Warnings) != 0 || !doc.Config.HoldKernelWriteback || doc.Config.HeldSysctls["vm.dirty_ratio"] != "90" {
		t.Fatalf("held: %+v, warnings %q, config %+v", k, doc.Warnings, doc.Config)
	}
	if now := readVM(t); !mapsEqual(now, set) {
		t.Fatalf("after the run the sysctls are %v; want them back at %v", now, set)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestHoldRestoredAfterSignal: a wbbench holding kernel writeback puts
// the sysctls back when it is interrupted (SIGINT, SIGTERM) in the
// middle of the run, and exits 130.
func TestHoldRestoredAfterSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the build of the binary in -short mode")
	}
	set := earlyWritebackSysctls(t)
	d := loopdevtest.ForTest(t, 32<<20, 0)
	bin := buildBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		cmd := exec.Command(bin, "-device", d.Path, "-baseline", "kernel", "-runs", "10000", "-hold-kernel-writeback")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		held := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if readVM(t)["dirty_ratio"] == "90" {
				held = true
				break
			}
		}
		time.Sleep(300 * time.Millisecond) // into the runs
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !held || !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
			t.Fatalf("%v: held %v; exit %v, stderr %q; want the sysctls held, then status 130", sig, held, err, stderr.String())
		}
		if now := readVM(t); !mapsEqual(now, set) {
			t.Fatalf("after %v the sysctls are %v; want them back at %v (stderr %q)", sig, now, set, stderr.String())
		}
		t.Logf("%v: %s", sig, strings.TrimSpace(stderr.String()))
	}
}
