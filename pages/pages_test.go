package pages

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/wbengine/wbengine/internal/invariants"
)

func newTestCache(t testing.TB, ps, capacity int) *Cache {
	t.Helper()
	c, err := New(Config{PageSize: ps, Capacity: capacity, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: did not panic", what)
		}
	}()
	fn()
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"4k", Config{PageSize: 4096, Capacity: 8}, true},
		{"512", Config{PageSize: 512, Capacity: 1}, true},
		{"1MiB", Config{PageSize: 1 << 20, Capacity: 2}, true},
		{"too-small", Config{PageSize: 256, Capacity: 8}, false},
		{"too-big", Config{PageSize: 2 << 20, Capacity: 8}, false},
		{"not-pow2", Config{PageSize: 3000, Capacity: 8}, false},
		{"zero-page", Config{PageSize: 0, Capacity: 8}, false},
		{"zero-cap", Config{PageSize: 4096, Capacity: 0}, false},
		{"neg-cap", Config{PageSize: 4096, Capacity: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if tc.ok {
				if err != nil {
					t.Fatalf("New(%+v) = %v", tc.cfg, err)
				}
				if got := len(c.pages[0].Data()); got != tc.cfg.PageSize {
					t.Errorf("len(Data) = %d, want %d", got, tc.cfg.PageSize)
				}
				if err := c.Close(); err != nil {
					t.Error(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New(%+v) = %v, want ErrConfig", tc.cfg, err)
			}
		})
	}
}

func TestArenaAligned(t *testing.T) {
	for _, heap := range []bool{false, true} {
		c, err := New(Config{PageSize: 512, Capacity: 64, HeapArena: heap})
		if err != nil {
			t.Fatal(err)
		}
		for i := range c.pages {
			d := c.pages[i].Data()
			if a := uintptr(unsafe.Pointer(&d[0])) % 512; a != 0 {
				t.Fatalf("heap=%v: page slot %d at misaligned address (mod 512 = %d)", heap, i, a)
			}
			if i > 0 {
				prev := c.pages[i-1].Data()
				if uintptr(unsafe.Pointer(&prev[0]))+512 != uintptr(unsafe.Pointer(&d[0])) {
					t.Fatalf("heap=%v: slots %d and %d not adjacent", heap, i-1, i)
				}
			}
		}
		c.Close()
	}
}

func TestPageSizeStruct(t *testing.T) {
	// The doc comment on Page promises 64 bytes of metadata per page.
	if got := unsafe.Sizeof(Page{}); got != 64 {
		t.Errorf("sizeof(Page) = %d, the doc says 64", got)
	}
}

func TestLockTransitions(t *testing.T) {
	c := newTestCache(t, 4096, 4)
	p, err := c.Grab(7)
	if err != nil {
		t.Fatal(err)
	}
	if f := p.Flags(); !f.IsLocked() || f.IsDirty() || f.IsUptodate() {
		t.Fatalf("new page flags %v, want locked, not dirty, not uptodate", f)
	}
	if p.TryLock() {
		t.Fatal("TryLock on a locked page succeeded")
	}
	p.Unlock()
	mustPanic(t, "Unlock of unlocked page", p.Unlock)
	if !p.TryLock() {
		t.Fatal("TryLock on an unlocked page failed")
	}

	// Writeback is set under the lock after ClearDirtyForIO.
	if !c.SetDirty(p) {
		t.Fatal("SetDirty on a clean page returned false")
	}
	if c.SetDirty(p) {
		t.Fatal("SetDirty on a dirty page returned true")
	}
	if !p.ClearDirtyForIO() {
		t.Fatal("ClearDirtyForIO of a dirty page returned false")
	}
	if p.ClearDirtyForIO() {
		t.Fatal("ClearDirtyForIO of a clean page returned true")
	}
	if p.TestSetWriteback() {
		t.Fatal("TestSetWriteback reported writeback already set")
	}
	if invariants.Enabled {
		mustPanic(t, "writeback set twice", func() { p.TestSetWriteback() })
	}
	p.Unlock()
	if invariants.Enabled {
		mustPanic(t, "writeback set on unlocked page", func() {
			q, _ := c.Grab(8)
			q.Unlock()
			q.TestSetWriteback()
		})
	}
	p.EndWriteback()
	mustPanic(t, "EndWriteback twice", p.EndWriteback)
	if f := p.Flags(); f.IsWriteback() || f.IsLocked() {
		t.Fatalf("flags after EndWriteback = %v", f)
	}
	if got := Flags(PageLocked | PageDirty | PageWriteback).String(); got != "locked|dirty|writeback" {
		t.Errorf("Flags.String = %q", got)
	}
}

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

func TestDirtyPin(t *testing.T) {
	c := newTestCache(t, 4096, 2)
	p, _ := c.Grab(5)
	c.SetDirty(p)
	p.Unlock()
	c.Put(p)
	if got := p.Pins(); got != 1 {
		t.Fatalf("dirty page holds %d pins after the caller's Put, want 1 (the dirty pin)", got)
	}
	got := c.DetachDirty(nil)
	if len(got) != 1 || got[0] != p {
		t.Fatalf("DetachDirty = %v, want [page 5]", got)
	}
	if got := c.DetachDirty(nil); len(got) != 0 {
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
			buf = c.DetachDirty(buf[:0])
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

func TestWriteAtAcrossPages(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 16)
	// Whole pages first, so later partial writes find them Uptodate.
	base := bytes.Repeat([]byte{0xAA}, 4*ps)
	if n, err := c.WriteAt(base, 0); n != len(base) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	msg := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes over pages 0–2
	if n, err := c.WriteAt(msg, 300); n != len(msg) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	want := append([]byte(nil), base...)
	copy(want[300:], msg)
	got := make([]byte, len(want))
	if n, err := c.ReadAt(got, 0); n != len(got) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("ReadAt after WriteAt across pages differs")
	}
	if got := len(c.DetachDirty(nil)); got != 4 {
		t.Fatalf("dirty pages detached = %d, want 4", got)
	}
	// A partial write into an absent page needs a read-in, and there are
	// no Ops.
	n, err := c.WriteAt([]byte("x"), 10*ps+1)
	if n != 0 || !errors.Is(err, ErrNotUptodate) {
		t.Fatalf("partial write into an absent page without Ops = %d, %v; want ErrNotUptodate", n, err)
	}
	if _, err := c.WriteAt([]byte("x"), -1); !errors.Is(err, ErrOffset) {
		t.Fatalf("negative offset: %v", err)
	}
}

// fakeOps fills pages with a byte and counts calls.
type fakeOps struct {
	fill              byte
	reads, balance    atomic.Int64
	readPages         atomic.Int64
	dirtied           atomic.Int64
	reclaims          atomic.Int64
	reclaim           func()
	readErr, balanceE error
}

func (o *fakeOps) ReadPages(ctx context.Context, ps []*Page) error {
	o.reads.Add(1)
	o.readPages.Add(int64(len(ps)))
	if o.readErr != nil {
		return o.readErr
	}
	for _, p := range ps {
		if !p.Flags().IsLocked() {
			panic("ReadPages of an unlocked page")
		}
		for i := range p.Data() {
			p.Data()[i] = o.fill
		}
		p.SetUptodate()
	}
	return nil
}
func (o *fakeOps) WritebackForReclaim(ctx context.Context) error {
	o.reclaims.Add(1)
	if o.reclaim != nil {
		o.reclaim()
	}
	return nil
}
func (o *fakeOps) BalanceDirty(ctx context.Context, n int) error {
	o.balance.Add(1)
	o.dirtied.Add(int64(n))
	return o.balanceE
}

func TestWriteAtReadsIn(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 4)
	ops := &fakeOps{fill: 'z'}
	c.SetOps(ops)
	if _, err := c.WriteAt([]byte("abc"), ps+10); err != nil {
		t.Fatal(err)
	}
	if ops.reads.Load() != 1 || ops.balance.Load() != 1 {
		t.Fatalf("reads %d balance %d, want 1 and 1", ops.reads.Load(), ops.balance.Load())
	}
	got := make([]byte, ps)
	c.ReadAt(got, ps)
	want := bytes.Repeat([]byte{'z'}, ps)
	copy(want[10:], "abc")
	if !bytes.Equal(got, want) {
		t.Fatalf("page after partial write over read-in data differs")
	}
	// A whole-page write needs no read.
	c.WriteAt(make([]byte, ps), 2*ps)
	if ops.reads.Load() != 1 {
		t.Fatalf("whole-page write read the page in")
	}
	ops.readErr = errors.New("device on fire")
	if _, err := c.WriteAt([]byte("q"), 3*ps+1); err == nil || !errors.Is(err, ops.readErr) {
		t.Fatalf("read-in error not returned: %v", err)
	}
}

// TestStablePages: WriteAt waits for a page's writeback to end before
// changing it.
func TestStablePages(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 4)
	c.WriteAt(bytes.Repeat([]byte{1}, ps), 0)
	p := c.Lookup(0)
	p.Lock()
	p.ClearDirtyForIO()
	p.TestSetWriteback()
	p.Unlock()
	for _, q := range c.DetachDirty(nil) {
		c.Put(q) // retire: the write holds p's pin from here on
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.WriteAt(bytes.Repeat([]byte{2}, ps), 0)
		done <- err
	}()
	// Wait until the writer sleeps on the page (it sets Waiters), not
	// for a time.
	for p.Flags()&PageWaiters == 0 {
		select {
		case err := <-done:
			t.Fatalf("WriteAt returned (%v) while the page was under writeback", err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	if p.Data()[0] != 1 {
		t.Fatal("page changed while under writeback")
	}
	p.EndWriteback()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.Data()[0] != 2 {
		t.Fatal("write after writeback ended did not land")
	}
	c.Put(p)
}

func TestLockWaiters(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(0)
	var mu sync.Mutex
	order := []int{}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p.Lock()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			p.Unlock()
		}(i)
	}
	for p.Flags()&PageWaiters == 0 {
		time.Sleep(time.Millisecond)
	}
	p.Unlock()
	wg.Wait()
	if len(order) != 8 {
		t.Fatalf("%d lockers got the lock, want 8", len(order))
	}
	c.Put(p)
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
	for _, p := range c.DetachDirty(nil) {
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
		for _, p := range c.DetachDirty(nil) {
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

// TestReadAtBatches: consecutive pages that are not cached are read in
// with one ReadPages call.
func TestReadAtBatches(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 64)
	ops := &fakeOps{fill: 'r'}
	c.SetOps(ops)
	c.WriteAt(bytes.Repeat([]byte{'w'}, ps), 5*ps) // page 5 cached
	buf := make([]byte, 10*ps)
	if n, err := c.ReadAt(buf, 0); n != len(buf) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if ops.reads.Load() != 1 || ops.readPages.Load() != 9 {
		t.Fatalf("ReadPages calls %d pages %d, want 1 call for 9 pages", ops.reads.Load(), ops.readPages.Load())
	}
	want := bytes.Repeat([]byte{'r'}, 10*ps)
	copy(want[5*ps:], bytes.Repeat([]byte{'w'}, ps))
	if !bytes.Equal(buf, want) {
		t.Fatal("ReadAt content differs")
	}
	if got := ops.dirtied.Load(); got != 1 {
		t.Fatalf("BalanceDirty told of %d dirtied pages, want 1", got)
	}
}

// TestLockHandoff: a goroutine that keeps taking and releasing a page
// lock cannot starve another that waits for it: the waiter claims the
// next turn. (Without the handoff the waiter would only get the lock
// once the other goroutine stopped after its last round.)
func TestLockHandoff(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(0)
	p.Unlock()
	// The other goroutine holds the lock for a while each round and
	// takes it again the moment it lets go, faster than a woken waiter
	// can run: without the handoff it wins every race.
	const rounds = 2000
	var hog atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < rounds && !stop.Load(); i++ {
			p.Lock()
			hog.Add(1)
			for t0 := time.Now(); time.Since(t0) < 50*time.Microsecond; {
			}
			p.Unlock()
		}
	}()
	for hog.Load() < 10 {
		runtime.Gosched()
	}
	p.Lock()
	at := hog.Load()
	p.Unlock()
	stop.Store(true)
	<-done
	if at >= rounds {
		t.Fatalf("the waiter got the lock only after the other goroutine's %d rounds ended", rounds)
	}
	t.Logf("waiter got the lock after %d rounds of the other goroutine", at)
	c.Put(p)
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
