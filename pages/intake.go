package pages

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
