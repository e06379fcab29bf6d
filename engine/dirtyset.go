package engine

import (
	"math/bits"
	"slices"

	"github.com/wbengine/wbengine/internal/invariants"
	"github.com/wbengine/wbengine/internal/mem"
	"github.com/wbengine/wbengine/pages"
)

// dirtySet is the engine's index-ordered set of dirty pages (the seed's
// io_pages): the pages drained from the cache's intake list and not yet
// taken for I/O. Only the holder of the pass lock touches it.
//
// It is a sparse two-level bitmap, like the kernel's xarray marks: the
// index space is cut into chunks of chunkPages pages; each chunk has a
// bitmap of which pages are in the set and their *Page. Insert and
// remove are O(1); finding the next page at or after an index skips 64
// absent pages per word and empty chunks per sorted-key step, so a
// ranged or budgeted pass costs what it takes, not the size of the set.
type dirtySet struct {
	chunks map[uint64]*dirtyChunk // by key (index >> chunkShift)
	keys   []uint64               // sorted keys of chunks with at least one page
	n      int                    // pages in the set
	spare  []*dirtyChunk          // empty chunks kept for reuse
	last   *dirtyChunk            // the chunk insert touched last
}

const (
	chunkShift = 12
	chunkPages = 1 << chunkShift
	chunkWords = chunkPages / 64
)

type dirtyChunk struct {
	key uint64
	n   int
	// minSince bounds from below the dirty stamps (slotState.dirtySince)
	// of the chunk's pages: the smallest stamp inserted since the chunk
	// was last empty. A Sync's check skips chunks whose bound is newer
	// than its own stamp (every page in them was dirtied after it began).
	minSince uint64
	bits     [chunkWords]uint64
	pages    [chunkPages]*pages.Page
}

// newDirtySet makes a set for a cache of capacity pages: the chunks a
// dense index range of that many pages needs are made now (a sparse one
// makes more as it goes), so a first pass does not pay for them.
func newDirtySet(capacity int) *dirtySet {
	n := (capacity+chunkPages-1)/chunkPages + 1
	s := &dirtySet{
		chunks: make(map[uint64]*dirtyChunk, n),
		keys:   make([]uint64, 0, n),
		spare:  make([]*dirtyChunk, n),
	}
	block := make([]dirtyChunk, n)
	for i := range s.spare {
		s.spare[i] = &block[i]
	}
	return s
}

// prefault touches the spare chunks' memory (see prefault).
func (s *dirtySet) prefault() {
	for _, c := range s.spare {
		mem.Prefault(c.pages[:])
		mem.Prefault(c.bits[:])
	}
}

// Len is the number of pages in the set.
func (s *dirtySet) Len() int { return s.n }

func (s *dirtySet) chunk(key uint64, create bool) *dirtyChunk {
	if s.last != nil && s.last.key == key {
		return s.last
	}
	c := s.chunks[key]
	if c == nil && create {
		if n := len(s.spare); n > 0 {
			c = s.spare[n-1]
			s.spare = s.spare[:n-1]
		} else {
			c = new(dirtyChunk)
		}
		c.key = key
		s.chunks[key] = c
		i, _ := slices.BinarySearch(s.keys, key)
		s.keys = slices.Insert(s.keys, i, key)
	}
	if c != nil {
		s.last = c
	}
	return c
}

// insert adds p, whose dirty stamp is since. A page is in the set at
// most once: it gets here only from the intake list, where it is at most
// once, and leaves before its Dirty bit can be cleared.
func (s *dirtySet) insert(p *pages.Page, since uint64) {
	idx := p.Index()
	c := s.chunk(idx>>chunkShift, true)
	if c.n == 0 || since < c.minSince {
		c.minSince = since
	}
	b := idx & (chunkPages - 1)
	w, m := b/64, uint64(1)<<(b%64)
	if c.bits[w]&m != 0 {
		invariants.Failf("engine: page %d is in the dirty set twice", idx)
	}
	c.bits[w] |= m
	c.pages[b] = p
	c.n++
	s.n++
}

// remove takes the page at idx out of the set; it must be there.
func (s *dirtySet) remove(idx uint64) {
	c := s.chunk(idx>>chunkShift, false)
	b := idx & (chunkPages - 1)
	w, m := b/64, uint64(1)<<(b%64)
	if c == nil || c.bits[w]&m == 0 {
		invariants.Failf("engine: page %d is not in the dirty set", idx)
		return
	}
	c.bits[w] &^= m
	c.pages[b] = nil
	c.n--
	s.n--
	if c.n == 0 {
		s.dropChunk(c)
	}
}

func (s *dirtySet) dropChunk(c *dirtyChunk) {
	delete(s.chunks, c.key)
	if i, ok := slices.BinarySearch(s.keys, c.key); ok {
		s.keys = slices.Delete(s.keys, i, i+1)
	}
	if s.last == c {
		s.last = nil
	}
	s.spare = append(s.spare, c)
}

// next returns the page with the smallest index ≥ from and < end (end
// 0: no limit), or nil.
func (s *dirtySet) next(from, end uint64) *pages.Page {
	if s.n == 0 {
		return nil
	}
	key := from >> chunkShift
	c := s.last
	if c == nil || c.key != key {
		c = s.chunks[key]
	}
	if c != nil {
		if p := c.nextIn(from & (chunkPages - 1)); p != nil {
			return limit(p, end)
		}
	}
	// Later chunks, in key order.
	i, found := slices.BinarySearch(s.keys, key)
	if found {
		i++
	}
	for ; i < len(s.keys); i++ {
		k := s.keys[i]
		if end != 0 && k<<chunkShift >= end {
			return nil
		}
		c := s.chunks[k]
		s.last = c
		if p := c.nextIn(0); p != nil {
			return limit(p, end)
		}
	}
	return nil
}

func limit(p *pages.Page, end uint64) *pages.Page {
	if end != 0 && p.Index() >= end {
		return nil
	}
	return p
}

// nextIn finds the first page at bit position ≥ b in the chunk.
func (c *dirtyChunk) nextIn(b uint64) *pages.Page {
	w := b / 64
	word := c.bits[w] &^ (1<<(b%64) - 1)
	for {
		if word != 0 {
			return c.pages[w*64+uint64(bits.TrailingZeros64(word))]
		}
		w++
		if w == chunkWords {
			return nil
		}
		word = c.bits[w]
	}
}

// lower lowers the stamp bound of p's chunk to since, if p is in the
// set (a page whose stamp an error put back).
func (s *dirtySet) lower(p *pages.Page, since uint64) {
	if !s.has(p) {
		return
	}
	if c := s.chunk(p.Index()>>chunkShift, false); since < c.minSince {
		c.minSince = since
	}
}

// scanOld calls fn for every page in [start, end) (end 0: no limit) of
// the chunks whose stamp bound is at most since, in index order; fn
// checks each page's own stamp. It must not change the set.
func (s *dirtySet) scanOld(start, end, since uint64, fn func(p *pages.Page)) {
	i, _ := slices.BinarySearch(s.keys, start>>chunkShift)
	for ; i < len(s.keys); i++ {
		k := s.keys[i]
		if end != 0 && k<<chunkShift >= end {
			return
		}
		c := s.chunks[k]
		if c.minSince > since {
			continue
		}
		for w, word := range c.bits {
			for word != 0 {
				b := uint64(w*64 + bits.TrailingZeros64(word))
				word &= word - 1
				idx := k<<chunkShift | b
				if idx < start {
					continue
				}
				if end != 0 && idx >= end {
					return
				}
				fn(c.pages[b])
			}
		}
	}
}

// contiguous counts the pages in the set at idx, idx+1, … (at most max),
// stopping at the first absent one.
func (s *dirtySet) contiguous(idx uint64, max int) int {
	n := 0
	for n < max {
		c := s.chunk((idx+uint64(n))>>chunkShift, false)
		if c == nil {
			break
		}
		b := (idx + uint64(n)) & (chunkPages - 1)
		if c.bits[b/64]&(1<<(b%64)) == 0 {
			break
		}
		n++
	}
	return n
}

// has reports whether p is in the set.
func (s *dirtySet) has(p *pages.Page) bool {
	idx := p.Index()
	c := s.chunk(idx>>chunkShift, false)
	if c == nil {
		return false
	}
	b := idx & (chunkPages - 1)
	return c.bits[b/64]&(1<<(b%64)) != 0 && c.pages[b] == p
}
