package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wbengine/wbengine/internal/loopdev"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestHotStateWatermark(t *testing.T) {
	const writers = 4
	s := newHotState(100, writers)
	if s.watermark() != 0 {
		t.Fatalf("fresh watermark %d, want 0", s.watermark())
	}
	v1 := s.take(0)
	v2 := s.take(1)
	s.done(1)
	if got := s.watermark(); got != v1-1 {
		t.Fatalf("with version %d pending and %d done: watermark %d, want %d", v1, v2, got, v1-1)
	}
	s.done(0)
	if got := s.watermark(); got != v2 {
		t.Fatalf("all done: watermark %d, want %d", got, v2)
	}
	// Concurrently: a version the watermark covers is never pending.
	var pending [writers]struct {
		sync.Mutex
		v uint64
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				pending[w].Lock()
				pending[w].v = s.take(w)
				pending[w].Unlock()
				pending[w].Lock()
				pending[w].v = 0
				s.done(w)
				pending[w].Unlock()
			}
		}()
	}
	for range 200 {
		m := s.watermark()
		for w := range writers {
			pending[w].Lock()
			v := pending[w].v
			pending[w].Unlock()
			if v != 0 && v <= m && s.pendingNow(w) == v {
				close(stop)
				wg.Wait()
				t.Fatalf("watermark %d covers version %d, still pending", m, v)
			}
		}
	}
	close(stop)
	wg.Wait()
}

// pendingNow is the version writer w holds now (for the test).
func (s *hotState) pendingNow(w int) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[w]
}

func TestAggregate(t *testing.T) {
	ss := []Sample{
		{Bytes: 100, Pages: 10, Seconds: 1, IOs: 5, Latency: &Latency{P50: 1, P99: 2, P999: 3}},
		{Bytes: 100, Pages: 10, Seconds: 4, IOs: 5, Latency: &Latency{P50: 3, P99: 4, P999: 5}},
		{Bytes: 100, Pages: 10, Seconds: 2, IOs: 0},
	}
	for i := range ss {
		ss[i].derive(4096)
	}
	r := aggregate("engine", ss)
	if r.BytesPerSec != 50 || r.Seconds != 2 || len(r.Runs) != 3 {
		t.Fatalf("median bytes/s %v, seconds %v, runs %d; want 50, 2, 3", r.BytesPerSec, r.Seconds, len(r.Runs))
	}
	if lo, hi := r.Spread(); lo != 25 || hi != 100 {
		t.Fatalf("spread %v–%v, want 25–100", lo, hi)
	}
	if r.Latency == nil || r.Latency.P50 != 2 {
		t.Fatalf("median latency %+v, want p50 2", r.Latency)
	}
	if ss[2].PagesPerIO != 0 {
		t.Fatalf("pages per I/O with no I/Os: %v, want 0", ss[2].PagesPerIO)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	if ratio(1, 0) != 0 || !math.IsInf(1/ratio(0, 1), 1) {
		t.Fatal("ratio")
	}
}

// TestRunFile runs the runs pattern on an O_DIRECT file against the
// pwrite baseline, with fio asked for but absent.
func TestRunFile(t *testing.T) {
	path := loopdev.ShmFile(t, 8<<20)
	var notes []string
	var mu sync.Mutex
	b, err := Open(Options{
		Device: path, Pattern: Runs, Baselines: []string{"kernel", "pwrite", "fio"}, Runs: 2,
		FioPath: "fio-that-is-not-there",
		Logf: func(f string, a ...any) {
			mu.Lock()
			notes = append(notes, f)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rep, err := b.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %v", rep.Errors)
	}
	if len(rep.Results) != 2 || rep.Results[0].Name != "engine" || rep.Results[1].Name != "pwrite" {
		t.Fatalf("results %+v, want engine and pwrite", rep.Results)
	}
	var skipped []string
	for _, s := range rep.Skipped {
		skipped = append(skipped, s.Name+": "+s.Reason)
	}
	if got := strings.Join(skipped, "; "); !strings.Contains(got, "kernel: ") || !strings.Contains(got, "fio: fio is not on PATH") {
		t.Fatalf("skipped %q, want kernel (a file) and fio (not on PATH)", got)
	}
	for _, r := range rep.Results {
		if r.Bytes != int64(rep.PatternPages)*4096 || r.BytesPerSec <= 0 || r.IOs <= 0 || len(r.Runs) != 2 {
			t.Fatalf("%s: %+v", r.Name, r)
		}
		if r.Latency == nil || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 {
			t.Fatalf("%s: latency %+v", r.Name, r.Latency)
		}
	}
	// The engine's writes are the pattern's extents (none is longer
	// than 32 pages, so MaxIOBytes cuts none).
	if e := rep.Results[0]; e.IOs != int64(rep.Extents) {
		t.Fatalf("engine: %d I/Os for %d extents", e.IOs, rep.Extents)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[len(lines)-3], "system") || !strings.HasPrefix(lines[len(lines)-1], "pwrite") {
		t.Fatalf("the output does not end with the table:\n%s", out)
	}
	t.Logf("\n%s", out)
}

func TestVerifyAndCheck(t *testing.T) {
	path := loopdev.ShmFile(t, 4<<20)
	journal := t.TempDir() + "/journal"
	b, err := Open(Options{Device: path, Pattern: Hot, Duration: 300 * time.Millisecond, SyncEvery: 50 * time.Millisecond, Writers: 3, Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := b.Run(context.Background())
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.JournalSynced == nil || *rep.JournalSynced == 0 {
		t.Fatalf("journal synced %v", rep.JournalSynced)
	}
	cr, err := Check(context.Background(), CheckOptions{Device: path, Journal: journal, Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !cr.OK() || cr.Valid == 0 || cr.Required == 0 || cr.Required > cr.Valid || cr.Pages != cr.Valid+cr.Zero {
		t.Fatalf("check: %+v", cr)
	}
	// Corrupt the hottest page (page 0 gets the most versions): the
	// check must see it.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("garbage!"), 100)
	f.Close()
	cr, err = Check(context.Background(), CheckOptions{Device: path, Journal: journal, Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if cr.OK() || cr.Bad != 1 || len(cr.Failures) != 1 || len(cr.Problems) != 1 || !strings.HasPrefix(cr.Problems[0], "page 0: expected version ≥ ") {
		t.Fatalf("check after corrupting page 0: %+v", cr)
	}
	if f := cr.Failures[0]; f.Page != 0 || f.Reason != "checksum" || f.Need == 0 || f.Version < f.Need || !strings.Contains(f.Found, "CRC32C mismatch") {
		t.Fatalf("failure %+v; want page 0, a CRC32C mismatch of a version at least the one needed", f)
	}
}

// TestRefuseTooBigForMemory: a pattern whose pages cannot fit in memory
// is refused before anything is written.
func TestRefuseTooBigForMemory(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(root+"/meminfo", []byte("MemTotal:       1000 kB\nMemAvailable:    4096 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := procRoot
	procRoot = root
	t.Cleanup(func() { procRoot = old })
	path := loopdev.ShmFile(t, 8<<20)
	_, err := Open(Options{Device: path, Pattern: Seq, Baselines: []string{"pwrite"}})
	if !IsUsage(err) || !strings.Contains(err.Error(), "need 16 MiB of memory") || !strings.Contains(err.Error(), "4.0 MiB is available") {
		t.Fatalf("Open: %v; want a refusal naming the memory needed and available", err)
	}
}

// TestReportSyncLines: failed syncs are listed (those that are not also
// errors of the run), at most maxSyncErrorLines of them, and the end
// line says how the last sync went and what was left.
func TestReportSyncLines(t *testing.T) {
	r := &Report{
		Config:    ConfigInfo{PageSize: 4096, Runs: 1},
		Pattern:   string(Hot),
		Faults:    &Faults{Requests: 10},
		Errors:    []string{"engine: sync 1: boom"},
		EngineEnd: &EngineEnd{LastSyncOK: true, FaultsOff: true, Syncs: 20, FailedSyncs: 13},
	}
	for i := 1; i <= 13; i++ {
		r.SyncErrors = append(r.SyncErrors, fmt.Sprintf("engine: sync %d: boom", i))
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if n := strings.Count(out, "\nfailed   engine: sync "); n != maxSyncErrorLines || strings.Contains(out, "failed   engine: sync 1: boom") ||
		!strings.Contains(out, "failed   … and 2 more syncs (-json lists them all)\n") ||
		!strings.Contains(out, "error    engine: sync 1: boom\n") ||
		!strings.Contains(out, "end      20 syncs, 13 failed; the last succeeded, faults off; then 0 dirty, 0 under writeback, 0 in flight, 0 in error\n") {
		t.Fatalf("%d failed lines; output:\n%s", n, out)
	}
	if !r.EngineEnd.Idle() {
		t.Fatal("an engine with nothing dirty is not idle")
	}
}

// TestHotDirtyToDurable: in the hot pattern every page write is timed
// to the end of the sync that covered it, for each system, and the
// engine reports its submission and completion batches.
func TestHotDirtyToDurable(t *testing.T) {
	path := loopdev.ShmFile(t, 8<<20)
	b, err := Open(Options{Device: path, Pattern: Hot, Duration: 200 * time.Millisecond, SyncEvery: 40 * time.Millisecond,
		Writers: 2, Baselines: []string{"pwrite"}, Runs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rep, err := b.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		d := r.DirtyToDurable
		if d == nil || d.N != r.Pages || d.Min <= 0 || d.Max > r.Seconds*1e6 || d.P50 < d.Min || d.Max < d.P9999 {
			t.Fatalf("%s: %d pages written, dirty to durable %+v", r.Name, r.Pages, d)
		}
		if r.SyncLatency == nil || r.SyncLatency.N != int64(r.Syncs) {
			t.Fatalf("%s: %d syncs, sync latency %+v", r.Name, r.Syncs, r.SyncLatency)
		}
	}
	if e := rep.Results[0]; e.SubmitBatch == nil || e.CompleteBatch == nil || e.SubmitBatch.N == 0 {
		t.Fatalf("engine batches %+v %+v", e.SubmitBatch, e.CompleteBatch)
	}
}
