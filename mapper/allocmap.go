package mapper

import (
	"fmt"
	"math"
	"sort"
	"sync"
)

// AllocMap is a small allocating mapper for tests and examples: every
// page starts as a hole, and Allocate hands out blocks from
// [firstBlock, firstBlock+nblocks) in order, on first write. Runs
// allocated back to back (index and block both continuing the previous
// extent) grow that extent, so sequential writes map to one extent. No
// extent carries a boundary. It is safe for concurrent use.
type AllocMap struct {
	first, n uint64

	// mu protects ext and used.
	mu   sync.RWMutex
	ext  []Extent // sorted by Index, disjoint in both spaces
	used uint64   // blocks handed out: the next one is first+used
}

var (
	_ Mapper    = (*AllocMap)(nil)
	_ Allocator = (*AllocMap)(nil)
	_ Bounded   = (*AllocMap)(nil)
)

// NewAllocMap returns an AllocMap that allocates blocks
// [firstBlock, firstBlock+nblocks). It panics if firstBlock+nblocks
// overflows uint64.
func NewAllocMap(firstBlock, nblocks uint64) *AllocMap {
	if !addOK(firstBlock, nblocks) {
		panic(fmt.Sprintf("mapper: NewAllocMap(%d, %d): firstBlock+nblocks overflows uint64", firstBlock, nblocks))
	}
	return &AllocMap{first: firstBlock, n: nblocks}
}

// Map returns the extent containing index, or ErrHole and the hole around
// it.
func (m *AllocMap) Map(index uint64) (Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, _, err := m.lookup(index)
	return e, err
}

// lookup is Map under m.mu; i is the position of the first extent that
// starts after index (where a new extent at index goes).
func (m *AllocMap) lookup(index uint64) (Extent, int, error) {
	i := sort.Search(len(m.ext), func(k int) bool { return m.ext[k].Index > index })
	start := uint64(0)
	if i > 0 {
		e := m.ext[i-1]
		if index-e.Index < e.Len {
			return e, i, nil
		}
		start = e.End()
	}
	if i == len(m.ext) {
		return hole(start, 0, true), i, ErrHole
	}
	return hole(start, m.ext[i].Index, false), i, ErrHole
}

// Allocate maps up to n pages starting at index (n 0 is taken as 1) to
// the next free blocks and returns the new extent: Index == index, and Len
// is n or less where the hole at index or the free space ends first. If
// index is already mapped (another goroutine won the race), it returns
// the part of the existing extent from index on (at most n pages),
// allocating nothing. It
// returns ErrNoSpace when every block is in use.
func (m *AllocMap) Allocate(index uint64, n uint64) (Extent, error) {
	n = max(n, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	h, i, err := m.lookup(index)
	if err == nil {
		off := index - h.Index
		return Extent{Index: index, Block: h.Block + off, Len: min(h.Len-off, n)}, nil
	}
	room := h.Index + h.Len - index // to the next extent
	if h.Len == 0 {
		room = math.MaxUint64 - index // Index+Len must not overflow
	}
	free := m.n - m.used
	if free == 0 {
		return Extent{}, fmt.Errorf("%w: all %d blocks from %d are allocated", ErrNoSpace, m.n, m.first)
	}
	if room == 0 {
		return Extent{}, fmt.Errorf("%w: index %d cannot be mapped (Index+Len would overflow)", ErrNoSpace, index)
	}
	k := min(n, room, free)
	e := Extent{Index: index, Block: m.first + m.used, Len: k}
	m.used += k
	if i > 0 {
		if p := &m.ext[i-1]; p.End() == index && p.Block+p.Len == e.Block {
			p.Len += k
			return e, nil
		}
	}
	m.ext = append(m.ext, Extent{})
	copy(m.ext[i+1:], m.ext[i:])
	m.ext[i] = e
	return e, nil
}

// MaxBlock is firstBlock+nblocks.
func (m *AllocMap) MaxBlock() uint64 { return m.first + m.n }

// Allocated is the number of blocks handed out so far.
func (m *AllocMap) Allocated() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.used
}
