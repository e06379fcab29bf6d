package engine

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/wbengine/wbengine/pages"
)

// TestDirtySetModel: random inserts, removes and queries over dense
// stretches, sparse ones and indexes far apart, checked against a sorted
// model after every step: next (from anywhere, with and without an
// end), has, contiguous, scanOld with stamp bounds, Len.
func TestDirtySetModel(t *testing.T) {
	const capacity = 3000
	c, err := pages.New(pages.Config{PageSize: 512, Capacity: capacity, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := rand.New(rand.NewPCG(7, 9))
	// Indexes: a dense stretch across group edges, a sparse one, and
	// some far apart (top of the index space included).
	var idxs []uint64
	for i := uint64(4000); i < 5200; i++ {
		idxs = append(idxs, i)
	}
	for i := uint64(1 << 20); i < 1<<20+1000*37; i += 37 {
		idxs = append(idxs, i)
	}
	for len(idxs) < capacity {
		idxs = append(idxs, r.Uint64()>>r.IntN(24))
	}
	idxs = append(idxs[:capacity-2], ^uint64(0), ^uint64(0)-1)
	pg := map[uint64]*pages.Page{}
	for _, i := range idxs {
		if pg[i] != nil {
			continue
		}
		p, err := c.Grab(i)
		if err != nil {
			t.Fatal(err)
		}
		p.Unlock()
		pg[i] = p
	}
	keys := make([]uint64, 0, len(pg))
	for i := range pg {
		keys = append(keys, i)
	}
	slices.Sort(keys)
	s := newDirtySetPools(c, 1, 1) // the least: the pools must grow
	s.prefault()                   // as Open does
	in := map[uint64]uint64{}      // index → stamp
	sorted := func() []uint64 {
		var out []uint64
		for i := range in {
			out = append(out, i)
		}
		slices.Sort(out)
		return out
	}
	for step := 0; step < 40000; step++ {
		i := keys[r.IntN(len(keys))]
		if r.IntN(2) == 0 {
			i = keys[min(len(keys)-1, r.IntN(len(keys)/3))]
		}
		if _, ok := in[i]; ok {
			s.remove(i)
			delete(in, i)
		} else {
			st := 1 + r.Uint64N(1000)
			s.insert(pg[i], st)
			in[i] = st
		}
		if step%50 != 0 && step > 2000 {
			continue
		}
		all := sorted()
		if s.Len() != len(all) {
			t.Fatalf("step %d: Len %d, want %d", step, s.Len(), len(all))
		}
		for q := 0; q < 20; q++ {
			from := keys[r.IntN(len(keys))] + uint64(r.IntN(3)) - 1
			var end uint64
			if r.IntN(2) == 0 {
				end = from + r.Uint64N(10000)
			}
			k, _ := slices.BinarySearch(all, from)
			var want *pages.Page
			if k < len(all) && (end == 0 || all[k] < end) {
				want = pg[all[k]]
			}
			if got := s.next(from, end); got != want {
				t.Fatalf("step %d: next(%d, %d) = %v, want %v", step, from, end, idxOf(got), idxOf(want))
			}
			if p := pg[keys[r.IntN(len(keys))]]; s.has(p) != (in[p.Index()] != 0) {
				t.Fatalf("step %d: has(%d) = %v", step, p.Index(), s.has(p))
			}
			n := 0
			for _, ok := in[from+uint64(n)]; ok && n < 40; _, ok = in[from+uint64(n)] {
				n++
			}
			if got := s.contiguous(from, 40); got != n {
				t.Fatalf("step %d: contiguous(%d, 40) = %d, want %d", step, from, got, n)
			}
		}
		// scanOld sees at least every page with a stamp ≤ since in
		// range, in order, each once, and nothing outside the range.
		since := r.Uint64N(1000)
		start := keys[r.IntN(len(keys))]
		var got []uint64
		s.scanOld(start, 0, since, func(p *pages.Page) { got = append(got, p.Index()) })
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("step %d: scanOld not in order or repeats: %v", step, got)
		}
		for _, i := range got {
			if _, ok := in[i]; !ok || i < start {
				t.Fatalf("step %d: scanOld gave %d, not in the set at or after %d", step, i, start)
			}
		}
		for _, i := range all {
			if i >= start && in[i] <= since {
				if _, ok := slices.BinarySearch(got, i); !ok {
					t.Fatalf("step %d: scanOld(%d, since %d) missed page %d (stamp %d)", step, start, since, i, in[i])
				}
			}
		}
	}
	if len(s.gs) <= 64 || len(s.ls) <= 64 {
		t.Errorf("pools did not grow: %d groups, %d leaves", len(s.gs), len(s.ls))
	}
	for i := range in {
		s.remove(i)
	}
	if s.Len() != 0 || len(s.keys) != 0 || len(s.groups) != 0 || len(s.freeG) != len(s.gs) || len(s.freeL) != len(s.ls) {
		t.Errorf("emptied: Len %d, %d keys, %d groups mapped, free %d of %d groups and %d of %d leaves",
			s.Len(), len(s.keys), len(s.groups), len(s.freeG), len(s.gs), len(s.freeL), len(s.ls))
	}
}

func idxOf(p *pages.Page) any {
	if p == nil {
		return nil
	}
	return p.Index()
}

// TestDirtySetSparseMemory: a set of random pages over a huge index
// space costs memory per page, not per 4,096-page stretch it touches.
func TestDirtySetSparseMemory(t *testing.T) {
	const n = 16 << 10
	c, err := pages.New(pages.Config{PageSize: 4096, Capacity: n})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := rand.New(rand.NewPCG(1, 1))
	var ps []*pages.Page
	for len(ps) < n {
		p, err := c.Grab(r.Uint64N(1 << 28)) // 1 TiB of 4 KiB pages
		if err != nil {
			t.Fatal(err)
		}
		p.Unlock()
		ps = append(ps, p)
	}
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	s := newDirtySet(c)
	for _, p := range ps {
		if !s.has(p) {
			s.insert(p, 1)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&b)
	per := float64(b.HeapAlloc-a.HeapAlloc) / float64(s.Len())
	t.Logf("%d random pages over 2^28: %.0f bytes of set per page", s.Len(), per)
	if per > 2048 {
		t.Errorf("%.0f bytes per page in a sparse set, want at most 2 KiB", per)
	}
	runtime.KeepAlive(s)
}
