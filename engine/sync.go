package engine

import (
	"context"
	"errors"
	"fmt"
	"syscall"

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
func (e *Engine) SyncRange(ctx context.Context, start, end uint64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if end != 0 && end < start {
		return fmt.Errorf("%w: SyncRange [%d, %d): end before start", ErrConfig, start, end)
	}
	defer e.deliverErrors()
	var otherErr error // the first error that is not a write failure
	for round := 0; ; round++ {
		if _, err := e.acquirePass(ctx, true); err != nil {
			return err
		}
		seq := e.failSeqNow()
		wbc := WritebackControl{SyncMode: SyncAll, RangeStart: start, RangeEnd: end}
		err := e.writePagesLocked(ctx, &wbc)
		last := e.nextGen
		e.releasePass()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, ErrIO) && otherErr == nil {
			otherErr = err
		}
		if err := e.waitGen(ctx, last); err != nil {
			return err
		}
		if !e.retryNeeded(seq, start, end) || round >= e.cfg.MaxRetries {
			break
		}
	}
	flushErr := e.flush(ctx)
	e.stats.syncs.Add(1)
	return errors.Join(e.heldInError(start, end), otherErr, flushErr)
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
	e.unflushed = nil
	e.complMu.Unlock()
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
// their slot when the last pin goes.
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
	e.drain()
	e.cache.Range(start, end, func(p *pages.Page) bool {
		p.Lock()
		p.WaitWriteback()
		if p.Flags().IsDirty() {
			if !e.set.has(p) {
				// On the intake list: take it off before clearing Dirty,
				// which lets the page be pushed again.
				e.drain()
			}
			if e.set.has(p) {
				e.set.remove(p.Index())
				e.cache.CancelDirty(p)
				e.cache.Put(p) // the dirty pin
			}
		}
		e.complMu.Lock()
		delete(e.inError, p.Index())
		e.slots[p.Slot()].failures.Store(0)
		e.complMu.Unlock()
		p.ClearError()
		e.cache.Remove(p)
		p.Unlock()
		e.cache.Put(p)
		return true
	})
	// Pages dropped while on the intake list or in the set are retired
	// by the next pass that meets them.
	return nil
}
