package sqlitevfs

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/ring"
)

func isBusy(err error) bool { return errors.Is(err, ring.ErrTargetBusy) }

// childEnv carries a crash child's configuration (JSON) from TestCrash
// to the child, which is this test binary run again with -test.run
// '^TestCrashChild$'.
const childEnv = "SQLITEVFS_CRASH_CHILD"

type childConfig struct {
	Device      string
	SideFile    string
	JournalMode string
	Synchronous string
	Exclusive   bool
	Break       string
	Seed        uint64
}

// TestCrashChild is the crash test's child process: it runs bank
// transactions on the device until it is killed, appending each
// transaction's id to the side file (and fsyncing it) after its COMMIT
// returned.
func TestCrashChild(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("the crash test's child process; runs only when TestCrash starts it")
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	opt := testOptions()
	opt.broken = breakNames[cfg.Break]
	v, err := Open(cfg.Device, opt)
	if err != nil {
		t.Fatal(err)
	}
	o := DBOptions{JournalMode: cfg.JournalMode, Synchronous: cfg.Synchronous, Exclusive: cfg.Exclusive}
	c, err := v.OpenDB(bankDB, o)
	if err != nil {
		t.Fatal(err)
	}
	side, err := os.OpenFile(cfg.SideFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBank(c, cfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute) // the parent kills it long before
	for id := int64(1); time.Now().Before(deadline); id++ {
		if err := b.transfer(id); err != nil {
			t.Fatalf("transaction %d: %v", id, err)
		}
		if _, err := side.WriteString(strconv.FormatInt(id, 10) + "\n"); err != nil {
			t.Fatal(err)
		}
		if err := side.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("not killed within 2 minutes")
}

// crashRound is one round of the crash test: set up a fresh bank on
// the device, run a child on it, kill it with SIGKILL at a random moment
// after at least three commits, reopen, check.
type crashRound struct {
	acked []int64
	after time.Duration // kill this long after the third commit
	check bankCheck
	err   error // a failed check (nil: all checks passed)
}

func runCrashRound(t *testing.T, dev string, o DBOptions, brk string, seed uint64) crashRound {
	t.Helper()
	var r crashRound
	if err := setupBank(dev, o); err != nil {
		t.Fatalf("setup: %v", err)
	}
	side := filepath.Join(t.TempDir(), "acked")
	cfg, _ := json.Marshal(childConfig{Device: dev, SideFile: side, JournalMode: o.JournalMode, Synchronous: o.Synchronous, Exclusive: o.Exclusive, Break: brk, Seed: seed})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^TestCrashChild$", "-test.count", "1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	rng := rand.New(rand.NewPCG(seed, 7))
	r.after = time.Duration(rng.IntN(250)) * time.Millisecond
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids, _ := readAcked(side)
		if len(ids) >= 3 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("child exited before three commits: %v\n%s", err, out.String())
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("child made fewer than three commits in 60 s\n%s", out.String())
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("child exited before it was killed: %v\n%s", err, out.String())
	case <-time.After(r.after):
	}
	cmd.Process.Signal(syscall.SIGKILL)
	if err := <-exited; err == nil {
		t.Fatalf("child exited cleanly before the kill\n%s", out.String())
	}
	if r.acked, err = readAcked(side); err != nil {
		t.Fatal(err)
	}
	v, err := openRetry(dev, testOptions())
	if err != nil {
		r.err = err
		return r
	}
	defer v.Close()
	r.check, r.err = checkBank(v, o, r.acked, o.Synchronous != "normal")
	return r
}

// crashModes are the journal modes and synchronous settings the crash
// and power-cut tests run, and the rounds each runs: rounds for FULL
// (whose every acknowledged commit must survive), fewer for NORMAL.
// DELETE runs with normal locking (SQLite deletes the journal to
// commit) and exclusive (it zeroes the journal's header instead, as the
// benchmark runs it).
func crashModes() []struct {
	o      DBOptions
	rounds int
} {
	full, normal := 5, 2
	if *stressLong {
		full, normal = 50, 10
	}
	return []struct {
		o      DBOptions
		rounds int
	}{
		{DBOptions{JournalMode: "delete", Synchronous: "full"}, full},
		{DBOptions{JournalMode: "delete", Synchronous: "full", Exclusive: true}, full},
		{DBOptions{JournalMode: "wal", Synchronous: "full"}, full},
		{DBOptions{JournalMode: "delete", Synchronous: "normal"}, normal},
		{DBOptions{JournalMode: "wal", Synchronous: "normal"}, normal},
	}
}

func modeName(o DBOptions) string {
	if o.Exclusive && o.JournalMode != "wal" {
		return o.JournalMode + "-exclusive-" + o.Synchronous
	}
	return o.JournalMode + "-" + o.Synchronous
}

// TestCrash: SIGKILL a process running bank transactions on a loop
// device (4096-byte sectors, over /dev/shm) at a random moment; after
// reopening, SQLite's integrity check passes, the total balance is
// unchanged and (synchronous=FULL) every transaction whose COMMIT
// returned is there. For this VFS a killed process is a power cut of
// everything the cache held; what the loop device had been handed
// survives.
func TestCrash(t *testing.T) {
	for _, m := range crashModes() {
		t.Run(modeName(m.o), func(t *testing.T) {
			dev := loopdevtest.ForTest(t, bankDevice, 4096)
			r := rand.New(rand.NewPCG(2026, uint64(len(m.o.JournalMode)+len(m.o.Synchronous))))
			for round := 0; round < m.rounds; round++ {
				cr := runCrashRound(t, dev.Path, m.o, "", r.Uint64())
				t.Logf("round %d: %d commits acknowledged, killed %v after the third; reopened: %v", round, len(cr.acked), cr.after, cr.check)
				if cr.err != nil {
					t.Errorf("round %d: %v", round, cr.err)
				}
			}
		})
	}
}
