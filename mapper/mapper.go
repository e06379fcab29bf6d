package mapper

import (
	"errors"
	"fmt"
	"math"
)

// Errors. Test with errors.Is.
var (
	// ErrHole: the page is not mapped to any block. The Extent returned
	// with it describes the hole.
	ErrHole = errors.New("mapper: hole")
	// ErrBadExtent: an extent list is invalid (zero length, overlap in
	// index or block space, uint64 overflow). The error is a
	// *BadExtentError naming the offending extent(s).
	ErrBadExtent = errors.New("mapper: bad extent")
	// ErrNoSpace: an allocating mapper has no free block left.
	ErrNoSpace = errors.New("mapper: no space")
)

// Extent says that pages [Index, Index+Len) live at device blocks
// [Block, Block+Len).
//
// Returned with ErrHole, an Extent describes the hole: pages
// [Index, Index+Len) are unmapped, and Len 0 means the hole extends to
// the end of the index space. Block and Boundary are then zero.
type Extent struct {
	Index, Block, Len uint64
	// Boundary says a write must not continue past the end of this extent
	// into the next one, even if the next one is contiguous on the device
	// (the kernel's BH_Boundary: mapping the next extent needs metadata
	// I/O).
	Boundary bool
}

// End is one past the last page index of the extent. For a hole that
// extends to infinity (Len 0) End returns 0; use Contains instead.
func (e Extent) End() uint64 { return e.Index + e.Len }

// Contains reports whether page index i lies in the extent. A zero-length
// extent is taken to be a hole that extends to infinity, as returned with
// ErrHole.
func (e Extent) Contains(i uint64) bool {
	return i >= e.Index && (e.Len == 0 || i-e.Index < e.Len)
}

// BlockOf is the block holding page index i, which must lie in e.
func (e Extent) BlockOf(i uint64) uint64 { return e.Block + (i - e.Index) }

// String formats e as {Index:10 Block:50 Len:4}, with " Boundary" added
// when the flag is set.
func (e Extent) String() string {
	b := ""
	if e.Boundary {
		b = " Boundary"
	}
	return fmt.Sprintf("{Index:%d Block:%d Len:%d%s}", e.Index, e.Block, e.Len, b)
}

// Mapper maps page indexes to device blocks (the kernel's get_block).
//
// Map returns the whole extent that contains index. Where index is not
// mapped it returns ErrHole (possibly wrapped) and the extent of the hole
// (see Extent), so a caller can skip the hole in one step.
//
// A nil Mapper, where one is accepted (engine.Config.Mapper), means
// "write each page on its own at block = index": the seed's writepage
// path, with no merging of adjacent pages. The engine implements that
// case; nothing in this package handles a nil Mapper.
type Mapper interface {
	Map(index uint64) (Extent, error)
}

// Allocator is implemented by mappers that allocate blocks when a page
// over a hole is written (the kernel's get_block with create=1).
//
// Allocate allocates blocks for up to n pages starting at index, which
// should be in a hole, and returns the new extent: Index == index and
// 1 <= Len <= n (less than n where the hole or the free space ends
// first). It returns ErrNoSpace when no block is left.
type Allocator interface {
	Allocate(index uint64, n uint64) (Extent, error)
}

// Bounded is implemented by mappers that know the highest block they can
// ever return, so that Open can check the mapper does not point past the
// end of the device.
type Bounded interface {
	// MaxBlock is one past the highest block Map or Allocate can return.
	MaxBlock() uint64
}

// IndexBounded is implemented by mappers that map no page index at or
// past a limit (the end of their index space), so the engine can refuse
// such a page when it is written rather than fail every Sync after.
type IndexBounded interface {
	// IndexLimit is one past the highest page index Map can map.
	IndexLimit() uint64
}

// Problem is what is wrong with an extent in a list given to
// NewExtentMap.
type Problem uint8

const (
	ZeroLength    Problem = iota + 1 // Len is 0
	IndexOverflow                    // Index+Len overflows uint64
	BlockOverflow                    // Block+Len overflows uint64
	IndexOverlap                     // overlaps another extent in index space
	BlockOverlap                     // overlaps another extent in block space
)

// BadExtentError is the error NewExtentMap returns for an invalid list.
// It matches ErrBadExtent under errors.Is.
type BadExtentError struct {
	Problem Problem
	// Pos is the position of the offending extent in the list given to
	// NewExtentMap, Extent the extent itself.
	Pos    int
	Extent Extent
	// OtherPos and Other name the extent it overlaps (IndexOverlap and
	// BlockOverlap only; OtherPos is -1 otherwise). OtherPos < Pos.
	OtherPos int
	Other    Extent
}

func (e *BadExtentError) Error() string {
	head := fmt.Sprintf("mapper: extent %d %v", e.Pos, e.Extent)
	switch e.Problem {
	case ZeroLength:
		return head + " has zero length"
	case IndexOverflow:
		return head + ": Index+Len overflows uint64"
	case BlockOverflow:
		return head + ": Block+Len overflows uint64"
	case IndexOverlap:
		return fmt.Sprintf("%s overlaps extent %d %v in index space", head, e.OtherPos, e.Other)
	case BlockOverlap:
		return fmt.Sprintf("%s overlaps extent %d %v in block space", head, e.OtherPos, e.Other)
	}
	return head + " is invalid"
}

// Unwrap makes errors.Is(err, ErrBadExtent) true.
func (e *BadExtentError) Unwrap() error { return ErrBadExtent }

// hole is the Extent of the hole [start, end), or of [start, infinity)
// when open (Len 0; end is ignored).
func hole(start, end uint64, open bool) Extent {
	if open {
		return Extent{Index: start}
	}
	return Extent{Index: start, Len: end - start}
}

// addOK reports whether a+b fits in a uint64.
func addOK(a, b uint64) bool { return b <= math.MaxUint64-a }
