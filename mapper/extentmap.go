package mapper

import (
	"slices"
	"sort"
)

// ExtentMap is an immutable, validated list of extents; NewExtentMap
// makes one (returned as a Mapper; assert to *ExtentMap for Extents). It
// is safe for concurrent use.
type ExtentMap struct {
	ext      []Extent // sorted by Index, disjoint in both spaces
	maxBlock uint64
}

var (
	_ Mapper       = (*ExtentMap)(nil)
	_ Bounded      = (*ExtentMap)(nil)
	_ IndexBounded = (*ExtentMap)(nil)
)

// NewExtentMap validates exts and returns a Mapper over them. The list
// may be in any order; it is copied. It is refused, with a
// *BadExtentError (errors.Is(err, ErrBadExtent)) naming the offending
// extent(s) by their position in exts, when an extent has Len 0, when
// Index+Len or Block+Len overflows uint64, or when two extents overlap in
// index space or in block space. An empty list is valid: everything is a
// hole.
//
// Extents that are adjacent in both index and block space stay separate
// (their Boundary flags matter); merging runs is the caller's job.
func NewExtentMap(exts []Extent) (Mapper, error) {
	for i, e := range exts {
		switch {
		case e.Len == 0:
			return nil, &BadExtentError{Problem: ZeroLength, Pos: i, Extent: e, OtherPos: -1}
		case !addOK(e.Index, e.Len):
			return nil, &BadExtentError{Problem: IndexOverflow, Pos: i, Extent: e, OtherPos: -1}
		case !addOK(e.Block, e.Len):
			return nil, &BadExtentError{Problem: BlockOverflow, Pos: i, Extent: e, OtherPos: -1}
		}
	}
	// Positions sorted by index, then by block; after sorting, two
	// extents overlap in a space iff some neighbouring pair does.
	pos := make([]int, len(exts))
	for i := range pos {
		pos[i] = i
	}
	if err := checkOverlap(exts, pos, IndexOverlap, func(e Extent) uint64 { return e.Index }); err != nil {
		return nil, err
	}
	if err := checkOverlap(exts, pos, BlockOverlap, func(e Extent) uint64 { return e.Block }); err != nil {
		return nil, err
	}
	m := &ExtentMap{ext: make([]Extent, len(exts))}
	copy(m.ext, exts)
	slices.SortFunc(m.ext, func(a, b Extent) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	for _, e := range m.ext {
		m.maxBlock = max(m.maxBlock, e.Block+e.Len)
	}
	return m, nil
}

// checkOverlap sorts pos by start (key) and reports the first
// neighbouring pair that overlaps, naming the later position first.
func checkOverlap(exts []Extent, pos []int, p Problem, key func(Extent) uint64) error {
	slices.SortFunc(pos, func(a, b int) int {
		ka, kb := key(exts[a]), key(exts[b])
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return a - b
	})
	for k := 1; k < len(pos); k++ {
		a, b := pos[k-1], pos[k]
		// No overflow: checked before.
		if key(exts[b]) < key(exts[a])+exts[a].Len {
			if a > b {
				a, b = b, a
			}
			return &BadExtentError{Problem: p, Pos: b, Extent: exts[b], OtherPos: a, Other: exts[a]}
		}
	}
	return nil
}

// Map returns the extent containing index, or ErrHole and the hole
// around index (between the previous extent's end, or 0, and the next
// extent's start, or infinity).
func (m *ExtentMap) Map(index uint64) (Extent, error) {
	// i: the first extent starting after index.
	i := sort.Search(len(m.ext), func(k int) bool { return m.ext[k].Index > index })
	start := uint64(0)
	if i > 0 {
		e := m.ext[i-1]
		if index-e.Index < e.Len {
			return e, nil
		}
		start = e.End()
	}
	if i == len(m.ext) {
		return hole(start, 0, true), ErrHole
	}
	return hole(start, m.ext[i].Index, false), ErrHole
}

// MaxBlock is one past the highest block of any extent (0 for an empty
// map).
func (m *ExtentMap) MaxBlock() uint64 { return m.maxBlock }

// IndexLimit implements IndexBounded: the end of the last extent.
func (m *ExtentMap) IndexLimit() uint64 {
	if len(m.ext) == 0 {
		return 0
	}
	return m.ext[len(m.ext)-1].End()
}

// Extents returns a copy of the extents, sorted by index.
func (m *ExtentMap) Extents() []Extent { return slices.Clone(m.ext) }
