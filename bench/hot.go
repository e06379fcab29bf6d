package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/internal/verify"
)

// The hot pattern: Writers goroutines write versions 1, 2, 3, … of
// pages — version v to page verify.HotPage(seed, v, N) — while a sync
// runs every SyncEvery, for Duration, then a last sync. Each system
// gives the writes and syncs their meaning (hotSystem); the driver is
// shared, so every system does the same work.

// hotSystem is one system's side of the hot pattern.
type hotSystem interface {
	name() string
	begin() error                             // before the period (not timed)
	write(w int, buf []byte, off int64) error // writer w writes one page
	sync(ctx context.Context) error           // make every write so far durable
	end(s *Sample) error                      // after the period: fill in what the system counts
}

// faultySystem is a hotSystem that -inject injects faults into (the
// engine). Its syncs may fail during the period, which is what was
// asked for: they are reported, and only the last sync, which settle
// makes fault-free, decides whether the period failed.
type faultySystem interface {
	injects() bool
	settle() // after the writers stopped, before the last sync: faults off
}

// hotState hands out versions and keeps an older version of a page
// from overwriting a newer one. Versions continue across periods.
type hotState struct {
	// locks[p % len(locks)] serialises writers of page p and protects
	// maxv[p], the newest version of p written.
	locks []sync.Mutex
	maxv  []uint64

	mu      sync.Mutex // protects next and pending
	next    uint64     // the next version to hand out
	pending []uint64   // pending[w]: the version writer w works on, 0 if none
}

func newHotState(n uint64, writers int) *hotState {
	return &hotState{
		locks:   make([]sync.Mutex, 4096),
		maxv:    make([]uint64, n),
		next:    1,
		pending: make([]uint64, writers),
	}
}

// take hands writer w the next version. Handing it out and marking it
// pending happen together, so watermark never claims a version a writer
// holds.
func (s *hotState) take(w int) uint64 {
	s.mu.Lock()
	v := s.next
	s.next++
	s.pending[w] = v
	s.mu.Unlock()
	return v
}

// done says writer w finished its version (written, or superseded).
func (s *hotState) done(w int) {
	s.mu.Lock()
	s.pending[w] = 0
	s.mu.Unlock()
}

// watermark is the highest V such that every version ≤ V is written or
// superseded.
func (s *hotState) watermark() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.next - 1
	for _, v := range s.pending {
		if v != 0 && v-1 < m {
			m = v - 1
		}
	}
	return m
}

// hotCycle runs one period of the hot pattern on sys. With a journal,
// each sync that returned nil is recorded with the watermark taken
// before it began.
func (b *Bench) hotCycle(ctx context.Context, sys hotSystem, st *hotState, journal *verify.Journal) (Sample, error) {
	o := &b.opts
	ps := o.PageSize
	bufs, err := newAlignedBuf(o.Writers * ps)
	if err != nil {
		return Sample{}, err
	}
	defer bufs.free()
	if err := sys.begin(); err != nil {
		return Sample{}, err
	}
	var (
		written, superseded atomic.Int64
		stop                atomic.Bool
		errMu               sync.Mutex
		werr                error
		wg                  sync.WaitGroup
	)
	fail := func(err error) {
		errMu.Lock()
		if werr == nil {
			werr = err
		}
		errMu.Unlock()
		stop.Store(true)
	}
	// logs[w] is writer w's write times (ns since t0) that no successful
	// sync has covered yet, for dirty-to-durable.
	logs := make([]writeLog, o.Writers)
	dm := b.devMarks()
	dm.timed() // the whole period is timed
	t0, cpu0 := time.Now(), cpuTimes()
	for w := 0; w < o.Writers; w++ {
		buf := bufs.b[w*ps : (w+1)*ps : (w+1)*ps]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				v := st.take(w)
				p := verify.HotPage(o.Seed, v, b.n)
				l := &st.locks[p%uint64(len(st.locks))]
				l.Lock()
				if st.maxv[p] < v {
					if o.Verify {
						verify.Encode(buf, p, v, b.nonce)
					} else {
						b.fill(buf, p, v)
					}
					if err := sys.write(w, buf, int64(p)*int64(ps)); err != nil {
						l.Unlock()
						st.done(w)
						fail(fmt.Errorf("%s: write page %d: %w", sys.name(), p, err))
						return
					}
					st.maxv[p] = v
					written.Add(1)
					logs[w].add(int64(time.Since(t0)))
				} else {
					superseded.Add(1)
				}
				l.Unlock()
				st.done(w)
			}
		}()
	}
	syncs, durable := newHist(), newHist()
	var nsync atomic.Int64
	var failed int
	var firstErr error // the first failed sync of the period
	// syncOnce syncs and, only if the sync returned nil, journals the
	// watermark taken before it began. A failed sync is reported (and
	// never journaled).
	syncOnce := func() error {
		v := st.watermark()
		ts := time.Now()
		err := sys.sync(ctx)
		te := time.Now()
		_ = syncs.RecordValue(min(max(int64(te.Sub(ts)), latMin), latMax))
		n := nsync.Add(1)
		if err != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("%s: sync %d (covering version %d): %w", sys.name(), n, v, err)
				failed++
				b.syncFailed(err)
				if firstErr == nil {
					firstErr = err
				}
			}
			return err
		}
		for w := range logs {
			logs[w].covered(int64(ts.Sub(t0)), int64(te.Sub(t0)), durable)
		}
		if journal != nil {
			if err := journal.Synced(v); err != nil {
				fail(err)
			}
		}
		return nil
	}
	b.statusFunc(func() string {
		el := time.Since(t0)
		return fmt.Sprintf("%s: hot %.0fs of %.0fs, %s pages written, %d syncs", sys.name(), el.Seconds(), o.Duration.Seconds(), humanize.Comma(written.Load()), nsync.Load())
	})
	tick := time.NewTicker(o.SyncEvery)
	deadline := time.NewTimer(o.Duration)
loop:
	for !stop.Load() {
		select {
		case <-tick.C:
			_ = syncOnce() // reported by syncOnce; decided on below
		case <-deadline.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	tick.Stop()
	deadline.Stop()
	stop.Store(true)
	wg.Wait()
	if ctx.Err() != nil {
		return Sample{}, ctxErr(ctx)
	}
	if werr != nil {
		return Sample{}, werr
	}
	fs, injected := sys.(faultySystem)
	injected = injected && fs.injects()
	if injected {
		fs.settle()
	}
	lastErr := syncOnce() // every version written is covered by it
	t1, cpu1 := time.Now(), cpuTimes()
	dm.end()
	s := Sample{
		Bytes:          written.Load() * int64(ps),
		Pages:          written.Load(),
		Seconds:        t1.Sub(t0).Seconds(),
		TotalSeconds:   t1.Sub(t0).Seconds(),
		SyncLatency:    latencyOf(syncs),
		DirtyToDurable: latencyOf(durable),
		Syncs:          int(nsync.Load()),
		FailedSyncs:    failed,
		Superseded:     superseded.Load(),
	}
	s.setCPU(cpu0, cpu1)
	s.setDevice(dm.deviceIO())
	if err := sys.end(&s); err != nil {
		return s, err
	}
	switch {
	case ctx.Err() != nil:
		return s, ctxErr(ctx)
	case lastErr != nil:
		return s, lastErr
	case firstErr != nil && !injected:
		// Without injected faults a failed sync is the device's or the
		// engine's failure, even if a later one succeeded.
		return s, firstErr
	}
	return s, nil
}

// writeLog is one hot writer's write times, in ns since the period
// began, that no successful sync has covered yet. The writer appends;
// the sync loop takes what a sync covered.
type writeLog struct {
	mu sync.Mutex // protects t
	t  []int64    // ascending
}

func (l *writeLog) add(t int64) {
	l.mu.Lock()
	l.t = append(l.t, t)
	l.mu.Unlock()
}

// covered records into h, for every write that returned before a sync
// began at start and succeeded at end, the time from the write to end,
// and forgets those writes.
func (l *writeLog) covered(start, end int64, h *hdr.Histogram) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, _ := slices.BinarySearch(l.t, start+1)
	for _, t := range l.t[:k] {
		_ = h.RecordValue(min(max(end-t, latMin), latMax))
	}
	l.t = l.t[:copy(l.t, l.t[k:])]
}

// kernelHot is the kernel's side of the hot pattern: buffered pwrite
// into the device's page cache, fdatasync as the sync.
type kernelHot struct {
	b   *Bench
	fd  int
	ds0 diskStat
}

func (h *kernelHot) name() string { return "kernel" }

func (h *kernelHot) begin() error {
	fd, err := openTarget(h.b.target.Path, false)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	h.fd = fd
	h.ds0, _ = readDiskStat(h.b.target.Dev)
	return nil
}

func (h *kernelHot) write(w int, buf []byte, off int64) error { return pwriteAll(h.fd, buf, off) }

func (h *kernelHot) sync(ctx context.Context) error { return fdatasync(h.fd) }

func (h *kernelHot) end(s *Sample) error {
	defer closeFd(h.fd)
	if ds1, ok := readDiskStat(h.b.target.Dev); ok {
		s.IOs = ds1.writes - h.ds0.writes
		s.DeviceBytes = (ds1.sectors - h.ds0.sectors) * 512
	}
	if err := dropCache(h.fd); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	return nil
}

// pwriteHot is the hand-written side of the hot pattern: each writer
// pwrites its page O_DIRECT and waits for it; the sync is fdatasync
// (where the target has a volatile cache).
type pwriteHot struct {
	b     *Bench
	fd    int
	hists []*hdr.Histogram // per writer
}

func (h *pwriteHot) name() string { return "pwrite" }

func (h *pwriteHot) begin() error {
	fd, err := openTarget(h.b.target.Path, true)
	if err != nil {
		return fmt.Errorf("pwrite: %w", err)
	}
	h.fd = fd
	h.hists = make([]*hdr.Histogram, h.b.opts.Writers)
	for i := range h.hists {
		h.hists[i] = newHist()
	}
	return nil
}

func (h *pwriteHot) write(w int, buf []byte, off int64) error {
	t := time.Now()
	err := pwriteAll(h.fd, buf, off)
	_ = h.hists[w].RecordValue(min(max(int64(time.Since(t)), latMin), latMax))
	return err
}

func (h *pwriteHot) sync(ctx context.Context) error {
	if !h.b.target.NeedsFlush {
		return nil
	}
	return fdatasync(h.fd)
}

func (h *pwriteHot) end(s *Sample) error {
	closeFd(h.fd)
	all := newHist()
	for _, x := range h.hists {
		all.Merge(x)
	}
	s.IOs = all.TotalCount()
	s.DeviceBytes = s.IOs * int64(h.b.opts.PageSize)
	s.Latency = latencyOf(all)
	return nil
}
