package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/internal/verify"
)

// Crash test parameters: each round is a few seconds. A 64 MiB device
// of 16,384 pages fills up with required pages within the first syncs
// (the hot pattern spreads hundreds of thousands of versions a second
// over it), so a round checks far more than minRequired pages.
const (
	crashRounds    = 5
	crashDevSize   = 64 << 20
	crashSyncEvery = "100ms"
	minRequired    = 1000 // a round that checks fewer proved nothing
)

// TestCrashCheck: SIGKILL a wbbench -pattern hot -verify -journal run on
// a /dev/shm loop device with 4096-byte sectors a random 0–1 s after its
// journal holds three "synced" lines, then wbbench check must find every
// page the journal promised. Five rounds, each with its own seed and a
// fresh device.
func TestCrashCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the crash test in -short mode")
	}
	if err := loopdevtest.Available(); err != nil {
		t.Skipf("skipping the crash test: it needs loop devices (%v)", err)
	}
	bin := buildBinary(t)
	base := rand.Uint64() % 1_000_000
	t.Logf("seeds %d to %d (rerun a round with its seed)", base+1, base+crashRounds)
	rng := rand.New(rand.NewPCG(base, 1))
	for i := uint64(1); i <= crashRounds; i++ {
		seed := base + i
		delay := time.Duration(rng.Int64N(int64(time.Second)))
		t.Run(fmt.Sprintf("round%d", i), func(t *testing.T) { crashRound(t, bin, seed, delay) })
	}
}

func crashRound(t *testing.T, bin string, seed uint64, delay time.Duration) {
	d := loopdevtest.ForTest(t, crashDevSize, 4096)
	requireZero(t, d.File, crashDevSize)
	journal := filepath.Join(t.TempDir(), "journal")

	// The child gets SIGKILL if this thread dies (the test binary
	// crashing), and is killed in Cleanup, which runs before the loop
	// device's (cleanups run last-registered first).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(bin, "-device", d.Path, "-pattern", "hot", "-verify", "-journal", journal,
		"-seed", strconv.FormatUint(seed, 10), "-duration", "10m", "-sync-every", crashSyncEvery, "-baseline", "none")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	exited := func() string {
		return fmt.Sprintf("wbbench exited before it was killed: %v\n%s", waitErr, out.String())
	}

	// Wait for three "synced" lines, then a further delay.
	deadline := time.After(30 * time.Second)
	for countSynced(journal) < 3 {
		select {
		case <-done:
			t.Fatal(exited())
		case <-deadline:
			t.Fatalf("no three \"synced\" lines in the journal after 30 s:\n%s", out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	select {
	case <-done:
		t.Fatal(exited())
	case <-time.After(delay):
	}
	linesAtKill := countSynced(journal)
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	var ee *exec.ExitError
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !errors.As(waitErr, &ee) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("wbbench was not killed by SIGKILL: %v\n%s", waitErr, out.String())
	}

	// Check as a child too: the plain build reads 64 MiB faster than
	// this test binary under -race, and it is what a user runs.
	chk := exec.Command(bin, "check", "-device", d.Path, "-journal", journal, "-json")
	var stderr bytes.Buffer
	chk.Stderr = &stderr
	stdout, err := chk.Output()
	var doc checkDoc
	if jerr := json.Unmarshal(stdout, &doc); jerr != nil {
		t.Fatalf("check: %v, stderr %q, stdout not JSON: %v\n%s", err, stderr.String(), jerr, stdout)
	}
	t.Logf("seed %d: killed %.3f s after the 3rd \"synced\" line (%d lines then); synced V %s; pages required %s, valid %s, zero %s, bad %d",
		seed, delay.Seconds(), linesAtKill, comma(doc.Last), comma(doc.Required), comma(doc.Valid), comma(doc.Zero), doc.Bad)
	if err != nil || doc.Bad != 0 {
		for _, p := range doc.Problems {
			t.Errorf("bad: %s", p)
		}
		t.Fatalf("check after the crash: %v (stderr %q); the run's output:\n%s", err, stderr.String(), out.String())
	}
	if !doc.Synced || doc.Run.Seed != seed || doc.Run.Pattern != "hot" {
		t.Fatalf("check read another journal: %+v", doc.Run)
	}
	if doc.Required < minRequired {
		t.Fatalf("only %d pages required: the round proved nothing (want at least %d)", doc.Required, minRequired)
	}
}

// countSynced is the number of complete "synced" lines in the journal.
func countSynced(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nsynced ")
}

// requireZero checks that the first size bytes of a fresh loop device's
// backing file are zero: the check lets a page that nothing was synced
// to be all zero, and anything else there would fail it.
func requireZero(t *testing.T, file string, size int64) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for off < size {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if !verify.IsZero(buf[:n]) {
			t.Fatalf("the fresh device %s is not zero-filled near byte %d", file, off)
		}
		off += int64(n)
		if err == io.EOF && off < size {
			t.Fatalf("%s: %d bytes, want %d", file, off, size)
		}
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
}

// injectSpec is TestFaultsEndToEnd's -inject: every kind of write fault
// at 1 %, and 5 % of flushes fail. With seed 28 the flush rule's stream
// (the faultring.Injector draws one number per flush) fails the first flush, so a
// target that flushes sees a failed Sync even when the run is slow
// (-race) and syncs only a few times.
const injectSpec = "eio=0.01,short=0.01,eagain=0.01,delay=1ms@0.01,flusherr=0.05,seed=28"

// TestFaultsEndToEnd: a hot -verify -journal run with faults injected
// ends with faults off and a Sync that succeeds, leaves no page dirty,
// under writeback or in error, journals exactly the syncs that returned
// nil (every failed one is reported), and checks clean. On a file the
// engine flushes (fdatasync) and flush errors fail syncs; on a /dev/shm
// loop device too, unless the kernel calls its cache "write through"
// (then it never flushes).
func TestFaultsEndToEnd(t *testing.T) {
	for _, kind := range []string{"file", "loop"} {
		t.Run(kind, func(t *testing.T) {
			var path string
			if kind == "file" {
				path = loopdevtest.ShmFile(t, 32<<20)
			} else {
				path = loopdevtest.ForTest(t, 32<<20, 0).Path
			}
			journal := filepath.Join(t.TempDir(), "journal")
			code, out, errOut := wb(t, "-device", path, "-pattern", "hot", "-verify", "-journal", journal, "-inject", injectSpec,
				"-duration", "2s", "-sync-every", "50ms", "-baseline", "none", "-runs", "1", "-json")
			if code != 0 {
				t.Fatalf("status %d: %s\n%s", code, errOut, out)
			}
			var doc struct {
				Target struct {
					WriteCache string `json:"write_cache"`
				} `json:"target"`
				Faults *struct {
					Requests uint64 `json:"requests"`
					EIO      uint64 `json:"eio"`
					Short    uint64 `json:"short"`
					EAGAIN   uint64 `json:"eagain"`
					Delayed  uint64 `json:"delayed"`
					FlushErr uint64 `json:"flush_errors"`
				} `json:"faults"`
				Results []struct {
					Name        string `json:"name"`
					Syncs       int64  `json:"syncs"`
					FailedSyncs int64  `json:"failed_syncs"`
				} `json:"results"`
				JournalSynced *uint64  `json:"journal_synced"`
				SyncErrors    []string `json:"sync_errors"`
				Errors        []string `json:"errors"`
				EngineEnd     *struct {
					LastSyncOK   bool  `json:"last_sync_ok"`
					FaultsOff    bool  `json:"faults_off"`
					Dirty        int64 `json:"dirty"`
					Writeback    int64 `json:"writeback"`
					InFlight     int64 `json:"in_flight"`
					PagesInError int64 `json:"pages_in_error"`
					Syncs        int64 `json:"syncs"`
					FailedSyncs  int64 `json:"failed_syncs"`
					WriteErrors  int64 `json:"write_errors"`
					Flushes      int64 `json:"flushes"`
					FlushErrors  int64 `json:"flush_errors"`
				} `json:"engine_end"`
			}
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			f, e := doc.Faults, doc.EngineEnd
			if f == nil || e == nil || len(doc.Results) != 1 || doc.JournalSynced == nil {
				t.Fatalf("report lacks faults, engine_end, the engine's result or journal_synced:\n%s", out)
			}
			r := doc.Results[0]
			t.Logf("injected into %d requests: %d EIO, %d short, %d EAGAIN, %d delayed, %d flush errors; %d syncs, %d failed; %d write errors, %d flushes",
				f.Requests, f.EIO, f.Short, f.EAGAIN, f.Delayed, f.FlushErr, e.Syncs, e.FailedSyncs, e.WriteErrors, e.Flushes)
			for _, s := range doc.SyncErrors {
				t.Logf("failed sync: %s", s)
			}
			if f.Requests == 0 || f.EIO == 0 || f.Short == 0 || f.EAGAIN == 0 || f.Delayed == 0 {
				t.Fatalf("faults %+v: want every kind injected", *f)
			}
			// The engine flushes a file, and a block device unless its
			// write_cache is "write through" (a loop device's is "write
			// back" on recent kernels).
			if doc.Target.WriteCache == "write through" {
				t.Logf("%s has write_cache %q: the engine does not flush it", path, doc.Target.WriteCache)
				if f.FlushErr != 0 || e.Flushes != 0 || e.FlushErrors != 0 {
					t.Fatalf("a write-through device: %d flushes, %d flush errors; want none", e.Flushes, f.FlushErr)
				}
			} else if f.FlushErr == 0 || e.FlushErrors != int64(f.FlushErr) {
				t.Fatalf("%s (write_cache %q): %d flush errors injected, %d seen by the engine; want the same, and some (%d syncs)",
					path, doc.Target.WriteCache, f.FlushErr, e.FlushErrors, e.Syncs)
			}
			// The run ended with faults off and a Sync that succeeded,
			// and nothing is left to write.
			if !e.LastSyncOK || !e.FaultsOff || e.Dirty != 0 || e.Writeback != 0 || e.InFlight != 0 || e.PagesInError != 0 || len(doc.Errors) != 0 {
				t.Fatalf("engine_end %+v, errors %q", *e, doc.Errors)
			}
			// Every failed Sync was reported, and none was journaled: a
			// flush error fails its Sync; the journal has one line per
			// Sync that returned nil.
			if e.FailedSyncs < int64(f.FlushErr) || int64(len(doc.SyncErrors)) != e.FailedSyncs || r.FailedSyncs != e.FailedSyncs || r.Syncs != e.Syncs {
				t.Fatalf("%d failed syncs (the result says %d of %d), %d reported, %d flush errors injected",
					e.FailedSyncs, r.FailedSyncs, r.Syncs, len(doc.SyncErrors), f.FlushErr)
			}
			jb, err := os.ReadFile(journal)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(jb), "\n"), "\n")[1:]
			if int64(len(lines)) != e.Syncs-e.FailedSyncs {
				t.Fatalf("the journal has %d synced lines; %d syncs of which %d failed", len(lines), e.Syncs, e.FailedSyncs)
			}
			if want := fmt.Sprintf("synced %d", *doc.JournalSynced); lines[len(lines)-1] != want {
				t.Fatalf("last journal line %q, want %q", lines[len(lines)-1], want)
			}
			code, cout, cerr := wb(t, "check", "-device", path, "-journal", journal)
			if code != 0 || !strings.HasSuffix(cout, "OK\n") {
				t.Fatalf("check: status %d %s\n%s", code, cerr, cout)
			}
			t.Logf("\n%s", cout)
		})
	}
}
