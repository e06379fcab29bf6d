package engine

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

// Truncation (the kernel's mm/truncate.c): dropping pages from the cache,
// and discarding their blocks on the device.

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
		e.forget(p)
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
	cursor := extentCursor{m: e.mapper}
	for idx := start; idx < end; {
		ext, err := cursor.lookup(idx)
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
