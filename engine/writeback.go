package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wbengine/wbengine/internal/invariants"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// SyncMode says what a writeback pass is for.
type SyncMode int

const (
	// SyncNone is memory cleaning: write what can be written without
	// waiting; skip pages under writeback; stop at the budget.
	SyncNone SyncMode = iota
	// SyncAll is data integrity: write every page dirty in the range when
	// the pass starts, waiting for writes already in flight, and return
	// when those writes completed.
	SyncAll
)

func (m SyncMode) String() string {
	if m == SyncAll {
		return "all"
	}
	return "none"
}

// WritebackControl says what one WritePages call does (the kernel's
// struct writeback_control). The zero value is a SyncNone pass over the
// whole cache with no budget. Ranges are page indexes, RangeStart
// inclusive, RangeEnd exclusive, RangeEnd 0 = to the end.
type WritebackControl struct {
	SyncMode SyncMode
	// NrToWrite > 0 is a page budget under SyncNone: each page submitted
	// takes one from this field (the caller sees it go down, as the
	// kernel's wbc->nr_to_write), and the pass stops when it reaches 0.
	// 0 at the start of a call means no budget. So a control whose budget
	// was spent, passed in again as it is, writes without limit: set
	// NrToWrite again to reuse it (the kernel's writeback_sb_inodes loop
	// does). SyncAll ignores and keeps it.
	NrToWrite  int64
	RangeStart uint64
	RangeEnd   uint64
	// RangeCyclic starts at the cache's writeback index instead of
	// RangeStart, goes to the end, and stores where it stopped (the index
	// after the last page it took, or 0 when it reached the end). It
	// never wraps within one call.
	RangeCyclic bool
	// PagesSkipped is increased by the pages this call skipped (under
	// writeback, SyncNone).
	PagesSkipped int64
	// PagesWritten is increased by the pages this call submitted.
	PagesWritten int64
}

// WritePages runs one writeback pass (the kernel's mpage_writepages):
// it takes the cache's newly dirtied pages into the ordered dirty set,
// walks the set over the range in index order, merges contiguous pages
// into vectored writes and submits them. Under SyncNone it returns at
// once if another pass is running, and stops at the first error or when
// its budget (NrToWrite, decremented for each page submitted) reaches 0;
// under SyncAll it waits for a running pass, writes every page dirty in
// the range at its start, keeps going past errors, and returns only when
// each of those pages has a completed write with content at least as
// new; it does not flush the device (Sync does). Its error names the
// pages of the range it could not write.
func (e *Engine) WritePages(ctx context.Context, wbc *WritebackControl) error {
	if wbc == nil {
		return fmt.Errorf("%w: nil WritebackControl", ErrConfig)
	}
	if e.closed.Load() {
		return ErrClosed
	}
	if e.testBeforePass != nil {
		e.testBeforePass()
	}
	sync := wbc.SyncMode == SyncAll
	got, err := e.acquirePass(ctx, sync)
	if !got {
		return err
	}
	since := e.epoch + 1 // the pass's drain stamps with this
	err = e.runPass(ctx, wbc, passOpts{})
	if sync && ctx.Err() == nil && !errors.Is(err, ErrClosed) {
		if werr := e.waitGen(ctx, e.nextGen); werr != nil {
			err = werr
		} else {
			m := [1]syncMember{{start: wbc.RangeStart, end: wbc.RangeEnd}}
			e.checkLocked(since, m[:], false)
			if m[0].err != nil {
				err = m[0].err
			}
		}
	}
	e.releasePass()
	e.deliverErrors()
	return err
}

// passOpts are the engine's own pass options, beyond WritebackControl.
type passOpts struct {
	// olderThan (UnixNano), if set, takes only pages that entered the
	// dirty set before it (expired pages).
	olderThan int64
}

// runPass runs one pass (writeCachePages) through ring.Run: on the
// native ring on its owner thread, where the pass puts its writes into
// the submission queue itself and reaps completions inline — the caller
// hands the ring its work once per pass, not per batch. The caller holds
// the pass lock. It returns ErrClosed if the ring was closed.
func (e *Engine) runPass(ctx context.Context, wbc *WritebackControl, opt passOpts) error {
	e.passArgs = passArgs{ctx: ctx, wbc: wbc, opt: opt}
	rerr := e.ring.Run(ctx, e.passFn)
	err := e.passArgs.err
	e.passArgs = passArgs{}
	if rerr != nil {
		return fmt.Errorf("%w: %w", ErrClosed, rerr)
	}
	return err
}

// runPassOnRing is the function runPass gives ring.Run (made once, as passFn, so
// a pass allocates nothing).
func (e *Engine) runPassOnRing(q ring.Queue) {
	a := &e.passArgs
	e.q = q
	a.err = e.writeCachePages(a.ctx, a.wbc, a.opt)
	e.q = nil
}

// passArgs are runPass's arguments and result, for pass.
type passArgs struct {
	ctx context.Context
	wbc *WritebackControl
	opt passOpts
	err error
}

// writeCachePages is one pass, run by runPass with the pass lock held
// (the kernel's write_cache_pages): drain, walk, submit. It does not
// wait for the writes it submitted. Its error is the first the walk met
// (a page it could not map, a refused submission, ctx). Where it must
// wait — for a page's lock, for a write in flight, for a free record —
// it waits through the ring's Queue, which reaps completions meanwhile:
// on the native ring it runs on the thread that reaps them.
func (e *Engine) writeCachePages(ctx context.Context, wbc *WritebackControl, opt passOpts) error {
	e.stats.passes.Add(1)
	e.drain()
	start, end := wbc.RangeStart, wbc.RangeEnd
	if wbc.RangeCyclic {
		start, end = e.cyclicIndex, 0
	}
	if end != 0 && end <= start {
		return nil
	}
	sync := wbc.SyncMode == SyncAll
	// A budget is NrToWrite > 0 at the start, under SyncNone; each page
	// submitted takes one from the caller's field, and the pass stops
	// when it reaches 0.
	budget := !sync && wbc.NrToWrite > 0
	e.ext.reset()

	var firstErr error
	note := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	pos := start
	stopped := false // stopped before the end of the range
	var n int
	for {
		p := e.set.next(pos, end)
		if p == nil {
			break
		}
		idx := p.Index()
		if opt.olderThan != 0 && e.slots[p.Slot()].dirtiedAt > opt.olderThan {
			pos = idx + 1
			continue
		}
		if budget && wbc.NrToWrite <= 0 {
			stopped = true
			break
		}
		if n++; n&63 == 0 && ctx.Err() != nil {
			note(ctx.Err())
			stopped = true
			break
		}
		pos = idx + 1
		took, err := e.writePage(ctx, p, sync)
		if err != nil {
			if ctx.Err() != nil {
				note(ctx.Err())
				stopped = true
				break
			}
			note(err)
			if !sync {
				// SyncNone stops at the first error, as the kernel's
				// memory cleaning does.
				stopped = true
				break
			}
			continue
		}
		switch took {
		case pageWritten:
			if budget {
				wbc.NrToWrite--
			}
			wbc.PagesWritten++
		case pageSkipped:
			wbc.PagesSkipped++
			e.stats.pagesSkipped.Add(1)
		}
	}
	if err := e.submitQueued(); err != nil {
		note(err)
	}
	if e.spare >= 0 {
		e.freeRecs <- e.spare
		e.spare = -1
	}
	if wbc.RangeCyclic {
		if stopped {
			e.cyclicIndex = pos
		} else {
			e.cyclicIndex = 0
		}
	}
	return firstErr
}

type pageOutcome int

const (
	pageRetired pageOutcome = iota // no longer dirty or cached: left the set
	pageWritten                    // queued for writing
	pageSkipped                    // under writeback (SyncNone): stays in the set
	pageFailed                     // could not be mapped: stays dirty in the set
)

// writePage is the walk's step for one page (the kernel's
// write_cache_pages loop body plus mpage_write_folio).
func (e *Engine) writePage(ctx context.Context, p *pages.Page, sync bool) (pageOutcome, error) {
	idx := p.Index()
	// Fast path, for the common page: unlocked, dirty, not in flight.
	// Map it and get the run it goes into first (both may wait), then
	// move it to writeback in one CAS (pages.TryStartWriteback). If the
	// page changed meanwhile, the slow path below takes over; a record
	// taken for it stays reserved for the next run.
	if f := p.Flags(); f.IsDirty() && f&(pages.PageLocked|pages.PageWriteback|pages.PageDropped|pages.PageHandoff) == 0 {
		block, boundary, err := e.mapPage(idx)
		if err != nil {
			e.mapFailed(p, err)
			return pageFailed, err
		}
		alone := e.mapper == nil || e.slots[p.Slot()].failures.Load() > 0
		extends := e.joinsRun(idx, block, p, alone)
		if !extends {
			e.seal()
			if err := e.reserveRecord(ctx); err != nil {
				return pageFailed, err
			}
		}
		if p.TryStartWriteback() {
			if !extends {
				e.openRun(block)
			}
			r := &e.recs[e.cur]
			e.take(p, r.gen)
			e.appendPage(r, p)
			e.started++
			e.set.remove(idx)
			if r.bytes >= int64(e.maxPages*e.ps) || boundary || alone {
				e.seal()
			}
			return pageWritten, nil
		}
	}
	if !p.TryLock() {
		if err := e.lockPage(ctx, p); err != nil {
			return pageFailed, err
		}
	}
	f := p.Flags()
	if f.IsDropped() || !f.IsDirty() {
		// Invalidated while on the intake list, or cleaned by
		// Invalidate: retire it.
		e.set.remove(idx)
		e.forget(p)
		p.ClearDirtyForIO()
		p.Unlock()
		e.cache.Put(p)
		return pageRetired, nil
	}
	if f.IsWriteback() {
		if !sync {
			p.Unlock()
			return pageSkipped, nil
		}
		// Dirtied again while in flight: wait for that write (its
		// generation), then write the page again.
		if err := e.passWaitGen(ctx, e.slots[p.Slot()].gen); err != nil {
			p.Unlock()
			return pageFailed, err
		}
	}
	block, boundary, err := e.mapPage(idx)
	if err != nil {
		p.Unlock()
		e.mapFailed(p, err)
		return pageFailed, err
	}
	alone := e.mapper == nil || e.slots[p.Slot()].failures.Load() > 0
	r, err := e.runFor(ctx, idx, block, p, alone)
	if err != nil {
		p.Unlock()
		return pageFailed, err
	}
	p.ClearDirtyForIO()
	if p.TestSetWriteback() {
		invariants.Failf("engine: page %d already under writeback", idx)
	}
	e.take(p, r.gen)
	e.appendPage(r, p)
	p.Unlock()
	e.set.remove(idx)
	if r.bytes >= int64(e.maxPages*e.ps) || boundary || alone {
		e.seal()
	}
	return pageWritten, nil
}

// take records, as page p goes under writeback in a write of
// generation gen, what that write carries: its stamp moves from the
// dirty content to the write. A page counted as stuck is not any more.
func (e *Engine) take(p *pages.Page, gen uint64) {
	st := &e.slots[p.Slot()]
	st.gen = gen
	since := st.dirtySince.Load()
	if since == 0 {
		since = e.epoch // cannot happen: every page in the set is stamped
	}
	st.wbSince = since
	st.dirtySince.Store(0)
	if st.stuck {
		st.stuck = false
		e.stuck.Add(-1)
		e.complMu.Lock()
		delete(e.mapErrs, p.Index())
		e.complMu.Unlock()
	}
}

// mapFailed records why page p could not be mapped; it stays dirty in
// the set, counted as stuck.
func (e *Engine) mapFailed(p *pages.Page, err error) {
	st := &e.slots[p.Slot()]
	if !st.stuck {
		st.stuck = true
		e.stuck.Add(1)
	}
	var pe *PageError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	e.complMu.Lock()
	st.cause, st.errno = failMap, 0
	e.mapErrs[p.Index()] = err
	e.complMu.Unlock()
}

// forget clears what the engine keeps about page p as it leaves the
// engine's hands without being written (retired, invalidated, handed
// back at Close). The caller holds the pass lock and p is not in flight.
func (e *Engine) forget(p *pages.Page) {
	st := &e.slots[p.Slot()]
	st.dirtySince.Store(0)
	if st.stuck {
		st.stuck = false
		e.stuck.Add(-1)
	}
	e.complMu.Lock()
	st.cause, st.errno = failNone, 0
	delete(e.mapErrs, p.Index())
	if _, ok := e.inError[p.Index()]; ok {
		delete(e.inError, p.Index())
		e.nInError.Add(-1)
	}
	e.complMu.Unlock()
	st.failures.Store(0)
}

// mapPage finds the block of page idx, allocating where the mapper can,
// and whether a write must end after it (a mapper boundary).
func (e *Engine) mapPage(idx uint64) (block uint64, boundary bool, err error) {
	if e.mapper == nil {
		block = idx
	} else {
		// The cursor's hit test, not lookup: lookup does not inline, and
		// this runs for every page of a pass.
		c := &e.ext
		ext := c.ext
		if !c.hit(idx) {
			var err error
			ext, err = c.miss(idx)
			if err != nil && e.alloc != nil && errors.Is(err, mapper.ErrHole) {
				n := uint64(e.set.contiguous(idx, e.maxPages))
				if ext.Len != 0 {
					n = min(n, ext.End()-idx)
				}
				if ext, err = e.alloc.Allocate(idx, max(n, 1)); err == nil {
					c.set(ext)
				}
			}
			if err != nil {
				return 0, false, &PageError{Op: "map", Path: e.cfg.Path, Pages: []uint64{idx}, Count: 1, Err: err}
			}
		}
		block = ext.BlockOf(idx)
		boundary = ext.Boundary && idx == ext.End()-1
	}
	if block >= e.nblocks {
		return 0, false, &PageError{Op: "map", Path: e.cfg.Path, Pages: []uint64{idx}, Count: 1,
			Err: fmt.Errorf("%w: block %d, the target has %d", ErrOutOfRange, block, e.nblocks)}
	}
	return block, boundary, nil
}

// runFor returns the open run if page idx at block extends it, else
// seals it and opens a new one. A run is sealed when the next page is not
// contiguous by index and block, at MaxIOBytes, at 1024 iovecs, or at a
// mapper boundary (writePage); a page written alone (no mapper, or its
// last write failed) gets a run of its own. A run whose pages lie in more
// than one registered buffer goes out as a plain write (extends).
func (e *Engine) runFor(ctx context.Context, idx, block uint64, p *pages.Page, alone bool) (*record, error) {
	if e.joinsRun(idx, block, p, alone) {
		return &e.recs[e.cur], nil
	}
	e.seal()
	if err := e.reserveRecord(ctx); err != nil {
		return nil, err
	}
	return e.openRun(block), nil
}

// joinsRun reports whether page idx at block goes into the open run:
// it extends it, or a filled gap (Config.FillGaps) makes it extend it.
func (e *Engine) joinsRun(idx, block uint64, p *pages.Page, alone bool) bool {
	return e.extends(idx, block, p, alone) || !alone && e.fillGap(idx, block) && e.extends(idx, block, p, alone)
}

// fillGap is gap filling (Config.FillGaps): page idx at block does not
// extend the open run, but the pages between them are few, contiguous on
// the device, cached, up to date, clean, unlocked and pinned by nobody
// but the cache; then it puts them under writeback (stable while in
// flight) and appends them to the run, so the run and page idx go out in
// one write, and reports true. The gap pages carry no stamp: their
// content is on the device already (wbSince 0). If any gap page does not
// qualify, nothing changes and it reports false.
func (e *Engine) fillGap(idx, block uint64) bool {
	if e.cfg.FillGaps == 0 || e.cur < 0 {
		return false
	}
	r := &e.recs[e.cur]
	last := r.pages[len(r.pages)-1].Index()
	if idx <= last+1 || idx-last-1 > uint64(e.cfg.FillGaps) {
		return false
	}
	gap := int(idx - last - 1)
	lastBlock := r.lastBlock(e.ps)
	if block != lastBlock+uint64(gap)+1 || len(r.pages)+gap+1 > e.maxPages || len(r.iov)+gap+1 > cap(r.iov) {
		return false
	}
	taken := e.fillBuf[:0]
	ok := true
	for k := 1; k <= gap && ok; k++ {
		g := last + uint64(k)
		b, boundary, err := e.mapPage(g)
		q := (*pages.Page)(nil)
		if err == nil && b == lastBlock+uint64(k) && !boundary {
			q = e.cache.Lookup(g)
		}
		switch {
		case q == nil:
			ok = false
		case q.Pins() != 1 || !q.TryStartWritebackClean():
			e.cache.Put(q)
			ok = false
		default:
			taken = append(taken, q)
		}
	}
	if !ok {
		for _, q := range taken {
			e.cache.EndWritebackPages([]*pages.Page{q})
			e.cache.Put(q)
		}
		clear(taken)
		return false
	}
	for _, q := range taken {
		st := &e.slots[q.Slot()]
		st.gen, st.wbSince = r.gen, 0
		e.appendPage(r, q)
	}
	clear(taken)
	e.stats.pagesFilled.Add(int64(gap))
	return true
}

// bufOf is the registered buffer holding p, or -1.
func (e *Engine) bufOf(p *pages.Page) int {
	if e.fixed {
		return e.cache.BufIndex(p)
	}
	return -1
}

// extends reports whether page idx at block can join the open run,
// whichever registered buffer holds it (see appendPage).
func (e *Engine) extends(idx, block uint64, p *pages.Page, alone bool) bool {
	return e.cur >= 0 && !alone && e.recs[e.cur].extends(idx, block, p, e.ps)
}

// reserveRecord makes sure a free record is set aside for the next run
// (e.spare), waiting for one if need be.
func (e *Engine) reserveRecord(ctx context.Context) error {
	if e.spare >= 0 {
		return nil
	}
	ri, err := e.takeRecord(ctx)
	if err != nil {
		return err
	}
	e.spare = ri
	return nil
}

// openRun opens a run at block in the reserved record and gives it the
// next generation; its first page sets its registered buffer.
func (e *Engine) openRun(block uint64) *record {
	ri := e.spare
	e.spare = -1
	r := &e.recs[ri]
	e.nextGen++
	e.recGen[ri].Store(e.nextGen) // before lastGen: see advanceCompleted
	e.lastGen.Store(e.nextGen)
	r.gen = e.nextGen
	r.start(block, e.ps)
	r.buf = bufUnset
	r.sums = r.sums[:0]
	e.cur = ri
	return r
}

// appendPage adds p to run r; pages adjacent in memory share an iovec.
//
// The run is a fixed write naming the registered buffer of its pages
// while they all lie in one; a page from another buffer makes it a plain
// write (buf -1), not the end of the run. One fixed write names one
// buffer, and sealing at the buffer edge would cut a run of pages
// scattered over a cache larger than one buffer (1 GiB) into writes of
// about two pages. (Issue 12: seq over a 2 GiB cache whose pages were
// taken in a shuffled order went out at 2.0 pages per write.) A plain
// write pins its pages as it is issued; a fixed one has them pinned at
// registration.
func (e *Engine) appendPage(r *record, p *pages.Page) {
	switch b := e.bufOf(p); {
	case r.buf == bufUnset:
		r.buf = b
	case r.buf != b:
		r.buf = -1
	}
	r.add(p)
	if invariants.Enabled {
		r.sums = append(r.sums, crc32.Checksum(p.Data(), crcTable))
	}
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// takeRecord takes a free in-flight record, submitting what is queued
// and reaping completions until one is free.
func (e *Engine) takeRecord(ctx context.Context) (int32, error) {
	for {
		select {
		case ri := <-e.freeRecs:
			return ri, nil
		default:
		}
		if err := e.submitQueued(); err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// Reap a batch, not one: taking records back one at a time would
		// submit one write per io_uring_enter.
		if err := e.q.Reap(e.batchSize()); err != nil {
			return 0, err
		}
	}
}

// lockPage takes p's lock in a pass. Its holder may be waiting for a
// completion the pass's thread reaps (WriteAt waits for the page's
// writeback; a reader for its read), so the pass submits what is queued
// and reaps while it waits, and yields when nothing is in flight.
func (e *Engine) lockPage(ctx context.Context, p *pages.Page) error {
	for !p.TryLock() {
		if err := e.submitQueued(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.q.InFlight() > 0 {
			if err := e.q.Wait(); err != nil {
				return err
			}
		} else {
			runtime.Gosched()
		}
	}
	return nil
}

// passWaitGen is waitGen for a pass: it submits what is queued and reaps
// until every write with generation ≤ g has completed.
func (e *Engine) passWaitGen(ctx context.Context, g uint64) error {
	if err := e.submitQueued(); err != nil {
		return err
	}
	if e.completed.Load() >= g {
		return nil
	}
	e.nWaiters.Add(1) // counted as a waiter (Stats, tests), woken by reaping
	defer e.nWaiters.Add(-1)
	for e.completed.Load() < g {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.q.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// seal closes the open run and queues it; a full batch is submitted.
func (e *Engine) seal() {
	e.queueRun()
	if len(e.queue) >= e.batchSize() {
		// An error here has already failed the batch's pages (they are
		// dirty again, and Sync's check finds them).
		_ = e.submitQueued()
	}
}

// batchSize is how many sealed runs the pass collects before it
// submits them in one io_uring_enter: a quarter of the queue depth, so
// the device has work while the pass builds the next batch.
func (e *Engine) batchSize() int { return max(1, e.cfg.QueueDepth/4) }

// submitQueued seals the open run and hands every queued run to the
// ring in one batch (the kernel's blk_finish_plug): one io_uring_enter on
// the native ring, which also reaps what has completed. If the ring
// refuses the batch (it was closed), its pages are made dirty again and
// their writeback ended, as a failed write would be.
func (e *Engine) submitQueued() error {
	e.queueRun()
	e.cache.AccountStartedWriteback(e.started)
	e.started = 0
	if len(e.queue) == 0 {
		return nil
	}
	for _, ri := range e.queue {
		r := &e.recs[ri]
		e.req = ring.Request{
			Op:       ring.OpWrite,
			Fixed:    r.buf >= 0,
			BufIndex: uint16(max(r.buf, 0)),
			Off:      r.off,
			Iov:      r.iov,
			Tag:      uint64(ri),
		}
		if invariants.Enabled {
			if err := e.target.CheckRequest(&e.req); err != nil {
				invariants.Failf("engine: a write the pass built is malformed: %v", err)
			}
		}
		e.q.Add(&e.req)
	}
	e.req = ring.Request{}
	e.stats.inFlight.Add(int64(len(e.queue)))
	err := e.q.Flush()
	if err != nil {
		errno := syscall.EIO
		if errors.Is(err, ring.ErrClosed) {
			errno = syscall.ESHUTDOWN
		}
		cs := make([]ring.Completion, len(e.queue))
		for i, ri := range e.queue {
			cs[i] = ring.Completion{Tag: uint64(ri), Err: errno}
		}
		e.endIO(cs)
		err = fmt.Errorf("engine: submit to %s: %w", e.cfg.Path, err)
	}
	e.queue = e.queue[:0]
	return err
}

// queueRun moves the open run to the queue without submitting.
func (e *Engine) queueRun() {
	if e.cur >= 0 {
		e.queue = append(e.queue, e.cur)
		e.cur = -1
	}
}

// drain moves the cache's intake list into the ordered dirty set,
// stamping each page that carries no older stamp with a new epoch. First
// it makes the pages of failed flushes dirty again, each with the stamp
// of the content that flush should have made durable (their Dirty bits
// were left alone by the flush, which runs without the pass lock, so a
// page being taken for writing meanwhile could not lose its stamp).
func (e *Engine) drain() {
	e.epoch++
	e.complMu.Lock()
	failed, lowered := e.flushFailed, e.lowered
	e.flushFailed, e.lowered = nil, e.lowered[:0]
	for _, u := range failed {
		if u.p.Flags().IsDropped() {
			continue // invalidated: its data was discarded
		}
		st := &e.slots[u.p.Slot()]
		casMin(&st.dirtySince, u.since)
		st.cause = failFlush
		if !e.cache.SetDirty(u.p) {
			// Dirty already: on the intake list (drained below, with
			// the stamp just put back) or in the set.
			e.set.lower(u.p, st.dirtySince.Load())
		}
	}
	for _, p := range lowered {
		e.set.lower(p, e.slots[p.Slot()].dirtySince.Load())
	}
	e.complMu.Unlock()
	for _, u := range failed {
		e.cache.Put(u.p) // the pin that kept it while unflushed
	}
	e.drainNow = 0
	e.cache.DetachDirtyEach(e.drainFn)
}

// drainPage takes one page off the intake list into the dirty set
// (drain's DetachDirtyEach callback, made once at Open).
func (e *Engine) drainPage(p *pages.Page) {
	if p.Flags().IsDropped() {
		// Dirtied just as Invalidate removed it: its data was discarded;
		// retire it here (its index may already hold a new page).
		if e.cache.ClearDirtyDropped(p) {
			e.cache.Put(p)
		}
		return
	}
	if e.drainNow == 0 {
		e.drainNow = time.Now().UnixNano()
	}
	st := &e.slots[p.Slot()]
	since := st.dirtySince.Load()
	if since == 0 {
		// The handler may be putting an older stamp back on a page
		// dirtied while its write was in flight: only a page with no
		// stamp gets this epoch.
		if st.dirtySince.CompareAndSwap(0, e.epoch) {
			since = e.epoch
		} else {
			since = st.dirtySince.Load()
		}
	}
	e.set.insert(p, since)
	st.dirtiedAt = e.drainNow
}

// casMin lowers *a to v unless it is already lower (0 counts as no
// value: it takes v).
func casMin(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if old != 0 && old <= v {
			return
		}
		if a.CompareAndSwap(old, v) {
			return
		}
	}
}
