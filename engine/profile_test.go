package engine

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

var (
	profPattern = flag.String("profile.pattern", "", "TestProfileFlush: seq, runs or single (empty: skip)")
	profOut     = flag.String("profile.out", "flush.prof", "TestProfileFlush: CPU profile file")
	profCycles  = flag.Int("profile.cycles", 6, "TestProfileFlush: dirty-and-Sync cycles")
	profScatter = flag.Bool("profile.scatter", false, "TestProfileFlush: cache the pattern's pages in a shuffled order first, so neighbours on the device are not neighbours in memory (wbbench -scatter)")
	profFirst   = flag.Bool("profile.first", false, "TestProfileFlush: profile (and enable perf around) the first Sync after Open instead of the later ones")
	profPerfCtl = flag.String("profile.perfctl", "", "TestProfileFlush: perf's control and ack FIFOs, CTL,ACK (perf record --control fifo:CTL,ACK -D -1): the test enables perf around each Sync only")
)

// perfControl switches a perf record started with --control fifo:CTL,ACK
// and -D -1 on and off, so system-wide profiles (the loop device's
// kworker, softirqs) see only the flush.
type perfControl struct{ ctl, ack *os.File }

func openPerfControl(t *testing.T, spec string) *perfControl {
	if spec == "" {
		return nil
	}
	names := strings.SplitN(spec, ",", 2)
	if len(names) != 2 {
		t.Fatalf("-profile.perfctl %q: want CTL,ACK", spec)
	}
	ctl, err := os.OpenFile(names[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := os.Open(names[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close(); ack.Close() })
	return &perfControl{ctl, ack}
}

func (pc *perfControl) send(t *testing.T, cmd string) {
	if pc == nil {
		return
	}
	if _, err := pc.ctl.WriteString(cmd + "\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := pc.ack.Read(buf); err != nil {
		t.Fatalf("perf ack after %s: %v", cmd, err)
	}
}

// TestProfileFlush is the in-process loop behind the CPU breakdowns in
// the notes (go test -run TestProfileFlush -args -profile.pattern single):
// on a 2 GiB loop device (root), dirty the pattern with Grab, a write and
// SetDirty, then time Sync; the CPU profile marks the dirtying with the
// label phase=dirty, so -tagignore=phase=dirty leaves the engine's own
// work (its Sync and the ring's thread).
func TestProfileFlush(t *testing.T) {
	if *profPattern == "" {
		t.Skip("a measurement, not a test: run with -args -profile.pattern seq|runs|single")
	}
	const ps, size = 4096, 2 << 30
	n := uint64(size / ps)
	idx := patternPages(*profPattern, n, 1)
	dev := loopdev.ForTest(t, size, 0)
	// Warm the device as the reference method does, by one full write
	// through it, so the first Sync does not pay the backing file's
	// first touch.
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+dev.Path, "bs=1M", fmt.Sprint("count=", size>>20), "oflag=direct", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("warming %s: %v: %s", dev.Path, err, out)
	}
	c, err := pages.New(pages.Config{PageSize: ps, Capacity: len(idx)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(c, Config{Path: dev.Path, Mapper: mapper.Linear(0, n)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	f, err := os.Create(*profOut)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if *profScatter {
		order := rand.New(rand.NewPCG(3, 4)).Perm(len(idx))
		for _, k := range order {
			p, err := c.Grab(idx[k])
			if err != nil {
				t.Fatal(err)
			}
			p.SetUptodate()
			p.Unlock()
			c.Put(p)
		}
	}
	dirty := func(cycle int) {
		pprof.Do(context.Background(), pprof.Labels("phase", "dirty"), func(context.Context) {
			for _, i := range idx {
				p, err := c.Grab(i)
				if err != nil {
					t.Fatal(err)
				}
				p.Data()[0] = byte(cycle)
				c.SetDirty(p)
				p.Unlock()
				c.Put(p)
			}
		})
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	faults := func() int64 {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return ru.Minflt + ru.Majflt
	}
	perf := openPerfControl(t, *profPerfCtl)
	dirty(0)
	if *profFirst {
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		perf.send(t, "enable")
	}
	c0, f0, w0 := cpu(), faults(), time.Now()
	if err := e.Sync(context.Background()); err != nil { // the first cycle, apart
		t.Fatal(err)
	}
	firstCPU, firstFaults, firstWall := cpu()-c0, faults()-f0, time.Since(w0)
	if *profFirst {
		perf.send(t, "disable")
		pprof.StopCPUProfile()
		perf = nil
	}
	if !*profFirst {
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	var syncCPU, syncWall time.Duration
	var syncFaults int64
	for cycle := 1; cycle <= *profCycles; cycle++ {
		dirty(cycle)
		perf.send(t, "enable")
		c0, f0, w0 := cpu(), faults(), time.Now()
		if err := e.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		syncCPU += cpu() - c0
		syncFaults += faults() - f0
		syncWall += time.Since(w0)
		perf.send(t, "disable")
	}
	if !*profFirst {
		pprof.StopCPUProfile()
	}
	pagesDone := int64(len(idx)) * int64(*profCycles)
	st := e.Stats()
	t.Logf("%s: %d pages x %d cycles; Sync: %.0f pages/s, %.0f ns CPU per page, %.0f ns CPU per write (%d pages per write)",
		*profPattern, len(idx), *profCycles, float64(pagesDone)/syncWall.Seconds(), float64(syncCPU.Nanoseconds())/float64(pagesDone),
		float64(syncCPU.Nanoseconds())/float64(pagesDone)*st.PagesPerWrite, int(st.PagesPerWrite+0.5))
	t.Logf("first Sync after Open: %.0f pages/s, %.0f ns CPU per page, %d page faults; later Syncs: %.1f page faults each",
		float64(len(idx))/firstWall.Seconds(), float64(firstCPU.Nanoseconds())/float64(len(idx)), firstFaults, float64(syncFaults)/float64(*profCycles))
}
