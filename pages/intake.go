package pages

import "github.com/wbengine/wbengine/internal/invariants"

// The intake list holds the pages that went clean → dirty since the
// writeback engine last detached it. It is an intrusive singly linked
// stack (Treiber) threaded through Page.next, with two operations only:
// push one page, and detach the whole list in one atomic swap.
//
// Who owns a page's next field, and when:
//
//   - The goroutine that wins a page's clean → dirty CAS (SetDirty) owns
//     next until its push CAS succeeds. Only that winner pushes, so a page
//     is on the list at most once: it cannot be pushed again until Dirty
//     is cleared, and only the writeback engine clears Dirty.
//   - Once pushed, next belongs to the list: nobody writes it.
//   - The goroutine that detaches the list (the writeback engine, holding
//     its one-pass-at-a-time lock) owns every detached page's next. It
//     must read all the links (copy the pages out) before it clears
//     Dirty on any of them, because a page whose Dirty is cleared can be
//     dirtied and pushed again at once, which rewrites next.
//
// There is no ABA problem: the list never pops single elements. A push
// CAS compares the head it read with the current head; if the head
// changed in between (another push, or a detach), the CAS fails and the
// pusher retries with the new head. A detach swaps the head to nil and
// takes the whole chain; a page in that chain cannot reappear at the
// head until its Dirty bit is cleared, which happens only after the
// detacher has copied the chain out.

// pushIntake puts p on the intake list. Only the winner of p's clean →
// dirty transition calls it.
func (c *Cache) pushIntake(p *Page) {
	for {
		head := c.intake.Load()
		p.next = head
		if c.intake.CompareAndSwap(head, p) {
			return
		}
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

// DetachDirty takes the whole intake list in one atomic swap, appends
// its pages to buf (most recently dirtied first) and returns the result.
// Each returned page carries the dirty pin its SetDirty took; the caller
// owns it from now on. The caller must not clear Dirty on any page before
// DetachDirty returns (it copies the chain first, so that is automatic),
// and must be the only goroutine clearing Dirty (the writeback engine,
// one pass at a time).
func (c *Cache) DetachDirty(buf []*Page) []*Page {
	p := c.intake.Swap(nil)
	for p != nil {
		next := p.next
		p.next = nil
		buf = append(buf, p)
		p = next
	}
	return buf
}
