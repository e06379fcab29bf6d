package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Pattern is a dirty pattern (bench/README.md).
type Pattern string

const (
	// Seq dirties every page.
	Seq Pattern = "seq"
	// Runs dirties runs of 1–32 pages separated by gaps of 1–32 pages,
	// both uniform: about half the pages.
	Runs Pattern = "runs"
	// Single dirties isolated pages with gaps of 1–14 pages between
	// them: about one page in 8.5.
	Single Pattern = "single"
	// Hot has writer goroutines redirty pages while writeback runs, with
	// a Sync at a fixed interval; version v goes to page
	// verify.HotPage(seed, v, N).
	Hot Pattern = "hot"
)

// A patternRow is everything that differs by pattern, so that a new
// pattern is one row of patternTable: its name, how it lays out its
// dirty pages, and the fio job of the same shape (or why there is
// none). TestPatternTable checks every row: a layout comes with fio
// arguments that include --rw.
type patternRow struct {
	p Pattern
	// layout draws the pattern's dirty extents over n pages, in page
	// order (NewLayout). Nil for a pattern without a fixed layout (hot),
	// which has no fio job either.
	layout func(r *rand.Rand, n uint64) []Extent
	// fio is the pattern's fio job shape for layout l with page size ps
	// and writes of at most maxIO bytes: --rw and the block sizes and
	// count, and a note for the report ("" if none).
	fio func(l *Layout, ps, maxIO int) (args []string, note string)
	// noFio says why the pattern has no fio baseline (fio is nil).
	noFio string
	// Checks: a pattern with a layout writes version 1 to each of its
	// pages, which check expects; one without (hot) writes versions
	// over time, and check needs its journal (check.go).
}

// patternTable is the patterns, in the order the documentation gives
// them.
var patternTable = []patternRow{
	{
		p: Seq,
		layout: func(_ *rand.Rand, n uint64) []Extent {
			if n == 0 {
				return nil
			}
			return []Extent{{0, n}}
		},
		fio: func(_ *Layout, _, maxIO int) ([]string, string) {
			return []string{"--rw=write", "--bs=" + strconv.Itoa(maxIO)}, ""
		},
	},
	{
		p: Runs,
		layout: func(r *rand.Rand, n uint64) []Extent {
			var es []Extent
			for i := uint64(0); i < n; {
				run := min(1+r.Uint64N(32), n-i)
				es = append(es, Extent{i, run})
				i += run + 1 + r.Uint64N(32)
			}
			return es
		},
		fio: func(l *Layout, ps, maxIO int) ([]string, string) {
			hi := min(32*ps, maxIO)
			return []string{"--rw=randwrite", fmt.Sprintf("--bsrange=%d-%d", ps, hi), "--blockalign=" + strconv.Itoa(ps),
					"--number_ios=" + strconv.Itoa(len(l.Writes(uint64(maxIO/ps))))},
				fmt.Sprintf("fio: random writes of 1–%d pages, as many as the engine's writes, at fio's own offsets", hi/ps)
		},
	},
	{
		p: Single,
		layout: func(r *rand.Rand, n uint64) []Extent {
			var es []Extent
			for i := r.Uint64N(14); i < n; i += 2 + r.Uint64N(14) {
				es = append(es, Extent{i, 1})
			}
			return es
		},
		fio: func(l *Layout, ps, _ int) ([]string, string) {
			return []string{"--rw=randwrite", "--bs=" + strconv.Itoa(ps), "--number_ios=" + strconv.FormatUint(l.Pages, 10)},
				"fio: random one-page writes, as many as the pattern's pages, at fio's own offsets"
		},
	},
	{
		p:     Hot,
		noFio: "fio has no equivalent of the hot pattern",
	},
}

// Patterns lists the patterns, in the order the documentation gives them.
var Patterns = func() []Pattern {
	ps := make([]Pattern, len(patternTable))
	for i, row := range patternTable {
		ps[i] = row.p
	}
	return ps
}()

// rowOf is p's row of patternTable, or nil.
func rowOf(p Pattern) *patternRow {
	for i := range patternTable {
		if patternTable[i].p == p {
			return &patternTable[i]
		}
	}
	return nil
}

// ParsePattern checks a -pattern value.
func ParsePattern(s string) (Pattern, error) {
	if row := rowOf(Pattern(s)); row != nil {
		return row.p, nil
	}
	names := make([]string, len(Patterns))
	for i, p := range Patterns {
		names[i] = string(p)
	}
	return "", fmt.Errorf("unknown pattern %q (want %s)", s, strings.Join(names, ", "))
}

// Extent is a run of consecutive pages: [Start, Start+Len).
type Extent struct {
	Start, Len uint64
}

// End is one past the extent's last page.
func (e Extent) End() uint64 { return e.Start + e.Len }

// Layout is a flush pattern laid out over a target of N pages: its
// extents in page order, never touching each other.
type Layout struct {
	Pattern Pattern
	Seed    uint64
	N       uint64   // pages on the target
	Extents []Extent // the dirty pages, in order
	Pages   uint64   // pages in Extents
}

// NewLayout lays out pattern p (seq, runs or single) over n pages from
// seed. The draws come from math/rand/v2's PCG seeded with (seed, 0),
// in the order the pattern is laid out from page 0:
//
//	seq:    one extent [0, n)
//	runs:   repeat { run = 1 + Uint64N(32); gap = 1 + Uint64N(32) }: a run
//	        starts at page 0, each gap follows its run; the last run is
//	        cut at n
//	single: the first page is Uint64N(14); after each page come
//	        1 + Uint64N(14) pages that are not dirtied
//
// so a seed names the same pages on every machine and Go release.
func NewLayout(p Pattern, seed, n uint64) (*Layout, error) {
	row := rowOf(p)
	if row == nil || row.layout == nil {
		return nil, fmt.Errorf("bench: pattern %q has no fixed layout", p)
	}
	l := &Layout{Pattern: p, Seed: seed, N: n}
	l.Extents = row.layout(rand.New(rand.NewPCG(seed, 0)), n)
	for _, e := range l.Extents {
		l.Pages += e.Len
	}
	return l, nil
}

// Write is one write of a layout: its pages, and Pos, the position of
// its first page in the layout (where a baseline's source buffer holds it).
type Write struct {
	Extent
	Pos uint64
}

// Writes splits the layout's extents into the writes the engine builds
// for them over a linear mapping: each extent, cut every maxPages pages
// (the engine's MaxIOBytes). The pwrite baseline issues exactly these.
func (l *Layout) Writes(maxPages uint64) []Write {
	maxPages = max(maxPages, 1)
	var out []Write
	pos := uint64(0)
	for _, e := range l.Extents {
		for s := e.Start; s < e.End(); s += maxPages {
			n := min(maxPages, e.End()-s)
			out = append(out, Write{Extent{s, n}, pos})
			pos += n
		}
	}
	return out
}

// Each calls fn for every page of the layout in order with its position
// in the layout (0, 1, …): the position is where baselines keep the
// page in their source buffer.
func (l *Layout) Each(fn func(pos int, index uint64)) {
	pos := 0
	for _, e := range l.Extents {
		for i := e.Start; i < e.End(); i++ {
			fn(pos, i)
			pos++
		}
	}
}
