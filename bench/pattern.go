package bench

import (
	"fmt"
	"math/rand/v2"
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

// Patterns lists the patterns, in the order the documentation gives them.
var Patterns = []Pattern{Seq, Runs, Single, Hot}

// ParsePattern checks a -pattern value.
func ParsePattern(s string) (Pattern, error) {
	for _, p := range Patterns {
		if string(p) == s {
			return p, nil
		}
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
	l := &Layout{Pattern: p, Seed: seed, N: n}
	r := rand.New(rand.NewPCG(seed, 0))
	switch p {
	case Seq:
		if n > 0 {
			l.Extents = []Extent{{0, n}}
		}
	case Runs:
		for i := uint64(0); i < n; {
			run := min(1+r.Uint64N(32), n-i)
			l.Extents = append(l.Extents, Extent{i, run})
			i += run + 1 + r.Uint64N(32)
		}
	case Single:
		for i := r.Uint64N(14); i < n; i += 2 + r.Uint64N(14) {
			l.Extents = append(l.Extents, Extent{i, 1})
		}
	default:
		return nil, fmt.Errorf("bench: pattern %q has no fixed layout", p)
	}
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
