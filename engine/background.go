package engine

import (
	"context"
	"sync"
	"time"
)

// Background writeback and dirty throttling: the kernel's flusher
// (wb_workfn: background and kupdate writeback) and balance_dirty_pages.
// Both are off unless Config asks for them.
//
// Thresholds count dirty pages plus pages under writeback, as the
// kernel counts NR_FILE_DIRTY + NR_WRITEBACK. Above the background
// threshold the flusher writes in chunks; above the midpoint between the
// background and hard thresholds (the kernel's freerun ceiling) writers
// sleep for times sized from the measured write bandwidth; at the hard
// threshold they wait until writeback brings the count back under it.

const (
	// chunkBytes is what one background pass writes before it lets
	// others in (the kernel rounds its chunks to 4 MiB so one hot range
	// cannot starve the rest).
	chunkBytes = 4 << 20
	// maxPause caps one throttling sleep (the kernel's MAX_PAUSE).
	maxPause = 200 * time.Millisecond
	// initBandwidth is the bandwidth assumed before any is measured (the
	// kernel's INIT_BW).
	initBandwidth = 100 << 20 // bytes/s
	// bwPeriod is how often the bandwidth estimate is updated.
	bwPeriod = 100 * time.Millisecond
)

// thresholds are the resolved dirty limits, in pages (0: off).
type thresholds struct {
	background int64
	hard       int64
	expire     time.Duration
	interval   time.Duration
}

func (e *Engine) resolveThresholds() {
	c := e.cfg
	cap := int64(e.cache.Capacity())
	ps := int64(e.ps)
	pagesOf := func(bytes int64, ratio int) int64 {
		if bytes > 0 {
			return max(1, bytes/ps)
		}
		if ratio > 0 {
			return max(1, cap*int64(ratio)/100)
		}
		return 0
	}
	t := thresholds{
		background: pagesOf(c.DirtyBackgroundBytes, c.DirtyBackgroundRatio),
		hard:       pagesOf(c.DirtyBytes, c.DirtyRatio),
		expire:     c.DirtyExpire,
		interval:   c.WritebackInterval,
	}
	if t.hard > 0 && (t.background == 0 || t.background >= t.hard) {
		t.background = max(1, t.hard/2) // the kernel's 10 % / 20 % defaults keep this ratio
	}
	if t.background > 0 || t.expire > 0 {
		if t.interval == 0 {
			t.interval = 5 * time.Second
		}
	}
	e.thresh = t
}

// backgroundOn reports whether the flusher runs.
func (e *Engine) backgroundOn() bool { return e.thresh.interval > 0 }

// kickFlusher wakes the flusher without blocking.
func (e *Engine) kickFlusher() {
	select {
	case e.bgKick <- struct{}{}:
	default:
	}
}

// flusher is the background writeback loop. It stops when bgStop is
// closed.
func (e *Engine) flusher() {
	defer e.bgWG.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-e.bgStop
		cancel()
	}()
	tick := time.NewTicker(e.thresh.interval)
	defer tick.Stop()
	chunk := int64(max(1, chunkBytes/e.ps))
	for {
		kupdate := false
		select {
		case <-e.bgStop:
			return
		case <-tick.C:
			kupdate = true
		case <-e.bgKick:
		}
		// Background writeback: chunks, cyclic, until under the
		// threshold. When a pass writes nothing (what is over the
		// threshold is in flight, or locked, or another pass runs), it
		// waits for a write to complete before the next; with nothing in
		// flight it waits for the next kick or tick.
		for e.thresh.background > 0 && e.nrDirtyWB() > e.thresh.background && ctx.Err() == nil {
			wbc := &WritebackControl{SyncMode: SyncNone, NrToWrite: chunk, RangeCyclic: true}
			if err := e.WritePages(ctx, wbc); err != nil && ctx.Err() == nil {
				e.cfg.Logger.Warn("background writeback", "target", e.cfg.Path, "err", err)
				break
			}
			e.stats.bgPasses.Add(1)
			if wbc.PagesWritten == 0 {
				if e.stats.inFlight.Load() == 0 || !e.waitProgress(ctx, e.thresh.interval) {
					break
				}
			}
		}
		// Periodic writeback of pages dirty longer than the expiry.
		if kupdate && e.thresh.expire > 0 && ctx.Err() == nil {
			cutoff := time.Now().Add(-e.thresh.expire).UnixNano()
			if _, err := e.acquirePass(ctx, true); err == nil {
				wbc := &WritebackControl{SyncMode: SyncNone}
				err := e.runPass(ctx, wbc, passOpts{olderThan: cutoff})
				e.releasePass()
				e.stats.expiredWritten.Add(wbc.PagesWritten)
				if err != nil && ctx.Err() == nil {
					e.cfg.Logger.Warn("expired-page writeback", "target", e.cfg.Path, "err", err)
				}
			}
		}
		e.deliverErrors()
	}
}

// waitProgress waits until some write completes, or d passes. It
// reports false if ctx ended.
func (e *Engine) waitProgress(ctx context.Context, d time.Duration) bool {
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_ = e.waitGen(tctx, e.completed.Load()+1)
	return ctx.Err() == nil
}

// nrDirtyWB is what the thresholds count: dirty pages plus pages under
// writeback, less the pages held in error and the pages that cannot be
// mapped (no amount of writeback cleans those; counting them would pace
// writers, and run the flusher, for as long as they stay).
func (e *Engine) nrDirtyWB() int64 {
	return e.cache.NrDirty() + e.cache.NrWriteback() - e.nInError.Load() - e.stuck.Load()
}

// balanceDirty paces a writer that has just dirtied nrDirtied pages
// (pages.Ops; the kernel's balance_dirty_pages). Callers hold no page
// lock: WriteAt calls it after releasing its pages, and callers that
// write Data directly call Cache.BalanceDirty. Without a dirty limit it
// returns at once; above the background threshold it wakes the flusher;
// below the midpoint between the background and hard thresholds nobody
// waits; above it the writer sleeps for the time the device needs to
// write its pages at the measured bandwidth, scaled up as the count
// nears the hard limit (at most 200 ms per sleep); at the hard limit it
// waits until writeback brings the count under it.
func (e *Engine) balanceDirty(ctx context.Context, nrDirtied int) error {
	t := &e.thresh
	if t.background == 0 || e.closed.Load() {
		return nil // no limits, or nothing left to wait for
	}
	nr := e.nrDirtyWB()
	if nr > t.background {
		e.kickFlusher()
	}
	if t.hard == 0 {
		return nil
	}
	freerun := (t.background + t.hard) / 2
	if nr <= freerun {
		return nil
	}
	for {
		bw := e.bandwidth() // pages per second
		var pause time.Duration
		if nr >= t.hard {
			// Wait for writeback to make room: the time to write what is
			// over the limit, at least a millisecond, at most maxPause.
			pause = time.Duration(float64(nr-t.hard+1) / bw * float64(time.Second))
		} else {
			// Between freerun and the limit: the writer's pages at a rate
			// that falls from the device's to a 32nd of it.
			frac := float64(t.hard-nr) / float64(t.hard-freerun)
			rate := bw * max(frac, 1.0/32)
			pause = time.Duration(float64(max(nrDirtied, 1)) / rate * float64(time.Second))
		}
		pause = min(max(pause, time.Millisecond), maxPause)
		if e.onThrottle != nil {
			e.onThrottle(nr, freerun, pause)
		}
		e.kickFlusher()
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		e.stats.throttled.Add(int64(pause))
		e.stats.throttleWaits.Add(1)
		if nr = e.nrDirtyWB(); nr < t.hard {
			return nil
		}
	}
}

// bandwidth is the measured write bandwidth in pages per second, an
// exponentially weighted average over bwPeriod samples of the pages
// written.
func (e *Engine) bandwidth() float64 {
	e.bwMu.Lock()
	defer e.bwMu.Unlock()
	now := time.Now()
	if e.bwAt.IsZero() {
		e.bwAt, e.bwPages = now, e.stats.pagesWritten.Load()
		e.bwEst = float64(initBandwidth) / float64(e.ps)
		return e.bwEst
	}
	if d := now.Sub(e.bwAt); d >= bwPeriod {
		w := e.stats.pagesWritten.Load()
		rate := float64(w-e.bwPages) / d.Seconds()
		if rate > 0 {
			e.bwEst = 0.75*e.bwEst + 0.25*rate
		}
		e.bwAt, e.bwPages = now, w
	}
	return e.bwEst
}

// bgState is the background machinery's state.
type bgState struct {
	thresh     thresholds
	bgKick     chan struct{} // wakes the flusher (capacity 1)
	bgStop     chan struct{} // closed by Close
	bgWG       sync.WaitGroup
	bwMu       sync.Mutex // protects bwAt, bwPages, bwEst
	bwAt       time.Time
	bwPages    int64
	bwEst      float64
	onThrottle func(nr, freerun int64, pause time.Duration) // test hook
}
