package engine

import (
	"errors"
	"testing"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

// countingMapper counts the lookups that reach the mapper.
type countingMapper struct {
	mapper.Mapper
	calls int
}

func (m *countingMapper) Map(idx uint64) (mapper.Extent, error) {
	m.calls++
	return m.Mapper.Map(idx)
}

// TestExtentCursor walks pages 0..39 of a map with three extents, a hole
// between two of them and a boundary: the cursor asks the mapper once per
// extent (and once per page of the hole, which has no extent to keep),
// gives each page its block, and reports the boundary only on the last
// page of the extent that has one.
func TestExtentCursor(t *testing.T) {
	m, err := mapper.NewExtentMap([]mapper.Extent{
		{Index: 0, Block: 100, Len: 10},
		{Index: 10, Block: 500, Len: 10, Boundary: true},
		{Index: 25, Block: 50, Len: 15},
	})
	if err != nil {
		t.Fatal(err)
	}
	cm := &countingMapper{Mapper: m}
	c := extentCursor{m: cm}
	for idx := uint64(0); idx < 40; idx++ {
		block, boundary, err := c.locate(idx)
		var wantBlock uint64
		hole := false
		switch {
		case idx < 10:
			wantBlock = 100 + idx
		case idx < 20:
			wantBlock = 500 + idx - 10
		case idx < 25:
			hole = true
		default:
			wantBlock = 50 + idx - 25
		}
		if hole {
			if !errors.Is(err, mapper.ErrHole) {
				t.Fatalf("page %d: err %v, want ErrHole", idx, err)
			}
			continue
		}
		if err != nil || block != wantBlock {
			t.Fatalf("page %d: block %d, err %v; want block %d", idx, block, err, wantBlock)
		}
		if want := idx == 19; boundary != want {
			t.Fatalf("page %d: boundary %v, want %v", idx, boundary, want)
		}
	}
	if want := 3 + 5; cm.calls != want {
		t.Fatalf("the mapper was asked %d times for 40 pages, want %d (once per extent, once per hole page)", cm.calls, want)
	}
	// Going back asks again; reset forgets the extent held.
	if _, _, err := c.locate(3); err != nil {
		t.Fatal(err)
	}
	c.reset()
	if _, _, err := c.locate(4); err != nil {
		t.Fatal(err)
	}
	if want := 10; cm.calls != want {
		t.Fatalf("after a step back and a reset: %d mapper calls, want %d", cm.calls, want)
	}
	// No mapper: page i is block i.
	var id extentCursor
	if b, boundary, err := id.locate(77); b != 77 || boundary || err != nil {
		t.Fatalf("identity cursor: locate(77) = %d, %v, %v", b, boundary, err)
	}
}

// TestRunExtends: a run takes the next page only when it is the next
// index at the next block, while it has room for a page, and while it has
// an iovec free or the page's memory follows the last iovec.
func TestRunExtends(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 16)
	pg := make([]*pages.Page, 8)
	for i := range pg {
		p, err := c.Grab(uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		p.Unlock()
		pg[i] = p
		defer c.Put(p)
	}
	var r run
	r.initRun(4)
	if r.extends(0, 10, pg[0], ps) {
		t.Fatal("an empty run extends: a run is started, not extended")
	}
	r.start(10, ps)
	r.add(pg[0])
	if r.off != 10*ps || r.bytes != ps || len(r.pages) != 1 {
		t.Fatalf("after start(10) and one page: off %d bytes %d pages %d", r.off, r.bytes, len(r.pages))
	}
	for _, tc := range []struct {
		idx, block uint64
		want       bool
	}{
		{1, 11, true},
		{2, 11, false}, // index gap
		{1, 12, false}, // block gap
		{0, 10, false}, // the same page again
	} {
		if got := r.extends(tc.idx, tc.block, pg[tc.idx], ps); got != tc.want {
			t.Errorf("extends(page %d, block %d) = %v, want %v", tc.idx, tc.block, got, tc.want)
		}
	}
	for i := 1; i < 4; i++ {
		if !r.extends(uint64(i), uint64(10+i), pg[i], ps) {
			t.Fatalf("page %d does not extend a run of %d pages", i, len(r.pages))
		}
		r.add(pg[i])
	}
	if r.extends(4, 14, pg[4], ps) {
		t.Fatal("a full run (cap 4 pages) takes a fifth page")
	}
	if r.lastBlock(ps) != 13 || r.bytes != 4*ps {
		t.Fatalf("lastBlock %d bytes %d, want 13 and %d", r.lastBlock(ps), r.bytes, 4*ps)
	}
	r.start(0, ps)
	if len(r.pages) != 0 || len(r.iov) != 0 || r.bytes != 0 || cap(r.pages) != 4 {
		t.Fatalf("start did not empty the run (or lost its capacity): %d pages, %d iovecs, %d bytes, cap %d",
			len(r.pages), len(r.iov), r.bytes, cap(r.pages))
	}
}
