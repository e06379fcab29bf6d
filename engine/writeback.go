package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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
	// NrToWrite > 0 is a page budget under SyncNone: each submitted page
	// takes one, and the pass stops at 0. SyncAll ignores it.
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
// once if another pass is running; under SyncAll it waits for it, and
// returns only when every page dirty in the range at its start has a
// completed write with content at least as new; it does not flush the
// device (Sync does). It keeps going past errors and returns the first.
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
	got, err := e.acquirePass(ctx, wbc.SyncMode == SyncAll)
	if !got {
		return err
	}
	err = e.writePagesLocked(ctx, wbc)
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

// writePagesLocked is WritePages with the pass lock held.
func (e *Engine) writePagesLocked(ctx context.Context, wbc *WritebackControl) error {
	return e.writePagesOpt(ctx, wbc, passOpts{})
}

func (e *Engine) writePagesOpt(ctx context.Context, wbc *WritebackControl, opt passOpts) error {
	e.stats.passes.Add(1)
	e.drain()
	start, end := wbc.RangeStart, wbc.RangeEnd
	if wbc.RangeCyclic {
		start, end = e.cyclicIndex, 0
	}
	if end != 0 && end <= start {
		return nil
	}
	failSeq := e.failSeqNow()
	budget := wbc.NrToWrite
	sync := wbc.SyncMode == SyncAll
	e.extOK = false

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
		if !sync && wbc.NrToWrite > 0 && budget <= 0 {
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
			budget--
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
	if sync {
		// Wait for this pass's writes (and so every earlier one).
		if err := e.waitGen(ctx, e.nextGen); err != nil {
			return err
		}
		if err := e.failuresSince(failSeq, start, end); err != nil {
			note(err)
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
			return pageFailed, err
		}
		alone := e.mapper == nil || e.slots[p.Slot()].failures.Load() > 0
		buf := e.bufOf(p)
		extends := e.extends(idx, block, buf, p, alone)
		if !extends {
			e.seal()
			if err := e.reserveRecord(ctx); err != nil {
				return pageFailed, err
			}
		}
		if p.TryStartWriteback() {
			if !extends {
				e.openRun(block, buf)
			}
			r := &e.recs[e.cur]
			e.slots[p.Slot()].gen = r.gen
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
		// Submit what is queued before sleeping: the lock holder may be
		// waiting for one of those writes.
		if err := e.submitQueued(); err != nil {
			return pageFailed, err
		}
		p.Lock()
	}
	f := p.Flags()
	if f.IsDropped() || !f.IsDirty() {
		// Invalidated while on the intake list, or cleaned by
		// Invalidate: retire it.
		e.set.remove(idx)
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
		if err := e.submitQueued(); err != nil {
			p.Unlock()
			return pageFailed, err
		}
		if err := e.waitGen(ctx, e.slots[p.Slot()].gen); err != nil {
			p.Unlock()
			return pageFailed, err
		}
	}
	block, boundary, err := e.mapPage(idx)
	if err != nil {
		p.Unlock()
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
	e.slots[p.Slot()].gen = r.gen
	e.appendPage(r, p)
	p.Unlock()
	e.set.remove(idx)
	if r.bytes >= int64(e.maxPages*e.ps) || boundary || alone {
		e.seal()
	}
	return pageWritten, nil
}

// mapPage finds the block of page idx, allocating where the mapper can,
// and whether a write must end after it (a mapper boundary).
func (e *Engine) mapPage(idx uint64) (block uint64, boundary bool, err error) {
	if e.mapper == nil {
		block = idx
	} else {
		if !e.extOK || !e.ext.Contains(idx) {
			ext, err := e.mapper.Map(idx)
			if errors.Is(err, mapper.ErrHole) && e.alloc != nil {
				n := uint64(e.set.contiguous(idx, e.maxPages))
				if ext.Len != 0 {
					n = min(n, ext.End()-idx)
				}
				ext, err = e.alloc.Allocate(idx, max(n, 1))
			}
			if err != nil {
				e.extOK = false
				return 0, false, &PageError{Op: "map", Path: e.cfg.Path, Pages: []uint64{idx}, Count: 1, Err: err}
			}
			e.ext, e.extOK = ext, true
		}
		block = e.ext.BlockOf(idx)
		boundary = e.ext.Boundary && idx == e.ext.End()-1
	}
	if block >= e.nblocks {
		return 0, false, &PageError{Op: "map", Path: e.cfg.Path, Pages: []uint64{idx}, Count: 1,
			Err: fmt.Errorf("%w: block %d, the target has %d", ErrOutOfRange, block, e.nblocks)}
	}
	return block, boundary, nil
}

// runFor returns the open run if page idx at block extends it, else
// seals it and opens a new one. A run is sealed when the next page is not
// contiguous by index and block, at MaxIOBytes, at 1024 iovecs, at a
// mapper boundary (writePage), or at a registered-buffer edge; a page
// written alone (no mapper, or its last write failed) gets a run of its
// own.
func (e *Engine) runFor(ctx context.Context, idx, block uint64, p *pages.Page, alone bool) (*record, error) {
	buf := e.bufOf(p)
	if e.extends(idx, block, buf, p, alone) {
		return &e.recs[e.cur], nil
	}
	e.seal()
	if err := e.reserveRecord(ctx); err != nil {
		return nil, err
	}
	return e.openRun(block, buf), nil
}

// bufOf is the registered buffer holding p, or -1.
func (e *Engine) bufOf(p *pages.Page) int {
	if e.fixed {
		return e.cache.BufIndex(p)
	}
	return -1
}

// extends reports whether page idx at block can join the open run.
func (e *Engine) extends(idx, block uint64, buf int, p *pages.Page, alone bool) bool {
	if e.cur < 0 || alone {
		return false
	}
	r := &e.recs[e.cur]
	last := r.pages[len(r.pages)-1]
	lastBlock := uint64(r.off)/uint64(e.ps) + uint64(len(r.pages)) - 1
	return idx == last.Index()+1 && block == lastBlock+1 && buf == r.buf &&
		(len(r.iov) < cap(r.iov) || adjacent(r, p))
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
// next generation.
func (e *Engine) openRun(block uint64, buf int) *record {
	ri := e.spare
	e.spare = -1
	r := &e.recs[ri]
	e.nextGen++
	e.recGen[ri].Store(e.nextGen) // before lastGen: see advanceCompleted
	e.lastGen.Store(e.nextGen)
	r.gen = e.nextGen
	r.off = int64(block) * int64(e.ps)
	r.bytes = 0
	r.buf = buf
	r.pages = r.pages[:0]
	r.iov = r.iov[:0]
	r.sums = r.sums[:0]
	e.cur = ri
	return r
}

// adjacent reports whether p's memory follows the run's last iovec.
func adjacent(r *record, p *pages.Page) bool { return adjacentIov(r.iov, p.Data()) }

// adjacentIov reports whether d starts where the last iovec ends.
func adjacentIov(iov []unix.Iovec, d []byte) bool {
	last := &iov[len(iov)-1]
	return uintptr(unsafe.Pointer(last.Base))+uintptr(last.Len) == uintptr(unsafe.Pointer(&d[0]))
}

// appendPage adds p to run r; pages adjacent in memory share an iovec.
func (e *Engine) appendPage(r *record, p *pages.Page) {
	d := p.Data()
	if len(r.iov) > 0 && adjacent(r, p) {
		r.iov[len(r.iov)-1].Len += uint64(len(d))
	} else {
		r.iov = append(r.iov, unix.Iovec{Base: &d[0], Len: uint64(len(d))})
	}
	r.pages = append(r.pages, p)
	r.bytes += int64(len(d))
	if invariants.Enabled {
		r.sums = append(r.sums, crc32.Checksum(d, crcTable))
	}
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// takeRecord takes a free in-flight record, submitting what is queued
// and waiting for a completion when none is free.
func (e *Engine) takeRecord(ctx context.Context) (int32, error) {
	select {
	case ri := <-e.freeRecs:
		return ri, nil
	default:
	}
	if err := e.submitQueued(); err != nil {
		return 0, err
	}
	select {
	case ri := <-e.freeRecs:
		return ri, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// seal closes the open run and queues it; a full batch is submitted.
func (e *Engine) seal() {
	if e.cur < 0 {
		return
	}
	e.queue = append(e.queue, e.cur)
	e.cur = -1
	if len(e.queue) >= e.batchSize() {
		// An error here has already failed the batch's pages (they are
		// dirty again); the pass finds out at its next submission or
		// through the failure log.
		_ = e.submitQueued()
	}
}

// batchSize is how many sealed runs the pass collects before it
// submits them in one io_uring_enter: a quarter of the queue depth, so
// the device has work while the pass builds the next batch.
func (e *Engine) batchSize() int { return max(1, e.cfg.QueueDepth/4) }

// submitQueued seals the open run and submits every queued run in one
// batch (the kernel's blk_finish_plug). If the ring refuses the batch,
// its pages are made dirty again and their writeback ended, as a failed
// write would be.
func (e *Engine) submitQueued() error {
	e.seal0()
	e.cache.AccountStartedWriteback(e.started)
	e.started = 0
	if len(e.queue) == 0 {
		return nil
	}
	e.reqs = e.reqs[:0]
	for _, ri := range e.queue {
		r := &e.recs[ri]
		e.reqs = append(e.reqs, ring.Request{
			Op:       ring.OpWrite,
			Fixed:    r.buf >= 0,
			BufIndex: uint16(max(r.buf, 0)),
			Off:      r.off,
			Iov:      r.iov,
			Tag:      uint64(ri),
		})
	}
	e.stats.inFlight.Add(int64(len(e.queue)))
	err := e.ring.Submit(e.reqs)
	if err != nil {
		errno := syscall.EIO
		if errors.Is(err, ring.ErrClosed) {
			errno = syscall.ESHUTDOWN
		}
		cs := make([]ring.Completion, len(e.queue))
		for i, ri := range e.queue {
			cs[i] = ring.Completion{Tag: uint64(ri), Err: errno}
		}
		e.handle(cs)
		err = fmt.Errorf("engine: submit to %s: %w", e.cfg.Path, err)
	}
	e.queue = e.queue[:0]
	clear(e.reqs) // drop the iovec references
	return err
}

// seal0 moves the open run to the queue without submitting.
func (e *Engine) seal0() {
	if e.cur >= 0 {
		e.queue = append(e.queue, e.cur)
		e.cur = -1
	}
}

// drain moves the cache's intake list into the ordered dirty set.
func (e *Engine) drain() {
	e.drainBuf = e.cache.DetachDirty(e.drainBuf[:0])
	if len(e.drainBuf) == 0 {
		return
	}
	now := time.Now().UnixNano()
	for _, p := range e.drainBuf {
		if p.Flags().IsDropped() {
			// Dirtied just as Invalidate removed it: its data was
			// discarded; retire it here (its index may already hold a
			// new page).
			if e.cache.ClearDirtyDropped(p) {
				e.cache.Put(p)
			}
			continue
		}
		e.set.insert(p)
		e.slots[p.Slot()].dirtiedAt = now
	}
	clear(e.drainBuf)
}
