package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/bench"
)

// cliFlags are wbbench's flags. Sizes take go-humanize's forms (4096,
// 4KiB, 1GiB, 512M — where M, G are powers of 1000 and MiB, GiB of
// 1024).
type cliFlags struct {
	fs    *flag.FlagSet
	sweep bool

	device, size, pageSize, qd, maxIO string
	pattern, ring, baseline, inject   string
	journal, plot                     string
	cpuProfile, trace                 string
	runs, writers, fillGaps           int
	iopsLimit                         int
	cached, scatter                   bool
	duration, syncEvery               time.Duration
	seed                              uint64
	json, force, verify, hold         bool
	version                           bool
}

// errVersion is parse's answer to -version: print the version, exit 0.
var errVersion = errors.New("version")

func newFlags(sweep bool) *cliFlags {
	f := &cliFlags{sweep: sweep}
	name := "wbbench"
	if sweep {
		name = "wbbench sweep"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported as one line by the caller
	fs.Usage = func() {}
	f.fs = fs
	fs.StringVar(&f.device, "device", "", "block device or file to write to (default: make one: a /dev/shm loop device as root, else a temp file)")
	fs.StringVar(&f.size, "size", "", "bytes of the target to use, e.g. 1GiB or 512M (M, G: powers of 1000; MiB, GiB: of 1024) (default: the whole device; 1GiB for a target wbbench makes)")
	fs.StringVar(&f.pageSize, "page-size", "4KiB", "page size: a power of two, a multiple of the device's logical block size")
	if sweep {
		fs.StringVar(&f.qd, "qd", "1,2,4,...,128", "queue depths to sweep: a comma list; \"...\" continues the progression (doubling here)")
		fs.StringVar(&f.maxIO, "max-io", "", "largest writes to sweep, a comma list of whole numbers of pages, e.g. 128KiB,1MiB (default: min(1 MiB, the device's max_sectors_kb, max_segments memory pages))")
		fs.StringVar(&f.plot, "plot", "", "draw throughput against queue depth (steady median and min–max band per system and I/O size) into this file: .svg, .png or .pdf (an SVG or PDF gets a PNG beside it)")
	} else {
		fs.StringVar(&f.qd, "qd", "", "queue depth: writes in flight (default: the device's nr_requests, clamped to 32..128; 32 for a file); above nr_requests, the rest wait in the engine's ring")
		fs.StringVar(&f.maxIO, "max-io", "", "largest write, a whole number of pages, e.g. 256KiB (default: min(1 MiB, the device's max_sectors_kb, max_segments memory pages); at most max_hw_sectors_kb and 1024 pages)")
	}
	fs.StringVar(&f.pattern, "pattern", "seq", "dirty pattern: seq, runs, single or hot")
	fs.StringVar(&f.ring, "ring", "auto", "ring backend: auto, native, pwritev or iceber (iceber needs a build with -tags iceber)")
	fs.StringVar(&f.baseline, "baseline", "kernel,pwrite,fio", "baselines to run beside the engine: a comma list of kernel, pwrite, fio, or none")
	if sweep {
		fs.IntVar(&f.runs, "runs", 0, fmt.Sprintf("dirty-and-flush cycles per system at each point, systems alternated; run 1 (the first after the engine is opened) is reported apart, the rest as a median with its min–max (default %d)", bench.DefaultSweepRuns))
	} else {
		fs.IntVar(&f.runs, "runs", 0, fmt.Sprintf("dirty-and-flush cycles per system, systems alternated; run 1 (the first after the engine is opened) is reported apart, runs 2..N as a median with its min–max (default %d; -pattern hot: %d periods of -duration)", bench.DefaultRuns, bench.DefaultHotRuns))
	}
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "hot: how long each run writes")
	fs.IntVar(&f.writers, "writers", 4, "hot: writer goroutines")
	fs.DurationVar(&f.syncEvery, "sync-every", 500*time.Millisecond, "hot: time between syncs")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the dirty pattern")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile (runtime/pprof) of the measured runs to this file; samples carry the label system=engine, kernel, pwrite or fio (go tool pprof -tagfocus=system=engine FILE)")
	fs.StringVar(&f.trace, "trace", "", "write an execution trace (runtime/trace) of the measured runs to this file: each system's run a task, the engine's timed Sync a region (go tool trace FILE)")
	fs.BoolVar(&f.version, "version", false, "print wbbench's version (module, VCS revision and time where the build recorded them, Go) and exit")
	fs.BoolVar(&f.json, "json", false, "print one JSON document on stdout and nothing else")
	fs.BoolVar(&f.hold, "hold-kernel-writeback", false, "raise vm.dirty_background_ratio to 80 and vm.dirty_ratio to 90 for the run (root), so the kernel baseline writes its pages back inside its timed fdatasync and not while they are dirtied; the old values are put back at exit, also on SIGINT and SIGTERM")
	fs.BoolVar(&f.force, "force", false, "write to a target even if it is mounted, held, carries a file-system or partition signature, or (a file) holds data wbbench did not write")
	fs.IntVar(&f.fillGaps, "fill-gaps", 0, "engine.Config.FillGaps: write clean cached pages in gaps of up to this many pages between dirty runs, so they go out as one write (0: off; see -cached)")
	fs.BoolVar(&f.scatter, "scatter", false, "seq, runs, single: the cache hands out page memory in a shuffled order (the pattern's pages, or with -cached every page, are cached clean before the first cycle, in an order drawn from -seed), so pages next to each other on the device are not next to each other in memory, as in a buffer pool whose pages have been recycled")
	fs.BoolVar(&f.cached, "cached", false, "seq, runs, single: every page of the target is in the engine's cache, clean and up to date, before the pattern dirties its pages (so -fill-gaps has clean pages to fill with)")
	fs.IntVar(&f.iopsLimit, "iops-limit", 0, "a device model for the engine: complete at most this many writes per second, whatever their size (like a SATA SSD's 4 KiB write IOPS; 0: off)")
	fs.StringVar(&f.inject, "inject", "", "fault rules for the engine's ring, e.g. eio=0.01,short=0.01,delay=5ms@0.001 (see faultring.Parse)")
	fs.BoolVar(&f.verify, "verify", false, "write pages in the verify format (docs/design.md) through Cache.WriteAt, after zeroing the range (so wbbench check can tell this run's pages from what was there); turns the baselines off")
	fs.StringVar(&f.journal, "journal", "", "with -verify: record each successful sync's version in this file (implies -verify)")
	return f
}

// usage prints the flags.
func usage(w io.Writer, f *cliFlags) {
	if f.sweep {
		fmt.Fprintln(w, "usage: wbbench sweep [-qd 1,2,4,...,128] [-max-io 256KiB,1MiB] [-plot FILE.svg] [flags]")
	} else {
		fmt.Fprintln(w, "usage: wbbench [flags]\n       wbbench sweep [flags]                  (wbbench sweep -h for its flags)\n       wbbench check -device D -journal FILE  (checks what a -verify -journal run left; wbbench check -h)\n       wbbench check -device D -pattern P -seed S -size N  (a seq/runs/single -verify run without a journal)\n       wbbench -version")
	}
	fmt.Fprintln(w, "\nflags:")
	f.fs.SetOutput(w)
	f.fs.PrintDefaults()
	f.fs.SetOutput(io.Discard)
}

// parse parses args into options. Errors are *bench.UsageError naming
// the bad value, or flag.ErrHelp.
func (f *cliFlags) parse(args []string) (bench.Options, error) {
	var o bench.Options
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, flagError(f.fs, err)
	}
	if f.version {
		return o, errVersion
	}
	if f.fs.NArg() > 0 {
		return o, &bench.UsageError{Msg: fmt.Sprintf("unexpected argument %q (flags only; subcommand: sweep)", f.fs.Arg(0))}
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	var err error
	o.Device = f.device
	ps, err := parseSize("-page-size", f.pageSize, 1)
	if err != nil {
		return o, err
	}
	if ps > math.MaxInt32 {
		return o, usage2("-page-size %s: too large", f.pageSize)
	}
	o.PageSize = int(ps)
	if f.size != "" {
		if o.Size, err = parseTargetSize(f.size, ps); err != nil {
			return o, err
		}
	}
	if !f.sweep {
		if f.qd != "" {
			if o.QueueDepth, err = parseInt("-qd", f.qd, 1, bench.MaxQueueDepth); err != nil {
				return o, err
			}
		}
		if f.maxIO != "" {
			n, err := parseMaxIO(f.maxIO, ps)
			if err != nil {
				return o, err
			}
			o.MaxIOBytes = int(n)
		}
	}
	p, err := bench.ParsePattern(f.pattern)
	if err != nil {
		return o, usage2("-pattern: %v", err)
	}
	o.Pattern = p
	if p == bench.Hot && f.sweep {
		return o, usage2("-pattern hot: sweep measures flushes; use seq, runs or single")
	}
	switch f.ring {
	case "auto", "native", "pwritev", "iceber":
	default:
		return o, usage2("-ring %q: want auto, native, pwritev or iceber", f.ring)
	}
	o.Ring = f.ring
	o.Verify = f.verify || f.journal != ""
	o.Journal = f.journal
	if o.Verify && f.sweep {
		return o, usage2("-verify/-journal: not with sweep")
	}
	if o.Verify && !set["baseline"] {
		o.Baselines = nil // verify turns the baselines off
	} else if o.Baselines, err = bench.ParseBaselines(f.baseline); err != nil {
		return o, err
	}
	if o.Verify && len(o.Baselines) > 0 {
		which := "-verify"
		if f.journal != "" {
			which = "-journal"
		}
		return o, usage2("-baseline %s with %s: the baselines would overwrite the pages being verified (use -baseline none)", f.baseline, which)
	}
	if set["runs"] && f.runs < 1 {
		return o, usage2("-runs %d: must be at least 1 (2 or more give a steady median; the default is %d)", f.runs, bench.DefaultRuns)
	}
	o.Runs = f.runs
	if f.sweep && !set["runs"] {
		o.Runs = bench.DefaultSweepRuns
	}
	if f.writers < 1 || f.writers > 4096 {
		return o, usage2("-writers %d: must be from 1 to 4096", f.writers)
	}
	o.Writers = f.writers
	if f.duration <= 0 {
		return o, usage2("-duration %v: must be positive", f.duration)
	}
	o.Duration = f.duration
	if f.syncEvery <= 0 {
		return o, usage2("-sync-every %v: must be positive", f.syncEvery)
	}
	o.SyncEvery = f.syncEvery
	if p != bench.Hot {
		for _, name := range []string{"duration", "writers", "sync-every"} {
			if set[name] {
				what := map[string]string{"duration": "runs for a duration", "writers": "has writer goroutines", "sync-every": "syncs at an interval"}[name]
				return o, usage2("-%s %s: only -pattern hot %s; -pattern %s dirties a fixed set of pages and times one flush (add -pattern hot, or drop -%s)",
					name, f.fs.Lookup(name).Value, what, p, name)
			}
		}
	}
	if f.fillGaps < 0 || f.fillGaps > 1023 {
		return o, usage2("-fill-gaps %d: must be from 0 to 1023 pages", f.fillGaps)
	}
	o.FillGaps = f.fillGaps
	if f.iopsLimit < 0 {
		return o, usage2("-iops-limit %d: must not be negative (0: off)", f.iopsLimit)
	}
	o.IOPSLimit = f.iopsLimit
	if f.cached && p == bench.Hot {
		return o, usage2("-cached: only with seq, runs or single (hot writes its own pages)")
	}
	o.Cached = f.cached
	if f.scatter && p == bench.Hot {
		return o, usage2("-scatter: only with seq, runs or single (hot writes its own pages)")
	}
	o.Scatter = f.scatter
	o.Seed = f.seed
	o.Force = f.force
	o.HoldKernelWriteback = f.hold
	if f.inject != "" {
		if o.Faults, err = bench.ParseFaults(f.inject); err != nil {
			return o, usage2("%v", err)
		}
		o.Inject = f.inject
	}
	return o, nil
}

// flagError turns an error of the flag package into one line that
// names the flag and the value and points to -h.
func flagError(fs *flag.FlagSet, err error) error {
	help := fs.Name() + " -h lists the flags"
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return usage2("unknown flag %s (%s)", name, help)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return usage2("%s needs a value (%s)", name, help)
	}
	// invalid value "x" for flag -runs: parse error
	// invalid boolean value "x" for -json: parse error
	var val, name string
	if _, after, ok := strings.Cut(msg, "value "); ok {
		if q, rest, ok := strings.Cut(after, " for "); ok {
			val = q
			name, _, _ = strings.Cut(strings.TrimPrefix(rest, "flag "), ":")
		}
	}
	if fl := fs.Lookup(strings.TrimPrefix(name, "-")); fl != nil {
		want := "not a valid value"
		if g, ok := fl.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case int, int64, uint, uint64:
				want = "not a whole number"
			case time.Duration:
				want = "not a duration (e.g. 500ms, 10s, 1m)"
			case bool:
				want = "not true or false (a bool flag takes -" + fl.Name + " or -" + fl.Name + "=false)"
			}
		}
		return usage2("%s %s: %s (%s)", name, val, want, help)
	}
	return usage2("%s (%s)", msg, help)
}

// parseTargetSize parses -size: at least one page of ps bytes.
func parseTargetSize(s string, ps int64) (int64, error) {
	n, err := parseSize("-size", s, 0)
	if err != nil {
		return 0, err
	}
	if n < ps {
		return 0, usage2("-size %s (%s): less than one page (%s); give at least -size %s, or omit -size for the whole device (1 GiB for a target wbbench makes)",
			s, humanize.IBytes(uint64(n)), humanize.IBytes(uint64(ps)), bench.FlagBytes(ps))
	}
	return n, nil
}

// parseMaxIO parses a -max-io value: a whole number of pages of ps
// bytes. What the device takes is checked once it is known.
func parseMaxIO(s string, ps int64) (int64, error) {
	n, err := parseSize("-max-io", s, 0)
	if err != nil {
		return 0, err
	}
	switch {
	case n < ps:
		return 0, usage2("-max-io %s: smaller than one page (%s): a write carries whole pages; give at least -max-io %s (e.g. 256KiB, 1MiB)",
			s, humanize.IBytes(uint64(ps)), bench.FlagBytes(ps))
	case n%ps != 0:
		lo, hi := n-n%ps, n-n%ps+ps
		return 0, usage2("-max-io %s: not a whole number of %s pages; use -max-io %s or %s", s, humanize.IBytes(uint64(ps)), bench.FlagBytes(lo), bench.FlagBytes(hi))
	case n > math.MaxInt32:
		return 0, usage2("-max-io %s: too large (at most 1024 pages, %s)", s, bench.FlagBytes(1024*ps))
	}
	return n, nil
}

// usage2 is a usage error with a formatted message.
func usage2(format string, args ...any) error {
	return &bench.UsageError{Msg: fmt.Sprintf(format, args...)}
}

// parseSize parses a size with go-humanize (4096, 4KiB, 1GiB, 512M).
func parseSize(flagName, s string, min uint64) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || n > math.MaxInt64 {
		return 0, usage2("%s %q: not a size (want e.g. 4096, 64KiB, 1GiB, 512M)", flagName, s)
	}
	if n < min {
		return 0, usage2("%s %q: must be at least %d", flagName, s, min)
	}
	return int64(n), nil
}

func parseInt(flagName, s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, usage2("%s %q: not a whole number", flagName, s)
	}
	if n < lo || n > hi {
		return 0, usage2("%s %d: must be from %d to %d", flagName, n, lo, hi)
	}
	return n, nil
}

// parseList parses a comma list of values, where "..." between two
// values continues the progression of the two before it (geometric when
// the second is a whole multiple of the first, else arithmetic) up to
// the value after it: "1,2,4,...,128" is 1 2 4 8 16 32 64 128.
func parseList(flagName, s string, parse func(string) (int64, error)) ([]int64, error) {
	items := strings.Split(s, ",")
	var out []int64
	for i := 0; i < len(items); i++ {
		item := strings.TrimSpace(items[i])
		if item != "..." {
			v, err := parse(item)
			if err != nil {
				return nil, err
			}
			if len(out) > 0 && v <= out[len(out)-1] {
				return nil, usage2("%s %q: values must increase", flagName, s)
			}
			out = append(out, v)
			continue
		}
		if len(out) < 2 || i+1 >= len(items) || strings.TrimSpace(items[i+1]) == "..." {
			return nil, usage2("%s %q: \"...\" needs two values before it and one after", flagName, s)
		}
		end, err := parse(strings.TrimSpace(items[i+1]))
		if err != nil {
			return nil, err
		}
		a, b := out[len(out)-2], out[len(out)-1]
		next := func(v int64) int64 {
			if a > 0 && b%a == 0 && b/a > 1 {
				return v * (b / a)
			}
			return v + (b - a)
		}
		for v := next(b); v < end; v = next(v) {
			out = append(out, v)
			if len(out) > 1000 {
				return nil, usage2("%s %q: more than 1000 values", flagName, s)
			}
		}
	}
	if len(out) == 0 {
		return nil, usage2("%s %q: empty list", flagName, s)
	}
	return out, nil
}
