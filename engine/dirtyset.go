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
// It is a sparse three-level bitmap, like the kernel's xarray with its
// 64-slot nodes: the index space is cut into groups of 4,096 pages, kept
// by key in a map and a sorted key list; a group has a bitmap of which of
// its 64 leaves hold pages, and a leaf a bitmap of which of its 64 pages
// are in the set and their cache slots. Insert and remove are O(1);
// finding the next page at or after an index skips 64 absent pages per
// leaf word, 64 absent leaves per group word and empty groups per sorted-
// key step, so a ranged or budgeted pass costs what it takes, not the
// size of the set.
//
// Memory follows the pages in the set, not the span of their indexes: a
// page alone in its group costs a group and a leaf (about 550 bytes). (Issue
// 12: with one 4,096-page chunk of pointers per group, 16 Ki random pages
// over a 1 TiB index space took 566 MiB.) Groups and leaves live in
// pools, pointer-free (a leaf names its pages by cache slot: a page in
// the set is dirty, so it keeps its slot until it leaves), so the
// garbage collector neither scans them nor puts a write barrier on a
// set's insert. The pools are
// made and touched at Open for a set as sparse as one page in ten of a
// full cache's worth (the reference single pattern is one in 8.5), about
// 46 bytes per cache page, so a first pass over such a set allocates
// nothing; a sparser set grows them, and they keep what they grew to.
type dirtySet struct {
	groups map[uint64]int32 // group key (index >> groupShift) → group number
	keys   []uint64         // sorted keys of the groups with at least one page
	n      int              // pages in the set
	cache  *pages.Cache     // a leaf's slot is cache.AtSlot's page

	gs    []dirtyGroup // the group pool, by number
	freeG []int32      // free group numbers
	ls    []dirtyLeaf  // the leaf pool, by number
	freeL []int32      // free leaf numbers

	last    int32 // the group insert or next touched last, or -1
	lastKey uint64
}

const (
	leafShift   = 6
	leafPages   = 1 << leafShift // pages per leaf
	groupShift  = 12
	groupPages  = 1 << groupShift // pages per group
	groupLeaves = groupPages / leafPages
)

type dirtyGroup struct {
	key uint64
	n   int // pages in the group
	// minSince bounds from below the dirty stamps (slotState.dirtySince)
	// of the group's pages: the smallest stamp inserted since the group
	// was last empty. A Sync's check skips groups whose bound is newer
	// than its own stamp (every page in them was dirtied after it began).
	minSince uint64
	leafBits uint64             // which leaves hold pages
	leaves   [groupLeaves]int32 // leaf number of each leaf in leafBits
}

type dirtyLeaf struct {
	bits  uint64            // which pages are in the set
	slots [leafPages]uint32 // the cache slot of each page in bits
}

// newDirtySet makes a set for the pages of c, its pools sized for a set
// of up to c's capacity as sparse as one page in ten (see dirtySet).
func newDirtySet(c *pages.Cache) *dirtySet {
	n := c.Capacity()
	return newDirtySetPools(c, n/(groupPages/10)+2, n/(leafPages/10)+2)
}

// newDirtySetPools makes a set for the pages of c with pools of at least
// groups groups and leaves leaves.
func newDirtySetPools(c *pages.Cache, groups, leaves int) *dirtySet {
	s := &dirtySet{
		groups: make(map[uint64]int32, groups),
		keys:   make([]uint64, 0, groups),
		cache:  c,
		last:   -1,
	}
	s.growGroups(groups)
	s.growLeaves(leaves)
	return s
}

// growGroups adds at least n free groups to the pool. No *dirtyGroup may
// be held across it.
func (s *dirtySet) growGroups(n int) { grow(&s.gs, &s.freeG, n) }

// growLeaves adds at least n free leaves to the pool. No *dirtyLeaf may
// be held across it.
func (s *dirtySet) growLeaves(n int) { grow(&s.ls, &s.freeL, n) }

// grow adds at least n zero elements to pool (and half of it at least:
// growing copies it) and their numbers to free, lowest on top.
func grow[T any](pool *[]T, free *[]int32, n int) {
	base := len(*pool)
	n = max(n, base/2, 64)
	*pool = append(*pool, make([]T, n)...)
	for i := base + n - 1; i >= base; i-- {
		*free = append(*free, int32(i))
	}
}

func (s *dirtySet) group(g int32) *dirtyGroup { return &s.gs[g] }
func (s *dirtySet) leaf(l int32) *dirtyLeaf   { return &s.ls[l] }

// prefault touches the pools' memory (see mem.Prefault, which writes
// zero values: only for memory that holds them; the free lists are
// written as they are made).
func (s *dirtySet) prefault() {
	mem.Prefault(s.gs)
	mem.Prefault(s.ls)
}

// Len is the number of pages in the set.
func (s *dirtySet) Len() int { return s.n }

// find returns the number of the group with key, or -1.
func (s *dirtySet) find(key uint64) int32 {
	if s.last >= 0 && s.lastKey == key {
		return s.last
	}
	g, ok := s.groups[key]
	if !ok {
		return -1
	}
	s.last, s.lastKey = g, key
	return g
}

// makeGroup returns the group with key, making it if there is none.
func (s *dirtySet) makeGroup(key uint64) int32 {
	if g := s.find(key); g >= 0 {
		return g
	}
	if len(s.freeG) == 0 {
		s.growGroups(1)
	}
	g := s.freeG[len(s.freeG)-1]
	s.freeG = s.freeG[:len(s.freeG)-1]
	*s.group(g) = dirtyGroup{key: key}
	s.groups[key] = g
	i, _ := slices.BinarySearch(s.keys, key)
	s.keys = slices.Insert(s.keys, i, key)
	s.last, s.lastKey = g, key
	return g
}

// locate returns the leaf holding idx and idx's bit in it, or nil.
func (s *dirtySet) locate(idx uint64) (*dirtyLeaf, uint64) {
	g := s.find(idx >> groupShift)
	if g < 0 {
		return nil, 0
	}
	gr := s.group(g)
	li := (idx >> leafShift) & (groupLeaves - 1)
	if gr.leafBits&(1<<li) == 0 {
		return nil, 0
	}
	return s.leaf(gr.leaves[li]), uint64(1) << (idx & (leafPages - 1))
}

// insert adds p, whose dirty stamp is since. A page is in the set at
// most once: it gets here only from the intake list, where it is at most
// once, and leaves before its Dirty bit can be cleared.
func (s *dirtySet) insert(p *pages.Page, since uint64) {
	idx := p.Index()
	gr := s.group(s.makeGroup(idx >> groupShift))
	if gr.n == 0 || since < gr.minSince {
		gr.minSince = since
	}
	li := (idx >> leafShift) & (groupLeaves - 1)
	if gr.leafBits&(1<<li) == 0 {
		if len(s.freeL) == 0 {
			s.growLeaves(1)
		}
		l := s.freeL[len(s.freeL)-1]
		s.freeL = s.freeL[:len(s.freeL)-1]
		s.leaf(l).bits = 0
		gr.leaves[li] = l
		gr.leafBits |= 1 << li
	}
	lf := s.leaf(gr.leaves[li])
	b := idx & (leafPages - 1)
	if lf.bits&(1<<b) != 0 {
		invariants.Failf("engine: page %d is in the dirty set twice", idx)
	}
	lf.bits |= 1 << b
	lf.slots[b] = uint32(p.Slot())
	gr.n++
	s.n++
}

// remove takes the page at idx out of the set; it must be there.
func (s *dirtySet) remove(idx uint64) {
	g := s.find(idx >> groupShift)
	if g < 0 {
		invariants.Failf("engine: page %d is not in the dirty set", idx)
		return
	}
	gr := s.group(g)
	li := (idx >> leafShift) & (groupLeaves - 1)
	b := idx & (leafPages - 1)
	var lf *dirtyLeaf
	if gr.leafBits&(1<<li) != 0 {
		lf = s.leaf(gr.leaves[li])
	}
	if lf == nil || lf.bits&(1<<b) == 0 {
		invariants.Failf("engine: page %d is not in the dirty set", idx)
		return
	}
	lf.bits &^= 1 << b
	if lf.bits == 0 {
		gr.leafBits &^= 1 << li
		s.freeL = append(s.freeL, gr.leaves[li])
	}
	gr.n--
	s.n--
	if gr.n == 0 {
		delete(s.groups, gr.key)
		if i, ok := slices.BinarySearch(s.keys, gr.key); ok {
			s.keys = slices.Delete(s.keys, i, i+1)
		}
		if s.last == g {
			s.last = -1
		}
		s.freeG = append(s.freeG, g)
	}
}

// next returns the page with the smallest index ≥ from and < end (end
// 0: no limit), or nil.
func (s *dirtySet) next(from, end uint64) *pages.Page {
	if s.n == 0 {
		return nil
	}
	key := from >> groupShift
	if g := s.find(key); g >= 0 {
		if p := s.nextIn(s.group(g), from&(groupPages-1)); p != nil {
			return limit(p, end)
		}
	}
	// Later groups, in key order.
	i, found := slices.BinarySearch(s.keys, key)
	if found {
		i++
	}
	for ; i < len(s.keys); i++ {
		k := s.keys[i]
		if end != 0 && k<<groupShift >= end {
			return nil
		}
		g := s.find(k)
		if p := s.nextIn(s.group(g), 0); p != nil {
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

// nextIn finds the first page at position ≥ b in group gr.
func (s *dirtySet) nextIn(gr *dirtyGroup, b uint64) *pages.Page {
	li := b >> leafShift
	if gr.leafBits&(1<<li) != 0 {
		lf := s.leaf(gr.leaves[li])
		if w := lf.bits &^ (1<<(b&(leafPages-1)) - 1); w != 0 {
			return s.cache.AtSlot(int(lf.slots[bits.TrailingZeros64(w)]))
		}
	}
	// The first leaf after li (li+1 ≤ 64: a shift by 64 gives 0).
	rest := gr.leafBits >> (li + 1) << (li + 1)
	if rest == 0 {
		return nil
	}
	lf := s.leaf(gr.leaves[bits.TrailingZeros64(rest)])
	return s.cache.AtSlot(int(lf.slots[bits.TrailingZeros64(lf.bits)]))
}

// lower lowers the stamp bound of p's group to since, if p is in the
// set (a page whose stamp an error put back).
func (s *dirtySet) lower(p *pages.Page, since uint64) {
	if !s.has(p) {
		return
	}
	if gr := s.group(s.find(p.Index() >> groupShift)); since < gr.minSince {
		gr.minSince = since
	}
}

// scanOld calls fn for every page in [start, end) (end 0: no limit) of
// the groups whose stamp bound is at most since, in index order; fn
// checks each page's own stamp. It must not change the set.
func (s *dirtySet) scanOld(start, end, since uint64, fn func(p *pages.Page)) {
	i, _ := slices.BinarySearch(s.keys, start>>groupShift)
	for ; i < len(s.keys); i++ {
		k := s.keys[i]
		if end != 0 && k<<groupShift >= end {
			return
		}
		gr := s.group(s.groups[k])
		if gr.minSince > since {
			continue
		}
		for lw := gr.leafBits; lw != 0; lw &= lw - 1 {
			li := uint64(bits.TrailingZeros64(lw))
			lf := s.leaf(gr.leaves[li])
			for w := lf.bits; w != 0; w &= w - 1 {
				b := uint64(bits.TrailingZeros64(w))
				idx := k<<groupShift | li<<leafShift | b
				if idx < start {
					continue
				}
				if end != 0 && idx >= end {
					return
				}
				fn(s.cache.AtSlot(int(lf.slots[b])))
			}
		}
	}
}

// contiguous counts the pages in the set at idx, idx+1, … (at most max),
// stopping at the first absent one.
func (s *dirtySet) contiguous(idx uint64, max int) int {
	n := 0
	for n < max {
		lf, m := s.locate(idx + uint64(n))
		if lf == nil || lf.bits&m == 0 {
			break
		}
		n++
	}
	return n
}

// has reports whether p is in the set.
func (s *dirtySet) has(p *pages.Page) bool {
	idx := p.Index()
	lf, m := s.locate(idx)
	return lf != nil && lf.bits&m != 0 && lf.slots[idx&(leafPages-1)] == uint32(p.Slot())
}
