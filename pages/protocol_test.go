package pages

import "testing"

func TestTryStartWriteback(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(1)
	c.SetDirty(p)
	if p.TryStartWriteback() {
		t.Fatal("TryStartWriteback on a locked page succeeded")
	}
	p.Unlock()
	if !p.TryStartWriteback() {
		t.Fatal("TryStartWriteback on an unlocked dirty page failed")
	}
	if f := p.Flags(); f.IsDirty() || !f.IsWriteback() || f.IsLocked() {
		t.Fatalf("flags after TryStartWriteback: %v", f)
	}
	if p.TryStartWriteback() {
		t.Fatal("TryStartWriteback twice succeeded")
	}
	c.AccountStartedWriteback(1)
	if c.NrDirty() != 0 || c.NrWriteback() != 1 {
		t.Fatalf("counters dirty %d writeback %d", c.NrDirty(), c.NrWriteback())
	}
	c.SetDirty(p) // redirtied in flight: stays dirty, not startable
	if p.TryStartWriteback() {
		t.Fatal("TryStartWriteback of a page under writeback succeeded")
	}
	c.EndWritebackPages([]*Page{p})
	if c.NrWriteback() != 0 || p.Flags().IsWriteback() {
		t.Fatal("EndWritebackPages did not end writeback")
	}
	q, _ := c.Grab(2)
	c.Remove(q)
	q.Unlock()
	if q.TryStartWriteback() {
		t.Fatal("TryStartWriteback of a removed page succeeded")
	}
	c.Put(q)
}

// TestTryStartWritebackClean: only a clean, up-to-date, unlocked page in
// the cache and not under writeback goes under writeback, and it counts.
func TestTryStartWritebackClean(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(1)
	if p.TryStartWritebackClean() {
		t.Fatal("a locked page went under writeback")
	}
	p.Unlock()
	if p.TryStartWritebackClean() {
		t.Fatal("a page that is not up to date went under writeback")
	}
	p.SetUptodate()
	c.SetDirty(p)
	if p.TryStartWritebackClean() {
		t.Fatal("a dirty page went under writeback as a clean one")
	}
	p.Lock()
	p.ClearDirtyForIO()
	p.Unlock()
	c.AccountStartedWriteback(0)
	if !p.TryStartWritebackClean() {
		t.Fatalf("a clean up-to-date unlocked page did not go under writeback: %v", p.Flags())
	}
	if c.NrWriteback() != 1 || !p.Flags().IsWriteback() || p.Flags().IsDirty() {
		t.Fatalf("after: writeback %d, flags %v", c.NrWriteback(), p.Flags())
	}
	if p.TryStartWritebackClean() {
		t.Fatal("writeback set twice")
	}
	c.EndWritebackPages([]*Page{p})
	if c.NrWriteback() != 0 {
		t.Fatal("writeback count not back to 0")
	}
	c.Put(p)
}

// TestAtSlot: AtSlot(p.Slot()) is p for every cached page, and a slot
// freed and taken again holds the new page in the same struct.
func TestAtSlot(t *testing.T) {
	c, err := New(Config{PageSize: 512, Capacity: 8, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := uint64(100); i < 108; i++ {
		p, err := c.Grab(i)
		if err != nil {
			t.Fatal(err)
		}
		if q := c.AtSlot(p.Slot()); q != p || q.Index() != i {
			t.Fatalf("AtSlot(%d) = page %d (%p), want page %d (%p)", p.Slot(), q.Index(), q, i, p)
		}
		p.Unlock()
		c.Put(p)
	}
	p, err := c.Grab(103) // cached: the same page, locked
	if err != nil {
		t.Fatal(err)
	}
	slot := p.Slot()
	c.Remove(p)
	p.Unlock()
	c.Put(p) // the last pin: the slot is free, the only free one
	q, err := c.Grab(200)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Put(q)
	defer q.Unlock()
	if q.Slot() != slot || c.AtSlot(slot) != q || q.Index() != 200 {
		t.Fatalf("after Remove(103), Grab(200) took slot %d; AtSlot(%d) holds page %d", q.Slot(), slot, c.AtSlot(slot).Index())
	}
}
