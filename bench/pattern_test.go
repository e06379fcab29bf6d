package bench

import (
	"slices"
	"strings"
	"testing"
)

func TestLayouts(t *testing.T) {
	const n = 100000
	for _, tc := range []struct {
		p              Pattern
		runLo, runHi   uint64 // extent lengths
		gapLo, gapHi   uint64 // pages between extents
		fracLo, fracHi float64
	}{
		{Seq, n, n, 0, 0, 1, 1},
		{Runs, 1, 32, 1, 32, 0.45, 0.55},
		{Single, 1, 1, 1, 14, 1 / 9.5, 1 / 7.5},
	} {
		t.Run(string(tc.p), func(t *testing.T) {
			l, err := NewLayout(tc.p, 7, n)
			if err != nil {
				t.Fatal(err)
			}
			var pages uint64
			runLens, gaps := map[uint64]bool{}, map[uint64]bool{}
			for i, e := range l.Extents {
				pages += e.Len
				if e.End() > n {
					t.Fatalf("extent %d %+v past the end %d", i, e, n)
				}
				if i < len(l.Extents)-1 && (e.Len < tc.runLo || e.Len > tc.runHi) {
					t.Fatalf("extent %d has %d pages, want %d–%d", i, e.Len, tc.runLo, tc.runHi)
				}
				runLens[e.Len] = true
				if i > 0 {
					gap := e.Start - l.Extents[i-1].End()
					if gap < tc.gapLo || gap > tc.gapHi {
						t.Fatalf("gap before extent %d is %d pages, want %d–%d", i, gap, tc.gapLo, tc.gapHi)
					}
					gaps[gap] = true
				}
			}
			if pages != l.Pages {
				t.Fatalf("Pages %d, extents hold %d", l.Pages, pages)
			}
			if f := float64(pages) / n; f < tc.fracLo || f > tc.fracHi {
				t.Fatalf("%s dirties %.3f of the pages, want %.3f–%.3f", tc.p, f, tc.fracLo, tc.fracHi)
			}
			// Uniform draws over this many extents hit every value.
			if tc.p != Seq {
				if uint64(len(runLens)) != tc.runHi-tc.runLo+1 || uint64(len(gaps)) != tc.gapHi-tc.gapLo+1 {
					t.Fatalf("saw %d run lengths and %d gap lengths, want every one of %d–%d and %d–%d",
						len(runLens), len(gaps), tc.runLo, tc.runHi, tc.gapLo, tc.gapHi)
				}
			}
			again, _ := NewLayout(tc.p, 7, n)
			if !slices.Equal(again.Extents, l.Extents) {
				t.Fatal("the same seed gave another layout")
			}
			other, _ := NewLayout(tc.p, 8, n)
			if tc.p != Seq && slices.Equal(other.Extents, l.Extents) {
				t.Fatal("another seed gave the same layout")
			}
		})
	}
	if _, err := NewLayout(Hot, 1, 10); err == nil {
		t.Fatal("NewLayout(hot) did not fail")
	}
}

// TestLayoutFirstExtents pins the first extents of a seed, so a change
// of generator (which would change what every seed means) is noticed.
func TestLayoutFirstExtents(t *testing.T) {
	l, _ := NewLayout(Runs, 1, 1000)
	s, _ := NewLayout(Single, 1, 1000)
	if want := []Extent{{0, 4}, {27, 19}, {71, 13}, {89, 7}}; !slices.Equal(l.Extents[:4], want) {
		t.Errorf("runs, seed 1: first extents %v, want %v", l.Extents[:4], want)
	}
	if want := []Extent{{8, 1}, {11, 1}, {23, 1}, {25, 1}}; !slices.Equal(s.Extents[:4], want) {
		t.Errorf("single, seed 1: first extents %v, want %v", s.Extents[:4], want)
	}
}

func TestWrites(t *testing.T) {
	l := &Layout{Extents: []Extent{{0, 5}, {10, 1}, {20, 9}}, Pages: 15}
	got := l.Writes(4)
	want := []Write{
		{Extent{0, 4}, 0}, {Extent{4, 1}, 4},
		{Extent{10, 1}, 5},
		{Extent{20, 4}, 6}, {Extent{24, 4}, 10}, {Extent{28, 1}, 14},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Writes(4) = %v\nwant %v", got, want)
	}
	var pos []uint64
	l.Each(func(p int, i uint64) {
		if uint64(p) != uint64(len(pos)) {
			t.Fatalf("Each: position %d out of order", p)
		}
		pos = append(pos, i)
	})
	if !slices.Equal(pos, []uint64{0, 1, 2, 3, 4, 10, 20, 21, 22, 23, 24, 25, 26, 27, 28}) {
		t.Fatalf("Each visited %v", pos)
	}
}

func TestParsePattern(t *testing.T) {
	for _, p := range Patterns {
		if got, err := ParsePattern(string(p)); err != nil || got != p {
			t.Fatalf("ParsePattern(%q) = %q, %v", p, got, err)
		}
	}
	if _, err := ParsePattern("random"); err == nil {
		t.Fatal("ParsePattern(random) did not fail")
	}
}

// TestPatternTable: every pattern is a row of patternTable, and a row is
// whole: a pattern with a layout lays out pages and has fio arguments
// that include --rw (so a new pattern cannot leave fio without one); a
// pattern without a layout says why it has no fio job.
func TestPatternTable(t *testing.T) {
	if len(Patterns) != len(patternTable) {
		t.Fatalf("Patterns has %d, the table %d", len(Patterns), len(patternTable))
	}
	seen := map[Pattern]bool{}
	for _, row := range patternTable {
		t.Run(string(row.p), func(t *testing.T) {
			if seen[row.p] {
				t.Fatalf("pattern %q has two rows", row.p)
			}
			seen[row.p] = true
			if p, err := ParsePattern(string(row.p)); err != nil || p != row.p {
				t.Fatalf("ParsePattern(%q) = %q, %v", row.p, p, err)
			}
			if row.layout == nil {
				if row.fio != nil || row.noFio == "" {
					t.Fatalf("no layout: want no fio job and a reason (fio set: %v, reason %q)", row.fio != nil, row.noFio)
				}
				if _, err := NewLayout(row.p, 1, 1000); err == nil {
					t.Fatal("NewLayout of a pattern without a layout succeeded")
				}
				return
			}
			if row.fio == nil {
				t.Fatalf("a layout and no fio arguments (noFio %q)", row.noFio)
			}
			l, err := NewLayout(row.p, 1, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if l.Pages == 0 || len(l.Extents) == 0 {
				t.Fatalf("layout over 1000 pages is empty: %+v", l)
			}
			for _, ps := range []int{512, 4096} {
				args, _ := row.fio(l, ps, 64*ps)
				rw := 0
				for _, a := range args {
					if strings.HasPrefix(a, "--rw=") {
						rw++
					}
				}
				if rw != 1 {
					t.Errorf("page size %d: fio arguments %q have %d --rw, want 1", ps, args, rw)
				}
			}
		})
	}
}
