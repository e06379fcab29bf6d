package bench

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	_ "gonum.org/v1/plot/vg/vgimg" // PNG
	_ "gonum.org/v1/plot/vg/vgpdf" // PDF
	_ "gonum.org/v1/plot/vg/vgsvg" // SVG
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
	for _, m := range maxIOs {
		if m > 0 {
			if err := b.CheckMaxIO(m); err != nil {
				return nil, err
			}
		}
	}
	var rep *SweepReport
	for _, m := range maxIOs {
		for _, q := range qds {
			if b.eng == nil || b.eng.askedQD != q || b.eng.askedMaxIO != m {
				if err := b.eng.close(); err != nil {
					return nil, err
				}
				b.eng = nil
				es, err := reopen(ctx, func() (*engineSys, error) { return b.openEngine(q, m) }, reopenWait)
				if err != nil {
					return nil, err
				}
				b.eng = es
			}
			es := b.eng
			_, _, r := b.header(es)
			if rep == nil {
				rep = &SweepReport{SchemaVersion: SchemaVersion, Provenance: r.Provenance, Target: r.Target, Config: r.Config, Pattern: r.Pattern, Warnings: r.Warnings,
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

// reopenWait is how long Sweep retries opening the engine on a block
// device that is still busy from the engine it just closed.
const reopenWait = 5 * time.Second

// reopen opens the engine with open, retrying for up to wait while the
// open fails with EBUSY: the exclusive claim (O_EXCL) of the engine just
// closed can outlive its Close by a moment — the io_uring instance is
// torn down in a kernel worker after the ring's fd is closed, and a
// request it has not freed yet still holds the device's file — and a
// sweep reopens at once.
func reopen(ctx context.Context, open func() (*engineSys, error), wait time.Duration) (*engineSys, error) {
	deadline := time.Now().Add(wait)
	for {
		es, err := open()
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return es, err
		}
		select {
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		case <-time.After(10 * time.Millisecond):
		}
	}
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
	overlap, early := false, false
	for _, p := range r.Points {
		row := []string{strconv.Itoa(p.QueueDepth), humanize.IBytes(uint64(p.MaxIOBytes))}
		for _, n := range names {
			if res := findResult(p.Results, n); res != nil {
				lo, hi := res.Spread()
				cell := fmtRate(res.BytesPerSec, lo, hi, spread)
				if _, ok := res.lowestTimedShare(); ok {
					cell += " !"
					early = true
				}
				row = append(row, cell)
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
			if spread && res.VsEngine.Overlaps() {
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
	if early {
		b.WriteString("(!: in some run under 95% of the bytes the device wrote for this system fell inside its timed part: see the warnings)\n")
	}
	if !spread {
		b.WriteString("(one run per point, the first after the engine was opened: no steady figure and no spread; -runs 3 gives both)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// systemColors gives each system its own color (the Okabe–Ito palette,
// which colour-blind readers can tell apart), the same in every plot.
var systemColors = map[string]color.RGBA{
	"engine": {0x00, 0x72, 0xB2, 0xFF}, // blue
	"kernel": {0xD5, 0x5E, 0x00, 0xFF}, // vermillion
	"pwrite": {0x00, 0x9E, 0x73, 0xFF}, // bluish green
	"fio":    {0xCC, 0x79, 0xA7, 0xFF}, // reddish purple
}

// plotSeries is one line of the sweep plot: one system at one I/O size,
// its steady medians and min–max at each queue depth.
type plotSeries struct {
	System string
	MaxIO  int
	Label  string
	Color  color.RGBA  // the system's
	Dashes []vg.Length // the I/O size's
	Glyph  draw.GlyphDrawer
	QD     []float64
	Median []float64 // GB/s
	Lo, Hi []float64
	// Early marks the points where, in some run, under 95 % of the
	// system's device bytes fell inside its timed part (early_writeback).
	Early []bool
}

// series lays the sweep out as plot series: a color per system, a line
// style (dashes and glyph) per I/O size, so no two series look alike.
func (r *SweepReport) series() []plotSeries {
	var maxIOs []int
	for _, pt := range r.Points {
		if !containsInt(maxIOs, pt.MaxIOBytes) {
			maxIOs = append(maxIOs, pt.MaxIOBytes)
		}
	}
	var out []plotSeries
	for _, name := range r.systemsOf() {
		for k, m := range maxIOs {
			s := plotSeries{System: name, MaxIO: m, Label: name, Color: systemColors[name], Dashes: plotutil.Dashes(k), Glyph: plotutil.Shape(k)}
			if len(maxIOs) > 1 {
				s.Label += ", max-io " + humanize.IBytes(uint64(m))
			}
			for _, pt := range r.Points {
				if pt.MaxIOBytes != m {
					continue
				}
				if res := findResult(pt.Results, name); res != nil && res.BytesPerSec > 0 {
					lo, hi := res.Spread()
					_, early := res.lowestTimedShare()
					s.QD = append(s.QD, float64(pt.QueueDepth))
					s.Median = append(s.Median, res.BytesPerSec/1e9)
					s.Lo, s.Hi = append(s.Lo, lo/1e9), append(s.Hi, hi/1e9)
					s.Early = append(s.Early, early)
				}
			}
			if len(s.QD) > 0 {
				out = append(out, s)
			}
		}
	}
	return out
}

// Plot draws throughput against queue depth (log scale): for each
// system at each I/O size the steady median as a line, with the min–max
// of the steady runs as a shaded band; a color per system, a line style
// per I/O size, the legend to the right of the data. It writes path
// (.svg, .png or .pdf) and a PNG beside an SVG or PDF (an SVG beside a
// PNG), and returns the files written.
func (r *SweepReport) Plot(path string) ([]string, error) {
	series := r.series()
	if len(series) == 0 {
		return nil, fmt.Errorf("bench: plot: no results to draw")
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("wbbench sweep: %s pattern, %s pages, %s", r.Pattern, humanize.IBytes(uint64(r.Config.PageSize)), r.Target.Path)
	p.X.Label.Text = "queue depth"
	p.Y.Label.Text = "throughput, GB/s (line: median; band: min–max)"
	p.X.Scale = plot.LogScale{}
	var qds []int
	hi := 0.0
	for _, s := range series {
		for i, q := range s.QD {
			if !containsInt(qds, int(q)) {
				qds = append(qds, int(q))
			}
			hi = max(hi, s.Hi[i], s.Median[i])
		}
	}
	slices.Sort(qds)
	var ticks []plot.Tick
	for _, q := range qds {
		ticks = append(ticks, plot.Tick{Value: float64(q), Label: strconv.Itoa(q)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	// Room around the first and last queue depth, so neither the points
	// nor the tick labels sit on the edge.
	p.X.Min, p.X.Max = float64(qds[0])/1.3, float64(qds[len(qds)-1])*1.3
	p.Y.Min, p.Y.Max = 0, hi*1.08

	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	var names []string
	early := false
	for _, s := range series {
		if err := addSeries(p, &legend, s); err != nil {
			return nil, err
		}
		names = append(names, s.Label)
		early = early || slices.Contains(s.Early, true)
	}
	if early {
		note := "! early writeback (see the warnings)"
		legend.Add(note)
		names = append(names, note)
	}
	files := []string{path}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg", ".pdf":
		files = append(files, strings.TrimSuffix(path, filepath.Ext(path))+".png")
	case ".png":
		files = append(files, strings.TrimSuffix(path, filepath.Ext(path))+".svg")
	default:
		return nil, fmt.Errorf("bench: plot %s: want a file ending in .svg, .png or .pdf", path)
	}
	for _, f := range files {
		if err := savePlot(p, &legend, names, f); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// addSeries draws one series: its min–max band (translucent, in the
// system's color), its median line and markers, and a "!" over each
// point flagged for early writeback; and adds it to the legend.
func addSeries(p *plot.Plot, legend *plot.Legend, s plotSeries) error {
	if len(s.QD) > 1 && !slices.Equal(s.Lo, s.Hi) {
		band := plotter.XYs{}
		for i := range s.QD {
			band = append(band, plotter.XY{X: s.QD[i], Y: s.Lo[i]})
		}
		for i := len(s.QD) - 1; i >= 0; i-- {
			band = append(band, plotter.XY{X: s.QD[i], Y: s.Hi[i]})
		}
		poly, err := plotter.NewPolygon(band)
		if err != nil {
			return fmt.Errorf("bench: plot: %w", err)
		}
		// Translucent (color.RGBA is alpha-premultiplied: NRGBA).
		poly.Color = color.NRGBA{R: s.Color.R, G: s.Color.G, B: s.Color.B, A: 0x30}
		poly.LineStyle.Width = 0
		p.Add(poly)
	}
	xys := make(plotter.XYs, len(s.QD))
	var marks plotter.XYLabels
	for i := range s.QD {
		xys[i] = plotter.XY{X: s.QD[i], Y: s.Median[i]}
		if s.Early[i] {
			marks.XYs = append(marks.XYs, xys[i])
			marks.Labels = append(marks.Labels, "!")
		}
	}
	line, points, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	line.Color, line.Dashes, line.Width = s.Color, s.Dashes, vg.Points(1.5)
	points.Color, points.Shape = s.Color, s.Glyph
	p.Add(line, points)
	if len(marks.XYs) > 0 {
		labels, err := plotter.NewLabels(marks)
		if err != nil {
			return fmt.Errorf("bench: plot: %w", err)
		}
		for i := range labels.TextStyle {
			labels.TextStyle[i].Color = s.Color
			labels.TextStyle[i].Font.Size = vg.Points(14)
		}
		labels.Offset = vg.Point{X: vg.Points(-2), Y: vg.Points(6)}
		p.Add(labels)
	}
	legend.Add(s.Label, line, points)
	return nil
}

// savePlot draws p with its legend in a column to the right of it
// (outside the data) into file, in the format its extension names.
func savePlot(p *plot.Plot, legend *plot.Legend, names []string, file string) error {
	const w, h = 11 * vg.Inch, 5.5 * vg.Inch
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(file)), ".")
	c, err := draw.NewFormattedCanvas(w, h, format)
	if err != nil {
		return fmt.Errorf("bench: plot %s: %w", file, err)
	}
	dc := draw.New(c)
	// The legend's column: as wide as its longest entry.
	lw := vg.Length(0)
	for _, name := range names {
		lw = max(lw, legend.TextStyle.Width(name))
	}
	lw += legend.ThumbnailWidth + 3*legend.TextStyle.Width(" ") + vg.Points(12)
	plotArea, legendArea := dc, dc
	plotArea.Max.X -= lw
	legendArea.Min.X = plotArea.Max.X + vg.Points(12)
	legendArea.Max.Y -= vg.Points(28) // level with the data, below the title
	p.Draw(plotArea)
	legend.Draw(legendArea)
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
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
