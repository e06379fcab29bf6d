package mapper

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
)

const maxU = math.MaxUint64

type mapCase struct {
	name    string
	index   uint64
	want    Extent
	wantErr error
}

func checkMap(t *testing.T, m Mapper, cases []mapCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Map(tc.index)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Map(%d) error = %v, want %v", tc.index, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Map(%d) = %v, want %v", tc.index, got, tc.want)
			}
		})
	}
}

func TestLinear(t *testing.T) {
	t.Run("offset", func(t *testing.T) {
		m := Linear(100, 50)
		checkMap(t, m, []mapCase{
			{"first", 0, Extent{Index: 0, Block: 100, Len: 50}, nil},
			{"middle", 17, Extent{Index: 0, Block: 100, Len: 50}, nil},
			{"last", 49, Extent{Index: 0, Block: 100, Len: 50}, nil},
			{"end", 50, Extent{Index: 50}, ErrHole},
			{"far", maxU, Extent{Index: 50}, ErrHole},
		})
		if got, want := m.(Bounded).MaxBlock(), uint64(150); got != want {
			t.Errorf("MaxBlock() = %d, want %d", got, want)
		}
		if got, want := m.(IndexBounded).IndexLimit(), uint64(50); got != want {
			t.Errorf("IndexLimit() = %d, want %d", got, want)
		}
	})
	t.Run("empty", func(t *testing.T) {
		checkMap(t, Linear(7, 0), []mapCase{
			{"zero", 0, Extent{Index: 0}, ErrHole},
			{"one", 1, Extent{Index: 0}, ErrHole},
		})
	})
	t.Run("whole space", func(t *testing.T) {
		checkMap(t, Linear(0, maxU), []mapCase{
			{"zero", 0, Extent{Index: 0, Block: 0, Len: maxU}, nil},
			{"last mappable", maxU - 1, Extent{Index: 0, Block: 0, Len: maxU}, nil},
			{"max", maxU, Extent{Index: maxU}, ErrHole},
		})
	})
	t.Run("overflow panics", func(t *testing.T) {
		defer func() {
			if r := recover(); r == nil {
				t.Errorf("Linear(maxU, 2) did not panic")
			}
		}()
		Linear(maxU, 2)
	})
}

func TestExtentMap(t *testing.T) {
	// Given out of order on purpose. Extents 1 and 2 are contiguous in
	// both spaces and must stay separate; extent 1 carries a boundary.
	exts := []Extent{
		{Index: 40, Block: 7, Len: 3},
		{Index: 10, Block: 100, Len: 5, Boundary: true},
		{Index: 15, Block: 105, Len: 5},
		{Index: 30, Block: 0, Len: 2},
	}
	m, err := NewExtentMap(exts)
	if err != nil {
		t.Fatal(err)
	}
	e0, e1, e2, e3 := exts[1], exts[2], exts[3], exts[0]
	checkMap(t, m, []mapCase{
		{"hole before", 0, Extent{Index: 0, Len: 10}, ErrHole},
		{"hole before end", 9, Extent{Index: 0, Len: 10}, ErrHole},
		{"boundary extent start", 10, e0, nil},
		{"boundary extent end", 14, e0, nil},
		{"contiguous next start", 15, e1, nil},
		{"contiguous next end", 19, e1, nil},
		{"hole between", 20, Extent{Index: 20, Len: 10}, ErrHole},
		{"hole between end", 29, Extent{Index: 20, Len: 10}, ErrHole},
		{"low blocks", 31, e2, nil},
		{"one-page hole", 32, Extent{Index: 32, Len: 8}, ErrHole},
		{"last extent", 42, e3, nil},
		{"hole after", 43, Extent{Index: 43}, ErrHole},
		{"hole after far", maxU, Extent{Index: 43}, ErrHole},
	})
	if got, want := m.(Bounded).MaxBlock(), uint64(110); got != want {
		t.Errorf("MaxBlock() = %d, want %d", got, want)
	}
	if got, want := m.(IndexBounded).IndexLimit(), uint64(43); got != want {
		t.Errorf("IndexLimit() = %d, want %d", got, want)
	}
	got := m.(*ExtentMap).Extents()
	want := []Extent{e0, e1, e2, e3}
	if len(got) != len(want) {
		t.Fatalf("Extents() = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("Extents()[%d] = %v, want %v", i, got[i], want[i])
		}
	}

	t.Run("empty", func(t *testing.T) {
		m, err := NewExtentMap(nil)
		if err != nil {
			t.Fatal(err)
		}
		checkMap(t, m, []mapCase{{"zero", 0, Extent{}, ErrHole}, {"max", maxU, Extent{}, ErrHole}})
		if got := m.(Bounded).MaxBlock(); got != 0 {
			t.Errorf("MaxBlock() = %d, want 0", got)
		}
	})
	t.Run("starts at zero and ends at the top", func(t *testing.T) {
		m, err := NewExtentMap([]Extent{
			{Index: 0, Block: 5, Len: 1},
			{Index: maxU - 3, Block: maxU - 3, Len: 3},
		})
		if err != nil {
			t.Fatal(err)
		}
		checkMap(t, m, []mapCase{
			{"zero", 0, Extent{Index: 0, Block: 5, Len: 1}, nil},
			{"gap", 1, Extent{Index: 1, Len: maxU - 4}, ErrHole},
			{"top", maxU - 1, Extent{Index: maxU - 3, Block: maxU - 3, Len: 3}, nil},
			{"max", maxU, Extent{Index: maxU}, ErrHole},
		})
	})
}

func TestNewExtentMapErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		exts    []Extent
		problem Problem
		pos     int
		other   int
		msg     string
	}{
		{
			name:    "zero length",
			exts:    []Extent{{Index: 0, Block: 0, Len: 1}, {Index: 10, Block: 50, Len: 0}},
			problem: ZeroLength, pos: 1, other: -1,
			msg: "mapper: extent 1 {Index:10 Block:50 Len:0} has zero length",
		},
		{
			name:    "index overflow",
			exts:    []Extent{{Index: maxU - 1, Block: 0, Len: 2}},
			problem: IndexOverflow, pos: 0, other: -1,
			msg: "mapper: extent 0 {Index:18446744073709551614 Block:0 Len:2}: Index+Len overflows uint64",
		},
		{
			name:    "index exactly wraps to zero",
			exts:    []Extent{{Index: 1, Block: 0, Len: maxU}},
			problem: IndexOverflow, pos: 0, other: -1,
		},
		{
			name:    "block overflow",
			exts:    []Extent{{Index: 0, Block: maxU, Len: 1, Boundary: true}},
			problem: BlockOverflow, pos: 0, other: -1,
			msg: "mapper: extent 0 {Index:0 Block:18446744073709551615 Len:1 Boundary}: Block+Len overflows uint64",
		},
		{
			name: "index overlap",
			exts: []Extent{
				{Index: 0, Block: 0, Len: 4},
				{Index: 8, Block: 40, Len: 4},
				{Index: 20, Block: 20, Len: 1},
				{Index: 11, Block: 50, Len: 4},
			},
			problem: IndexOverlap, pos: 3, other: 1,
			msg: "mapper: extent 3 {Index:11 Block:50 Len:4} overlaps extent 1 {Index:8 Block:40 Len:4} in index space",
		},
		{
			name:    "same index",
			exts:    []Extent{{Index: 5, Block: 0, Len: 1}, {Index: 5, Block: 9, Len: 1}},
			problem: IndexOverlap, pos: 1, other: 0,
		},
		{
			name: "block overlap",
			exts: []Extent{
				{Index: 0, Block: 0, Len: 4},
				{Index: 8, Block: 50, Len: 4},
				{Index: 20, Block: 20, Len: 1},
				{Index: 10, Block: 53, Len: 2},
			},
			problem: IndexOverlap, pos: 3, other: 1,
		},
		{
			name: "block overlap only",
			exts: []Extent{
				{Index: 0, Block: 0, Len: 4},
				{Index: 30, Block: 50, Len: 4},
				{Index: 20, Block: 20, Len: 1},
				{Index: 10, Block: 53, Len: 2},
			},
			problem: BlockOverlap, pos: 3, other: 1,
			msg: "mapper: extent 3 {Index:10 Block:53 Len:2} overlaps extent 1 {Index:30 Block:50 Len:4} in block space",
		},
		{
			name:    "block contained",
			exts:    []Extent{{Index: 100, Block: 10, Len: 1}, {Index: 0, Block: 0, Len: 50}},
			problem: BlockOverlap, pos: 1, other: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewExtentMap(tc.exts)
			if err == nil {
				t.Fatalf("NewExtentMap(%v) = %v, want an error", tc.exts, m)
			}
			if m != nil {
				t.Errorf("NewExtentMap returned a non-nil Mapper %v with its error", m)
			}
			if !errors.Is(err, ErrBadExtent) {
				t.Errorf("errors.Is(%v, ErrBadExtent) = false", err)
			}
			var be *BadExtentError
			if !errors.As(err, &be) {
				t.Fatalf("error %T is not a *BadExtentError", err)
			}
			if be.Problem != tc.problem || be.Pos != tc.pos || be.OtherPos != tc.other {
				t.Errorf("got problem %d at %d (other %d), want %d at %d (other %d): %v",
					be.Problem, be.Pos, be.OtherPos, tc.problem, tc.pos, tc.other, err)
			}
			if be.Extent != tc.exts[tc.pos] {
				t.Errorf("Extent = %v, want %v", be.Extent, tc.exts[tc.pos])
			}
			if tc.other >= 0 && be.Other != tc.exts[tc.other] {
				t.Errorf("Other = %v, want %v", be.Other, tc.exts[tc.other])
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message\n got %s\nwant %s", err, tc.msg)
			}
		})
	}
}

func TestAllocMap(t *testing.T) {
	type step struct {
		alloc    bool // else Map
		index, n uint64
		want     Extent
		wantErr  error
	}
	for _, tc := range []struct {
		name  string
		first uint64
		n     uint64
		steps []step
	}{
		{
			name: "sequential writes grow one extent", first: 1000, n: 100,
			steps: []step{
				{false, 0, 0, Extent{Index: 0}, ErrHole},
				{true, 0, 4, Extent{Index: 0, Block: 1000, Len: 4}, nil},
				{true, 4, 4, Extent{Index: 4, Block: 1004, Len: 4}, nil},
				{false, 5, 0, Extent{Index: 0, Block: 1000, Len: 8}, nil},
				{false, 8, 0, Extent{Index: 8}, ErrHole},
			},
		},
		{
			name: "out of order", first: 0, n: 100,
			steps: []step{
				{true, 10, 2, Extent{Index: 10, Block: 0, Len: 2}, nil},
				{true, 5, 10, Extent{Index: 5, Block: 2, Len: 5}, nil}, // up to the next extent
				{false, 0, 0, Extent{Index: 0, Len: 5}, ErrHole},
				{false, 7, 0, Extent{Index: 5, Block: 2, Len: 5}, nil},
				{false, 11, 0, Extent{Index: 10, Block: 0, Len: 2}, nil},
				{false, 12, 0, Extent{Index: 12}, ErrHole},
				{true, 12, 1, Extent{Index: 12, Block: 7, Len: 1}, nil}, // not contiguous in block space
				{false, 12, 0, Extent{Index: 12, Block: 7, Len: 1}, nil},
			},
		},
		{
			name: "already mapped", first: 0, n: 10,
			steps: []step{
				{true, 0, 6, Extent{Index: 0, Block: 0, Len: 6}, nil},
				{true, 2, 0, Extent{Index: 2, Block: 2, Len: 1}, nil},
				{true, 2, 10, Extent{Index: 2, Block: 2, Len: 4}, nil},
			},
		},
		{
			name: "no space", first: 0, n: 3,
			steps: []step{
				{true, 0, 2, Extent{Index: 0, Block: 0, Len: 2}, nil},
				{true, 9, 5, Extent{Index: 9, Block: 2, Len: 1}, nil}, // partial
				{true, 20, 1, Extent{}, ErrNoSpace},
				{false, 20, 0, Extent{Index: 10}, ErrHole},
			},
		},
		{
			name: "top of the index space", first: 0, n: 10,
			steps: []step{
				{true, maxU - 2, 5, Extent{Index: maxU - 2, Block: 0, Len: 2}, nil},
				{true, maxU, 1, Extent{}, ErrNoSpace},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewAllocMap(tc.first, tc.n)
			for i, s := range tc.steps {
				var got Extent
				var err error
				op := "Map"
				if s.alloc {
					op = "Allocate"
					got, err = m.Allocate(s.index, s.n)
				} else {
					got, err = m.Map(s.index)
				}
				if !errors.Is(err, s.wantErr) || (err != nil) != (s.wantErr != nil) {
					t.Fatalf("step %d: %s(%d, %d) error = %v, want %v", i, op, s.index, s.n, err, s.wantErr)
				}
				if got != s.want {
					t.Errorf("step %d: %s(%d, %d) = %v, want %v", i, op, s.index, s.n, got, s.want)
				}
			}
			if got, want := m.MaxBlock(), tc.first+tc.n; got != want {
				t.Errorf("MaxBlock() = %d, want %d", got, want)
			}
		})
	}
}

// TestAllocMapConcurrent allocates every page from several goroutines at
// once and checks that no block was handed out twice and every page is
// mapped.
func TestAllocMapConcurrent(t *testing.T) {
	const pages, workers = 512, 8
	m := NewAllocMap(10, pages)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range uint64(pages) {
				i := (k*7 + uint64(w)*61) % pages
				if _, err := m.Map(i); err == nil {
					continue
				}
				if _, err := m.Allocate(i, min(3, pages-i)); err != nil {
					t.Errorf("Allocate(%d): %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := m.Allocated(); got != pages {
		t.Errorf("Allocated() = %d, want %d", got, pages)
	}
	seen := make(map[uint64]uint64)
	for i := range uint64(pages) {
		e, err := m.Map(i)
		if err != nil {
			t.Fatalf("Map(%d): %v", i, err)
		}
		b := e.BlockOf(i)
		if b < 10 || b >= 10+pages {
			t.Errorf("page %d at block %d, outside [10, %d)", i, b, 10+pages)
		}
		if j, dup := seen[b]; dup {
			t.Errorf("block %d holds pages %d and %d", b, j, i)
		}
		seen[b] = i
	}
	if _, err := m.Allocate(pages, 1); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Allocate past the end: %v, want ErrNoSpace", err)
	}
}

func TestExtentString(t *testing.T) {
	for _, tc := range []struct {
		e    Extent
		want string
	}{
		{Extent{Index: 10, Block: 50, Len: 4}, "{Index:10 Block:50 Len:4}"},
		{Extent{Index: 1, Block: 2, Len: 3, Boundary: true}, "{Index:1 Block:2 Len:3 Boundary}"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	if !strings.Contains(ErrHole.Error(), "hole") {
		t.Errorf("ErrHole = %q", ErrHole)
	}
}
