package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/ring"
)

// run is wbbench with args (without the program name).
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// wb runs wbbench in-process and returns its exit status and output.
func wb(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// e2eTarget is a target for a short end-to-end run and the baselines
// it can take: as root a /dev/shm loop device with kernel and pwrite,
// else an O_DIRECT file with pwrite (and the test says what it skipped).
func e2eTarget(t *testing.T, size int64) (path, baselines string) {
	t.Helper()
	if err := loopdevtest.Available(); err != nil {
		t.Logf("no loop device (%v): running on an O_DIRECT file with -baseline pwrite; the kernel baseline is skipped", err)
		return loopdevtest.ShmFile(t, size), "pwrite"
	}
	return loopdevtest.ForTest(t, size, 0).Path, "kernel,pwrite"
}

// oneLine checks a usage failure: status 2, nothing on stdout, one line
// on stderr that mentions want.
func oneLine(t *testing.T, code int, stdout, stderr, want string) {
	t.Helper()
	if code != exitUsage || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("status %d, stdout %q, stderr %q; want status 2, no stdout, one line mentioning %q", code, stdout, stderr, want)
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 8<<20))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRefuseExt4Image(t *testing.T) {
	path := loopdevtest.TempFile(t, 8<<20)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var magic [2]byte
	binary.LittleEndian.PutUint16(magic[:], 0xEF53)
	f.WriteAt(magic[:], 1024+56)
	f.Close()
	before := readAll(t, path)
	code, out, errOut := wb(t, "-device", path, "-baseline", "none")
	oneLine(t, code, out, errOut, "ext2/3/4 file-system signature")
	if !strings.Contains(errOut, "-force") {
		t.Fatalf("the refusal does not say how to override: %q", errOut)
	}
	if !bytes.Equal(readAll(t, path), before) {
		t.Fatal("the refused image was written to")
	}
	// With -force it runs (and overwrites the superblock).
	if code, _, errOut := wb(t, "-device", path, "-baseline", "none", "-force"); code != 0 {
		t.Fatalf("-force: status %d: %s", code, errOut)
	}
}

func TestRefuseHeldExclusively(t *testing.T) {
	d := loopdevtest.ForTest(t, 8<<20, 0)
	fd, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := wb(t, "-device", d.Path, "-baseline", "none")
	unix.Close(fd)
	oneLine(t, code, out, errOut, "held open exclusively")
	if !bytes.Equal(readAll(t, d.Path), make([]byte, 8<<20)) {
		t.Fatal("the refused device was written to")
	}
}

func TestRefuseSizePastEnd(t *testing.T) {
	path := loopdevtest.TempFile(t, 8<<20)
	code, out, errOut := wb(t, "-device", path, "-size", "16MiB", "-baseline", "none")
	oneLine(t, code, out, errOut, "-size 16 MiB (16777216 bytes) is past the end")
	if !bytes.Equal(readAll(t, path), make([]byte, 8<<20)) {
		t.Fatal("written to")
	}
}

func TestRefuseMissingDevice(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	code, out, errOut := wb(t, "-device", missing)
	oneLine(t, code, out, errOut, "-device "+missing+": no such device")
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("wbbench created the missing device")
	}
	code, out, errOut = wb(t, "-device", "/dev/null")
	oneLine(t, code, out, errOut, "-device /dev/null: not a block device or regular file")
}

func TestRefusePageSize(t *testing.T) {
	path := loopdevtest.TempFile(t, 8<<20)
	code, out, errOut := wb(t, "-device", path, "-page-size", "256", "-baseline", "none")
	oneLine(t, code, out, errOut, "-page-size 256")
	code, out, errOut = wb(t, "-device", path, "-page-size", "3000", "-baseline", "none")
	oneLine(t, code, out, errOut, "-page-size 3000")
	if err := loopdevtest.Available(); err != nil {
		t.Skipf("skipping the 4096-byte-sector device case: %v", err)
	}
	d := loopdevtest.ForTest(t, 8<<20, 4096)
	code, out, errOut = wb(t, "-device", d.Path, "-page-size", "512", "-baseline", "none")
	oneLine(t, code, out, errOut, "-page-size 512: "+d.Path+" has 4096-byte logical blocks")
}

func TestRingIceberNotBuilt(t *testing.T) {
	if slices.Contains(ring.Backends(), "iceber") {
		t.Skip("this test binary has the iceber backend")
	}
	path := loopdevtest.TempFile(t, 8<<20)
	code, out, errOut := wb(t, "-device", path, "-ring", "iceber", "-baseline", "none")
	oneLine(t, code, out, errOut, "-tags iceber")
}

// jsonDoc is the -json schema, written out independently of the bench
// types so a renamed field fails here.
type jsonDoc struct {
	SchemaVersion int `json:"schema_version"`
	Provenance    struct {
		Wbbench     string            `json:"wbbench"`
		Go          string            `json:"go"`
		Time        string            `json:"time"`
		Kernel      string            `json:"kernel"`
		CPUModel    string            `json:"cpu_model"`
		CPUs        int               `json:"cpus"`
		CommandLine []string          `json:"command_line"`
		Sysctls     map[string]string `json:"sysctls"`
	} `json:"provenance"`
	Target struct {
		Path             string `json:"path"`
		Size             int64  `json:"size"`
		LogicalBlockSize int    `json:"logical_block_size"`
		Kind             string `json:"kind"`
		Queue            *struct {
			NrRequests        int    `json:"nr_requests"`
			MaxSectorsKB      int    `json:"max_sectors_kb"`
			MaxHwSectorsKB    int    `json:"max_hw_sectors_kb"`
			LogicalBlockSize  int    `json:"logical_block_size"`
			PhysicalBlockSize int    `json:"physical_block_size"`
			Rotational        *bool  `json:"rotational"`
			WriteCache        string `json:"write_cache"`
		} `json:"queue"`
		FileSystem string `json:"file_system"`
	} `json:"target"`
	Config struct {
		PageSize   int    `json:"page_size"`
		QueueDepth int    `json:"queue_depth"`
		MaxIOBytes int    `json:"max_io_bytes"`
		Ring       string `json:"ring"`
		Backend    string `json:"backend"`
		Runs       int    `json:"runs"`
	} `json:"config"`
	Pattern string       `json:"pattern"`
	Results []jsonResult `json:"results"`
}

type jsonResult struct {
	Name         string       `json:"name"`
	Bytes        int64        `json:"bytes"`
	Seconds      float64      `json:"seconds"`
	TotalSeconds float64      `json:"total_seconds"`
	BytesPerSec  float64      `json:"bytes_per_sec"`
	PagesPerSec  float64      `json:"pages_per_sec"`
	IOs          int64        `json:"ios"`
	PagesPerIO   float64      `json:"pages_per_io"`
	CPUSeconds   float64      `json:"cpu_seconds"`
	CPUUser      float64      `json:"cpu_user_seconds"`
	CPUSystem    float64      `json:"cpu_system_seconds"`
	Latency      *jsonLatency `json:"latency_us"`
	SubmitBatch  *jsonBatch   `json:"submit_batch"`
	CompleteBat  *jsonBatch   `json:"complete_batch"`
	Runs         []jsonResult `json:"runs"`
}

// jsonLatency is a latency distribution as fio gives it, in µs.
type jsonLatency struct {
	N     int64   `json:"n"`
	Mean  float64 `json:"mean"`
	Stdev float64 `json:"stdev"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	P1    float64 `json:"p1"`
	P5    float64 `json:"p5"`
	P10   float64 `json:"p10"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	P9999 float64 `json:"p9999"`
}

// ordered reports whether the distribution is whole and in order:
// min ≤ p1 ≤ … ≤ p99.99 ≤ max, mean inside, a count.
func (l *jsonLatency) ordered() bool {
	if l == nil || l.N <= 0 || l.Stdev < 0 || l.Mean < l.Min || l.Mean > l.Max {
		return false
	}
	q := []float64{l.Min, l.P1, l.P5, l.P10, l.P50, l.P90, l.P95, l.P99, l.P999, l.P9999}
	for i := 1; i < len(q); i++ {
		if q[i] < q[i-1] {
			return false
		}
	}
	return l.Min > 0 && l.P9999 > 0
}

type jsonBatch struct {
	N    int64   `json:"n"`
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

// checkRounded fails if a number with a fraction or an exponent in the
// JSON document has more than 4 significant digits.
func checkRounded(t *testing.T, doc string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	n := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		num, ok := tok.(json.Number)
		if !ok || !strings.ContainsAny(string(num), ".eE") {
			continue
		}
		n++
		mant := strings.TrimLeft(strings.SplitN(strings.ToLower(string(num)), "e", 2)[0], "-")
		digits := strings.TrimLeft(strings.ReplaceAll(mant, ".", ""), "0")
		if strings.Contains(mant, ".") {
			digits = strings.TrimRight(digits, "0")
		}
		if len(digits) > 4 {
			t.Fatalf("%s has %d significant digits; numbers are rounded to 4", num, len(digits))
		}
	}
	if n == 0 {
		t.Fatal("no fractional number in the document")
	}
}

// decodeOne decodes stdout as exactly one JSON document.
func decodeOne(t *testing.T, stdout string) jsonDoc {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	var doc jsonDoc
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("more than one JSON document on stdout: %v", err)
	}
	return doc
}

func TestJSONSchema(t *testing.T) {
	path, baselines := e2eTarget(t, 32<<20)
	code, out, errOut := wb(t, "-device", path, "-pattern", "runs", "-baseline", baselines, "-runs", "2", "-json", "-seed", "3")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	doc := decodeOne(t, out)
	checkRounded(t, out)
	wantKind := "file"
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		wantKind = "block"
	}
	// Provenance: what a storage engineer needs to trust or repeat it.
	p := doc.Provenance
	if doc.SchemaVersion != 2 || p.Wbbench == "" || p.Go != runtime.Version() || p.Kernel == "" || p.CPUs != runtime.NumCPU() ||
		p.CPUModel == "" || p.Sysctls["vm.dirty_ratio"] == "" || p.Sysctls["vm.dirty_background_ratio"] == "" ||
		!slices.Equal(p.CommandLine, []string{"wbbench", "-device", path, "-pattern", "runs", "-baseline", baselines, "-runs", "2", "-json", "-seed", "3"}) {
		t.Fatalf("schema %d, provenance %+v", doc.SchemaVersion, p)
	}
	if _, err := time.Parse(time.RFC3339, p.Time); err != nil {
		t.Fatalf("provenance time %q: %v", p.Time, err)
	}
	if q := doc.Target.Queue; wantKind == "block" && (q == nil || q.NrRequests <= 0 || q.MaxSectorsKB <= 0 || q.MaxHwSectorsKB < q.MaxSectorsKB ||
		q.LogicalBlockSize < 512 || q.PhysicalBlockSize < q.LogicalBlockSize || q.Rotational == nil || q.WriteCache == "") {
		t.Fatalf("block device queue limits %+v", q)
	} else if wantKind == "file" && doc.Target.FileSystem == "" {
		t.Fatalf("a file target without its file system: %+v", doc.Target)
	}
	if strings.Contains(out, `"faults_off"`) {
		t.Fatal(`"faults_off" in a report of a run without -inject`)
	}
	if doc.Target.Path != path || doc.Target.Size != 32<<20 || doc.Target.LogicalBlockSize < 512 || doc.Target.Kind != wantKind {
		t.Fatalf("target %+v", doc.Target)
	}
	// The default queue depth is 32, or a block device's nr_requests
	// clamped to 32..128.
	if doc.Config.PageSize != 4096 || doc.Config.QueueDepth < 32 || doc.Config.QueueDepth > 128 || (wantKind == "file" && doc.Config.QueueDepth != 32) || doc.Config.MaxIOBytes <= 0 || doc.Config.Ring != "auto" || doc.Config.Backend == "" || doc.Config.Runs != 2 {
		t.Fatalf("config %+v", doc.Config)
	}
	if doc.Pattern != "runs" {
		t.Fatalf("pattern %q", doc.Pattern)
	}
	var names []string
	for _, r := range doc.Results {
		names = append(names, r.Name)
		if r.Bytes <= 0 || r.Seconds <= 0 || r.TotalSeconds < r.Seconds || r.BytesPerSec <= 0 || r.PagesPerSec <= 0 ||
			r.IOs <= 0 || r.PagesPerIO < 1 || r.CPUSeconds < 0 || len(r.Runs) != 2 {
			t.Fatalf("result %+v", r)
		}
		if r.Name != "kernel" && !r.Latency.ordered() {
			t.Fatalf("%s latency %+v: want n, mean, stdev, min, p1 … p99.99, max, in order", r.Name, r.Latency)
		}
		if d := r.CPUSeconds - r.CPUUser - r.CPUSystem; d > 1e-3 || d < -1e-3 || r.CPUUser < 0 || r.CPUSystem < 0 {
			t.Fatalf("%s: CPU %v s is not user %v + system %v", r.Name, r.CPUSeconds, r.CPUUser, r.CPUSystem)
		}
		if r.Name == "engine" && (r.SubmitBatch == nil || r.SubmitBatch.N <= 0 || r.SubmitBatch.Min < 1 || r.SubmitBatch.Max < r.SubmitBatch.Mean ||
			r.CompleteBat == nil || r.CompleteBat.N <= 0 || r.CompleteBat.Min < 1) {
			t.Fatalf("engine batches %+v %+v: want submission and completion batch sizes", r.SubmitBatch, r.CompleteBat)
		}
	}
	if want := append([]string{"engine"}, strings.Split(baselines, ",")...); !slices.Equal(names, want) {
		t.Fatalf("results %v, want %v", names, want)
	}
}

// TestPatterns runs every pattern end to end, small.
func TestPatterns(t *testing.T) {
	for _, p := range []string{"seq", "runs", "single", "hot"} {
		t.Run(p, func(t *testing.T) {
			path, baselines := e2eTarget(t, 32<<20)
			args := []string{"-device", path, "-pattern", p, "-baseline", baselines}
			if p == "hot" {
				args = append(args, "-duration", "300ms", "-sync-every", "50ms", "-writers", "2")
			}
			code, out, errOut := wb(t, args...)
			if code != 0 {
				t.Fatalf("status %d: %s\n%s", code, errOut, out)
			}
			want := append([]string{"engine"}, strings.Split(baselines, ",")...)
			table := tableOf(out)
			if len(table) != len(want)+1 || !strings.HasPrefix(table[0], "system") {
				t.Fatalf("output does not end with the table:\n%s", out)
			}
			for i, name := range want {
				if !strings.HasPrefix(table[i+1], name+" ") {
					t.Fatalf("table row %d is %q, want %s:\n%s", i+1, table[i+1], name, out)
				}
			}
			if !strings.Contains(out, "target   "+path) || !strings.Contains(out, "pattern  "+p) {
				t.Fatalf("output does not name the target and pattern:\n%s", out)
			}
		})
	}
}

// TestDefaultTarget: with no -device wbbench makes a target, says which,
// and removes it.
func TestDefaultTarget(t *testing.T) {
	code, out, errOut := wb(t, "-size", "16MiB", "-baseline", "pwrite", "-json")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	var doc struct {
		Target struct {
			Path string `json:"path"`
			Made string `json:"made"`
		} `json:"target"`
		Config struct {
			Runs int `json:"runs"`
		} `json:"config"`
		Results []struct {
			Name       string `json:"name"`
			SteadyRuns int    `json:"steady_runs"`
			First      *struct {
				Run         int     `json:"run"`
				BytesPerSec float64 `json:"bytes_per_sec"`
			} `json:"first_cycle"`
			Min  float64 `json:"bytes_per_sec_min"`
			Max  float64 `json:"bytes_per_sec_max"`
			Runs []struct {
				Run int `json:"run"`
			} `json:"runs"`
			VsEngine *struct {
				Ratio, Min, Max float64
				Overlap         *bool `json:"overlap"`
			} `json:"vs_engine"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	// By default, enough runs for a steady median and its spread, run 1
	// apart, and every ratio with its spread.
	if doc.Config.Runs != 5 || len(doc.Results) != 2 {
		t.Fatalf("config runs %d, %d results; want 5 runs by default, engine and pwrite", doc.Config.Runs, len(doc.Results))
	}
	for _, r := range doc.Results {
		if r.SteadyRuns != 4 || r.First == nil || r.First.Run != 1 || len(r.Runs) != 5 || r.Runs[4].Run != 5 || r.Min <= 0 || r.Max < r.Min {
			t.Fatalf("%s: %+v; want runs 1–5 in order, run 1 apart, a median of 4 with its min–max", r.Name, r)
		}
		if r.Name == "pwrite" && (r.VsEngine == nil || r.VsEngine.Min > r.VsEngine.Ratio || r.VsEngine.Max < r.VsEngine.Ratio || r.VsEngine.Overlap == nil) {
			t.Fatalf("pwrite vs engine %+v; want a ratio inside its spread and an overlap flag", r.VsEngine)
		}
	}
	if doc.Target.Made == "" {
		t.Fatalf("target %+v: does not say it was made", doc.Target)
	}
	t.Logf("made %s: %s", doc.Target.Path, doc.Target.Made)
	if strings.HasPrefix(doc.Target.Path, "/dev/loop") {
		file := strings.TrimSuffix(strings.TrimPrefix(doc.Target.Made, "a loop device over "), ", made for this run")
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("backing file %s left behind (%v)", file, err)
		}
		if o, _ := exec.Command("losetup", "-j", file).Output(); len(bytes.TrimSpace(o)) > 0 {
			t.Fatalf("loop device left attached: %s", o)
		}
	} else if _, err := os.Stat(doc.Target.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary target %s left behind (%v)", doc.Target.Path, err)
	}
}

func TestVerifyJournalCheck(t *testing.T) {
	path, _ := e2eTarget(t, 16<<20)
	journal := filepath.Join(t.TempDir(), "journal")
	code, out, errOut := wb(t, "-device", path, "-pattern", "hot", "-duration", "300ms", "-sync-every", "50ms", "-journal", journal)
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	if !strings.Contains(out, "journal  "+journal+": last synced version") {
		t.Fatalf("output:\n%s", out)
	}
	j, _ := os.ReadFile(journal)
	if !strings.HasPrefix(string(j), "wbbench-journal v1 pattern=hot seed=1 nonce=") || !strings.Contains(string(j), "\nsynced ") {
		t.Fatalf("journal:\n%s", j)
	}
	code, out, errOut = wb(t, "check", "-device", path, "-journal", journal)
	if code != 0 || !strings.HasSuffix(out, "OK\n") || !strings.Contains(out, " required, ") {
		t.Fatalf("check: status %d\n%s%s", code, out, errOut)
	}
	t.Logf("\n%s", out)
	code, doc := checkJSON(t, "-device", path, "-journal", journal)
	if code != 0 || doc.Journal == nil || doc.Journal.Pattern != "hot" || doc.Run.Source != "journal" || doc.Run.NonceFrom != "journal" ||
		!doc.Synced || doc.Required == 0 || doc.Valid < doc.Required || doc.Pages != doc.Valid+doc.Zero || doc.Bad != 0 {
		t.Fatalf("check -json: status %d, %+v", code, doc)
	}
	code, out, errOut = wb(t, "check", "-device", path)
	oneLine(t, code, out, errOut, "-journal is required")
}

func TestSweepPlot(t *testing.T) {
	path, _ := e2eTarget(t, 16<<20)
	svg := filepath.Join(t.TempDir(), "sweep.svg")
	code, out, errOut := wb(t, "sweep", "-device", path, "-qd", "1,2,...,8", "-baseline", "pwrite", "-plot", svg)
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	for _, want := range []string{"\nqd   max-io", "\n 1  ", "\n 2  ", "\n 4  ", "\n 8  ", "pwrite/engine"} {
		if !strings.Contains(out, want) {
			t.Fatalf("sweep output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(svg)
	if err != nil || !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("engine")) {
		t.Fatalf("plot %s: %v, %d bytes", svg, err, len(b))
	}
	png := strings.TrimSuffix(svg, ".svg") + ".png"
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) || !strings.Contains(out, "plot: "+svg+", "+png+"\n") {
		t.Fatalf("no PNG beside the SVG (%v), or the output does not name both:\n%s", err, out)
	}
	// -json: every point carries its own configuration.
	code, out, errOut = wb(t, "sweep", "-device", path, "-qd", "1,4", "-max-io", "64KiB,128KiB", "-baseline", "pwrite", "-runs", "2", "-json")
	if code != 0 {
		t.Fatalf("sweep -json: status %d: %s", code, errOut)
	}
	checkRounded(t, out)
	var sw struct {
		SchemaVersion int `json:"schema_version"`
		Provenance    struct {
			CommandLine []string `json:"command_line"`
		} `json:"provenance"`
		Points []struct {
			QueueDepth int `json:"queue_depth"`
			MaxIOBytes int `json:"max_io_bytes"`
			Config     struct {
				QueueDepth int    `json:"queue_depth"`
				MaxIOBytes int    `json:"max_io_bytes"`
				RingSetup  string `json:"ring_setup"`
				Backend    string `json:"backend"`
			} `json:"config"`
			Results []jsonResult `json:"results"`
		} `json:"points"`
	}
	if err := json.Unmarshal([]byte(out), &sw); err != nil {
		t.Fatal(err)
	}
	if sw.SchemaVersion != 2 || len(sw.Points) != 4 || len(sw.Provenance.CommandLine) < 2 || sw.Provenance.CommandLine[1] != "sweep" {
		t.Fatalf("sweep: schema %d, %d points, command line %q", sw.SchemaVersion, len(sw.Points), sw.Provenance.CommandLine)
	}
	for _, p := range sw.Points {
		// The native ring's SQ holds the point's own backlog of writes
		// (2 × its queue depth) besides the read and flush slots.
		var sq int
		if p.Config.Backend == "native" {
			fmt.Sscanf(p.Config.RingSetup, "io_uring sq=%d ", &sq)
		}
		if p.Config.QueueDepth != p.QueueDepth || p.Config.MaxIOBytes != p.MaxIOBytes || p.Config.Backend == "" ||
			(p.Config.Backend == "native" && sq < 2*p.QueueDepth+1) {
			t.Fatalf("point qd %d max-io %d: config %+v; want its own", p.QueueDepth, p.MaxIOBytes, p.Config)
		}
	}
	code, out, errOut = wb(t, "sweep", "-device", path, "-qd", "8,4")
	oneLine(t, code, out, errOut, "values must increase")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// built is the wbbench binary the tests run as a child, built once (a
// plain build, also when the tests run under -race: faster, and the
// child's races are not what these tests look for).
var built struct {
	once      sync.Once
	dir, path string
	skip, err error
}

// buildBinary builds wbbench (once per test binary) and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			built.skip = err
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "wbbench-test-bin-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "wbbench")
		if out, err := exec.Command(gobin, "build", "-o", built.path, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.skip != nil {
		t.Skipf("skipping the build of the binary: %v", built.skip)
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the build of the binary in -short mode")
	}
	bin := buildBinary(t)
	path := loopdevtest.TempFile(t, 16<<20)
	cmd := exec.Command(bin, "-device", path, "-pattern", "single", "-baseline", "pwrite", "-json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if doc := decodeOne(t, string(out)); len(doc.Results) != 2 || doc.Pattern != "single" {
		t.Fatalf("results %+v", doc)
	}
	cmd = exec.Command(bin, "-qd", "zero")
	stderr.Reset()
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(stderr.String(), `-qd "zero"`) {
		t.Fatalf("bad flag: %v, stderr %q; want status 2 naming the value", err, stderr.String())
	}
}

// TestInterruptCleansUp: SIGINT during a run stops it, removes the
// target wbbench made, and exits 130.
func TestInterruptCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the build of the binary in -short mode")
	}
	bin := buildBinary(t)
	cmd := exec.Command(bin, "-size", "16MiB", "-pattern", "hot", "-duration", "1m", "-baseline", "none")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("after SIGINT: %v, stderr %q; want status 130", err, stderr.String())
	}
	msg := stderr.String()
	_, rest, ok := strings.Cut(msg, "interrupted; removed ")
	if !ok {
		t.Fatalf("stderr %q does not say what it removed", msg)
	}
	path, _, _ := strings.Cut(rest, " ")
	t.Logf("%s", strings.TrimSpace(msg))
	if strings.HasPrefix(path, "/dev/loop") {
		_, after, _ := strings.Cut(rest, "a loop device over ")
		file, _, _ := strings.Cut(after, ",")
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("backing file %s left behind", file)
		}
		if o, _ := exec.Command("losetup", "-j", file).Output(); len(bytes.TrimSpace(o)) > 0 {
			t.Fatalf("loop device left attached: %s", o)
		}
	} else if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary target %s left behind", path)
	}
}

// TestInject: -inject adds a faultring.Injector to the engine's ring; the engine
// retries the failures, and the report counts what was injected.
func TestInject(t *testing.T) {
	path := loopdevtest.TempFile(t, 16<<20)
	code, out, errOut := wb(t, "-device", path, "-pattern", "runs", "-baseline", "none", "-runs", "2",
		"-inject", "eio=0.01,short=0.1,eagain=0.05,delay=1ms@0.01,seed=4")
	if code != 0 {
		t.Fatalf("status %d: %s\n%s", code, errOut, out)
	}
	if !strings.Contains(out, "faults   ") || !strings.Contains(out, `inject "eio=0.01`) ||
		!strings.Contains(out, "; the last succeeded, faults off; then 0 dirty, 0 under writeback, 0 in flight, 0 in error\n") {
		t.Fatalf("the output does not report the faults:\n%s", out)
	}
	code, out, errOut = wb(t, "-device", path, "-baseline", "none", "-inject", "eio=#1", "-json")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	var doc struct {
		Faults struct {
			Requests uint64 `json:"requests"`
			EIO      uint64 `json:"eio"`
		} `json:"faults"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Faults.EIO != 1 || doc.Faults.Requests == 0 {
		t.Fatalf("faults %+v, %v; want one EIO", doc.Faults, err)
	}
	if !strings.Contains(out, `"faults_off": true`) {
		t.Fatalf(`-inject: no "faults_off": true in engine_end:\n%s`, out)
	}
	code, out, errOut = wb(t, "-device", path, "-inject", "eio=lots")
	oneLine(t, code, out, errOut, `"eio=lots"`)
}

// tableOf returns the closing table of a text report: the lines from
// the last one starting "system" up to the notes in brackets after it
// (which end the output).
func tableOf(out string) []string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "system ") {
			start = i
		}
	}
	if start < 0 {
		return nil
	}
	var t []string
	for _, l := range lines[start:] {
		if strings.HasPrefix(l, "(") {
			break
		}
		t = append(t, l)
	}
	return t
}

// TestRefuseUserFile: a regular file that holds data wbbench did not
// write is refused (named, with its size) and left as it was, unless
// -force; a file whose data extents are all zero is taken, and so is a
// file wbbench wrote before, by its mark or, where the mark is gone, by
// its pages.
func TestRefuseUserFile(t *testing.T) {
	dir := t.TempDir()
	user := filepath.Join(dir, "existing.dat")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*131 + i>>12)
	}
	if err := os.WriteFile(user, data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := wb(t, "-device", user, "-baseline", "none", "-runs", "1")
	oneLine(t, code, out, errOut, "refusing to write to "+user+": it is a regular file of 8.0 MiB (8388608 bytes) holding data wbbench did not write (at byte 0")
	if !strings.Contains(errOut, "pass -force") || !bytes.Equal(readAll(t, user), data) {
		t.Fatalf("the refusal does not say how to override, or the file changed: %q", errOut)
	}

	// Zeros over every data extent, holes between: taken.
	sparse := filepath.Join(dir, "sparse.dat")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(8 << 20)
	f.WriteAt(make([]byte, 1<<20), 2<<20)
	f.Close()
	if code, _, errOut := wb(t, "-device", sparse, "-baseline", "none", "-runs", "1"); code != 0 {
		t.Fatalf("a file of zeros and holes: status %d: %s", code, errOut)
	}
	// wbbench wrote it: taken again, also without the mark.
	if code, _, errOut := wb(t, "-device", sparse, "-pattern", "runs", "-baseline", "none", "-runs", "1"); code != 0 {
		t.Fatalf("a file wbbench wrote: status %d: %s", code, errOut)
	}
	unix.Removexattr(sparse, "user.wbbench")
	if code, _, errOut := wb(t, "-device", sparse, "-baseline", "none", "-runs", "1"); code != 0 {
		t.Fatalf("a file of wbbench's pages without the mark: status %d: %s", code, errOut)
	}
	// Someone else's bytes among wbbench's pages, without the mark.
	unix.Removexattr(sparse, "user.wbbench")
	f, _ = os.OpenFile(sparse, os.O_WRONLY, 0)
	f.WriteAt([]byte("my notes"), 5<<20)
	f.Close()
	code, out, errOut = wb(t, "-device", sparse, "-baseline", "none", "-runs", "1")
	oneLine(t, code, out, errOut, fmt.Sprintf("holding data wbbench did not write (at byte %d", 5<<20))

	// -force overwrites.
	if code, _, errOut := wb(t, "-device", user, "-baseline", "none", "-runs", "1", "-force"); code != 0 || bytes.Equal(readAll(t, user), data) {
		t.Fatalf("-force: status %d (%s), or the file was not written", code, errOut)
	}
}

// TestRefuseMounted: a loop device this test makes, formats and mounts
// is refused as mounted — by its own path, and through a node of it
// that cannot be opened (on a nodev mount: as a disk a container may
// not open), which shows the mount check runs before any open. Nothing
// is written to it. The mounts and the device go when the test ends.
func TestRefuseMounted(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("skipping: no mkfs.ext4 (apt-get install e2fsprogs)")
	}
	d := loopdevtest.ForTest(t, 32<<20, 0)
	if out, err := exec.Command(mkfs, "-q", "-F", d.Path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", d.Path, err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(d.Path, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", d.Path, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	before := readAll(t, d.Path)
	code, out, errOut := wb(t, "-device", d.Path, "-baseline", "none", "-runs", "1")
	oneLine(t, code, out, errOut, "refusing to write to "+d.Path+": "+d.Path+" is mounted on "+mnt)

	nd := t.TempDir()
	if err := unix.Mount("tmpfs", nd, "tmpfs", unix.MS_NODEV, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs nodev: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(nd, 0); err != nil {
			t.Errorf("unmount %s: %v", nd, err)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(d.Path, &st); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(nd, "disk")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = wb(t, "-device", node, "-baseline", "none", "-runs", "1")
	oneLine(t, code, out, errOut, "refusing to write to "+node+": "+d.Path+" is mounted on "+mnt)
	if !bytes.Equal(readAll(t, d.Path), before) {
		t.Fatal("the mounted device was written to")
	}
}

// TestMaxIOAgainstDevice: -max-io is held to the target before anything
// is written: above the device's max_hw_sectors_kb or 1024 pages it is
// refused, naming the limit and what to use; above max_sectors_kb it is
// taken with a warning (the block layer splits each write).
func TestMaxIOAgainstDevice(t *testing.T) {
	file := loopdevtest.ShmFile(t, 8<<20)
	code, out, errOut := wb(t, "-device", file, "-max-io", "1GiB", "-baseline", "none")
	oneLine(t, code, out, errOut, "-max-io 1.0 GiB: more than 1024 pages of 4.0 KiB (4.0 MiB), the most one write carries; use at most -max-io 4MiB")
	code, out, errOut = wb(t, "sweep", "-device", file, "-qd", "1", "-max-io", "64KiB,8MiB", "-baseline", "none")
	oneLine(t, code, out, errOut, "-max-io 8.0 MiB: more than 1024 pages")
	d := loopdevtest.ForTest(t, 16<<20, 0)
	hw := readSysInt(t, "/sys/block/"+d.Name()+"/queue/max_hw_sectors_kb")
	code, out, errOut = wb(t, "-device", d.Path, "-max-io", fmt.Sprintf("%dKiB", hw+4), "-baseline", "none")
	oneLine(t, code, out, errOut, fmt.Sprintf("above what %s takes in one request (max_hw_sectors_kb %d", d.Path, hw))
	if !bytes.Equal(readAll(t, d.Path), make([]byte, 8<<20)) {
		t.Fatal("written to")
	}
	// The value the refusal suggests is one the flag takes and the device
	// accepts (it once said "1.3 MiB", which -max-io then refused).
	m := regexp.MustCompile(`use at most -max-io (\S+)$`).FindStringSubmatch(strings.TrimSpace(errOut))
	if m == nil {
		t.Fatalf("the refusal suggests no value: %q", errOut)
	}
	if code, _, errOut := wb(t, "-device", d.Path, "-max-io", m[1], "-baseline", "none", "-runs", "1", "-size", "4MiB"); code != 0 {
		t.Fatalf("-max-io %s, as the refusal suggested: status %d, stderr %q", m[1], code, errOut)
	}
	// A soft limit below the I/O size: taken, with a warning. A loop
	// device keeps its queue settings when it is detached and reused, so
	// the old value is put back before the device goes.
	soft := "/sys/block/" + d.Name() + "/queue/max_sectors_kb"
	old, err := os.ReadFile(soft)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(soft, []byte("128"), 0o644); err != nil {
		t.Skipf("skipping the max_sectors_kb part: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(soft, old, 0o644); err != nil {
			t.Errorf("putting back %s: %v", soft, err)
		}
	})
	code, out, errOut = wb(t, "-device", d.Path, "-max-io", "256KiB", "-baseline", "none", "-runs", "1", "-json")
	if code != 0 || !strings.Contains(errOut, "-max-io 256 KiB is above "+d.Path+"'s max_sectors_kb 128") {
		t.Fatalf("status %d, stderr %q; want it run, with a warning", code, errOut)
	}
	var doc struct{ Warnings []string }
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Warnings) != 1 || !strings.Contains(doc.Warnings[0], "the block layer splits every larger write") {
		t.Fatalf("warnings %q (%v)", doc.Warnings, err)
	}
}

func readSysInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(string(b), &n)
	return n
}

// TestEmptyAndPlotDir: an empty target and a -plot into a directory
// that is not there are refused at once, saying what to do.
func TestEmptyAndPlotDir(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.dat")
	os.WriteFile(empty, nil, 0o644)
	code, out, errOut := wb(t, "-device", empty)
	oneLine(t, code, out, errOut, "-device "+empty+": the file is empty (0 bytes); give it a size first (truncate -s 1G "+empty+"), or omit -device")
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "sweep.svg")
	// Nothing on stdout: the sweep did not run (it prints its table
	// before it plots).
	code, out, errOut = wb(t, "sweep", "-size", "16MiB", "-qd", "1,2", "-plot", missing)
	oneLine(t, code, out, errOut, "-plot "+missing+": the directory "+filepath.Dir(missing)+" does not exist; create it (mkdir -p ")
}

// TestProfileAndTrace: -cpuprofile writes a CPU profile of the measured
// runs that go tool pprof reads, its samples labelled with the system;
// -trace writes an execution trace. A file that cannot be made is a
// usage error before anything runs.
func TestProfileAndTrace(t *testing.T) {
	dir := t.TempDir()
	prof, tr := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "trace.out")
	path := loopdevtest.ShmFile(t, 16<<20)
	code, _, errOut := wb(t, "-device", path, "-pattern", "hot", "-duration", "300ms", "-sync-every", "50ms", "-writers", "2",
		"-runs", "1", "-baseline", "none", "-cpuprofile", prof, "-trace", tr)
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	b, err := os.ReadFile(prof)
	if err != nil || len(b) < 100 || !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Fatalf("CPU profile: %v, %d bytes; want a gzipped profile", err, len(b))
	}
	if gobin, err := exec.LookPath("go"); err != nil {
		t.Logf("no go command: checked only that the profile is gzip (%v)", err)
	} else {
		out, err := exec.Command(gobin, "tool", "pprof", "-raw", prof).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("PeriodType: cpu nanoseconds")) || !bytes.Contains(out, []byte("system:[engine]")) {
			t.Fatalf("go tool pprof -raw %s: %v; want a CPU profile with samples labelled system:[engine]:\n%.2000s", prof, err, out)
		}
	}
	b, err = os.ReadFile(tr)
	if err != nil || len(b) < 1000 || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("trace: %v, %d bytes, starts %q; want a Go execution trace", err, len(b), b[:min(len(b), 16)])
	}
	code, out, errOut := wb(t, "-device", path, "-cpuprofile", filepath.Join(dir, "no", "cpu.prof"))
	oneLine(t, code, out, errOut, "-cpuprofile "+filepath.Join(dir, "no", "cpu.prof")+": open ")
}
