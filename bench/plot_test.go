package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sweepForPlot is a made-up sweep: four systems at two I/O sizes and
// five queue depths, three steady runs each.
func sweepForPlot() *SweepReport {
	r := &SweepReport{Pattern: "seq", Config: ConfigInfo{PageSize: 4096}, Target: TargetInfo{Path: "/dev/loop9"}}
	for k, m := range []int{128 << 10, 1 << 20} {
		for _, q := range []int{1, 2, 4, 8, 16, 32, 64, 128} {
			pt := SweepPoint{QueueDepth: q, MaxIOBytes: m}
			for i, name := range []string{"engine", "kernel", "pwrite", "fio"} {
				v := (1 + float64(i)/4 + float64(k)/2) * math.Log2(float64(q)+1) * 1e9
				var ss []Sample
				for run, f := range []float64{0.7, 0.9, 1, 1.1} {
					ss = append(ss, Sample{Run: run + 1, Bytes: 1 << 30, Seconds: float64(1<<30) / (v * f)})
				}
				if name == "kernel" && q == 8 {
					// Run 3 was written back before its timed part.
					ss[2].setDevice(&DeviceIO{WriteBytes: 1 << 30, TimedWriteBytes: 1 << 28, TimedShare: 0.25})
				}
				for j := range ss {
					ss[j].derive(4096)
				}
				pt.Results = append(pt.Results, aggregate(name, ss))
			}
			r.Points = append(r.Points, pt)
		}
	}
	return r
}

// TestPlotSeries: one color per system, a line style per I/O size, so
// no two series look alike; each carries its median and min–max.
func TestPlotSeries(t *testing.T) {
	ss := sweepForPlot().series()
	if len(ss) != 8 {
		t.Fatalf("%d series, want 8 (4 systems × 2 I/O sizes)", len(ss))
	}
	colorOf := map[string]color.RGBA{}
	type look struct {
		c      color.RGBA
		dashes string
	}
	seen := map[look]string{}
	for _, s := range ss {
		if c, ok := colorOf[s.System]; ok && c != s.Color {
			t.Fatalf("%s drawn in two colors", s.System)
		}
		colorOf[s.System] = s.Color
		l := look{s.Color, strconv.Quote(string(rune(len(s.Dashes)))) + func() string {
			var b []byte
			for _, d := range s.Dashes {
				b = strconv.AppendFloat(b, float64(d), 'g', -1, 64)
			}
			return string(b)
		}()}
		if other, ok := seen[l]; ok {
			t.Fatalf("%s and %s look the same (color and dashes)", s.Label, other)
		}
		seen[l] = s.Label
		if len(s.QD) != 8 || len(s.Lo) != 8 || s.Lo[3] >= s.Median[3] || s.Hi[3] <= s.Median[3] {
			t.Fatalf("%s: qd %v, median %v, lo %v, hi %v", s.Label, s.QD, s.Median, s.Lo, s.Hi)
		}
		if want := s.System == "kernel"; s.Early[3] != want || s.Early[2] {
			t.Fatalf("%s: early writeback marks %v; want qd 8 marked for the kernel only", s.Label, s.Early)
		}
	}
	var colors []color.RGBA
	for _, c := range colorOf {
		if slices.Contains(colors, c) {
			t.Fatalf("two systems share the color %v", c)
		}
		colors = append(colors, c)
	}
}

// TestPlotFiles: -plot x.svg writes x.svg and x.png; the legend is to
// the right of the data, and no tick label runs off the picture.
func TestPlotFiles(t *testing.T) {
	dir := t.TempDir()
	files, err := sweepForPlot().Plot(filepath.Join(dir, "sweep.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(files, []string{filepath.Join(dir, "sweep.svg"), filepath.Join(dir, "sweep.png")}) {
		t.Fatalf("wrote %q", files)
	}
	png, err := os.ReadFile(files[1])
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Fatalf("PNG: %v, %d bytes", err, len(png))
	}
	svg, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	// vgsvg writes each text as <text x="X" y="Y" …>TEXT</text> inside a
	// group translated by the picture's height.
	texts := regexp.MustCompile(`<text x="([-0-9.]+)" y="([-0-9.]+)"[^>]*>([^<]*)</text>`).FindAllSubmatch(svg, -1)
	width := 11 * 72.0
	xOf := map[string]float64{}
	for _, m := range texts {
		x, _ := strconv.ParseFloat(string(m[1]), 64)
		name := string(m[3])
		if x < 0 || x > width {
			t.Fatalf("text %q at x=%v, outside the %v-point picture", name, x, width)
		}
		if _, ok := xOf[name]; !ok {
			xOf[name] = x
		}
	}
	if _, ok := xOf["!"]; !ok {
		t.Fatal("no ! over the point with early writeback")
	}
	if _, ok := xOf["! early writeback (see the warnings)"]; !ok {
		t.Fatal("the legend does not explain the !")
	}
	tick, ok := xOf["128"]
	legend, ok2 := xOf["engine, max-io 128 KiB"]
	if !ok || !ok2 {
		t.Fatalf("no tick label 128 or legend entry in the SVG (%d texts)", len(texts))
	}
	// The last tick label is centred on its tick; the legend starts right
	// of it, beyond the data.
	if legend <= tick+20 {
		t.Fatalf("legend at x=%v, not right of the last tick (x=%v): inside the data", legend, tick)
	}
	if tick+20 > width-150 {
		t.Fatalf("the last tick label at x=%v is too close to the picture's edge %v", tick, width)
	}
}

// TestSweepTable: each cell has its spread, each ratio its own, ≈ where
// the ranges overlap and ! where the device wrote most bytes early.
func TestSweepTable(t *testing.T) {
	r := sweepForPlot()
	r.Config.Runs = 4
	for i := range r.Points {
		compare(r.Points[i].Results)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"kernel/engine", " ≈", " !", "(≈: the two systems' min–max", "(!: in some run under 95% of the bytes"} {
		if !strings.Contains(out, want) {
			t.Fatalf("sweep table lacks %q:\n%s", want, out)
		}
	}
}

// TestReopenRetriesBusy: a sweep's reopen of the engine retries while
// the device is still busy from the engine just closed, and gives up on
// any other error at once.
func TestReopenRetriesBusy(t *testing.T) {
	calls := 0
	busy := fmt.Errorf("engine: open: ring: open /dev/loop9: %w", unix.EBUSY)
	es, err := reopen(context.Background(), func() (*engineSys, error) {
		calls++
		if calls < 3 {
			return nil, busy
		}
		return &engineSys{}, nil
	}, time.Second)
	if err != nil || es == nil || calls != 3 {
		t.Fatalf("reopen: %v after %d calls; want success on the third", err, calls)
	}
	calls = 0
	other := errors.New("engine: bad config")
	if _, err := reopen(context.Background(), func() (*engineSys, error) { calls++; return nil, other }, time.Second); err != other || calls != 1 {
		t.Fatalf("reopen: %v after %d calls; want the error at once", err, calls)
	}
	calls = 0
	if _, err := reopen(context.Background(), func() (*engineSys, error) { calls++; return nil, busy }, 30*time.Millisecond); !errors.Is(err, unix.EBUSY) || calls < 2 {
		t.Fatalf("reopen: %v after %d calls; want EBUSY after retrying", err, calls)
	}
}
