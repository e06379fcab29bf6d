package pages

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func TestDirtyPin(t *testing.T) {
	c := newTestCache(t, 4096, 2)
	p, _ := c.Grab(5)
	c.SetDirty(p)
	p.Unlock()
	c.Put(p)
	if got := p.Pins(); got != 1 {
		t.Fatalf("dirty page holds %d pins after the caller's Put, want 1 (the dirty pin)", got)
	}
	got := detachDirty(c, nil)
	if len(got) != 1 || got[0] != p {
		t.Fatalf("DetachDirty = %v, want [page 5]", got)
	}
	if got := detachDirty(c, nil); len(got) != 0 {
		t.Fatalf("second DetachDirty = %d pages, want 0", len(got))
	}
	if c.NrDirty() != 1 {
		t.Fatalf("NrDirty = %d, want 1", c.NrDirty())
	}
	p.Lock()
	p.ClearDirtyForIO()
	p.Unlock()
	c.Put(p) // the engine retires it
	if p.Pins() != 0 || c.NrDirty() != 0 {
		t.Fatalf("after retiring: pins %d, NrDirty %d", p.Pins(), c.NrDirty())
	}
}

// TestIntakeConcurrent: many goroutines dirty pages (including pages the
// detacher has just cleaned) while one goroutine detaches and cleans.
// Every successful clean→dirty transition must be detached exactly once.
func TestIntakeConcurrent(t *testing.T) {
	const (
		npages  = 256
		writers = 8
		rounds  = 20000
	)
	c := newTestCache(t, 512, npages)
	ps := make([]*Page, npages)
	for i := range ps {
		p, err := c.Grab(uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		p.Unlock()
		ps[i] = p // keep the Grab pin for the whole test
	}
	var transitions [npages]atomic.Int64
	detached := make([]int64, npages)
	var wg sync.WaitGroup
	var stop atomic.Bool
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < rounds; i++ {
				k := r.IntN(npages)
				if c.SetDirty(ps[k]) {
					transitions[k].Add(1)
				}
			}
		}(uint64(w))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf []*Page
		inList := make([]bool, npages)
		for {
			last := stop.Load()
			buf = detachDirty(c, buf[:0])
			for _, p := range buf {
				k := p.Index()
				if inList[k] {
					t.Errorf("page %d detached twice in one batch", k)
				}
				inList[k] = true
			}
			for _, p := range buf {
				k := p.Index()
				inList[k] = false
				p.Lock()
				if !p.ClearDirtyForIO() {
					t.Errorf("detached page %d was not dirty", k)
				}
				p.Unlock()
				detached[k]++
				c.Put(p)
			}
			if last && len(buf) == 0 {
				return
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	<-done
	for k := range ps {
		if got, want := detached[k], transitions[k].Load(); got != want {
			t.Errorf("page %d: detached %d times, dirtied clean→dirty %d times", k, got, want)
		}
		if got := ps[k].Pins(); got != 1 {
			t.Errorf("page %d: %d pins left, want 1 (the test's)", k, got)
		}
	}
	if c.NrDirty() != 0 {
		t.Errorf("NrDirty = %d at the end, want 0", c.NrDirty())
	}
}

// TestSetDirtyRefusesDropped: a pin holder cannot dirty a page that has
// left the cache.
func TestSetDirtyRefusesDropped(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(3)
	c.Remove(p)
	if c.SetDirty(p) || p.Flags().IsDirty() {
		t.Fatal("SetDirty dirtied a removed page")
	}
	p.Unlock()
	c.Put(p)
}
