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

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
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

// TestAggregate: run 1 is reported apart; the numbers are the medians
// of runs 2..N, the spread their min–max; with one run there is no
// steady figure.
func TestAggregate(t *testing.T) {
	ss := []Sample{
		{Run: 1, Bytes: 100, Pages: 10, Seconds: 10, IOs: 5}, // the first run: slow
		{Run: 2, Bytes: 100, Pages: 10, Seconds: 1, IOs: 5, Latency: &Latency{P50: 1, P99: 2, P999: 3}},
		{Run: 3, Bytes: 100, Pages: 10, Seconds: 4, IOs: 5, Latency: &Latency{P50: 3, P99: 4, P999: 5}},
		{Run: 4, Bytes: 100, Pages: 10, Seconds: 2, IOs: 0},
	}
	for i := range ss {
		ss[i].derive(4096)
	}
	r := aggregate("engine", ss)
	if r.BytesPerSec != 50 || r.Seconds != 2 || len(r.Runs) != 4 || r.SteadyRuns != 3 || r.Run != 0 {
		t.Fatalf("steady bytes/s %v, seconds %v, runs %d, steady runs %d; want 50, 2, 4, 3", r.BytesPerSec, r.Seconds, len(r.Runs), r.SteadyRuns)
	}
	if r.First == nil || r.First.Run != 1 || r.First.BytesPerSec != 10 {
		t.Fatalf("first run %+v, want run 1 at 10 B/s", r.First)
	}
	if lo, hi := r.Spread(); lo != 25 || hi != 100 {
		t.Fatalf("spread %v–%v, want 25–100 (the steady runs only)", lo, hi)
	}
	if r.Latency == nil || r.Latency.P50 != 2 {
		t.Fatalf("median latency %+v, want p50 2", r.Latency)
	}
	if ss[3].PagesPerIO != 0 {
		t.Fatalf("pages per I/O with no I/Os: %v, want 0", ss[3].PagesPerIO)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	one := aggregate("engine", ss[:1])
	if one.SteadyRuns != 0 || one.BytesPerSec != 10 || one.First == nil || len(one.Runs) != 1 {
		t.Fatalf("one run: %+v; want its numbers, no steady runs", one)
	}
	if ratio(1, 0) != 0 || !math.IsInf(1/ratio(0, 1), 1) {
		t.Fatal("ratio")
	}
}

// TestCompare: each ratio to the engine carries its spread, and a ratio
// whose two ranges overlap is flagged, in the JSON and in the table.
func TestCompare(t *testing.T) {
	res := func(name string, first float64, steady ...float64) []Sample {
		ss := []Sample{{Run: 1, Bytes: 1000, Seconds: 1000 / first}}
		for i, v := range steady {
			ss = append(ss, Sample{Run: i + 2, Bytes: 1000, Seconds: 1000 / v})
		}
		return ss
	}
	m := map[string][]Sample{
		"engine": res("engine", 50, 90, 100, 110),
		"kernel": res("kernel", 150, 190, 200, 210),
		"pwrite": res("pwrite", 100, 95, 105, 120),
	}
	rs := sortedResults(m, nil, nil, 4096)
	k, p := findResult(rs, "kernel"), findResult(rs, "pwrite")
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if q := k.VsEngine; q == nil || !near(q.Ratio, 2) || !near(q.Min, 190.0/110) || !near(q.Max, 210.0/90) || q.Overlap == nil || q.Overlaps() {
		t.Fatalf("kernel vs engine %+v; want 2 (1.73–2.33), no overlap", q)
	}
	if q := p.VsEngine; q == nil || !near(q.Ratio, 1.05) || !q.Overlaps() {
		t.Fatalf("pwrite vs engine %+v; want 1.05, overlapping", q)
	}
	if findResult(rs, "engine").VsEngine != nil {
		t.Fatal("the engine compared with itself")
	}
	// One run: a ratio, no spread and no overlap to speak of.
	one := sortedResults(map[string][]Sample{"engine": m["engine"][:1], "kernel": m["kernel"][:1]}, nil, nil, 4096)
	if q := findResult(one, "kernel").VsEngine; q == nil || !near(q.Ratio, 3) || q.Min != 0 || q.Max != 0 || q.Overlap != nil {
		t.Fatalf("one run: kernel vs engine %+v; want the ratio alone", q)
	}
	var b strings.Builder
	writeTable(&b, rs, 4)
	out := b.String()
	for _, want := range []string{
		"steady: runs 2–4 (min–max)", "first run", "vs engine (min–max)",
		"kernel  200.00 B/s (190.00–210.00)  150.00 B/s",
		"2.00× (1.73–2.33)\n",
		"1.05× (0.86–1.33)  ranges overlap\n",
		"(ranges overlap: ",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("table lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
	// Two runs: the steady figure is run 2 alone, printed without a
	// min–max of one value and without an overlap judgement.
	two := sortedResults(map[string][]Sample{"engine": m["engine"][:2], "pwrite": m["pwrite"][:2]}, nil, nil, 4096)
	b.Reset()
	writeTable(&b, two, 2)
	out = b.String()
	for _, want := range []string{"steady: run 2", "pwrite      95.00 B/s  100.00 B/s", "1.06×\n", "(two runs: "} {
		if !strings.Contains(out, want) {
			t.Fatalf("two runs: table lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"(95.00–95.00)", "ranges overlap", "(min–max)"} {
		if strings.Contains(out, bad) {
			t.Fatalf("two runs: table has %q:\n%s", bad, out)
		}
	}
	t.Logf("\n%s", out)
}

// TestRunFile runs the runs pattern on an O_DIRECT file against the
// pwrite baseline, with fio asked for but absent.
func TestRunFile(t *testing.T) {
	path := loopdevtest.ShmFile(t, 8<<20)
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
	table := tableOf(out)
	if len(table) != 3 || !strings.HasPrefix(table[0], "system") || !strings.HasPrefix(table[1], "engine ") || !strings.HasPrefix(table[2], "pwrite ") {
		t.Fatalf("the output does not end with the table:\n%s", out)
	}
	t.Logf("\n%s", out)
}

func TestVerifyAndCheck(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
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
	path := loopdevtest.ShmFile(t, 8<<20)
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
		EngineEnd: &EngineEnd{LastSyncOK: true, FaultsOff: new(true), Syncs: 20, FailedSyncs: 13},
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
	path := loopdevtest.ShmFile(t, 8<<20)
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

// tableOf returns the closing table of a text report: the lines from
// the last one starting "system" up to the notes in brackets after it.
func tableOf(out string) []string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "system ") {
			start = i
		}
	}
	if start < 0 {
		return nil
	}
	var t []string
	for _, l := range lines[start:] {
		if strings.HasPrefix(l, "(") {
			break
		}
		t = append(t, l)
	}
	return t
}

// TestFillGapsCached: -cached -fill-gaps on single writes fewer, larger
// writes than without, filling clean cached pages; -iops-limit slows the
// device model down to about its rate; the config says what ran.
func TestFillGapsCached(t *testing.T) {
	path := loopdevtest.ShmFile(t, 8<<20)
	run := func(fill, iops int) Result {
		t.Helper()
		b, err := Open(Options{Device: path, Pattern: Single, Baselines: nil, Runs: 2, Cached: true, FillGaps: fill, IOPSLimit: iops, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		rep, err := b.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c := rep.Config; c.FillGaps != fill || !c.Cached || c.IOPSLimit != iops {
			t.Fatalf("config %+v", c)
		}
		return rep.Results[0]
	}
	off, on := run(0, 0), run(14, 0)
	if off.PagesFilled != 0 || on.PagesFilled == 0 || on.IOs >= off.IOs {
		t.Fatalf("fill 0: %d I/Os, %d filled; fill 14: %d I/Os, %d filled", off.IOs, off.PagesFilled, on.IOs, on.PagesFilled)
	}
	t.Logf("single over 8 MiB, cached: fill 0: %d I/Os; fill 14: %d I/Os, %d clean pages filled", off.IOs, on.IOs, on.PagesFilled)
	limited := run(0, 2000)
	if secs := float64(limited.IOs) / 2000; limited.Seconds < secs*0.9 {
		t.Fatalf("-iops-limit 2000: %d writes in %.3fs, faster than the model allows (%.3fs)", limited.IOs, limited.Seconds, secs)
	}
}

// TestScatter: -scatter hands out the cache's page memory in a shuffled
// order, so neighbours on the device are seldom neighbours in memory;
// without it they all are. Either way the pages verify on the device.
func TestScatter(t *testing.T) {
	path := loopdevtest.ShmFile(t, 8<<20)
	adjacent := func(scatter bool) (adj, pairs int) {
		t.Helper()
		b, err := Open(Options{Device: path, Pattern: Seq, Baselines: nil, Runs: 2, Scatter: scatter, Verify: true, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		rep, err := b.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Config.Scatter != scatter {
			t.Fatalf("config scatter %v, want %v", rep.Config.Scatter, scatter)
		}
		prev := -1
		b.layout.Each(func(_ int, i uint64) {
			p := b.cache.Lookup(i)
			if p == nil {
				t.Fatalf("page %d not cached after the run", i)
			}
			if prev >= 0 {
				pairs++
				if p.Slot() == prev+1 {
					adj++
				}
			}
			prev = p.Slot()
			b.cache.Put(p)
		})
		return adj, pairs
	}
	if adj, pairs := adjacent(false); adj != pairs {
		t.Errorf("without -scatter: %d of %d neighbouring pages adjacent in memory, want all", adj, pairs)
	}
	if adj, pairs := adjacent(true); adj > pairs/100 {
		t.Errorf("-scatter: %d of %d neighbouring pages adjacent in memory, want about none", adj, pairs)
	}
}
