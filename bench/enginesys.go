package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/internal/verify"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/faultring"
)

// engineSys is the engine under test at one queue depth and I/O size:
// an engine on the benchmark's cache, its ring wrapped for timing (and
// for fault injection with -inject).
type engineSys struct {
	b      *Bench
	eng    *engine.Engine
	timed  *TimedRing
	faulty *faultring.Injector
	cfg    engine.Config // with defaults filled in
	caps   ring.Caps

	askedQD, askedMaxIO int // what openEngine was given

	// What the benchmark's Syncs of this engine returned: calls,
	// failures, and whether the last one succeeded.
	syncs, failedSyncs atomic.Int64
	lastSyncOK         atomic.Bool
}

// sync is engine.Sync, counted.
func (es *engineSys) sync(ctx context.Context) error {
	es.syncs.Add(1)
	err := es.eng.Sync(ctx)
	if err != nil {
		es.failedSyncs.Add(1)
	}
	es.lastSyncOK.Store(err == nil)
	return err
}

// setFaults switches -inject's faults on or off (nothing without it).
func (es *engineSys) setFaults(on bool) {
	if es.faulty != nil {
		es.faulty.SetEnabled(on)
	}
}

// end is the engine's state now, for the report's engine_end.
func (es *engineSys) end() *EngineEnd {
	st := es.eng.Stats()
	var faultsOff *bool
	if es.faulty != nil {
		off := !es.faulty.Enabled()
		faultsOff = &off
	}
	return &EngineEnd{
		LastSyncOK:   es.syncs.Load() > 0 && es.lastSyncOK.Load(),
		FaultsOff:    faultsOff,
		Dirty:        st.Dirty,
		Writeback:    st.Writeback,
		InFlight:     st.InFlight,
		PagesInError: st.PagesInError,
		Syncs:        es.syncs.Load(),
		FailedSyncs:  es.failedSyncs.Load(),
		WriteErrors:  st.WriteErrors,
		Retries:      st.Retries,
		Flushes:      st.Flushes,
		FlushErrors:  st.FlushErrors,
	}
}

// openEngine opens the engine on the benchmark's cache with the given
// queue depth and maximum I/O size (0: the engine's defaults). Pages map
// linearly: page p at byte p × page size of the target.
func (b *Bench) openEngine(qd, maxIO int) (*engineSys, error) {
	o := &b.opts
	es := &engineSys{b: b, askedQD: qd, askedMaxIO: maxIO}
	backend := o.Ring
	cfg := engine.Config{
		Path:       b.target.Path,
		QueueDepth: qd,
		MaxIOBytes: maxIO,
		FillGaps:   o.FillGaps,
		Mapper:     mapper.Linear(0, b.n),
		Ring:       backend,
		Logger:     notices(o.Logf),
		OpenRing:   es.openRing,
	}
	// The goroutines the engine starts (its ring's owner thread, its
	// sync runner) carry the pprof label system=engine: a CPU profile of
	// a run (-cpuprofile) tells the engine's work from the baselines'.
	var e *engine.Engine
	var err error
	pprof.Do(context.Background(), pprof.Labels("system", "engine"), func(context.Context) {
		e, err = engine.Open(b.cache, cfg)
	})
	if err != nil {
		return nil, engineError(o, err)
	}
	es.eng = e
	es.cfg = e.Config()
	es.caps = e.RingCaps()
	return es, nil
}

// openRing is the engine's ring.Opener: the ring of -ring, with
// -iops-limit's and -inject's interposers, wrapped for timing.
func (es *engineSys) openRing(t *ring.Target, rc ring.Config) (ring.Ring, error) {
	o := &es.b.opts
	if o.IOPSLimit > 0 {
		rc.Interposers = append(rc.Interposers, newIOPSLimit(o.IOPSLimit))
	}
	if len(o.Faults) > 0 {
		f, err := faultring.New(faultring.Config{Rules: o.Faults, BlockSize: int64(o.PageSize), Align: int64(t.LogicalBlockSize)})
		if err != nil {
			return nil, err
		}
		es.faulty = f
		rc.Interposers = append(rc.Interposers, f)
	}
	tr, err := OpenTimed(ring.OpenerOf(o.Ring), t, rc)
	if err != nil {
		return nil, err
	}
	es.timed = tr
	return tr, nil
}

func (es *engineSys) close() error {
	if es == nil || es.eng == nil {
		return nil
	}
	if es.faulty != nil {
		es.faulty.SetEnabled(false) // injection is for the measurement, not the clean-up
	}
	err := es.eng.Close()
	es.eng = nil
	return err
}

// dirtyCache dirties the layout's pages in the cache: with -verify
// through WriteAt (version 1 of each page), otherwise by filling each
// grabbed page and marking it dirty.
func (b *Bench) dirtyCache(ctx context.Context) error {
	c := b.cache
	ps := b.opts.PageSize
	var buf []byte
	if b.opts.Verify {
		buf = make([]byte, ps)
	}
	var done atomic.Int64
	total := b.layout.Pages
	b.statusFunc(func() string { return fmt.Sprintf("engine: dirtying %d%%", 100*done.Load()/int64(total)) })
	for _, e := range b.layout.Extents {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		for i := e.Start; i < e.End(); i++ {
			if buf != nil {
				verify.Encode(buf, i, 1, b.nonce)
				if _, err := c.WriteAt(buf, int64(i)*int64(ps)); err != nil {
					return fmt.Errorf("engine: dirty page %d: %w", i, err)
				}
				continue
			}
			p, err := c.Grab(i)
			if err != nil {
				return fmt.Errorf("engine: dirty page %d: %w", i, err)
			}
			b.fill(p.Data(), i, b.cycle)
			c.SetDirty(p)
			p.Unlock()
			c.Put(p)
		}
		done.Add(int64(e.Len))
	}
	return nil
}

// cacheAll puts every page of the target in the cache, clean and up to
// date (-cached); with -scatter in a shuffled order.
func (b *Bench) cacheAll() error {
	order := make([]uint64, b.n)
	for i := range order {
		order[i] = uint64(i)
	}
	return b.cachePages(order)
}

// scatterLayout puts the layout's pages in the cache, clean and up to
// date, in a shuffled order (-scatter without -cached): the cache hands
// out page memory in the order pages come, so neighbours on the device
// are not neighbours in memory. Every one of them is dirtied before it
// is first written.
func (b *Bench) scatterLayout() error {
	order := make([]uint64, 0, b.layout.Pages)
	b.layout.Each(func(_ int, i uint64) { order = append(order, i) })
	return b.cachePages(order)
}

// cachePages puts pages in the cache, clean and up to date, in the given
// order, shuffled first with -scatter (drawn from -seed).
func (b *Bench) cachePages(order []uint64) error {
	if b.opts.Scatter {
		r := rand.New(rand.NewPCG(b.opts.Seed, 2))
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	}
	for _, i := range order {
		p, err := b.cache.Grab(i)
		if err != nil {
			return fmt.Errorf("engine: cache page %d: %w", i, err)
		}
		b.fill(p.Data(), i, 0)
		p.SetUptodate()
		p.Unlock()
		b.cache.Put(p)
	}
	return nil
}

// iopsLimit is a device model (a ring interposer): it holds each write's
// result back until its turn, so the ring completes at most k writes per
// second, whatever their size — a device bound by its I/O count.
type iopsLimit struct {
	mu   sync.Mutex
	gap  time.Duration
	next time.Time // when the next write may complete
}

func newIOPSLimit(k int) *iopsLimit { return &iopsLimit{gap: time.Second / time.Duration(k)} }

func (l *iopsLimit) Attach(int)          {}
func (l *iopsLimit) Issue(*ring.Attempt) {}
func (l *iopsLimit) Done(a *ring.Attempt) {
	if a.Req.Op != ring.OpWrite {
		return
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(l.gap)
	a.Delay = max(a.Delay, l.next.Sub(now))
	l.mu.Unlock()
}

// flushCycle is one engine cycle of a flush pattern: dirty the layout,
// then time Sync.
func (es *engineSys) flushCycle(ctx context.Context) (Sample, error) {
	b := es.b
	ps := int64(b.opts.PageSize)
	es.timed.Take() // drop anything recorded outside the measurement
	st0 := es.eng.Stats()
	dm := b.devMarks()
	t0 := time.Now()
	if err := b.dirtyCache(ctx); err != nil {
		return Sample{}, err
	}
	total := b.layout.Pages
	b.statusFunc(func() string {
		n := es.eng.Stats().PagesWritten - st0.PagesWritten
		return fmt.Sprintf("engine: flushing %d%% (%s of %s pages)", 100*n/int64(total), humanize.Comma(n), humanize.Comma(int64(total)))
	})
	b.dirtied = true
	dm.timed()
	var err error
	t1, cpu0 := time.Now(), cpuTimes()
	trace.WithRegion(ctx, "engine Sync (timed)", func() { err = es.sync(ctx) })
	t2, cpu1 := time.Now(), cpuTimes()
	dm.end()
	tm := es.timed.Take()
	st1 := es.eng.Stats()
	if err != nil {
		if ctx.Err() != nil {
			return Sample{}, ctxErr(ctx)
		}
		err = fmt.Errorf("engine: sync: %w", err)
		b.syncFailed(err)
		return Sample{}, err
	}
	if b.journal != nil {
		if err := b.journal.Synced(1); err != nil {
			return Sample{}, err
		}
	}
	s := Sample{
		Bytes:         int64(total) * ps,
		Pages:         int64(total),
		Seconds:       t2.Sub(t1).Seconds(),
		TotalSeconds:  t2.Sub(t0).Seconds(),
		IOs:           st1.Writes - st0.Writes,
		PagesFilled:   st1.PagesFilled - st0.PagesFilled,
		Latency:       latencyOf(tm.Writes),
		FlushLatency:  latencyOf(tm.Flushes),
		SubmitBatch:   batchOf(tm.Submits),
		CompleteBatch: batchOf(tm.Completions),
	}
	s.setCPU(cpu0, cpu1)
	s.setDevice(dm.deviceIO())
	return s, nil
}

// engineHot is the engine's side of the hot pattern: writers use
// Cache.WriteAt (which waits for a page's write in flight: stable
// pages), and a sync is engine.Sync.
type engineHot struct {
	es  *engineSys
	st0 engine.Stats
}

func (h *engineHot) name() string { return "engine" }

func (h *engineHot) begin() error {
	h.es.setFaults(true) // off again only for the period's last sync
	h.es.timed.Take()
	h.st0 = h.es.eng.Stats()
	return nil
}

func (h *engineHot) write(w int, buf []byte, off int64) error {
	_, err := h.es.b.cache.WriteAt(buf, off)
	return err
}

func (h *engineHot) sync(ctx context.Context) error { return h.es.sync(ctx) }

// settle switches -inject's faults off for the period's last sync: the
// run ends with a Sync that can succeed, so what was acknowledged
// before can be checked, and a failed one is the engine's own failure.
func (h *engineHot) settle() { h.es.setFaults(false) }

// injects reports whether faults are injected into this system.
func (h *engineHot) injects() bool { return h.es.faulty != nil }

func (h *engineHot) end(s *Sample) error {
	tm := h.es.timed.Take()
	st := h.es.eng.Stats()
	s.IOs = st.Writes - h.st0.Writes
	s.DeviceBytes = st.BytesWritten - h.st0.BytesWritten
	s.Latency = latencyOf(tm.Writes)
	s.FlushLatency = latencyOf(tm.Flushes)
	s.SubmitBatch = batchOf(tm.Submits)
	s.CompleteBatch = batchOf(tm.Completions)
	return nil
}

// notices is an slog.Logger for the engine's notices that hands each
// record to logf as one line: the message and its attributes, no time
// or level.
func notices(logf func(format string, args ...any)) *slog.Logger {
	return slog.New(slog.NewTextHandler(lineWriter(logf), &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		},
	}))
}

type lineWriter func(format string, args ...any)

func (w lineWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
