package pages

import "github.com/wbengine/wbengine/internal/invariants"

// The writeback protocol.
//
// Everything in this file is the writeback engine's side of the cache:
// only package engine calls it (the tests of this package aside), one
// engine per cache at a time (Claim), and an application must not. The
// contract, in the order of a page's life:
//
//   - Intake. DetachDirtyEach takes the intake list; each page it hands
//     over carries its dirty pin, which the engine owns from then on and
//     gives back (Cache.Put) when it retires the page, or returns with the
//     page to the intake list (ReturnDirty) when it stops without writing
//     it. Only the engine clears Dirty, and only on pages it was given
//     (see intake.go for who owns a page's link when).
//   - Taking a page for a write. Either one compare-and-swap
//     (TryStartWriteback, accounted in bulk by AccountStartedWriteback)
//     or, under the page lock, ClearDirtyForIO then TestSetWriteback:
//     Writeback is set only under the page lock right after Dirty was
//     cleared, or by the equivalent CAS. TryStartWritebackClean puts a
//     clean cached page under writeback for gap filling, under a pin of
//     the engine's own.
//   - Dropping. CancelDirty (a locked page being invalidated) and
//     ClearDirtyDropped (a page that left the cache) clear Dirty without a
//     write; the engine then gives back the dirty pin.
//   - Completion. EndWritebackPages ends writeback on a write's pages,
//     from any goroutine, without the page lock; SetError and ClearError
//     mark a page held in error after repeated write failures.
//   - Memory. Slot, Buffers and BufIndex place a page in the arena, for
//     side tables indexed by slot and for registered buffers.
//
// All of these take or assume the state named above; under the
// invariants build tag a call out of contract panics.

// DetachDirtyEach takes the whole intake list in one atomic swap and
// calls fn for each of its pages (most recently dirtied first), without
// copying the chain: it reads a page's link before it hands the page to
// fn, so fn may clear the Dirty bit of the page it is given (which lets
// the page be pushed again, reusing the link). fn must not clear Dirty
// on a page it has not been given yet. Each page carries the dirty pin
// its SetDirty took; the caller owns it from now on.
func (c *Cache) DetachDirtyEach(fn func(p *Page)) {
	p := c.intake.Swap(nil)
	for p != nil {
		next := p.next
		p.next = nil
		fn(p)
		p = next
	}
}

// ReturnDirty puts a dirty page the writeback engine took off the
// intake list back on it, with the dirty pin it carries: an engine that
// stops without writing its pages hands them back this way, so the next
// engine on the cache finds them. The caller owns p's place in the
// engine's dirty set and must hold no other claim on it.
func (c *Cache) ReturnDirty(p *Page) {
	if f := p.Flags(); f&PageDirty == 0 {
		invariants.Failf("pages: ReturnDirty of clean page %d (%v)", p.index, f)
	}
	c.pushIntake(p)
}

// TryStartWriteback moves an unlocked, dirty page that is not under
// writeback straight to writeback in one compare-and-swap: the
// writeback pass's lock, ClearDirtyForIO, TestSetWriteback, Unlock, with
// nothing anyone can see in between, so the rule "Writeback is set only
// under the page lock right after Dirty was cleared" holds. It reports
// false, changing nothing, when the page is locked (or a sleeper claimed
// the lock), not dirty, already under writeback, or dropped. The dirty
// pin passes to the write. The caller accounts for the pages it started
// with Cache.AccountStartedWriteback (once per batch, not per page).
func (p *Page) TryStartWriteback() bool {
	const busy = uint32(PageLocked | PageWriteback | PageDropped | PageHandoff)
	for {
		old := p.flags.Load()
		if old&busy != 0 || old&uint32(PageDirty) == 0 {
			return false
		}
		if p.flags.CompareAndSwap(old, old&^uint32(PageDirty)|uint32(PageWriteback)) {
			return true
		}
	}
}

// AccountStartedWriteback moves n pages from the dirty to the writeback
// count: the accounting for n TryStartWriteback calls that succeeded.
func (c *Cache) AccountStartedWriteback(n int) {
	if n != 0 {
		c.nrDirty.Add(-int64(n))
		c.nrWriteback.Add(int64(n))
	}
}

// ClearDirtyForIO clears Dirty on a locked page about to be written and
// reports whether it was dirty (the kernel's folio_clear_dirty_for_io).
// The dirty pin is not dropped: it passes to the write.
func (p *Page) ClearDirtyForIO() bool {
	if invariants.Enabled && p.Flags()&PageLocked == 0 {
		invariants.Failf("pages: ClearDirtyForIO on unlocked page %d", p.index)
	}
	old := Flags(p.flags.And(^uint32(PageDirty)))
	if old&PageDirty != 0 {
		p.cache.nrDirty.Add(-1)
		return true
	}
	return false
}

// TestSetWriteback sets Writeback on a locked page and returns whether it
// was already set (the kernel's TestSetPageWriteback). Setting it twice
// is a bug: under invariants it panics.
func (p *Page) TestSetWriteback() bool {
	old := Flags(p.flags.Or(uint32(PageWriteback)))
	if invariants.Enabled {
		if old&PageLocked == 0 {
			invariants.Failf("pages: writeback set on unlocked page %d", p.index)
		}
		if old&PageWriteback != 0 {
			invariants.Failf("pages: writeback set twice on page %d", p.index)
		}
	}
	if old&PageWriteback == 0 {
		p.cache.nrWriteback.Add(1)
	}
	return old&PageWriteback != 0
}

// TryStartWritebackClean puts a clean page under writeback in one CAS:
// from up to date, clean, unlocked, not under writeback and in the cache,
// to the same with Writeback set. The writeback engine uses it to
// rewrite a clean page in the gap between two dirty runs (gap filling),
// holding a pin on it; the page is then stable (WriteAt and PrepareWrite
// wait for its writeback) until EndWritebackPages. It reports whether it
// did.
func (p *Page) TryStartWritebackClean() bool {
	const busy = uint32(PageLocked | PageWriteback | PageDropped | PageHandoff | PageDirty)
	for {
		old := p.flags.Load()
		if old&busy != 0 || old&uint32(PageUptodate) == 0 {
			return false
		}
		if p.flags.CompareAndSwap(old, old|uint32(PageWriteback)) {
			p.cache.nrWriteback.Add(1)
			return true
		}
	}
}

// CancelDirty clears Dirty on a locked page that will not be written
// (it is being invalidated) and reports whether it was dirty. The caller
// — the writeback engine — then gives back the dirty pin.
func (c *Cache) CancelDirty(p *Page) bool {
	if invariants.Enabled && p.Flags()&PageLocked == 0 {
		invariants.Failf("pages: CancelDirty on unlocked page %d", p.index)
	}
	return p.ClearDirtyForIO()
}

// ClearDirtyDropped clears Dirty on a page that has left the cache and
// reports whether it was dirty; the writeback engine then gives back the
// dirty pin. No lock is needed: nobody can dirty a dropped page again.
func (c *Cache) ClearDirtyDropped(p *Page) bool {
	if p.Flags()&PageDropped == 0 {
		invariants.Failf("pages: ClearDirtyDropped of page %d still cached", p.index)
	}
	old := Flags(p.flags.And(^uint32(PageDirty)))
	if old&PageDirty != 0 {
		c.nrDirty.Add(-1)
		return true
	}
	return false
}

// EndWritebackPages clears Writeback on every page of ps and wakes each
// page's waiters (the kernel's folio_end_writeback), with the writeback
// count updated once. It needs no page lock, may be called from any
// goroutine (the ring's completion handler) and never blocks for long (it
// takes a wait bucket's mutex only when someone sleeps on a page). Ending
// writeback that is not set panics: it would mean a completion was
// delivered twice.
func (c *Cache) EndWritebackPages(ps []*Page) {
	for _, p := range ps {
		p.endWriteback()
	}
	c.nrWriteback.Add(-int64(len(ps)))
}

func (p *Page) endWriteback() {
	old := Flags(p.flags.And(^uint32(PageWriteback | PageWaiters)))
	if old&PageWriteback == 0 {
		invariants.Failf("pages: EndWriteback on page %d not under writeback (%v)", p.index, old)
	}
	if old&PageWaiters != 0 {
		p.wake()
	}
}

// SetError marks the page as held in error (the engine does, after
// repeated write failures); ClearError clears it.
func (p *Page) SetError()   { p.flags.Or(uint32(PageError)) }
func (p *Page) ClearError() { p.flags.And(^uint32(PageError)) }

// Slot is the page's fixed position in the cache (0 ≤ Slot < Capacity).
// Side tables indexed by slot (the engine keeps one) must reset their
// entry when a slot is reused: Index tells which page a slot holds.
func (p *Page) Slot() int { return int(p.slot) }

// AtSlot is the Page struct of slot (0 ≤ slot < Capacity): the one whose
// Slot is slot. It holds whatever page the slot holds now, or none; only
// a caller that knows the slot's page cannot have left it (the engine's
// dirty set, for a page it holds dirty) may take it for that page.
func (c *Cache) AtSlot(slot int) *Page { return &c.pages[slot] }

// Buffers returns the arena cut at Config.BufferSize, for registering
// with io_uring. Page p lies wholly inside Buffers()[BufIndex(p)].
func (c *Cache) Buffers() [][]byte {
	var bufs [][]byte
	for off := 0; off < len(c.arena.mem); off += c.bufSize {
		end := min(off+c.bufSize, len(c.arena.mem))
		bufs = append(bufs, c.arena.mem[off:end:end])
	}
	return bufs
}

// BufIndex is the index in Buffers of the buffer holding p's memory.
func (c *Cache) BufIndex(p *Page) int {
	return int((uint64(p.slot) << c.pageShift) / uint64(c.bufSize))
}
