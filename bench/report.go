package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/faultring"
)

// Sample is what one system measured in one cycle. Seconds is the
// flush alone (the engine's Sync, the kernel's fdatasync, pwrite's
// writes and fdatasync, fio's runtime); TotalSeconds includes dirtying.
// For hot, both are the whole period, Bytes and Pages what the writers
// wrote, DeviceBytes what reached the device.
type Sample struct {
	// Run is the run (cycle) this sample is from, counting from 1; 0 in
	// a median.
	Run          int     `json:"run,omitempty"`
	Bytes        int64   `json:"bytes"`
	Pages        int64   `json:"pages"`
	Seconds      float64 `json:"seconds"`
	TotalSeconds float64 `json:"total_seconds"`
	BytesPerSec  float64 `json:"bytes_per_sec"`
	PagesPerSec  float64 `json:"pages_per_sec"`
	IOs          int64   `json:"ios"`
	PagesPerIO   float64 `json:"pages_per_io"`
	// PagesFilled is the clean pages the engine wrote in gaps between
	// dirty runs (-fill-gaps), beside the Pages it was asked to write.
	PagesFilled int64 `json:"pages_filled,omitempty"`
	// CPU time of the timed part: user + system, and each (getrusage;
	// fio: its usr_cpu and sys_cpu share of its runtime).
	CPUSeconds       float64 `json:"cpu_seconds"`
	CPUUserSeconds   float64 `json:"cpu_user_seconds"`
	CPUSystemSeconds float64 `json:"cpu_system_seconds"`
	// Latency is each write's completion latency, from its submission to
	// its completion (the engine: Submit to the delivery of its
	// completion, timed around the ring; pwrite: each pwritev call; fio:
	// its clat).
	Latency *Latency `json:"latency_us,omitempty"`
	// FlushLatency is the engine's device flushes (OpFlush), submit to
	// completion.
	FlushLatency *Latency `json:"flush_latency_us,omitempty"`
	// SubmitBatch is requests per submission, CompleteBatch completions
	// per reap (the engine: per ring Submit call and per handler call;
	// fio: its iodepth_submit and iodepth_complete).
	SubmitBatch   *Batch `json:"submit_batch,omitempty"`
	CompleteBatch *Batch `json:"complete_batch,omitempty"`
	// Device is what the block layer counted (block devices only).
	Device *DeviceIO `json:"device,omitempty"`
	// EarlyWriteback: under 95 % of the bytes the block layer wrote for
	// this cycle fell inside its timed part (in a median: in any run).
	EarlyWriteback bool `json:"early_writeback,omitempty"`
	// Hot pattern only.
	SyncLatency *Latency `json:"sync_latency_us,omitempty"`
	// DirtyToDurable is, for each page write, the time from the write
	// returning (the page in the cache, or in the kernel's) to the end of
	// the first sync that began after it and succeeded.
	DirtyToDurable *Latency `json:"dirty_to_durable_us,omitempty"`
	Syncs          int      `json:"syncs,omitempty"`
	FailedSyncs    int      `json:"failed_syncs,omitempty"` // of Syncs, those that returned an error
	DeviceBytes    int64    `json:"device_bytes,omitempty"`
	Superseded     int64    `json:"superseded,omitempty"`
}

// derive fills in the rates from the counts.
func (s *Sample) derive(ps int) {
	s.BytesPerSec = ratio(float64(s.Bytes), s.Seconds)
	s.PagesPerSec = ratio(float64(s.Pages), s.Seconds)
	pages := float64(s.Pages)
	if s.DeviceBytes > 0 {
		pages = float64(s.DeviceBytes) / float64(ps)
	}
	s.PagesPerIO = ratio(pages, float64(s.IOs))
}

// ratio is a/b, or 0 where b is 0 (JSON has no infinities).
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}

// Result is one system's numbers. The first cycle after the engine was
// opened runs slower than the rest (its pages are touched, its ring and
// the device warmed for the first time), so it is kept apart: the
// numbers of a Result are the steady ones, each the median over runs
// 2..N of that number (rates are the medians of the per-run rates, not
// recomputed from median counts), and First is run 1. With one run
// there is no steady figure: the numbers are run 1's, and SteadyRuns is
// 0. Runs holds every run's numbers in the order they ran.
type Result struct {
	Name string `json:"name"`
	Sample
	// SteadyRuns is how many runs the numbers are the median of (runs
	// 2..N); 0 when there was one run.
	SteadyRuns int `json:"steady_runs"`
	// BytesPerSecMin and Max are the spread of the steady runs' bytes/s.
	BytesPerSecMin float64 `json:"bytes_per_sec_min"`
	BytesPerSecMax float64 `json:"bytes_per_sec_max"`
	// First is run 1: for the engine, the first cycle after Open.
	First *Sample `json:"first_cycle,omitempty"`
	// VsEngine is this system's steady bytes/s against the engine's.
	VsEngine *Ratio   `json:"vs_engine,omitempty"`
	Note     string   `json:"note,omitempty"`
	Command  string   `json:"command,omitempty"` // fio: its exact command line
	Runs     []Sample `json:"runs"`
}

// Ratio is one system's steady throughput over the engine's, and how
// far the noise could move it: Min is this system's lowest steady run
// over the engine's highest, Max its highest over the engine's lowest.
// Overlap says the two min–max ranges overlap: the runs do not tell the
// two systems apart. With one run there is no spread: only Ratio is set.
type Ratio struct {
	Ratio   float64 `json:"ratio"`
	Min     float64 `json:"min,omitempty"`
	Max     float64 `json:"max,omitempty"`
	Overlap *bool   `json:"overlap,omitempty"`
}

// Overlaps reports whether the ratio's two ranges overlap (false
// without a spread).
func (q *Ratio) Overlaps() bool { return q != nil && q.Overlap != nil && *q.Overlap }

// Spread is the lowest and highest bytes/s of the steady runs.
func (r *Result) Spread() (lo, hi float64) { return r.BytesPerSecMin, r.BytesPerSecMax }

// aggregate makes a Result of a system's samples, in the order they
// ran (Sample.Run is the run's number, from 1).
func aggregate(name string, samples []Sample) Result {
	r := Result{Name: name, Runs: samples}
	steady := samples
	if len(samples) > 0 && samples[0].Run == 1 {
		first := samples[0]
		r.First = &first
		if len(samples) > 1 {
			steady = samples[1:]
		}
	}
	if len(samples) > 1 || (len(samples) == 1 && samples[0].Run != 1) {
		r.SteadyRuns = len(steady)
	}
	if len(steady) == 1 {
		r.Sample = steady[0]
	} else {
		r.Sample = medianSample(steady)
	}
	r.Run = 0
	r.BytesPerSecMin, r.BytesPerSecMax = math.Inf(1), math.Inf(-1)
	for _, s := range steady {
		r.BytesPerSecMin, r.BytesPerSecMax = min(r.BytesPerSecMin, s.BytesPerSec), max(r.BytesPerSecMax, s.BytesPerSec)
	}
	if len(steady) == 0 {
		r.BytesPerSecMin, r.BytesPerSecMax = 0, 0
	}
	return r
}

// compare sets each baseline's VsEngine.
func compare(results []Result) {
	eng := findResult(results, "engine")
	if eng == nil || eng.BytesPerSec <= 0 || eng.BytesPerSecMin <= 0 {
		return
	}
	for i := range results {
		r := &results[i]
		if r.Name == "engine" || r.BytesPerSec <= 0 {
			continue
		}
		r.VsEngine = &Ratio{Ratio: r.BytesPerSec / eng.BytesPerSec}
		if r.SteadyRuns == 0 || eng.SteadyRuns == 0 {
			continue // one run: no spread to compare
		}
		overlap := r.BytesPerSecMin <= eng.BytesPerSecMax && eng.BytesPerSecMin <= r.BytesPerSecMax
		r.VsEngine.Min = r.BytesPerSecMin / eng.BytesPerSecMax
		r.VsEngine.Max = r.BytesPerSecMax / eng.BytesPerSecMin
		r.VsEngine.Overlap = &overlap
	}
}

// TargetInfo describes the target in a report.
type TargetInfo struct {
	Path             string `json:"path"`
	Size             int64  `json:"size"` // bytes the benchmark uses
	DeviceSize       int64  `json:"device_size"`
	LogicalBlockSize int    `json:"logical_block_size"`
	Kind             string `json:"kind"` // "block" or "file"
	WriteCache       string `json:"write_cache,omitempty"`
	MaxSectorsKB     int    `json:"max_sectors_kb,omitempty"`
	// Queue is a block device's queue limits and settings; FileSystem
	// the file system a file target is on.
	Queue      *QueueLimits `json:"queue,omitempty"`
	FileSystem string       `json:"file_system,omitempty"`
	Made       string       `json:"made,omitempty"` // what wbbench made for the run
}

// ConfigInfo is the configuration a report was measured with (the
// engine's effective values).
type ConfigInfo struct {
	PageSize   int    `json:"page_size"`
	QueueDepth int    `json:"queue_depth"`
	MaxIOBytes int    `json:"max_io_bytes"`
	Ring       string `json:"ring"` // as asked for
	Backend    string `json:"backend"`
	RingSetup  string `json:"ring_setup,omitempty"`
	// RunPath is where the engine's writeback pass ran: "owner-thread"
	// (the native ring's thread that submits and reaps) or "caller".
	RunPath           string   `json:"run_path"`
	RegisteredBuffers bool     `json:"registered_buffers"`
	RegisteredFile    bool     `json:"registered_file"`
	WritevFixed       bool     `json:"writev_fixed"`
	Runs              int      `json:"runs"`
	Seed              uint64   `json:"seed"`
	Baselines         []string `json:"baselines"`
	DurationSeconds   float64  `json:"duration_seconds,omitempty"`
	Writers           int      `json:"writers,omitempty"`
	SyncEverySeconds  float64  `json:"sync_every_seconds,omitempty"`
	Inject            string   `json:"inject,omitempty"`
	FillGaps          int      `json:"fill_gaps,omitempty"`
	Cached            bool     `json:"cached,omitempty"`
	Scatter           bool     `json:"scatter,omitempty"`
	IOPSLimit         int      `json:"iops_limit,omitempty"`
	Verify            bool     `json:"verify"`
	// Zeroed, with -verify: how the target's range was zeroed before the
	// run (so check can tell this run's pages from what was there).
	Zeroed string `json:"zeroed,omitempty"`
	// HoldKernelWriteback: vm.dirty_* were raised for the run (HeldSysctls
	// their values then; the report's sysctls are those before).
	HoldKernelWriteback bool              `json:"hold_kernel_writeback"`
	HeldSysctls         map[string]string `json:"held_sysctls,omitempty"`
	Nonce               uint32            `json:"nonce,omitempty"`
	Journal             string            `json:"journal,omitempty"`
}

// Report is what a benchmark run found: wbbench -json prints it.
type Report struct {
	SchemaVersion int        `json:"schema_version"`
	Provenance    Provenance `json:"provenance"`
	Target        TargetInfo `json:"target"`
	Config        ConfigInfo `json:"config"`
	Pattern       string     `json:"pattern"`
	PatternPages  uint64     `json:"pattern_pages"`
	PatternBytes  int64      `json:"pattern_bytes"`
	Extents       int        `json:"extents,omitempty"`
	Results       []Result   `json:"results"`
	Skipped       []Skip     `json:"skipped,omitempty"`
	// Warnings say where a figure cannot be trusted as it stands: a
	// system whose device bytes were mostly written before its timed part
	// (early_writeback), an engine whose bytes the block layer counted
	// differently, a -max-io the block layer splits.
	Warnings []string `json:"warnings,omitempty"`
	Errors   []string `json:"errors,omitempty"`
	Faults   *Faults  `json:"faults,omitempty"`
	// JournalSynced is the last version the journal recorded as synced.
	JournalSynced *uint64 `json:"journal_synced,omitempty"`
	// SyncErrors is every engine Sync that failed (and every sync of a
	// baseline in the hot pattern), in the order they failed; no failed
	// Sync is journaled.
	SyncErrors []string `json:"sync_errors,omitempty"`
	// EngineEnd is the engine's state after the run's last Sync.
	EngineEnd *EngineEnd `json:"engine_end,omitempty"`
}

// EngineEnd is the engine's state after the run's last Sync, and its
// counters over the run. With -inject, faults are switched off for that
// last Sync (hot: the last sync of each period; flush patterns: one
// more Sync after the last cycle), so a run ends with a Sync that can
// succeed.
type EngineEnd struct {
	LastSyncOK bool `json:"last_sync_ok"` // the last Sync returned nil
	// FaultsOff, with -inject only: injection was off for the last Sync.
	FaultsOff    *bool `json:"faults_off,omitempty"`
	Dirty        int64 `json:"dirty"`     // pages dirty in the cache
	Writeback    int64 `json:"writeback"` // pages under writeback
	InFlight     int64 `json:"in_flight"` // writes submitted and not completed
	PagesInError int64 `json:"pages_in_error"`
	Syncs        int64 `json:"syncs"`        // Syncs the benchmark called
	FailedSyncs  int64 `json:"failed_syncs"` // of them, those that returned an error
	WriteErrors  int64 `json:"write_errors"` // writes that failed (and were retried)
	Retries      int64 `json:"retries"`      // pages made dirty again after a failed write
	Flushes      int64 `json:"flushes"`      // device flushes that succeeded
	FlushErrors  int64 `json:"flush_errors"` // device flushes that failed
}

// Idle reports whether no page is dirty, under writeback or in error,
// and no write is in flight.
func (e *EngineEnd) Idle() bool {
	return e.Dirty == 0 && e.Writeback == 0 && e.InFlight == 0 && e.PagesInError == 0
}

// maxSyncErrorLines is how many failed syncs the text report prints
// (the JSON has them all).
const maxSyncErrorLines = 10

// Faults counts what -inject injected into the engine's ring
// (faultring.Stats).
type Faults struct {
	Requests       uint64 `json:"requests"`
	EIO            uint64 `json:"eio"`
	PartialEIO     uint64 `json:"partial_eio"`
	Short          uint64 `json:"short"`
	EAGAIN         uint64 `json:"eagain"`
	EAGAINSurfaced uint64 `json:"eagain_surfaced"`
	Delayed        uint64 `json:"delayed"`
	FlushErr       uint64 `json:"flush_errors"`
	Resumed        uint64 `json:"resumed"`
}

func faultsOf(s faultring.Stats) *Faults {
	return &Faults{Requests: s.Requests, EIO: s.EIO, PartialEIO: s.PartialEIO, Short: s.Short, EAGAIN: s.EAGAIN,
		EAGAINSurfaced: s.EAGAINSurfaced, Delayed: s.Delayed, FlushErr: s.FlushErr, Resumed: s.Resumed}
}

// header fills in what a report says about the target, config and pattern.
func (b *Bench) header(es *engineSys) (TargetInfo, ConfigInfo, Report) {
	t := b.target
	o := &b.opts
	ti := TargetInfo{
		Path: t.Path, Size: t.Size, DeviceSize: t.DeviceSize, LogicalBlockSize: t.LogicalBlockSize,
		Kind: t.KindName(), WriteCache: t.WriteCache, MaxSectorsKB: t.MaxSectorsKB, Made: t.Made,
		Queue: readQueueLimits(t.Dev),
	}
	if t.Kind != ring.KindBlock {
		ti.FileSystem = fileSystemOf(t.Path)
	}
	ring := o.Ring
	if ring == "" {
		ring = "auto"
	}
	ci := ConfigInfo{
		PageSize: o.PageSize, QueueDepth: es.cfg.QueueDepth, MaxIOBytes: es.cfg.MaxIOBytes,
		Ring: ring, Backend: es.caps.Backend, RingSetup: es.caps.Setup, RunPath: es.caps.RunPath,
		RegisteredBuffers: es.caps.RegisteredBuffers, RegisteredFile: es.caps.RegisteredFile, WritevFixed: es.caps.WritevFixed,
		Runs: o.Runs, Seed: o.Seed, Baselines: slices.Clone(o.Baselines),
		Inject: o.Inject, Verify: o.Verify, Journal: o.Journal,
		FillGaps: o.FillGaps, Cached: o.Cached, Scatter: o.Scatter, IOPSLimit: o.IOPSLimit,
	}
	if ci.Baselines == nil {
		ci.Baselines = []string{}
	}
	if o.Verify {
		ci.Nonce, ci.Zeroed = b.nonce, b.zeroed
	}
	if b.hold != nil {
		ci.HoldKernelWriteback, ci.HeldSysctls = true, b.hold.held
	}
	r := Report{SchemaVersion: SchemaVersion, Provenance: b.provenance(), Target: ti, Config: ci, Pattern: string(o.Pattern), Skipped: b.skipped,
		Warnings: slices.Clone(b.warnings)}
	if o.Pattern == Hot {
		ci.DurationSeconds = o.Duration.Seconds()
		ci.Writers = o.Writers
		ci.SyncEverySeconds = o.SyncEvery.Seconds()
		r.Config = ci
		r.PatternPages = b.n
		r.PatternBytes = int64(b.n) * int64(o.PageSize)
	} else {
		r.PatternPages = b.layout.Pages
		r.PatternBytes = int64(b.layout.Pages) * int64(o.PageSize)
		r.Extents = len(b.layout.Extents)
	}
	return ti, ci, r
}

// WriteText writes the report for people: the target, the config and
// the pattern, a line of detail per system, and last one table of every
// system's throughput, pages/s, CPU per GiB and ratio to the engine.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	writeHeader(&b, &r.Target, &r.Config, "", r.Pattern, r.PatternPages, r.PatternBytes, r.Extents)
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "skipped  %s: %s\n", s.Name, s.Reason)
	}
	if f := r.Faults; f != nil {
		fmt.Fprintf(&b, "faults   %s requests: %d EIO, %d partial EIO, %d short, %d EAGAIN (%d surfaced), %d delayed, %d flush errors\n",
			humanize.Comma(int64(f.Requests)), f.EIO, f.PartialEIO, f.Short, f.EAGAIN, f.EAGAINSurfaced, f.Delayed, f.FlushErr)
	}
	if r.JournalSynced != nil {
		fmt.Fprintf(&b, "journal  %s: last synced version %d\n", r.Config.Journal, *r.JournalSynced)
	}
	// Failed syncs, but not those that are also errors of the run
	// (printed below).
	var failed []string
	for _, e := range r.SyncErrors {
		if !slices.Contains(r.Errors, e) {
			failed = append(failed, e)
		}
	}
	for i, e := range failed {
		if i == maxSyncErrorLines {
			fmt.Fprintf(&b, "failed   … and %d more syncs (-json lists them all)\n", len(failed)-i)
			break
		}
		fmt.Fprintf(&b, "failed   %s\n", e)
	}
	if e := r.EngineEnd; e != nil {
		last := "succeeded"
		if !e.LastSyncOK {
			last = "FAILED"
		}
		if r.Faults != nil {
			if e.FaultsOff != nil && *e.FaultsOff {
				last += ", faults off"
			} else {
				last += ", faults still on"
			}
		}
		fmt.Fprintf(&b, "end      %s syncs, %s failed; the last %s; then %s dirty, %s under writeback, %s in flight, %s in error\n",
			humanize.Comma(e.Syncs), humanize.Comma(e.FailedSyncs), last,
			humanize.Comma(e.Dirty), humanize.Comma(e.Writeback), humanize.Comma(e.InFlight), humanize.Comma(e.PagesInError))
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning  %s\n", w)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error    %s\n", e)
	}
	b.WriteString("\n")
	writeDetails(&b, r.Results, r.Pattern == string(Hot))
	b.WriteString("\n")
	writeTable(&b, r.Results, r.Config.Runs)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeHeader writes the target, config and pattern lines; swept, if
// set, replaces the queue depth and I/O size (a sweep varies them).
func writeHeader(b *strings.Builder, t *TargetInfo, c *ConfigInfo, swept, pattern string, pages uint64, bytes int64, extents int) {
	kind := "block device"
	if t.Kind == "file" {
		kind = "regular file"
	}
	fmt.Fprintf(b, "target   %s: %s, using %s of %s, logical block %d B", t.Path, kind,
		humanize.IBytes(uint64(t.Size)), humanize.IBytes(uint64(t.DeviceSize)), t.LogicalBlockSize)
	if t.WriteCache != "" {
		fmt.Fprintf(b, ", write_cache %q", t.WriteCache)
	}
	if t.MaxSectorsKB > 0 {
		fmt.Fprintf(b, ", max_sectors_kb %d", t.MaxSectorsKB)
	}
	b.WriteString("\n")
	if t.Made != "" {
		fmt.Fprintf(b, "         %s\n", t.Made)
	}
	setup := c.Backend
	if c.RingSetup != "" {
		setup += ": " + c.RingSetup
	}
	if c.RunPath != "" {
		setup += "; pass on the " + strings.ReplaceAll(c.RunPath, "-", " ")
	}
	var feats []string
	if c.RegisteredBuffers {
		feats = append(feats, "registered buffers")
	}
	if c.WritevFixed {
		feats = append(feats, "WRITEV_FIXED")
	}
	if len(feats) > 0 {
		setup += "; " + strings.Join(feats, ", ")
	}
	qdio := fmt.Sprintf("qd %d, max-io %s", c.QueueDepth, humanize.IBytes(uint64(c.MaxIOBytes)))
	if swept != "" {
		qdio = swept
	}
	fmt.Fprintf(b, "config   page %s, %s, ring %s (%s)\n", humanize.IBytes(uint64(c.PageSize)), qdio, c.Ring, setup)
	fmt.Fprintf(b, "         seed %d", c.Seed)
	if c.Runs > 1 {
		fmt.Fprintf(b, ", %d runs (systems alternated, order rotated each run; steady: medians of runs 2–%d, min–max; run 1 apart)", c.Runs, c.Runs)
	}
	if c.Inject != "" {
		fmt.Fprintf(b, ", inject %q", c.Inject)
	}
	if c.Verify {
		fmt.Fprintf(b, ", verify format (nonce %d)", c.Nonce)
	}
	b.WriteString("\n")
	if c.Zeroed != "" {
		fmt.Fprintf(b, "verify   %s\n", c.Zeroed)
	}
	if pattern == string(Hot) {
		fmt.Fprintf(b, "pattern  hot over %s pages (%s): %d writers, a sync every %v, %v per run\n",
			humanize.Comma(int64(pages)), humanize.IBytes(uint64(bytes)), c.Writers,
			secondsDuration(c.SyncEverySeconds), secondsDuration(c.DurationSeconds))
		return
	}
	unit := "extents"
	if extents == 1 {
		unit = "extent"
	}
	fmt.Fprintf(b, "pattern  %s: %s pages (%s) in %s %s\n", pattern,
		humanize.Comma(int64(pages)), humanize.IBytes(uint64(bytes)), humanize.Comma(int64(extents)), unit)
}

func secondsDuration(s float64) string {
	return time.Duration(math.Round(s * 1e9)).String()
}

// writeDetails writes the numbers of each system before the table: a
// first line after its name, then indented lines for its latencies,
// batches and what the block layer counted.
func writeDetails(b *strings.Builder, results []Result, hot bool) {
	width := 0
	for i := range results {
		width = max(width, utf8.RuneCountInString(results[i].Name))
	}
	for i := range results {
		r := &results[i]
		for k, line := range detail(r, hot) {
			name := ""
			if k == 0 {
				name = r.Name
			}
			fmt.Fprintf(b, "%-*s  %s\n", width, name, line)
		}
	}
}

// detail is the lines of numbers for one system before the table.
func detail(r *Result, hot bool) []string {
	var parts []string
	if hot {
		parts = append(parts, fmt.Sprintf("%s pages written in %.2f s (%s superseded)",
			humanize.Comma(r.Pages), r.Seconds, humanize.Comma(r.Superseded)))
		if r.DeviceBytes > 0 {
			parts = append(parts, fmt.Sprintf("%s to the device", humanize.IBytes(uint64(r.DeviceBytes))))
		}
	} else {
		parts = append(parts, fmt.Sprintf("flush %.3f s, total %.3f s", r.Seconds, r.TotalSeconds))
	}
	if r.IOs > 0 {
		parts = append(parts, fmt.Sprintf("%s I/Os, %.1f pages/I/O", humanize.Comma(r.IOs), r.PagesPerIO))
	} else {
		parts = append(parts, "I/Os not counted")
	}
	parts = append(parts, fmt.Sprintf("CPU %.3f s (user %.3f, system %.3f)", r.CPUSeconds, r.CPUUserSeconds, r.CPUSystemSeconds))
	if l := r.FlushLatency; l != nil && !hot {
		parts = append(parts, fmt.Sprintf("device flush %s", fmtLat(l.P50)))
	}
	first := strings.Join(parts, ", ")
	if r.Note != "" {
		first += " (" + r.Note + ")"
	}
	lines := []string{first}
	if l := r.Latency; l != nil {
		lines = append(lines, fmtLatency("submit→complete latency", humanize.Comma(l.N)+" writes", l))
	}
	if hot {
		if l := r.SyncLatency; l != nil {
			n := fmt.Sprintf("%d syncs", r.Syncs)
			if r.FailedSyncs > 0 {
				n += fmt.Sprintf(", %d failed", r.FailedSyncs)
			}
			lines = append(lines, fmtLatency("sync latency", n, l))
		}
		if l := r.DirtyToDurable; l != nil {
			lines = append(lines, fmtLatency("dirty to durable", humanize.Comma(l.N)+" page writes", l))
		}
	}
	if s := fmtBatches(r.SubmitBatch, r.CompleteBatch); s != "" {
		lines = append(lines, s)
	}
	if r.Command != "" {
		lines = append(lines, "command: "+r.Command)
	}
	if d := r.Device; d != nil {
		lines = append(lines, fmt.Sprintf("block layer: %s in %s writes (%.2f ms each), %.0f%% of the bytes inside the timed part",
			humanize.IBytes(uint64(d.WriteBytes)), humanize.Comma(d.WriteIOs), d.MeanWriteMs, 100*d.TimedShare))
	}
	return lines
}

// fmtLatency prints a latency distribution the way fio does: what and
// how many, mean ± standard deviation, min, percentiles, max.
func fmtLatency(what, count string, l *Latency) string {
	return fmt.Sprintf("%s (%s): mean %s ±%s, min %s, p1 %s, p5 %s, p10 %s, p50 %s, p90 %s, p95 %s, p99 %s, p99.9 %s, p99.99 %s, max %s",
		what, count, fmtLat(l.Mean), fmtLat(l.Stdev), fmtLat(l.Min), fmtLat(l.P1), fmtLat(l.P5), fmtLat(l.P10),
		fmtLat(l.P50), fmtLat(l.P90), fmtLat(l.P95), fmtLat(l.P99), fmtLat(l.P999), fmtLat(l.P9999), fmtLat(l.Max))
}

// fmtBatches prints the submission and completion batch sizes.
func fmtBatches(sub, comp *Batch) string {
	one := func(what string, b *Batch) string {
		if b == nil {
			return ""
		}
		if b.N == 0 && len(b.FioPercent) > 0 {
			var keys []string
			for k := range b.FioPercent {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(x, y string) int { return fioBucketOrder(x) - fioBucketOrder(y) })
			var parts []string
			for _, k := range keys {
				if v := b.FioPercent[k]; v >= 0.5 {
					parts = append(parts, fmt.Sprintf("≤%s: %.0f%%", k, v))
				} else if v > 0 {
					parts = append(parts, fmt.Sprintf("≤%s: <1%%", k))
				}
			}
			return fmt.Sprintf("%s %s", what, strings.ReplaceAll(strings.Join(parts, ", "), "≤>=", "≥"))
		}
		return fmt.Sprintf("%s mean %.1f (min %.0f, p50 %.0f, p99 %.0f, max %.0f)", what, b.Mean, b.Min, b.P50, b.P99, b.Max)
	}
	var parts []string
	for _, s := range []string{one("requests per submit", sub), one("completions per reap", comp)} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "batches: " + strings.Join(parts, "; ")
}

// fioBucketOrder orders fio's iodepth bucket names ("0", "4", …, ">=64").
func fioBucketOrder(k string) int {
	if n, err := strconv.Atoi(k); err == nil {
		return n
	}
	return math.MaxInt32
}

func fmtLat(us float64) string {
	switch {
	case us == 0:
		return "0"
	case us < 10:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2f ms", us/1e3)
	}
	return fmt.Sprintf("%.2f s", us/1e6)
}

// fmtRate prints bytes/s in SI units, and the spread in the same unit.
func fmtRate(v, lo, hi float64, spread bool) string {
	val, prefix := humanize.ComputeSI(v)
	if !spread || v <= 0 {
		return fmt.Sprintf("%.2f %sB/s", val, prefix)
	}
	// The value and its bounds are scaled by one factor and rounded by
	// one rule, both monotonic, so lo ≤ v ≤ hi still holds as printed
	// (formatting val and lo*k apart once gave "3.73 (3.74–3.74)").
	k := val / v
	r := func(x float64) float64 { return math.Round(x*k*100) / 100 }
	return fmt.Sprintf("%.2f %sB/s (%.2f–%.2f)", r(v), prefix, r(lo), r(hi))
}

// fmtRatio prints a ratio to the engine with its spread.
func fmtRatio(q *Ratio, spread bool) string {
	if q == nil {
		return "—"
	}
	if !spread {
		return fmt.Sprintf("%.2f×", q.Ratio)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", q.Ratio, q.Min, q.Max)
}

// writeTable writes the closing table: each system's steady throughput
// with its spread, its first run apart, pages/s, CPU per GiB, and its
// ratio to the engine with the ratio's spread, flagged where the two
// systems' ranges overlap. runs is how many runs there were.
func writeTable(b *strings.Builder, results []Result, runs int) {
	spread := runs > 1
	// With two runs the steady figure is run 2 alone: a min–max of one
	// value tells nothing, and no overlap can be judged.
	oneSteady := runs == 2
	head := []string{"system", "throughput", "pages/s", "CPU/GiB", "vs engine", ""}
	switch {
	case oneSteady:
		head = []string{"system", "steady: run 2", "first run", "pages/s", "CPU/GiB", "vs engine", ""}
	case spread:
		head = []string{"system", fmt.Sprintf("steady: runs 2–%d (min–max)", runs), "first run", "pages/s", "CPU/GiB", "vs engine (min–max)", ""}
	}
	rows := [][]string{head}
	overlap, early := false, false
	for i := range results {
		r := &results[i]
		vs := fmtRatio(r.VsEngine, spread && !oneSteady)
		if r.Name == "engine" {
			vs = "1.00×"
		}
		cpu := "—"
		if r.Bytes > 0 {
			cpu = fmt.Sprintf("%.3f s", r.CPUSeconds/(float64(r.Bytes)/(1<<30)))
		}
		pages := humanize.Comma(int64(math.Round(r.PagesPerSec)))
		var flags []string
		if r.VsEngine.Overlaps() && spread && !oneSteady {
			flags, overlap = append(flags, "ranges overlap"), true
		}
		if share, ok := r.lowestTimedShare(); ok {
			flags, early = append(flags, fmt.Sprintf("! only %.0f%% written in its timed part", 100*share)), true
		}
		flag := strings.Join(flags, "; ")
		if !spread {
			rows = append(rows, []string{r.Name, fmtRate(r.BytesPerSec, 0, 0, false), pages, cpu, vs, flag})
			continue
		}
		first := "—"
		if r.First != nil {
			first = fmtRate(r.First.BytesPerSec, 0, 0, false)
		}
		lo, hi := r.Spread()
		rows = append(rows, []string{r.Name, fmtRate(r.BytesPerSec, lo, hi, !oneSteady), first, pages, cpu, vs, flag})
	}
	writeColumns(b, rows, 1)
	if !spread {
		b.WriteString("(one run, the first after the engine was opened: no steady figure and no spread; -runs 5 gives both)\n")
	}
	if oneSteady {
		b.WriteString("(two runs: the steady figure is run 2 alone, with no spread; -runs 5 gives medians with their min–max)\n")
	}
	if overlap {
		b.WriteString("(ranges overlap: the two systems' min–max over the steady runs overlap, so the runs do not tell them apart)\n")
	}
	if early {
		b.WriteString("(!: in some run under 95% of the bytes the device wrote for this system fell inside its timed part: see the warnings above)\n")
	}
}

// lowestTimedShare is the lowest share of the device's bytes inside the
// timed part over the runs flagged EarlyWriteback, if any was.
func (r *Result) lowestTimedShare() (float64, bool) {
	lo, ok := 1.0, false
	for _, s := range r.Runs {
		if s.EarlyWriteback && s.Device != nil {
			lo, ok = min(lo, s.Device.TimedShare), true
		}
	}
	return lo, ok
}

// writeColumns writes rows as columns two spaces apart: the first left
// columns aligned left, the rest right.
func writeColumns(b *strings.Builder, rows [][]string, left int) {
	var width []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i > 0 {
				line.WriteString("  ")
			}
			if i < left {
				line.WriteString(cell + pad)
			} else {
				line.WriteString(pad + cell)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// sortedResults makes the results of each system's samples, engine
// first, then the baselines in their fixed order.
func sortedResults(m map[string][]Sample, notes, commands map[string]string, ps int) []Result {
	var out []Result
	for _, name := range append([]string{"engine"}, Baselines...) {
		ss := m[name]
		if len(ss) == 0 {
			continue
		}
		for i := range ss {
			ss[i].derive(ps)
		}
		r := aggregate(name, ss)
		r.Note = notes[name]
		r.Command = commands[name]
		out = append(out, r)
	}
	compare(out)
	return out
}
