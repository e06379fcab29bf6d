package mapper

import (
	"errors"
	"testing"
)

// fuzzExtents decodes an extent list from fuzz bytes, 4 bytes an extent:
// flags, index, block, length. Flag bits: 1 Boundary; 2 index counts down
// from MaxUint64; 4 block counts down from MaxUint64; 8 length counts down
// from MaxUint64 (to provoke overflow); 16 index and block scaled by 256
// (sparse lists). Lengths are 0..31 otherwise, so zero lengths and
// overlaps are common.
func fuzzExtents(data []byte) []Extent {
	var exts []Extent
	for len(data) >= 4 && len(exts) < 16 {
		f, i, b, l := data[0], uint64(data[1]), uint64(data[2]), uint64(data[3])
		data = data[4:]
		if f&16 != 0 {
			i, b = i*256, b*256
		}
		e := Extent{Index: i, Block: b, Len: l & 31, Boundary: f&1 != 0}
		if f&2 != 0 {
			e.Index = maxU - i
		}
		if f&4 != 0 {
			e.Block = maxU - b
		}
		if f&8 != 0 {
			e.Len = maxU - l
		}
		exts = append(exts, e)
	}
	return exts
}

// overlaps reports whether [a, a+la) and [b, b+lb) intersect; the sums
// must not overflow.
func overlaps(a, la, b, lb uint64) bool { return a < b+lb && b < a+la }

// invalid is the brute-force model of NewExtentMap's validation.
func invalid(exts []Extent) bool {
	for _, e := range exts {
		if e.Len == 0 || !addOK(e.Index, e.Len) || !addOK(e.Block, e.Len) {
			return true
		}
	}
	for i := range exts {
		for j := range i {
			a, b := exts[i], exts[j]
			if overlaps(a.Index, a.Len, b.Index, b.Len) || overlaps(a.Block, a.Len, b.Block, b.Len) {
				return true
			}
		}
	}
	return false
}

func FuzzExtentMap(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 10, 50, 4})                                       // one extent
	f.Add([]byte{0, 10, 50, 4, 1, 14, 54, 4, 0, 30, 0, 2})            // contiguous pair, boundary, gap
	f.Add([]byte{0, 10, 50, 0})                                       // zero length
	f.Add([]byte{0, 10, 50, 4, 0, 12, 80, 4})                         // index overlap
	f.Add([]byte{0, 10, 50, 4, 0, 40, 52, 4})                         // block overlap
	f.Add([]byte{2, 1, 0, 2})                                         // index overflow
	f.Add([]byte{4, 0, 0, 1})                                         // block overflow
	f.Add([]byte{2, 1, 0, 1, 6, 10, 3, 3})                            // at the top of both spaces
	f.Add([]byte{8, 0, 0, 0})                                         // huge length, ends at MaxUint64
	f.Add([]byte{16, 1, 1, 7, 16, 3, 2, 31, 17, 2, 9, 1, 0, 0, 0, 9}) // sparse
	f.Fuzz(func(t *testing.T, data []byte) {
		exts := fuzzExtents(data)
		m, err := NewExtentMap(exts)
		if err != nil {
			if m != nil {
				t.Fatalf("NewExtentMap returned %v with error %v", m, err)
			}
			checkRejection(t, exts, err)
			return
		}
		if invalid(exts) {
			t.Fatalf("NewExtentMap accepted an invalid list %v", exts)
		}
		checkMapper(t, exts, m)
	})
}

// checkRejection checks that err is a *BadExtentError whose claim about
// exts is true.
func checkRejection(t *testing.T, exts []Extent, err error) {
	t.Helper()
	if !invalid(exts) {
		t.Fatalf("NewExtentMap refused a valid list %v: %v", exts, err)
	}
	var be *BadExtentError
	if !errors.As(err, &be) || !errors.Is(err, ErrBadExtent) {
		t.Fatalf("error %v (%T) is not a *BadExtentError matching ErrBadExtent", err, err)
	}
	if be.Pos < 0 || be.Pos >= len(exts) || exts[be.Pos] != be.Extent {
		t.Fatalf("error names extent %d %v, not in %v", be.Pos, be.Extent, exts)
	}
	e := be.Extent
	var ok bool
	switch be.Problem {
	case ZeroLength:
		ok = e.Len == 0
	case IndexOverflow:
		ok = !addOK(e.Index, e.Len)
	case BlockOverflow:
		ok = !addOK(e.Block, e.Len)
	case IndexOverlap, BlockOverlap:
		if be.OtherPos < 0 || be.OtherPos >= be.Pos || exts[be.OtherPos] != be.Other {
			t.Fatalf("error names other extent %d %v, not before %d in %v", be.OtherPos, be.Other, be.Pos, exts)
		}
		o := be.Other
		if be.Problem == IndexOverlap {
			ok = overlaps(e.Index, e.Len, o.Index, o.Len)
		} else {
			ok = overlaps(e.Block, e.Len, o.Block, o.Len)
		}
	}
	if !ok {
		t.Fatalf("false claim %q about %v", err, exts)
	}
}

// checkMapper compares m.Map with a brute-force scan of exts at indexes
// around every extent edge and at both ends of the index space.
func checkMapper(t *testing.T, exts []Extent, m Mapper) {
	t.Helper()
	var probe []uint64
	for i := range uint64(300) {
		probe = append(probe, i, maxU-i)
	}
	for _, e := range exts {
		s, end := e.Index, e.End()
		probe = append(probe, s-1, s, s+1, end-1, end, end+1, s+e.Len/2)
	}
	var maxBlock uint64
	for _, e := range exts {
		maxBlock = max(maxBlock, e.Block+e.Len)
	}
	if got := m.(Bounded).MaxBlock(); got != maxBlock {
		t.Fatalf("MaxBlock() = %d, want %d for %v", got, maxBlock, exts)
	}
	for _, i := range probe {
		got, err := m.Map(i)
		var want *Extent
		for k := range exts {
			if exts[k].Contains(i) {
				want = &exts[k]
				break
			}
		}
		if want != nil {
			if err != nil || got != *want {
				t.Fatalf("Map(%d) = %v, %v; want %v, nil (extents %v)", i, got, err, *want, exts)
			}
			continue
		}
		if !errors.Is(err, ErrHole) {
			t.Fatalf("Map(%d) = %v, %v; want ErrHole (extents %v)", i, got, err, exts)
		}
		if got.Block != 0 || got.Boundary || !got.Contains(i) {
			t.Fatalf("Map(%d) hole %v does not contain %d or has a block (extents %v)", i, got, i, exts)
		}
		startOK := got.Index == 0
		endOK := got.Len == 0
		for _, e := range exts {
			if got.Len == 0 && e.End() > got.Index || got.Len != 0 && overlaps(got.Index, got.Len, e.Index, e.Len) {
				t.Fatalf("Map(%d) hole %v overlaps extent %v (extents %v)", i, got, e, exts)
			}
			startOK = startOK || e.End() == got.Index
			endOK = endOK || got.Len != 0 && e.Index == got.End()
		}
		if !startOK || !endOK {
			t.Fatalf("Map(%d) hole %v is not maximal (extents %v)", i, got, exts)
		}
	}
}
