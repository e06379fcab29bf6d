package pages

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"

	"github.com/wbengine/wbengine/internal/invariants"
)

// Page is one cached page. Its memory (Data) lives in the cache's arena,
// off the Go heap; a *Page is valid only while the caller holds a pin
// (from Grab or Lookup, given back with Put).
//
// Metadata cost: the Page struct is 64 bytes (flags 4, pins 4, slot 4,
// padding 4, index 8, intake link 8, data slice header 24, cache pointer
// 8), plus its entry in the index map (about 40 bytes with the map's own
// overhead at typical load): about 100 bytes per page, 2.5% of a 4 KiB
// page.
type Page struct {
	flags atomic.Uint32 // Flags; see the bit layout on Flags
	pins  atomic.Int32  // the index's reference while cached, plus pins: callers of Grab/Lookup, the dirty pin, in-flight I/O
	slot  uint32        // position in the cache's page table and arena; fixed
	_     uint32
	// index is the page index in the cache's address space. It is set
	// when the slot is given a page, before the page is published in the
	// index map, and changes only when the slot is reused (never while
	// anyone holds a pin).
	index uint64
	// next links the page into the intake list. See intake.go for who
	// owns it when.
	next  *Page
	data  []byte
	cache *Cache
}

// Index is the page's index in the cache's address space.
func (p *Page) Index() uint64 { return p.index }

// Data is the page's memory, PageSize bytes, aligned for O_DIRECT. It is
// valid only while the caller holds a pin.
func (p *Page) Data() []byte { return p.data }

// Flags loads the page's flags word.
func (p *Page) Flags() Flags { return Flags(p.flags.Load()) }

// Pins is the number of pins held (for tests and invariant checks),
// not counting the index's own reference on a cached page.
func (p *Page) Pins() int {
	n := int(p.pins.Load())
	if p.flags.Load()&uint32(PageDropped) == 0 && n > 0 {
		n--
	}
	return n
}

// TryLock takes the page lock if it is free and reports whether it did.
// It fails while a sleeper waits for the lock to be handed to it.
func (p *Page) TryLock() bool {
	for {
		old := p.flags.Load()
		if old&uint32(PageLocked|PageHandoff) != 0 {
			return false
		}
		if p.flags.CompareAndSwap(old, old|uint32(PageLocked)) {
			return true
		}
	}
}

// Lock takes the page lock, sleeping until it is free. Nobody may hold
// a page lock while waiting for something that needs it: the writeback
// pass submits what it has queued before it sleeps here.
//
// The lock is fair enough that nobody starves: a sleeper that has lost
// the race for the freed lock twice claims the next turn by setting
// Handoff (one sleeper at a time can); from then on TryLock and other
// sleepers leave the lock to it (as sync.Mutex does in starvation mode,
// and the kernel's folio lock with its handoff).
func (p *Page) Lock() {
	if p.TryLock() {
		return
	}
	heir := false
	for lost := 0; ; {
		old := p.flags.Load()
		if old&uint32(PageLocked) == 0 && (heir || old&uint32(PageHandoff) == 0) {
			if p.flags.CompareAndSwap(old, (old|uint32(PageLocked))&^uint32(b2u(heir)*PageHandoff)) {
				return
			}
			continue
		}
		if !heir && lost >= 2 && old&uint32(PageHandoff) == 0 {
			if p.flags.CompareAndSwap(old, old|uint32(PageHandoff)) {
				heir = true
			}
			continue
		}
		if heir {
			p.waitOnce(PageLocked)
		} else {
			p.waitOnce(PageLocked | PageHandoff)
		}
		lost++
	}
}

func b2u(b bool) Flags {
	if b {
		return 1
	}
	return 0
}

// Unlock releases the page lock and wakes its waiters. Unlocking a page
// that is not locked panics.
func (p *Page) Unlock() {
	old := Flags(p.flags.And(^uint32(PageLocked | PageWaiters)))
	if old&PageLocked == 0 {
		invariants.Failf("pages: unlock of unlocked page %d", p.index)
	}
	if old&PageWaiters != 0 {
		p.wake()
	}
}

// WaitWriteback sleeps until the page is not under writeback. The
// caller holds a pin; it may hold the page lock (completions do not need
// it), as WriteAt does to keep pages stable.
func (p *Page) WaitWriteback() {
	p.waitClear(PageWriteback)
}

// SetUptodate marks the page's contents valid. The caller holds the
// page lock.
func (p *Page) SetUptodate() { p.flags.Or(uint32(PageUptodate)) }

// waitClear sleeps until every bit of mask is clear.
//
// Waiting uses a small table of wait buckets per cache (a mutex and a
// condition variable each, chosen by slot) and the page's Waiters bit,
// as the kernel hashes folios onto wait queues: no page carries a lock or
// channel of its own, and a waker touches a bucket only when the Waiters
// bit says someone sleeps. A sleeper sets Waiters while it holds the
// bucket's mutex and rechecks the condition before it waits; a waker
// clears the bits and Waiters in one atomic step and then broadcasts
// under the same mutex, so a wake-up cannot fall between the check and
// the wait. Sleepers on other pages of the same bucket wake spuriously,
// find their page unchanged and set Waiters again.
func (p *Page) waitClear(mask Flags) {
	for p.flags.Load()&uint32(mask) != 0 {
		p.waitOnce(mask)
	}
}

// waitOnce sleeps until the next wake-up of the page's waiters, unless
// every bit of mask is already clear. Lock counts its wake-ups with it:
// each one is a race for the lock it may have lost.
func (p *Page) waitOnce(mask Flags) {
	if p.flags.Load()&uint32(mask) == 0 {
		return
	}
	b := p.cache.bucket(p.slot)
	b.mu.Lock()
	for {
		old := p.flags.Load()
		if old&uint32(mask) == 0 {
			break
		}
		if old&uint32(PageWaiters) == 0 && !p.flags.CompareAndSwap(old, old|uint32(PageWaiters)) {
			continue
		}
		b.cond.Wait()
		break
	}
	b.mu.Unlock()
}

func (p *Page) wake() {
	b := p.cache.bucket(p.slot)
	b.mu.Lock()
	b.cond.Broadcast()
	b.mu.Unlock()
}

// waitBucket is one of the cache's hashed wait queues.
type waitBucket struct {
	mu   sync.Mutex
	cond sync.Cond
	_    cpu.CacheLinePad // keep buckets apart
}

const nWaitBuckets = 256

func (c *Cache) bucket(slot uint32) *waitBucket {
	return &c.waits[slot%nWaitBuckets]
}
