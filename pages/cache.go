package pages

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"

	"github.com/wbengine/wbengine/internal/invariants"
)

// Errors returned by the cache; test with errors.Is.
var (
	// ErrConfig: a Config value is out of range.
	ErrConfig = errors.New("pages: bad config")
	// ErrCacheFull: every slot holds a page that cannot be evicted.
	ErrCacheFull = errors.New("pages: cache full")
	// ErrNotUptodate: a partial write or a read needs the page read in
	// from the device, and no Ops are installed to do it.
	ErrNotUptodate = errors.New("pages: page not up to date")
	// ErrOffset: a negative or overflowing offset.
	ErrOffset = errors.New("pages: bad offset")
	// ErrClosed: the cache was closed.
	ErrClosed = errors.New("pages: cache closed")
	// ErrRange: a page index at or past the cache's limit (SetLimit):
	// the target has no block for it.
	ErrRange = errors.New("pages: page past the end")
	// ErrClaimed: another writeback engine holds the cache (Claim).
	ErrClaimed = errors.New("pages: cache claimed")
)

// Limits on Config.PageSize.
const (
	MinPageSize = 512
	MaxPageSize = 1 << 20
)

// MaxBufferSize is the largest registered buffer io_uring takes; Buffers
// splits the arena at multiples of it.
const MaxBufferSize = 1 << 30

// Config configures a Cache.
type Config struct {
	// PageSize in bytes: a power of two, MinPageSize..MaxPageSize.
	PageSize int
	// Capacity is the number of pages the cache holds (> 0).
	Capacity int
	// BufferSize is where Buffers cuts the arena for io_uring
	// registration (default and maximum MaxBufferSize; a multiple of
	// PageSize). Writes never cross a cut. Tests set it small.
	BufferSize int
	// HeapArena puts page memory on the Go heap instead of an mmap'd
	// arena. Only for tests under -race: the race detector does not see
	// mmap'd memory.
	HeapArena bool
}

// Cache is a page cache: pages indexed by page number, each with one
// atomic flags word, memory in an O_DIRECT-aligned arena, a lock-free
// intake list of newly dirtied pages, and hooks (Ops) the writeback
// engine installs. See the package documentation for the concurrency
// contract.
type Cache struct {
	pageSize  int
	pageShift uint
	capacity  int
	bufSize   int
	arena     *arena
	pages     []Page // one per slot; Page structs never move

	shards [nShards]shard

	freeMu sync.Mutex
	free   []uint32 // free slots, popped from the end; guarded by freeMu

	// intake is the head of the lock-free list of pages that went clean
	// → dirty since the last DetachDirtyEach. See intake.go.
	intake atomic.Pointer[Page]

	nrDirty     atomic.Int64  // pages with Dirty set
	nrWriteback atomic.Int64  // pages with Writeback set
	nrCached    atomic.Int64  // pages in the index
	evictions   atomic.Int64  // pages evicted to make room
	reclaims    atomic.Int64  // writeback-for-reclaim rounds Grab asked for
	clock       atomic.Uint64 // the CLOCK hand (a slot number, mod Capacity)

	ops atomic.Pointer[opsBox]

	// claim is who holds the cache (Claim), or nil.
	claim atomic.Pointer[claimBox]
	// limit is one past the highest page index Grab accepts (SetLimit);
	// 0: no limit. limitWhat says where it comes from, for errors.
	limit     atomic.Uint64
	limitWhat atomic.Pointer[string]

	waits [nWaitBuckets]waitBucket

	closed atomic.Bool
}

const (
	shardBits = 6
	nShards   = 1 << shardBits
)

// shard is one lock-protected part of the index → page map.
type shard struct {
	mu sync.RWMutex // protects m
	m  map[uint64]*Page
	_  cpu.CacheLinePad
}

// New makes a cache. Page memory is reserved up front (Capacity ×
// PageSize bytes of address space; the kernel backs it as pages are
// first touched).
func New(cfg Config) (*Cache, error) {
	ps := cfg.PageSize
	if ps < MinPageSize || ps > MaxPageSize || ps&(ps-1) != 0 {
		return nil, fmt.Errorf("%w: PageSize %d: must be a power of two from %d to %d", ErrConfig, ps, MinPageSize, MaxPageSize)
	}
	if cfg.Capacity <= 0 {
		return nil, fmt.Errorf("%w: Capacity %d: must be positive", ErrConfig, cfg.Capacity)
	}
	if cfg.Capacity > (1<<62)/ps || cfg.Capacity > 1<<32-1 {
		return nil, fmt.Errorf("%w: Capacity %d pages of %d bytes is too large", ErrConfig, cfg.Capacity, ps)
	}
	if cfg.BufferSize == 0 {
		cfg.BufferSize = MaxBufferSize
	}
	if cfg.BufferSize < ps || cfg.BufferSize > MaxBufferSize || cfg.BufferSize%ps != 0 {
		return nil, fmt.Errorf("%w: BufferSize %d: must be a multiple of PageSize %d, at most %d", ErrConfig, cfg.BufferSize, ps, MaxBufferSize)
	}
	a, err := newArena(cfg.Capacity*ps, cfg.HeapArena)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		pageSize:  ps,
		pageShift: uint(bits.TrailingZeros(uint(ps))),
		capacity:  cfg.Capacity,
		bufSize:   cfg.BufferSize,
		arena:     a,
		pages:     make([]Page, cfg.Capacity),
		free:      make([]uint32, cfg.Capacity),
	}
	for i := range c.pages {
		p := &c.pages[i]
		p.slot = uint32(i)
		p.cache = c
		p.flags.Store(uint32(PageDropped)) // free slots are marked Dropped
		p.data = a.mem[i*ps : (i+1)*ps : (i+1)*ps]
		// Pop from the end gives slot 0 first: pages grabbed in index
		// order sit next to each other in memory and share iovecs.
		c.free[cfg.Capacity-1-i] = uint32(i)
	}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]*Page)
	}
	for i := range c.waits {
		c.waits[i].cond.L = &c.waits[i].mu
	}
	return c, nil
}

// PageSize is the page size in bytes.
func (c *Cache) PageSize() int { return c.pageSize }

// Capacity is the number of pages the cache can hold.
func (c *Cache) Capacity() int { return c.capacity }

// NrDirty is the number of dirty pages.
func (c *Cache) NrDirty() int64 { return c.nrDirty.Load() }

// NrWriteback is the number of pages under writeback.
func (c *Cache) NrWriteback() int64 { return c.nrWriteback.Load() }

// NrCached is the number of pages in the cache.
func (c *Cache) NrCached() int64 { return c.nrCached.Load() }

// Evictions is the number of pages evicted to make room so far.
func (c *Cache) Evictions() int64 { return c.evictions.Load() }

// Reclaims is the number of times Grab asked the Ops to write back for
// reclaim.
func (c *Cache) Reclaims() int64 { return c.reclaims.Load() }

// Close releases the arena. Every page must be unpinned and clean; the
// engine closes its cache's users first. Using the cache after Close is
// a bug.
func (c *Cache) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	for i := range c.pages {
		if n := c.pages[i].Pins(); n != 0 {
			c.closed.Store(false)
			return fmt.Errorf("pages: close: page %d still has %d pins", c.pages[i].index, n)
		}
	}
	return c.arena.free()
}

func (c *Cache) shard(index uint64) *shard {
	return &c.shards[(index*0x9E3779B97F4A7C15)>>(64-shardBits)]
}

// Lookup returns the cached page at index, pinned, or nil when it is not
// cached. The caller gives the pin back with Put.
func (c *Cache) Lookup(index uint64) *Page {
	sh := c.shard(index)
	sh.mu.RLock()
	p := sh.m[index]
	if p != nil {
		p.pins.Add(1)
	}
	sh.mu.RUnlock()
	if p != nil && p.flags.Load()&uint32(PageReferenced) == 0 {
		p.flags.Or(uint32(PageReferenced))
	}
	return p
}

// Grab returns the page at index, creating it if it is not cached,
// pinned and locked (the kernel's grab_cache_page). A new page is not
// Uptodate: its memory holds whatever the slot held before. When the
// cache is full it evicts a clean page (see GrabContext).
func (c *Cache) Grab(index uint64) (*Page, error) {
	return c.GrabContext(context.Background(), index)
}

// GrabContext is Grab with a context for making room. When no slot is
// free, it evicts a clean, unpinned, unlocked page not under writeback,
// chosen by a CLOCK (second chance: a page looked up since the hand last
// passed is spared once). When there is none, it asks the installed Ops
// to write back for reclaim, holding no page lock, and tries again; it
// fails with ErrCacheFull when that frees nothing (every page pinned) or
// ctx ends. Callers must not hold a page lock while they grab a page
// that may need room: the writeback that makes room may need that lock.
func (c *Cache) GrabContext(ctx context.Context, index uint64) (*Page, error) {
	return c.grab(ctx, index, true)
}

func (c *Cache) grab(ctx context.Context, index uint64, reclaim bool) (*Page, error) {
	if err := c.checkLimit(index); err != nil {
		return nil, err
	}
	var reclaimErr error
	for attempt := 0; ; {
		if p := c.Lookup(index); p != nil {
			p.Lock()
			if p.flags.Load()&uint32(PageDropped) != 0 {
				// Removed while we waited for the lock: try again.
				p.Unlock()
				c.Put(p)
				continue
			}
			return p, nil
		}
		p, err := c.insert(index)
		if err == nil {
			if p != nil {
				return p, nil
			}
			continue // someone else inserted it first: look it up again
		}
		ops := c.Ops()
		if !reclaim || ops == nil || attempt >= maxReclaims {
			if reclaimErr != nil {
				err = fmt.Errorf("%w (writeback for reclaim: %w)", err, reclaimErr)
			}
			return nil, err
		}
		attempt++
		c.reclaims.Add(1)
		// Try again whatever the writeback returned: it may have made
		// room even if some pages failed (say, one held in error).
		if reclaimErr = ops.WritebackForReclaim(ctx); ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", err, ctx.Err())
		}
	}
}

// maxReclaims bounds the writeback rounds one Grab asks for before it
// gives up with ErrCacheFull: after that many, what blocks eviction is
// pins, not dirty data.
const maxReclaims = 4

// insert takes a free (or evicted) slot for index and publishes it,
// locked and pinned. It returns nil, nil when index appeared meanwhile.
func (c *Cache) insert(index uint64) (*Page, error) {
	slot, ok := c.allocSlot()
	if !ok {
		if slot, ok = c.evict(); !ok {
			return nil, fmt.Errorf("%w: page %d: none of the %d pages can be evicted (dirty, in flight, locked or pinned)", ErrCacheFull, index, c.capacity)
		}
	}
	p := &c.pages[slot]
	// The slot is ours: nobody holds a pin on a free slot.
	p.index = index
	p.next = nil
	p.pins.Store(2) // the index's reference and the caller's pin
	p.flags.Store(uint32(PageLocked | PageReferenced))
	sh := c.shard(index)
	sh.mu.Lock()
	if sh.m[index] != nil {
		sh.mu.Unlock()
		p.pins.Store(0)
		p.flags.Store(uint32(PageDropped)) // free: see evict
		c.freeSlot(slot)
		return nil, nil
	}
	sh.m[index] = p
	sh.mu.Unlock()
	c.nrCached.Add(1)
	return p, nil
}

// evict takes the slot of a clean, unpinned, unlocked page not under
// writeback, found by the CLOCK hand, out of the index. Pages with
// Referenced set lose it and are passed over once. Only pages with no
// pins but the index's own reference qualify: the writeback engine
// holds a pin on every dirty page, every page in flight and every page
// whose write no flush has covered yet, so none of those can go.
func (c *Cache) evict() (uint32, bool) {
	const busy = uint32(PageLocked | PageDirty | PageWriteback | PageDropped | PageHandoff)
	n := uint64(c.capacity)
	for scanned := uint64(0); scanned < 2*n+1; scanned++ {
		slot := uint32(c.clock.Add(1) % n)
		p := &c.pages[slot]
		f := p.flags.Load()
		if p.pins.Load() != 1 || f&busy != 0 {
			continue
		}
		if f&uint32(PageReferenced) != 0 {
			p.flags.And(^uint32(PageReferenced))
			continue
		}
		// Claim the page by taking its lock with a CAS from the state
		// just checked: from here its index is stable (written before the
		// lock was last released), and no other evictor can take it.
		// Free slots carry Dropped, so they are never claimed.
		if !p.flags.CompareAndSwap(f, f|uint32(PageLocked)) {
			continue
		}
		sh := c.shard(p.index)
		sh.mu.Lock()
		// Under the shard's write lock nobody can pin the page (Lookup
		// pins under the read lock): taking the index's reference with a
		// CAS 1 → 0 makes the slot ours, once.
		if sh.m[p.index] != p || p.flags.Load()&uint32(PageDirty|PageWriteback|PageDropped) != 0 || !p.pins.CompareAndSwap(1, 0) {
			sh.mu.Unlock()
			p.Unlock()
			continue
		}
		if invariants.Enabled && p.flags.Load()&uint32(PageError) != 0 {
			invariants.Failf("pages: evicting page %d held in error", p.index)
		}
		delete(sh.m, p.index)
		p.flags.Store(uint32(PageLocked)) // ours until insert republishes it
		sh.mu.Unlock()
		c.nrCached.Add(-1)
		c.evictions.Add(1)
		return slot, true
	}
	return 0, false
}

func (c *Cache) allocSlot() (uint32, bool) {
	c.freeMu.Lock()
	n := len(c.free)
	if n == 0 {
		c.freeMu.Unlock()
		return 0, false
	}
	s := c.free[n-1]
	c.free = c.free[:n-1]
	c.freeMu.Unlock()
	return s, true
}

func (c *Cache) freeSlot(s uint32) {
	c.freeMu.Lock()
	c.free = append(c.free, s)
	c.freeMu.Unlock()
}

// Put gives back a pin from Grab or Lookup (or the dirty pin, which the
// writeback engine gives back when it retires a page). Data must not be
// used after it.
//
// The index holds a reference of its own on every cached page, so the
// count reaches zero only once the page has left the index (Remove
// drops that reference): whoever takes it to zero frees the slot, and
// that happens exactly once.
func (c *Cache) Put(p *Page) {
	n := p.pins.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 || p.flags.Load()&uint32(PageDropped) == 0 {
		invariants.Failf("pages: Put of unpinned page %d (%v)", p.index, p.Flags())
	}
	// The slot goes back to the free list marked Dropped (Remove set
	// it), so the eviction clock passes over it.
	c.freeSlot(p.slot)
}

// SetDirty marks a pinned page dirty and reports whether this call made
// the clean → dirty transition. Only the winner of that transition takes
// the dirty pin (held until the writeback engine retires the page) and
// pushes the page onto the intake list, so a page is on the list at most
// once. Dirtying a dirty page is one atomic load. SetDirty never sleeps
// and takes no lock: any goroutine may call it, with or without the page
// lock. It also sets Uptodate: the caller says the memory now holds the
// page's contents. A page that has left the cache (Remove) is not made
// dirty: its data was discarded.
func (c *Cache) SetDirty(p *Page) bool {
	for {
		old := p.flags.Load()
		if old&uint32(PageDirty|PageDropped) != 0 {
			return false
		}
		if p.flags.CompareAndSwap(old, old|uint32(PageDirty|PageUptodate)) {
			break
		}
	}
	p.pins.Add(1)
	c.nrDirty.Add(1)
	c.pushIntake(p)
	return true
}

// Remove takes a locked page that is not under writeback out of the
// cache (the kernel's delete_from_page_cache): Grab and Lookup no longer
// find it, pin holders see PageDropped, and SetDirty refuses it. Its
// slot is freed when the last pin goes. A page dirtied by a SetDirty
// that won its race with Remove stays dirty and on the intake list; the
// writeback engine retires it there (ClearDirtyDropped).
func (c *Cache) Remove(p *Page) {
	f := p.Flags()
	if f&PageLocked == 0 || f&(PageWriteback|PageDropped) != 0 {
		invariants.Failf("pages: Remove of page %d in state %v", p.index, f)
	}
	sh := c.shard(p.index)
	sh.mu.Lock()
	if sh.m[p.index] == p {
		delete(sh.m, p.index)
		c.nrCached.Add(-1)
	}
	p.flags.Or(uint32(PageDropped))
	sh.mu.Unlock()
	p.pins.Add(-1) // the index's reference; the caller still holds a pin
}

// Range calls fn for every cached page with start ≤ index < end (end 0:
// no limit), pinned, in no particular order; fn must Put it. It stops
// when fn returns false. Pages added during the walk may be missed.
func (c *Cache) Range(start, end uint64, fn func(p *Page) bool) {
	var batch []*Page
	for i := range c.shards {
		sh := &c.shards[i]
		batch = batch[:0]
		sh.mu.RLock()
		for idx, p := range sh.m {
			if idx >= start && (end == 0 || idx < end) {
				p.pins.Add(1)
				batch = append(batch, p)
			}
		}
		sh.mu.RUnlock()
		for j, p := range batch {
			if !fn(p) {
				for _, q := range batch[j+1:] {
					c.Put(q)
				}
				return
			}
		}
	}
}

// SetLimit makes Grab (and so WriteAt and ReadAt) refuse page indexes
// at or past n with ErrRange, naming the page, n and what (where the
// limit comes from, e.g. "the mapper's range on /dev/sdb"): the
// writeback engine sets it at Open to the pages its target can hold, so
// a page that could never be written is refused when it is written, not
// at every Sync after. n 0 removes the limit. Pages already cached past
// it stay.
func (c *Cache) SetLimit(n uint64, what string) {
	c.limitWhat.Store(&what)
	c.limit.Store(n)
}

// Limit is the limit SetLimit set (0: none).
func (c *Cache) Limit() uint64 { return c.limit.Load() }

func (c *Cache) checkLimit(index uint64) error {
	n := c.limit.Load()
	if n == 0 || index < n {
		return nil
	}
	what := "the limit"
	if w := c.limitWhat.Load(); w != nil && *w != "" {
		what = *w
	}
	return fmt.Errorf("%w: page %d: %s holds pages 0 to %d (%d pages)", ErrRange, index, what, n-1, n)
}

// Claim marks the cache as held by one writeback engine, owner (whose
// String says who it is and, if it is closing, why it still holds the
// cache). It fails with ErrClaimed, naming the holder, when another
// holds it. One engine per cache: two engines would each take the
// other's dirty pages off the intake list.
func (c *Cache) Claim(owner fmt.Stringer) error {
	if c.claim.CompareAndSwap(nil, &claimBox{owner}) {
		return nil
	}
	if b := c.claim.Load(); b != nil {
		return fmt.Errorf("%w by %s", ErrClaimed, b.owner)
	}
	return c.Claim(owner) // released meanwhile
}

// Unclaim releases the cache if owner holds it.
func (c *Cache) Unclaim(owner fmt.Stringer) {
	if b := c.claim.Load(); b != nil && b.owner == owner {
		c.claim.CompareAndSwap(b, nil)
	}
}

type claimBox struct{ owner fmt.Stringer }

// Ops are the hooks the writeback engine installs in a cache (the
// kernel's address_space_operations), so the cache can reach the device
// without importing the engine.
type Ops interface {
	// ReadPages fills locked, pinned pages that are not Uptodate from the
	// device, in as few reads as it can (pages come in ascending index
	// order), and sets Uptodate on each page it filled. On error, pages
	// it did not fill stay not Uptodate.
	ReadPages(ctx context.Context, ps []*Page) error
	// WritebackForReclaim is called by Grab when no slot is free and no
	// page can be evicted: it writes back and flushes so that clean,
	// evictable pages appear, and returns when some may have or ctx
	// ends. The caller holds no page lock.
	WritebackForReclaim(ctx context.Context) error
	// BalanceDirty paces a writer that has just dirtied nrDirtied pages
	// (the kernel's balance_dirty_pages). It is called with no page lock
	// held and may sleep.
	BalanceDirty(ctx context.Context, nrDirtied int) error
}

type opsBox struct{ ops Ops }

// SetOps installs the engine's hooks; nil removes them. The engine does
// this in Open and undoes it in Close.
func (c *Cache) SetOps(ops Ops) {
	if ops == nil {
		c.ops.Store(nil)
		return
	}
	c.ops.Store(&opsBox{ops})
}

// BalanceDirty paces a writer that dirtied nrDirtied pages by writing
// Data directly (WriteAt does it for its own writes): with an engine
// installed and dirty limits configured, it may sleep until writeback
// catches up (the kernel's balance_dirty_pages); otherwise it returns at
// once. Call it holding no page lock.
func (c *Cache) BalanceDirty(ctx context.Context, nrDirtied int) error {
	if ops := c.Ops(); ops != nil && nrDirtied > 0 {
		return ops.BalanceDirty(ctx, nrDirtied)
	}
	return nil
}

// Ops returns the installed hooks, or nil.
func (c *Cache) Ops() Ops {
	if b := c.ops.Load(); b != nil {
		return b.ops
	}
	return nil
}
