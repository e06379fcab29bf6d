package pages

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestEvict: a full cache evicts only clean, unpinned, unlocked pages
// not under writeback, sparing recently used ones once.
func TestEvict(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 4)
	full := bytes.Repeat([]byte{1}, ps)
	// 0: clean, unpinned. 1: dirty. 2: pinned. 3: under writeback.
	for i := int64(0); i < 4; i++ {
		c.WriteAt(full, i*ps)
	}
	for _, p := range detachDirty(c, nil) {
		if p.Index() == 1 {
			continue // stays dirty, with its dirty pin
		}
		p.Lock()
		p.ClearDirtyForIO()
		if p.Index() == 3 {
			p.TestSetWriteback() // the dirty pin now belongs to the write
			p.Unlock()
			continue
		}
		p.Unlock()
		c.Put(p)
	}
	pinned := c.Lookup(2)
	p, err := c.Grab(10)
	if err != nil {
		t.Fatalf("Grab with one evictable page: %v", err)
	}
	if c.Lookup(0) != nil {
		t.Fatal("page 0 was not the one evicted")
	}
	for _, i := range []uint64{1, 2, 3} {
		q := c.Lookup(i)
		if q == nil {
			t.Fatalf("page %d (dirty, pinned or in flight) was evicted", i)
		}
		c.Put(q)
	}
	p.Unlock()
	c.Put(p)
	if c.Evictions() != 1 {
		t.Fatalf("Evictions = %d, want 1", c.Evictions())
	}
	// Page 10 is now clean and unpinned but not Uptodate: evictable.
	// With nothing else evictable and no Ops, a Grab fails.
	q, err := c.Grab(11)
	if err != nil {
		t.Fatalf("Grab: %v", err)
	}
	q.Unlock()
	c.Put(q)
	if c.Lookup(10) != nil {
		t.Fatal("page 10 not evicted")
	}
	c.Put(pinned)
	// Page 2 unpinned now: evictable; 11 was just used (Referenced) so
	// the CLOCK passes it once and takes 2.
	r, err := c.Grab(12)
	if err != nil {
		t.Fatal(err)
	}
	r.Unlock()
	c.Put(r)
	if q := c.Lookup(11); q == nil {
		t.Fatal("the recently used page 11 was evicted before page 2")
	} else {
		c.Put(q)
	}
	if q := c.Lookup(2); q != nil {
		t.Fatal("page 2 not evicted")
	}
}

// TestEvictReclaim: with every page dirty, Grab asks the Ops to write
// back for reclaim and then evicts.
func TestEvictReclaim(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 4)
	ops := &fakeOps{}
	ops.reclaim = func() { // "write back" everything: clean and retire
		for _, p := range detachDirty(c, nil) {
			p.Lock()
			p.ClearDirtyForIO()
			p.Unlock()
			c.Put(p)
		}
	}
	c.SetOps(ops)
	full := bytes.Repeat([]byte{1}, ps)
	for i := int64(0); i < 4; i++ {
		c.WriteAt(full, i*ps)
	}
	if _, err := c.WriteAt(full, 4*ps); err != nil {
		t.Fatalf("WriteAt into a full, all-dirty cache: %v", err)
	}
	if ops.reclaims.Load() != 1 || c.Evictions() != 1 {
		t.Fatalf("reclaims %d evictions %d, want 1 and 1", ops.reclaims.Load(), c.Evictions())
	}
	// Everything pinned: reclaim frees nothing, Grab gives up.
	var held []*Page
	for i := uint64(0); i < 4; i++ {
		p, err := c.Grab(100 + i)
		if err != nil {
			t.Fatal(err)
		}
		p.Unlock()
		held = append(held, p)
	}
	if _, err := c.Grab(200); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("Grab with every page pinned = %v, want ErrCacheFull", err)
	}
	for _, p := range held {
		c.Put(p)
	}
}

// TestEvictConcurrent: goroutines grab pages of a working set far
// larger than the cache at once, so slots are evicted and reused under
// each other's feet; a page found cached always holds its own contents.
func TestEvictConcurrent(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 32)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for i := 0; i < 5000; i++ {
				idx := r.Uint64N(1000)
				p, err := c.Grab(idx)
				if err != nil {
					t.Error(err)
					return
				}
				d := p.Data()
				if p.Flags().IsUptodate() {
					if got := binary.LittleEndian.Uint64(d); got != idx {
						t.Errorf("page %d holds page %d's contents", idx, got)
					}
				} else {
					binary.LittleEndian.PutUint64(d, idx)
					p.SetUptodate()
				}
				p.Unlock()
				c.Put(p)
			}
		}(w)
	}
	wg.Wait()
	if c.Evictions() == 0 {
		t.Fatal("no evictions")
	}
	if n := c.NrCached(); n > 32 {
		t.Fatalf("%d pages cached in a cache of 32", n)
	}
}
