package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"syscall"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// Sync makes every page dirty when it is called durable: SyncRange over
// the whole cache.
func (e *Engine) Sync(ctx context.Context) error { return e.SyncRange(ctx, 0, 0) }

// SyncRange makes every page in [start, end) (page indexes; end 0 = to
// the end) that is dirty when it is called durable (the kernel's
// fsync/msync path): a SyncAll pass over the range, repeated while pages
// of the range fail and are not yet held in error; then, with the pass
// lock released, a wait for every write submitted so far (also other
// passes'); then a device flush. It returns nil only if all of those
// pages are on stable storage. Pages held in error in the range make it
// fail with an error naming them (errors.Is(err, ErrIO)) until they are
// written or invalidated. A failed flush makes every page written since
// the last good flush dirty again and fails with ErrFlush.
//
// Concurrent syncs share work (group commit): a SyncRange that arrives
// while another one runs joins the next round, which starts when the
// running one ends and covers the ranges of all who joined; so N
// concurrent syncs cost about two passes and two flushes, not N. A
// cancelled ctx makes SyncRange return early; the round it joined still
// runs for the others.
func (e *Engine) SyncRange(ctx context.Context, start, end uint64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if end != 0 && end < start {
		return fmt.Errorf("%w: SyncRange [%d, %d): end before start", ErrConfig, start, end)
	}
	e.stats.syncs.Add(1)
	if e.testBeforeJoin != nil {
		e.testBeforeJoin()
	}
	e.syncMu.Lock()
	if e.syncClosed {
		e.syncMu.Unlock()
		return ErrClosed
	}
	b := e.nextSync
	if b == nil {
		b = &syncBatch{start: start, end: end, done: make(chan struct{})}
		e.nextSync = b
	} else {
		b.start = min(b.start, start)
		if b.end != 0 && (end == 0 || end > b.end) {
			b.end = end
		}
		e.stats.syncsJoined.Add(1)
	}
	e.syncMu.Unlock()
	select {
	case e.syncKick <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.deliverErrors()
	held := e.heldInError(start, end)
	if held != nil {
		e.cfg.Logger.Warn("sync: pages held in error", "target", e.cfg.Path, "err", held)
	}
	if b.flushErr != nil {
		e.cfg.Logger.Warn("sync: device flush failed; its pages are dirty again", "target", e.cfg.Path, "err", b.flushErr)
	}
	return errors.Join(held, inRange(b.otherErr, start, end), b.flushErr)
}

// syncBatch is one round of group commit.
type syncBatch struct {
	start, end uint64 // the union of the joined ranges
	done       chan struct{}
	otherErr   error // errors that are not write failures (holes, ranges, ctx)
	flushErr   error
}

// syncState is the group-commit machinery.
type syncState struct {
	syncMu     sync.Mutex // protects nextSync and syncClosed
	nextSync   *syncBatch // the round Syncs join now; nil when none waits
	syncClosed bool       // the runner has stopped: no round will run
	syncKick   chan struct{}
}

// syncRunner runs group-commit rounds one after another until Close.
func (e *Engine) syncRunner() {
	defer e.bgWG.Done()
	for {
		select {
		case <-e.bgStop:
			// Close ran its own final round first. A Sync that slipped
			// in since (it checked closed before Close set it) fails
			// rather than wait for a round that will not come.
			e.syncMu.Lock()
			e.syncClosed = true
			b := e.nextSync
			e.nextSync = nil
			e.syncMu.Unlock()
			if b != nil {
				b.otherErr = ErrClosed
				close(b.done)
			}
			return
		case <-e.syncKick:
		}
		if e.testBeforeRound != nil {
			e.testBeforeRound()
		}
		e.syncMu.Lock()
		b := e.nextSync
		e.nextSync = nil
		e.syncMu.Unlock()
		if b == nil {
			continue
		}
		b.otherErr, b.flushErr = e.syncRound(context.Background(), b.start, b.end)
		e.stats.syncRounds.Add(1)
		close(b.done)
	}
}

// syncRound is one round of SyncRange's work.
func (e *Engine) syncRound(ctx context.Context, start, end uint64) (otherErr, flushErr error) {
	if e.testFlushFirst {
		// Broken on purpose (tests only): the flush goes out before the
		// writes it should cover.
		flushErr = e.flush(ctx)
	}
	for round := 0; ; round++ {
		if _, err := e.acquirePass(ctx, true); err != nil {
			return err, nil
		}
		seq := e.failSeqNow()
		wbc := WritebackControl{SyncMode: SyncAll, RangeStart: start, RangeEnd: end}
		err := e.writePagesLocked(ctx, &wbc)
		last := e.nextGen
		e.releasePass()
		if ctx.Err() != nil {
			return ctx.Err(), nil
		}
		if err != nil && !errors.Is(err, ErrIO) && otherErr == nil {
			otherErr = err
		}
		if err := e.waitGen(ctx, last); err != nil {
			return err, nil
		}
		if !e.retryNeeded(seq, start, end) || round >= e.cfg.MaxRetries {
			break
		}
	}
	if e.testFlushFirst {
		return otherErr, flushErr
	}
	return otherErr, e.flush(ctx)
}

// inRange keeps err if it concerns [start, end): a PageError naming no
// page in the range is dropped (it belongs to another member of the
// round).
func inRange(err error, start, end uint64) error {
	var pe *PageError
	if err == nil || !errors.As(err, &pe) || len(pe.Pages) == 0 {
		return err
	}
	for _, p := range pe.Pages {
		if p >= start && (end == 0 || p < end) {
			return err
		}
	}
	return nil
}

// flush flushes the device's write cache, covering every write that
// completed before it. On failure, the pages those writes carried are
// made dirty again.
func (e *Engine) flush(ctx context.Context) error {
	if !e.needFlush {
		return nil
	}
	e.flushMu.Lock()
	e.complMu.Lock()
	list := e.unflushed
	e.unflushed = e.spareUnflushed[:0]
	e.spareUnflushed = nil
	for _, p := range list {
		e.slots[p.Slot()].unflushed = false
	}
	e.complMu.Unlock()
	if e.testInFlush != nil {
		e.testInFlush()
	}
	req := [1]ring.Request{{Op: ring.OpFlush, Tag: flushTag}}
	if err := e.ring.Submit(req[:]); err != nil {
		e.endFlush(list, syscall.EIO)
		e.flushMu.Unlock()
		return fmt.Errorf("%w: flush %s: %w", ErrFlush, e.cfg.Path, err)
	}
	select {
	case errno := <-e.flushDone:
		err := e.endFlush(list, errno)
		e.flushMu.Unlock()
		return err
	case <-ctx.Done():
		// The flush is in flight; finish its bookkeeping when it
		// completes, and keep other flushes out until then.
		go func() {
			e.endFlush(list, <-e.flushDone)
			e.flushMu.Unlock()
		}()
		return ctx.Err()
	}
}

// endFlush gives back the pins of the pages a flush covered, or, when
// it failed, makes them dirty again first (pages invalidated meanwhile
// are left alone: the application discarded them).
func (e *Engine) endFlush(list []*pages.Page, errno syscall.Errno) error {
	defer func() {
		clear(list)
		e.complMu.Lock()
		if e.spareUnflushed == nil {
			e.spareUnflushed = list[:0]
		}
		e.complMu.Unlock()
	}()
	if errno == 0 {
		for _, p := range list {
			e.cache.Put(p)
		}
		e.stats.flushes.Add(1)
		return nil
	}
	for _, p := range list {
		if !p.Flags().IsDropped() {
			e.cache.SetDirty(p)
		}
		e.cache.Put(p)
	}
	e.stats.flushErrors.Add(1)
	err := &PageError{Op: "flush", Path: e.cfg.Path, Count: len(list), Errno: errno, Err: errno, Class: ErrFlush}
	for _, p := range list[:min(len(list), maxNamedPages)] {
		err.Pages = append(err.Pages, p.Index())
	}
	if e.cfg.OnError != nil {
		e.complMu.Lock()
		e.onErrors = append(e.onErrors, err)
		e.complMu.Unlock()
	}
	return err
}

// Invalidate drops the pages in [start, end) (end 0 = to the end) from
// the cache (the kernel's truncate_inode_pages_range): it waits for
// their writeback, discards their dirty data and any error they are held
// in, and removes them. Pinned pages leave the index at once and free
// their slot when the last pin goes; a page dirtied after it was removed
// stays discarded (SetDirty refuses it).
func (e *Engine) Invalidate(ctx context.Context, start, end uint64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if end != 0 && end < start {
		return fmt.Errorf("%w: Invalidate [%d, %d): end before start", ErrConfig, start, end)
	}
	if _, err := e.acquirePass(ctx, true); err != nil {
		return err
	}
	defer e.releasePass()
	e.invalidateLocked(start, end)
	return nil
}

// invalidateLocked is Invalidate with the pass lock held.
func (e *Engine) invalidateLocked(start, end uint64) {
	e.drain()
	e.cache.Range(start, end, func(p *pages.Page) bool {
		p.Lock()
		p.WaitWriteback()
		if p.Flags().IsDirty() && !e.set.has(p) {
			// On the intake list: bring it into the set, so that it is
			// off the list before its Dirty bit is cleared.
			e.drain()
		}
		inSet := e.set.has(p)
		if inSet {
			e.set.remove(p.Index())
		}
		// From here SetDirty refuses the page. A SetDirty that won its
		// race before this leaves it dirty and on the intake list, where
		// the next drain retires it.
		e.cache.Remove(p)
		if inSet && e.cache.CancelDirty(p) {
			e.cache.Put(p) // the dirty pin
		}
		e.complMu.Lock()
		if _, ok := e.inError[p.Index()]; ok {
			delete(e.inError, p.Index())
			e.nInError.Add(-1)
		}
		e.slots[p.Slot()].failures.Store(0)
		e.complMu.Unlock()
		p.ClearError()
		p.Unlock()
		e.cache.Put(p)
		return true
	})
}

// Discard invalidates the pages in [start, end) (end 0 = to the end of
// the target) and tells the device their blocks no longer hold data:
// BLKDISCARD on a block device, hole punching in a file. Through a
// mapper it discards the blocks the range maps to (holes are skipped).
// Where the target cannot discard, the pages are still invalidated and
// the error wraps ring.ErrNotSupported.
func (e *Engine) Discard(ctx context.Context, start, end uint64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if end != 0 && end < start {
		return fmt.Errorf("%w: Discard [%d, %d): end before start", ErrConfig, start, end)
	}
	// Hold the pass lock from the invalidation through the device
	// discard: no pass may write a page of the range in between, or the
	// discard would erase a write the cache thinks is on the device.
	if _, err := e.acquirePass(ctx, true); err != nil {
		return err
	}
	defer e.releasePass()
	e.invalidateLocked(start, end)
	switch {
	case e.mapper == nil && (end == 0 || end > e.nblocks):
		end = e.nblocks
	case end == 0:
		end = math.MaxUint64 // until the mapper reports a hole to the end
	}
	discard := func(block, n uint64) error {
		if block >= e.nblocks {
			return nil
		}
		n = min(n, e.nblocks-block)
		return e.target.Discard(int64(block)*int64(e.ps), int64(n)*int64(e.ps))
	}
	if e.mapper == nil {
		if start >= end {
			return nil
		}
		return discard(start, end-start)
	}
	for idx := start; idx < end; {
		ext, err := e.mapper.Map(idx)
		if errors.Is(err, mapper.ErrHole) {
			if ext.Len == 0 {
				return nil // a hole to the end
			}
			idx = ext.End()
			continue
		}
		if err != nil {
			return fmt.Errorf("engine: discard %s: map page %d: %w", e.cfg.Path, idx, err)
		}
		n := min(ext.End(), end) - idx
		if err := discard(ext.BlockOf(idx), n); err != nil {
			return err
		}
		idx += n
	}
	return nil
}
