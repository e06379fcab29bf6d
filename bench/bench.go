package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/internal/verify"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/faultring"
)

// Baselines are the systems the engine is compared with, in the order
// they run after it.
var Baselines = []string{"kernel", "pwrite", "fio"}

// ParseBaselines parses a -baseline value: a comma-separated list of
// kernel, pwrite and fio, or "none".
func ParseBaselines(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "none" || s == "" {
		return nil, nil
	}
	var out []string
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(Baselines, name) {
			return nil, usagef("-baseline %q: unknown baseline %q (want a comma list of %s, or none)", s, name, strings.Join(Baselines, ", "))
		}
		if slices.Contains(out, name) {
			return nil, usagef("-baseline %q: %s given twice", s, name)
		}
		out = append(out, name)
	}
	return out, nil
}

// Default runs: enough alternated runs for a steady median of runs 2..N
// and its spread, the first run (after the engine was opened) apart.
// Hot runs are periods of Duration each; a sweep runs each point
// DefaultSweepRuns times (wbbench sweep sets it).
const (
	DefaultRuns      = 5
	DefaultHotRuns   = 3
	DefaultSweepRuns = 3
)

// MaxQueueDepth is the largest Options.QueueDepth: the most requests
// the engine's ring takes (ring.MaxDepth).
const MaxQueueDepth = ring.MaxDepth

// ParseFaults parses -inject's fault rules for Options.Faults (the
// syntax is faultring.Parse's), so that wbbench reaches the ring only
// through this package.
func ParseFaults(spec string) ([]faultring.Rule, error) { return faultring.Parse(spec) }

// Options configure a benchmark. Zero values take the defaults noted.
type Options struct {
	Device     string // "" = make a target (see PrepareTarget)
	Size       int64  // bytes of the target to use; 0 = all, or 1 GiB for a made target
	PageSize   int    // default 4096
	QueueDepth int    // 0 = the engine's default
	MaxIOBytes int    // 0 = the engine's default
	Pattern    Pattern
	Ring       string   // engine.Config.Ring; "" = auto
	Baselines  []string // subset of Baselines, run in that order
	Runs       int      // dirty-and-flush cycles (hot: periods); default DefaultRuns (hot: DefaultHotRuns)
	Seed       uint64

	// Hot pattern.
	Duration  time.Duration // each period; default 5 s
	Writers   int           // default 4
	SyncEvery time.Duration // default 500 ms

	Force bool
	// HoldKernelWriteback raises vm.dirty_background_ratio and
	// vm.dirty_ratio for the run (80 and 90, as the reference
	// measurement), so the kernel baseline's writeback happens inside its
	// timed fdatasync; Close (or RestoreSysctls) puts them back. It needs
	// root and the kernel baseline.
	HoldKernelWriteback bool
	Inject              string // -inject, as given (for the report)
	// FillGaps is engine.Config.FillGaps.
	FillGaps int
	// Cached puts every page of the target in the engine's cache, clean
	// and up to date, before the pattern dirties its own (the gap pages a
	// fill can write).
	Cached bool
	// Scatter hands out the cache's page memory in a shuffled order: the
	// pattern's pages (every page with Cached) are put in the cache,
	// clean, in an order drawn from Seed before the first cycle, so
	// pages next to each other on the device are not next to each other
	// in memory, as in a buffer pool whose pages have been recycled.
	Scatter bool
	// IOPSLimit models a device limited by its I/O count: the engine's
	// ring completes at most that many writes per second (0: off).
	IOPSLimit int
	Faults    []faultring.Rule

	// Verify writes pages in the verify format (internal/verify) with
	// Cache.WriteAt only; Journal, if set, is the journal file (it
	// implies Verify). Neither goes with baselines.
	Verify  bool
	Journal string

	// CommandLine is the command line that asked for the benchmark, for
	// the report's provenance.
	CommandLine []string

	// Monitor, if set, is kept up to date with a one-line status.
	Monitor *Monitor
	// Logf receives notices (a fallback taken, a baseline skipped).
	Logf func(format string, args ...any)

	// For tests: never make a loop device; where temporary targets go;
	// the fio binary ("" = look up "fio" on PATH).
	NoLoop   bool
	TempDirs []string
	FioPath  string
}

func (o *Options) setDefaults() error {
	if o.PageSize == 0 {
		o.PageSize = 4096
	}
	if o.Pattern == "" {
		o.Pattern = Seq
	}
	if _, err := ParsePattern(string(o.Pattern)); err != nil {
		return usagef("-pattern: %v", err)
	}
	if o.Runs == 0 {
		o.Runs = DefaultRuns
		if o.Pattern == Hot {
			o.Runs = DefaultHotRuns
		}
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if o.Writers == 0 {
		o.Writers = 4
	}
	if o.SyncEvery == 0 {
		o.SyncEvery = 500 * time.Millisecond
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Journal != "" {
		o.Verify = true
	}
	switch {
	case o.Runs < 0:
		return usagef("-runs %d: must be at least 1", o.Runs)
	case o.QueueDepth < 0:
		return usagef("-qd %d: must be positive", o.QueueDepth)
	case o.MaxIOBytes < 0:
		return usagef("-max-io %d: must be positive", o.MaxIOBytes)
	case o.Writers < 0:
		return usagef("-writers %d: must be at least 1", o.Writers)
	case o.Duration < 0:
		return usagef("-duration %v: must be positive", o.Duration)
	case o.SyncEvery < 0:
		return usagef("-sync-every %v: must be positive", o.SyncEvery)
	case o.Verify && len(o.Baselines) > 0:
		return usagef("-baseline %s with -verify or -journal: the baselines would overwrite the pages being verified (use -baseline none)", strings.Join(o.Baselines, ","))
	}
	return nil
}

// Bench is a prepared benchmark: a checked target, the pattern laid out
// over it, and the page cache the engine runs on. It is not safe for
// concurrent use.
type Bench struct {
	opts   Options
	target *Target
	n      uint64  // pages on the target
	layout *Layout // nil for hot
	cache  *pages.Cache
	src    *alignedBuf // the baselines' copy of the pattern's pages
	tmpl   []byte      // the page template dirtying copies from
	nonce  uint32
	cycle  uint64 // dirty cycles so far (stamped into pages)

	journal *verify.Journal
	zeroed  string // -verify: how the range was zeroed before the run
	// warnings go into the report (a -max-io the block layer splits).
	warnings []string
	hot      *hotState
	// dirtied: the engine's cache got every page of the layout (version
	// 1) at least once, so a Sync that returns nil makes "synced 1" true.
	dirtied bool
	// syncErrs is every failed sync, in order (Report.SyncErrors).
	syncErrs []string

	hold *sysctlHold // -hold-kernel-writeback: what to put back
	eng  *engineSys  // the engine at the current settings
	fio  string      // path of fio, "" when not found

	// For the report's provenance: when Open began, the sysctls then,
	// fio's version.
	started    time.Time
	sysctls    map[string]string
	fioVersion string
	skipped    []Skip
	mon        *Monitor
	runLabel   atomic.Pointer[string]
}

// Open prepares a benchmark: it checks the options, finds or makes the
// target and checks it (PrepareTarget), lays out the pattern, and opens
// the engine once to validate its configuration and ring backend —
// all before anything is written. Errors that are the caller's (bad
// values, unsafe targets, a backend not built in) satisfy IsUsage.
func Open(o Options) (*Bench, error) {
	started := time.Now()
	sysctls := readSysctls() // before -hold-kernel-writeback changes them
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	t, err := PrepareTarget(TargetOptions{
		Device: o.Device, Size: o.Size, PageSize: o.PageSize, Force: o.Force,
		TempDirs: o.TempDirs, NoLoop: o.NoLoop,
	})
	if err != nil {
		return nil, err
	}
	b := &Bench{opts: o, target: t, n: uint64(t.Size) / uint64(o.PageSize), mon: o.Monitor, started: started, sysctls: sysctls}
	if b.mon == nil {
		b.mon = &Monitor{}
	}
	if err := b.open(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bench) open() error {
	o := &b.opts
	ps := o.PageSize
	capacity := b.n
	if o.Pattern != Hot {
		l, err := NewLayout(o.Pattern, o.Seed, b.n)
		if err != nil {
			return err
		}
		if l.Pages == 0 {
			return usagef("-size %d: the %s pattern dirties no page of %d", b.target.Size, o.Pattern, b.n)
		}
		b.layout = l
		if !o.Cached {
			capacity = l.Pages
		}
	}
	if capacity > 1<<32-1 {
		return usagef("-size %d: %d pages of %d bytes is more than the page cache takes", b.target.Size, capacity, ps)
	}
	if b.layout != nil {
		// The engine's cache holds every page of the pattern, and the
		// kernel and pwrite baselines keep a copy of them: refuse a size
		// that cannot fit in memory rather than swap or be OOM-killed.
		need := int64(capacity) * int64(ps)
		if slices.Contains(o.Baselines, "kernel") || slices.Contains(o.Baselines, "pwrite") {
			need *= 2
		}
		if avail := memAvailable(); avail > 0 && need > avail/10*9 {
			return usagef("-size %s: the %s pattern over it dirties %s pages, which need %s of memory (the engine's cache, and a copy for the kernel and pwrite baselines), and %s is available; pass a smaller -size",
				humanize.IBytes(uint64(b.target.Size)), o.Pattern, humanize.Comma(int64(capacity)), humanize.IBytes(uint64(need)), humanize.IBytes(uint64(avail)))
		}
	}
	var nonce [4]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	b.nonce = binary.LittleEndian.Uint32(nonce[:])
	b.tmpl = pageTemplate(ps)
	if o.MaxIOBytes > 0 {
		if err := b.CheckMaxIO(o.MaxIOBytes); err != nil {
			return err
		}
	}
	var err error
	b.cache, err = pages.New(pages.Config{PageSize: ps, Capacity: int(capacity)})
	if err != nil {
		return fmt.Errorf("bench: page cache: %w", err)
	}
	if b.eng, err = b.openEngine(o.QueueDepth, o.MaxIOBytes); err != nil {
		return err
	}
	switch {
	case o.Cached:
		if err := b.cacheAll(); err != nil {
			return err
		}
	case o.Scatter:
		if err := b.scatterLayout(); err != nil {
			return err
		}
	}
	for _, name := range o.Baselines {
		switch {
		case name == "kernel" && b.target.Kind != ring.KindBlock:
			b.skip("kernel", "it needs a block device; the target is a file (whose fdatasync measures its file system: on tmpfs it writes nothing)")
		case name == "fio" && rowOf(o.Pattern).fio == nil:
			b.skip("fio", rowOf(o.Pattern).noFio)
		case name == "fio":
			path := o.FioPath
			if path == "" {
				path = "fio"
			}
			if p, err := exec.LookPath(path); err != nil {
				b.skip("fio", "fio is not on PATH (apt-get install fio)")
			} else {
				b.fio = p
				b.fioVersion = fioVersionOf(p)
			}
		}
	}
	if o.HoldKernelWriteback {
		if err := b.holdWriteback(); err != nil {
			return err
		}
	}
	if b.layout != nil && (slices.Contains(o.Baselines, "kernel") || slices.Contains(o.Baselines, "pwrite")) {
		if b.src, err = newAlignedBuf(int(b.layout.Pages) * ps); err != nil {
			return err
		}
	}
	if o.Pattern == Hot {
		b.hot = newHotState(b.n, o.Writers)
	}
	if o.Verify {
		if err := b.zeroForVerify(); err != nil {
			return err
		}
	}
	if o.Journal != "" {
		b.journal, err = verify.CreateJournal(o.Journal, verify.JournalHeader{
			Pattern: string(o.Pattern), Seed: o.Seed, Nonce: b.nonce, Pages: b.n, PageSize: ps,
		})
		if err != nil {
			return usagef("-journal %s: %v", o.Journal, err)
		}
	}
	return nil
}

// maxIOPages is the most pages one write of the engine carries (1024
// iovecs of at least a page each).
const maxIOPages = 1024

// CheckMaxIO checks a -max-io value against the page size and the
// target, before anything is written: a whole number of pages, at most
// maxIOPages of them, and at most what the device takes in one request
// (max_hw_sectors_kb). Above the device's max_sectors_kb (a soft limit
// the block layer splits at) it is taken, with a warning in the report.
func (b *Bench) CheckMaxIO(n int) error {
	ps := b.opts.PageSize
	size := humanize.IBytes(uint64(n))
	switch {
	case n < ps:
		return usagef("-max-io %s: smaller than one page (%s); give at least -max-io %s", size, humanize.IBytes(uint64(ps)), FlagBytes(int64(ps)))
	case n%ps != 0:
		return usagef("-max-io %s: not a whole number of %s pages; use -max-io %s or %s", size, humanize.IBytes(uint64(ps)), FlagBytes(int64(n-n%ps)), FlagBytes(int64(n-n%ps+ps)))
	case n > maxIOPages*ps:
		return usagef("-max-io %s: more than %d pages of %s (%s), the most one write carries; use at most -max-io %s",
			size, maxIOPages, humanize.IBytes(uint64(ps)), humanize.IBytes(uint64(maxIOPages*ps)), FlagBytes(int64(maxIOPages*ps)))
	}
	q := readQueueLimits(b.target.Dev)
	if q == nil {
		return nil
	}
	if hw := q.MaxHwSectorsKB; hw > 0 && n > hw<<10 {
		most := (hw << 10) / ps * ps
		return usagef("-max-io %s: above what %s takes in one request (max_hw_sectors_kb %d = %s); use at most -max-io %s",
			size, b.target.Path, hw, humanize.IBytes(uint64(hw<<10)), FlagBytes(int64(most)))
	}
	if soft := q.MaxSectorsKB; soft > 0 && n > soft<<10 {
		w := fmt.Sprintf("-max-io %s is above %s's max_sectors_kb %d (%s): the block layer splits every larger write into requests of at most %s (raise /sys/block/%s/queue/max_sectors_kb, up to max_hw_sectors_kb %d, to avoid it)",
			size, b.target.Path, soft, humanize.IBytes(uint64(soft<<10)), humanize.IBytes(uint64(soft<<10)), b.target.Dev, q.MaxHwSectorsKB)
		if !slices.Contains(b.warnings, w) {
			b.warnings = append(b.warnings, w)
			b.opts.Logf("%s", w)
		}
	}
	return nil
}

// holdWriteback holds the kernel's writeback back for the run
// (-hold-kernel-writeback); it needs the kernel baseline.
func (b *Bench) holdWriteback() error {
	if !b.runs("kernel") {
		why := "-baseline has no kernel"
		for _, s := range b.skipped {
			if s.Name == "kernel" {
				why = "the kernel baseline is skipped: " + s.Reason
			}
		}
		return usagef("-hold-kernel-writeback: there is no kernel writeback to hold (%s); drop the flag", why)
	}
	var err error
	if b.hold, err = holdKernelWriteback(b.opts.Logf); err != nil {
		return err
	}
	b.opts.Logf("holding kernel writeback back for the run: %s (put back at exit; after a SIGKILL, by the next wbbench -hold-kernel-writeback)", b.hold.describeHeld())
	return nil
}

// zeroForVerify zeroes the run's range before a -verify run writes it:
// what an earlier run (or anything else) left there would make check
// report pages this run never wrote.
func (b *Bench) zeroForVerify() error {
	if b.target.Made != "" {
		b.zeroed = "made for this run: all zero"
		return nil
	}
	b.status("zeroing the range for -verify")
	how, err := zeroRange(b.target.Path, b.target.Kind == ring.KindBlock, b.target.Size)
	if err != nil {
		return err
	}
	b.zeroed = fmt.Sprintf("zeroed bytes [0, %d) first: %s", b.target.Size, how)
	b.opts.Logf("-verify: %s", b.zeroed)
	return nil
}

// Skip is a baseline that did not run, and why.
type Skip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

func (b *Bench) skip(name, why string) {
	b.skipped = append(b.skipped, Skip{name, why})
}

func (b *Bench) runs(name string) bool {
	if !slices.Contains(b.opts.Baselines, name) {
		return false
	}
	for _, s := range b.skipped {
		if s.Name == name {
			return false
		}
	}
	return true
}

// Target is the target the benchmark writes to.
func (b *Bench) Target() *Target { return b.target }

// Close closes the engine and the cache and removes a target the
// benchmark made. It is safe to call more than once.
func (b *Bench) Close() error {
	var errs []error
	if b.hold != nil {
		// Already done if a signal came (RestoreSysctls); saying so here
		// covers both paths.
		if err := b.hold.restore(); err != nil {
			errs = append(errs, err)
		} else {
			b.opts.Logf("kernel writeback no longer held: %s put back", b.hold.describeSaved())
		}
		b.hold = nil
	}
	if b.eng != nil {
		errs = append(errs, b.eng.close())
		b.eng = nil
	}
	if b.cache != nil {
		errs = append(errs, b.cache.Close())
		b.cache = nil
	}
	b.src.free()
	b.src = nil
	if b.journal != nil {
		errs = append(errs, b.journal.Close())
		b.journal = nil
	}
	if b.target != nil {
		errs = append(errs, b.target.Close())
	}
	return errors.Join(errs...)
}

// engineError turns an engine.Open error into what the caller should see.
func engineError(o *Options, err error) error {
	switch {
	case errors.Is(err, ring.ErrNotSupported), errors.Is(err, ring.ErrBadConfig):
		return usagef("-ring %s: %v", o.Ring, err)
	case errors.Is(err, engine.ErrConfig):
		return usagef("%v", err)
	case errors.Is(err, ring.ErrRefused):
		return usagef("-ring %s: %v (use -ring auto or pwritev)", o.Ring, err)
	}
	return err
}

// pageTemplate is the bytes every non-verify page starts from: SplitMix64
// words from a fixed seed (so pages do not compress or dedupe to
// nothing). fill stamps each page's first 24 bytes.
func pageTemplate(ps int) []byte {
	t := make([]byte, ps)
	for k := 0; k+8 <= ps; k += 8 {
		binary.LittleEndian.PutUint64(t[k:], verify.SplitMix64(0x7762656e6368+uint64(k)))
	}
	return t
}

// fillMagic opens every page the benchmark writes outside -verify, and
// fioMagic every 8 bytes of what fio writes (--buffer_pattern).
const (
	fillMagic = "WBBENCH0"
	fioMagic  = "WBENCH00"
)

// fill writes the contents of page index into dst: the template, with
// the magic, the index and stamp (the dirty cycle, or the hot version)
// in front.
func (b *Bench) fill(dst []byte, index, stamp uint64) {
	copy(dst, b.tmpl)
	copy(dst, fillMagic)
	binary.LittleEndian.PutUint64(dst[8:], index)
	binary.LittleEndian.PutUint64(dst[16:], stamp)
}

// Monitor holds a one-line status of a running benchmark, for a
// progress display. Its methods may be called from any goroutine.
type Monitor struct {
	f atomic.Pointer[func() string]
}

// Line is the current status, or "".
func (m *Monitor) Line() string {
	if f := m.f.Load(); f != nil {
		return (*f)()
	}
	return ""
}

func (m *Monitor) set(f func() string) { m.f.Store(&f) }

func (b *Bench) status(format string, args ...any) {
	label := ""
	if p := b.runLabel.Load(); p != nil {
		label = *p
	}
	s := label + fmt.Sprintf(format, args...)
	b.mon.set(func() string { return s })
}

func (b *Bench) statusFunc(f func() string) {
	label := ""
	if p := b.runLabel.Load(); p != nil {
		label = *p
	}
	b.mon.set(func() string { return label + f() })
}

func (b *Bench) setRunLabel(s string) { b.runLabel.Store(&s) }

// syncFailed records a failed sync for the report.
func (b *Bench) syncFailed(err error) {
	label := ""
	if p := b.runLabel.Load(); p != nil {
		label = *p
	}
	b.syncErrs = append(b.syncErrs, label+err.Error())
}

// ctxErr is a helper for loops that check for cancellation now and then.
func ctxErr(ctx context.Context) error { return context.Cause(ctx) }

// FlagBytes writes n bytes as a size flag takes it back exactly: in the
// largest binary unit that divides it (4MiB, 1280KiB), else in bytes.
// Refusals suggest values in this form, so the value suggested is the
// value that runs (humanize's "1.3 MiB" would not be).
func FlagBytes(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
