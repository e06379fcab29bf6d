package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// SweepPoint is every system's numbers at one queue depth and I/O size,
// with the configuration the engine ran with there (its queue depth and
// I/O size, its ring's setup) and fio's exact command line in fio's
// result.
type SweepPoint struct {
	QueueDepth int        `json:"queue_depth"`
	MaxIOBytes int        `json:"max_io_bytes"`
	Config     ConfigInfo `json:"config"`
	Results    []Result   `json:"results"`
}

// SweepReport is what a sweep found: wbbench sweep -json prints it.
// Config is the first point's; each point has its own.
type SweepReport struct {
	SchemaVersion int          `json:"schema_version"`
	Provenance    Provenance   `json:"provenance"`
	Target        TargetInfo   `json:"target"`
	Config        ConfigInfo   `json:"config"`
	Pattern       string       `json:"pattern"`
	PatternPages  uint64       `json:"pattern_pages"`
	PatternBytes  int64        `json:"pattern_bytes"`
	Extents       int          `json:"extents,omitempty"`
	Points        []SweepPoint `json:"points"`
	Skipped       []Skip       `json:"skipped,omitempty"`
	Warnings      []string     `json:"warnings,omitempty"`
	Errors        []string     `json:"errors,omitempty"`
}

// Sweep runs the flush benchmark (engine and baselines, Runs cycles
// each) at every queue depth in qds for every I/O size in maxIOs (0 or
// none: the engine's default), reopening the engine on the same cache
// for each setting.
func (b *Bench) Sweep(ctx context.Context, qds, maxIOs []int) (*SweepReport, error) {
	if b.layout == nil {
		return nil, usagef("-pattern %s: sweep measures flushes; use seq, runs or single", b.opts.Pattern)
	}
	if len(maxIOs) == 0 {
		maxIOs = []int{0}
	}
	var rep *SweepReport
	for _, m := range maxIOs {
		for _, q := range qds {
			if b.eng == nil || b.eng.askedQD != q || b.eng.askedMaxIO != m {
				if err := b.eng.close(); err != nil {
					return nil, err
				}
				b.eng = nil
				es, err := b.openEngine(q, m)
				if err != nil {
					return nil, err
				}
				b.eng = es
			}
			es := b.eng
			_, _, r := b.header(es)
			if rep == nil {
				rep = &SweepReport{SchemaVersion: SchemaVersion, Provenance: r.Provenance, Target: r.Target, Config: r.Config, Pattern: r.Pattern,
					PatternPages: r.PatternPages, PatternBytes: r.PatternBytes, Extents: r.Extents, Skipped: r.Skipped}
			}
			b.setRunLabel(fmt.Sprintf("qd %d, max-io %s · ", es.cfg.QueueDepth, humanize.IBytes(uint64(es.cfg.MaxIOBytes))))
			results, errs, err := b.measure(ctx, es)
			if err != nil {
				return nil, err
			}
			at := fmt.Sprintf("qd %d, max-io %s: ", es.cfg.QueueDepth, humanize.IBytes(uint64(es.cfg.MaxIOBytes)))
			for _, e := range errs {
				rep.Errors = append(rep.Errors, at+e)
			}
			for _, w := range deviceWarnings(results, false, b.hold != nil) {
				rep.Warnings = append(rep.Warnings, at+w)
			}
			rep.Points = append(rep.Points, SweepPoint{QueueDepth: es.cfg.QueueDepth, MaxIOBytes: es.cfg.MaxIOBytes, Config: r.Config, Results: results})
		}
	}
	roundFloats(rep)
	return rep, nil
}

// systemsOf lists the systems that have results in the sweep, engine
// first.
func (r *SweepReport) systemsOf() []string {
	var names []string
	for _, name := range append([]string{"engine"}, Baselines...) {
		for _, p := range r.Points {
			if findResult(p.Results, name) != nil {
				names = append(names, name)
				break
			}
		}
	}
	return names
}

func findResult(rs []Result, name string) *Result {
	for i := range rs {
		if rs[i].Name == name {
			return &rs[i]
		}
	}
	return nil
}

// WriteText writes the sweep for people: the header, then one table with
// a row per setting and a throughput column per system.
func (r *SweepReport) WriteText(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	c.Runs = max(c.Runs, 1)
	writeHeader(&b, &r.Target, &c, "qd and max-io as in the table", r.Pattern, r.PatternPages, r.PatternBytes, r.Extents)
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "skipped  %s: %s\n", s.Name, s.Reason)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning  %s\n", w)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error    %s\n", e)
	}
	b.WriteString("\n")
	names := r.systemsOf()
	head := []string{"qd", "max-io"}
	head = append(head, names...)
	for _, n := range names[min(1, len(names)):] {
		head = append(head, n+"/engine")
	}
	rows := [][]string{head}
	spread := c.Runs > 1
	overlap := false
	for _, p := range r.Points {
		row := []string{strconv.Itoa(p.QueueDepth), humanize.IBytes(uint64(p.MaxIOBytes))}
		for _, n := range names {
			if res := findResult(p.Results, n); res != nil {
				lo, hi := res.Spread()
				row = append(row, fmtRate(res.BytesPerSec, lo, hi, spread))
			} else {
				row = append(row, "—")
			}
		}
		for _, n := range names[min(1, len(names)):] {
			res := findResult(p.Results, n)
			if res == nil || res.VsEngine == nil {
				row = append(row, "—")
				continue
			}
			cell := fmtRatio(res.VsEngine, spread)
			if spread && res.VsEngine.Overlap {
				cell += " ≈"
				overlap = true
			}
			row = append(row, cell)
		}
		rows = append(rows, row)
	}
	writeColumns(&b, rows, 0)
	if overlap {
		b.WriteString("(≈: the two systems' min–max over the steady runs overlap, so the runs do not tell them apart)\n")
	}
	if !spread {
		b.WriteString("(one run per point, the first after the engine was opened: no steady figure and no spread; -runs 3 gives both)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Plot draws throughput against queue depth (log scale), one line per
// system (per system and I/O size when the sweep has several), into
// path; the format follows its extension (.svg, .png, .pdf).
func (r *SweepReport) Plot(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s pattern, %s pages, on %s", r.Pattern, humanize.IBytes(uint64(r.Config.PageSize)), r.Target.Path)
	p.X.Label.Text = "queue depth"
	p.Y.Label.Text = "throughput (GB/s)"
	p.X.Scale = plot.LogScale{}
	p.Legend.Top = true

	var maxIOs []int
	var qds []int
	for _, pt := range r.Points {
		if !containsInt(maxIOs, pt.MaxIOBytes) {
			maxIOs = append(maxIOs, pt.MaxIOBytes)
		}
		if !containsInt(qds, pt.QueueDepth) {
			qds = append(qds, pt.QueueDepth)
		}
	}
	var ticks []plot.Tick
	for _, q := range qds {
		ticks = append(ticks, plot.Tick{Value: float64(q), Label: strconv.Itoa(q)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	var lines []any
	for _, name := range r.systemsOf() {
		for _, m := range maxIOs {
			var xys plotter.XYs
			for _, pt := range r.Points {
				if pt.MaxIOBytes != m {
					continue
				}
				if res := findResult(pt.Results, name); res != nil && res.BytesPerSec > 0 {
					xys = append(xys, plotter.XY{X: float64(pt.QueueDepth), Y: res.BytesPerSec / 1e9})
				}
			}
			if len(xys) == 0 {
				continue
			}
			label := name
			if len(maxIOs) > 1 {
				label += " " + humanize.IBytes(uint64(m))
			}
			lines = append(lines, label, xys)
		}
	}
	if len(lines) == 0 {
		return fmt.Errorf("bench: plot: no results to draw")
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	p.Y.Min = 0
	p.Y.Max *= 1.3 // room for the legend above the lines
	if err := p.Save(9*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	return nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
