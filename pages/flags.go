package pages

import "strings"

// Flags is a page's state word. All of a page's state bits live in one
// uint32 changed only by atomic operations (load, compare-and-swap, and,
// or), so a transition such as clean→dirty is one CAS that exactly one
// goroutine wins.
//
// Bit layout:
//
//	 31          9   8   7   6   5   4   3   2   1   0
//	+-------------+---+---+---+---+---+---+---+---+---+
//	|  reserved   |Hof|Ref|Drp|Wtr|Err|Upt|Wb |Dty|Lck|
//	+-------------+---+---+---+---+---+---+---+---+---+
//
//	Lck PageLocked      Upt PageUptodate   Drp PageDropped
//	Dty PageDirty       Err PageError      Ref PageReferenced
//	Wb  PageWriteback   Wtr PageWaiters    Hof PageHandoff
//
// Who may change which bit:
//
//   - Locked: Lock/TryLock set it, Unlock clears it. Whoever holds it
//     owns the right to change Dirty→clean, Writeback, Uptodate and
//     Dropped.
//   - Dirty: set by SetDirty (any goroutine holding a pin, lock-free: the
//     clean→dirty CAS), cleared only by ClearDirtyForIO or CancelDirty
//     under the page lock, by the one goroutine that runs writeback passes.
//   - Writeback: set by TestSetWriteback under the page lock right after
//     ClearDirtyForIO, or by TryStartWriteback in one CAS that takes,
//     clears Dirty and releases the lock with nothing visible between;
//     or, on a clean page, by TryStartWritebackClean in one CAS from
//     clean, up to date and unlocked (gap filling: the engine rewrites a
//     clean page between two dirty runs in the same write). Cleared by
//     EndWritebackPages (no lock needed) exactly once per submission.
//   - Error: set and cleared by the writeback engine (SetError,
//     ClearError); a page held in error after repeated write failures.
//   - Waiters: set by a goroutine about to sleep on the page (under its
//     wait bucket's mutex), cleared by the goroutine that wakes it.
//   - Dropped: set when the page leaves the index (Remove) while pinned;
//     its slot is reused when the last pin goes.
//   - Referenced: set on lookup, cleared by the eviction clock.
//   - Handoff: set by the one sleeper in Lock that has waited longest
//     (it lost the race for the lock twice); while it is set, only that
//     sleeper may take the lock, and it clears the bit as it does.
type Flags uint32

const (
	PageLocked     Flags = 1 << iota // page lock held
	PageDirty                        // contents newer than the device
	PageWriteback                    // a write of the page is queued or in flight
	PageUptodate                     // contents valid (read in, or wholly written)
	PageError                        // held in error: repeated write failures
	PageWaiters                      // a goroutine sleeps on this page's wait bucket
	PageDropped                      // removed from the cache while pinned
	PageReferenced                   // used since the eviction clock last passed
	PageHandoff                      // a sleeper claimed the next turn of the page lock
)

// IsLocked reports whether the page lock is held.
func (f Flags) IsLocked() bool { return f&PageLocked != 0 }

// IsDirty reports whether the page is dirty.
func (f Flags) IsDirty() bool { return f&PageDirty != 0 }

// IsWriteback reports whether a write of the page is queued or in flight.
func (f Flags) IsWriteback() bool { return f&PageWriteback != 0 }

// IsUptodate reports whether the page's contents are valid.
func (f Flags) IsUptodate() bool { return f&PageUptodate != 0 }

// IsError reports whether the page is held in error.
func (f Flags) IsError() bool { return f&PageError != 0 }

// IsDropped reports whether the page has left the cache.
func (f Flags) IsDropped() bool { return f&PageDropped != 0 }

var flagNames = [...]string{"locked", "dirty", "writeback", "uptodate", "error", "waiters", "dropped", "referenced", "handoff"}

func (f Flags) String() string {
	if f == 0 {
		return "clean"
	}
	var b strings.Builder
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	if rest := f &^ (1<<len(flagNames) - 1); rest != 0 {
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		b.WriteString("?")
	}
	return b.String()
}
