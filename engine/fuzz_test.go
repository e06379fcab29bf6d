package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// batchCase is one FuzzBatcher input, decoded.
type batchCase struct {
	npages   uint64
	dirty    []uint64 // in the order they are dirtied (sets memory order)
	exts     []mapper.Extent
	nblocks  uint64
	maxPages int
	bufPages int  // registered-buffer size in pages (0: not fixed)
	nilMap   bool // no mapper
}

func decodeBatchCase(data []byte) batchCase {
	seed := uint64(0)
	if len(data) >= 8 {
		seed = binary.LittleEndian.Uint64(data)
	}
	for _, b := range data[min(8, len(data)):] {
		seed = seed*131 + uint64(b)
	}
	r := rand.New(rand.NewPCG(seed, uint64(len(data))))
	bc := batchCase{npages: 16 + r.Uint64N(1500)}
	// Dirty set: a density and clustering drawn from the input.
	density := r.Float64()
	runny := r.Float64()
	on := false
	for i := uint64(0); i < bc.npages; i++ {
		if r.Float64() > runny {
			on = r.Float64() < density
		}
		if on {
			bc.dirty = append(bc.dirty, i)
		}
	}
	// Dirty order: ascending, descending or shuffled (memory adjacency).
	switch r.IntN(3) {
	case 1:
		slices.Reverse(bc.dirty)
	case 2:
		r.Shuffle(len(bc.dirty), func(i, j int) { bc.dirty[i], bc.dirty[j] = bc.dirty[j], bc.dirty[i] })
	}
	switch r.IntN(4) {
	case 0:
		bc.maxPages = 1 + r.IntN(4)
	case 1:
		bc.maxPages = 1 + r.IntN(64)
	case 2:
		bc.maxPages = 256
	default:
		bc.maxPages = 1024 // the most Open takes: 1024 iovecs of one page
	}
	if r.IntN(3) == 0 {
		bc.bufPages = 1 + r.IntN(200)
	}
	bc.nilMap = r.IntN(8) == 0
	// Extents over [0, npages) with random lengths, blocks in random
	// order with random gaps, some contiguous in both spaces, some
	// boundaries; a few holes left unmapped-free (every page mapped).
	var lens []uint64
	for i := uint64(0); i < bc.npages; {
		l := min(1+r.Uint64N(80), bc.npages-i)
		lens = append(lens, l)
		i += l
	}
	pos, idx := uint64(0), uint64(0)
	for _, l := range lens {
		if r.IntN(3) == 0 {
			pos += r.Uint64N(5)
		}
		bc.exts = append(bc.exts, mapper.Extent{Index: idx, Block: pos, Len: l, Boundary: r.IntN(5) == 0})
		idx += l
		pos += l
	}
	if r.IntN(2) == 0 {
		// Reverse block placement of pairs of extents.
		for i := 0; i+1 < len(bc.exts); i += 2 {
			a, b := &bc.exts[i], &bc.exts[i+1]
			b.Block, a.Block = a.Block, a.Block+b.Len
		}
	}
	bc.nblocks = pos + 8
	return bc
}

// expectedRuns is the model: the maximal runs of dirty pages in index
// order, split only where the next page is not contiguous by index or
// block, at a boundary, at maxPages, or at 1024 iovecs. A run over more
// than one registered buffer is one plain write (runBatchCase checks).
func expectedRuns(bc batchCase, m mapper.Mapper, slotOf map[uint64]int, ps int) [][]uint64 {
	sorted := slices.Clone(bc.dirty)
	slices.Sort(sorted)
	block := func(i uint64) (uint64, bool) {
		if m == nil {
			return i, false
		}
		e, err := m.Map(i)
		if err != nil {
			panic(err)
		}
		return e.BlockOf(i), e.Boundary && i == e.End()-1
	}
	var runs [][]uint64
	var cur []uint64
	iovs := 0
	prevBoundary := false
	for _, i := range sorted {
		if len(cur) > 0 {
			last := cur[len(cur)-1]
			lb, _ := block(last)
			b, _ := block(i)
			adjacentMem := slotOf[i] == slotOf[last]+1
			split := m == nil || i != last+1 || b != lb+1 || prevBoundary ||
				len(cur) == bc.maxPages || (iovs == 1024 && !adjacentMem)
			if split {
				runs = append(runs, cur)
				cur, iovs = nil, 0
			}
		}
		if len(cur) == 0 || slotOf[i] != slotOf[cur[len(cur)-1]]+1 {
			iovs++
		}
		cur = append(cur, i)
		_, prevBoundary = block(i)
	}
	if len(cur) > 0 {
		runs = append(runs, cur)
	}
	return runs
}

func runBatchCase(t *testing.T, bc batchCase) {
	const ps = 512
	if len(bc.dirty) == 0 {
		return
	}
	var m mapper.Mapper
	if !bc.nilMap {
		em, err := mapper.NewExtentMap(bc.exts)
		if err != nil {
			t.Fatalf("generator made a bad extent map: %v", err)
		}
		m = em
	}
	c, err := pages.New(pages.Config{PageSize: ps, Capacity: int(bc.npages), BufferSize: bc.bufPages * ps, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "fuzz-*.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(bc.nblocks) * ps)
	f.Close()
	var fr *fakeRing
	e, err := Open(c, Config{
		Path:       f.Name(),
		Mapper:     m,
		MaxIOBytes: bc.maxPages * ps,
		QueueDepth: 8,
		OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
			fr = newFakeRing(tg.Size, ps, rc)
			fr.fixedOK = bc.bufPages > 0
			return fr, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	slotOf := map[uint64]int{}
	buf := make([]byte, ps)
	for _, i := range bc.dirty {
		binary.LittleEndian.PutUint64(buf, i+1)
		if _, err := c.WriteAt(buf, int64(i)*ps); err != nil {
			t.Fatal(err)
		}
		p := c.Lookup(i)
		slotOf[i] = p.Slot()
		c.Put(p)
	}
	if err := e.WritePages(context.Background(), &WritebackControl{SyncMode: SyncAll}); err != nil {
		t.Fatal(err)
	}
	want := expectedRuns(bc, m, slotOf, ps)
	// Turn the submitted writes back into page lists.
	blockToIndex := map[uint64]uint64{}
	for _, i := range bc.dirty {
		b := i
		if m != nil {
			ext, _ := m.Map(i)
			b = ext.BlockOf(i)
		}
		blockToIndex[b] = i
	}
	fr.mu.Lock()
	subs := slices.Clone(fr.subs)
	fr.mu.Unlock()
	var got [][]uint64
	seen := map[uint64]bool{}
	for _, s := range subs {
		var run []uint64
		for b := uint64(s.off) / ps; b < uint64(s.off+s.len)/ps; b++ {
			i, ok := blockToIndex[b]
			if !ok {
				t.Fatalf("write to block %d, which holds no dirty page", b)
			}
			if seen[i] {
				t.Fatalf("page %d written twice", i)
			}
			seen[i] = true
			run = append(run, i)
		}
		if s.iovs > 1024 {
			t.Fatalf("write with %d iovecs", s.iovs)
		}
		// Fixed exactly when every page lies in one registered buffer,
		// and then naming it; plain when they lie in two or more.
		if bc.bufPages > 0 {
			one := true
			for _, i := range run {
				one = one && slotOf[i]/bc.bufPages == slotOf[run[0]]/bc.bufPages
			}
			if s.fixed != one || one && s.buf != slotOf[run[0]]/bc.bufPages {
				t.Fatalf("write of pages %d-%d: fixed %v buf %d; its pages in one registered buffer: %v (buffer %d)", run[0], run[len(run)-1], s.fixed, s.buf, one, slotOf[run[0]]/bc.bufPages)
			}
		}
		got = append(got, run)
	}
	// Submission order within a pass follows index order.
	if !slices.EqualFunc(got, want, slices.Equal[[]uint64]) {
		t.Fatalf("writes differ from the maximal runs\n got %d writes: %v\nwant %d writes: %v", len(got), short(got), len(want), short(want))
	}
	for _, i := range bc.dirty {
		b := i
		if m != nil {
			ext, _ := m.Map(i)
			b = ext.BlockOf(i)
		}
		if v := binary.LittleEndian.Uint64(fr.img[b*ps:]); v != i+1 {
			t.Fatalf("page %d: block %d holds %d", i, b, v)
		}
	}
}

func short(rs [][]uint64) string {
	s := ""
	for k, r := range rs {
		if k == 12 {
			return s + " …"
		}
		s += fmt.Sprintf(" [%d-%d]", r[0], r[len(r)-1])
	}
	return s
}

// FuzzBatcher: random dirty sets, extent maps, write caps, boundaries
// and registered-buffer sizes; the writes submitted must be exactly the
// maximal contiguous runs, split only at those caps and boundaries, each
// page once, fixed exactly when a write's pages lie in one buffer.
func FuzzBatcher(f *testing.F) {
	for i := 0; i < 24; i++ {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i)*0x9E3779B97F4A7C15)
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runBatchCase(t, decodeBatchCase(data))
	})
}
