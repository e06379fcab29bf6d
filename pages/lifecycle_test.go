package pages

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestPinPut(t *testing.T) {
	c := newTestCache(t, 4096, 2)
	a, _ := c.Grab(1)
	a.Unlock()
	if got := a.Pins(); got != 1 {
		t.Fatalf("pins after Grab = %d, want 1", got)
	}
	a2 := c.Lookup(1)
	if a2 != a || a.Pins() != 2 {
		t.Fatalf("Lookup gave %p pins %d, want %p pins 2", a2, a.Pins(), a)
	}
	if c.Lookup(99) != nil {
		t.Fatal("Lookup of an absent page returned a page")
	}
	c.Put(a2)
	b, _ := c.Grab(2)
	b.Unlock()
	if _, err := c.Grab(3); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("Grab on a full cache = %v, want ErrCacheFull", err)
	}
	// Remove while pinned: gone from the index, slot freed at the last Put.
	a.Lock()
	c.Remove(a)
	a.Unlock()
	if c.Lookup(1) != nil {
		t.Fatal("removed page still found")
	}
	if !a.Flags().IsDropped() {
		t.Fatal("removed page not marked dropped")
	}
	if _, err := c.Grab(3); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("slot reused while still pinned: Grab = %v", err)
	}
	c.Put(a)
	p3, err := c.Grab(3)
	if err != nil {
		t.Fatalf("Grab after the last Put of a removed page: %v", err)
	}
	if p3.Index() != 3 || p3.Flags().IsDropped() {
		t.Fatalf("reused slot: index %d flags %v", p3.Index(), p3.Flags())
	}
	p3.Unlock()
	c.Put(p3)
	c.Put(b)
	mustPanic(t, "Put of an unpinned page", func() { c.Put(b) })
	if got := c.NrCached(); got != 2 {
		t.Errorf("NrCached = %d, want 2", got)
	}
}

func TestGrabConcurrentSameIndex(t *testing.T) {
	c := newTestCache(t, 512, 8)
	var wg sync.WaitGroup
	got := make([]*Page, 16)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p, err := c.Grab(42)
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = p
			p.Unlock()
		}(i)
	}
	wg.Wait()
	for _, p := range got {
		if p != got[0] {
			t.Fatal("concurrent Grab of one index returned different pages")
		}
	}
	if n := got[0].Pins(); n != 16 {
		t.Fatalf("pins = %d, want 16", n)
	}
	if c.NrCached() != 1 {
		t.Fatalf("NrCached = %d, want 1", c.NrCached())
	}
}

func TestRangeAndBuffers(t *testing.T) {
	c := newTestCache(t, 512, 32)
	for i := uint64(0); i < 20; i++ {
		p, _ := c.Grab(i * 3)
		p.Unlock()
		c.Put(p)
	}
	var seen []uint64
	c.Range(10, 31, func(p *Page) bool {
		seen = append(seen, p.Index())
		c.Put(p)
		return true
	})
	if len(seen) != 7 { // 12 15 18 21 24 27 30
		t.Fatalf("Range(10,31) saw %v", seen)
	}
	bufs := c.Buffers()
	if len(bufs) != 1 || len(bufs[0]) != 32*512 {
		t.Fatalf("Buffers = %d buffers", len(bufs))
	}
	p := c.Lookup(3)
	if c.BufIndex(p) != 0 {
		t.Fatal("BufIndex != 0")
	}
	c.Put(p)
}

// TestPutNoDoubleFree: a Put that takes a page's pins to zero while
// another goroutine finds the page, removes it and puts it, must not
// free the slot twice (the index holds a reference of its own, so only
// the last pin after Remove frees it).
func TestPutNoDoubleFree(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(1)
	p.Unlock()
	c.Put(p)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if q := c.Lookup(1); q != nil {
					c.Put(q)
				}
			}
		}()
	}
	for iter := 0; iter < 200000; iter++ {
		if q := c.Lookup(1); q != nil {
			q.Lock()
			c.Remove(q)
			q.Unlock()
			c.Put(q)
		}
		r, err := c.Grab(1)
		if err != nil {
			t.Fatal(err)
		}
		r.Unlock()
		c.Put(r)
		c.freeMu.Lock()
		seen := map[uint32]bool{}
		for _, s := range c.free {
			if seen[s] {
				c.freeMu.Unlock()
				stop.Store(true)
				wg.Wait()
				t.Fatalf("slot %d is on the free list twice (free %v)", s, c.free)
			}
			seen[s] = true
		}
		c.freeMu.Unlock()
	}
	stop.Store(true)
	wg.Wait()
}
