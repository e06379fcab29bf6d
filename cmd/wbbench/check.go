package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/bench"
)

const checkUsage = `usage: wbbench check -device D -journal FILE [-wait 10s] [-v] [-json]
       wbbench check -device D -pattern seq|runs|single [-seed S] [-size N] [-page-size B] [-nonce X] [-wait 10s] [-v] [-json]

With -journal, checks what a -verify -journal run left (also after it was
killed): every page must be a valid page of the run holding at least the
newest version the journal says was synced for it (hot), or version 1
once the journal says "synced 1" (seq, runs, single).

With -pattern, checks a seq, runs or single -verify run that kept no
journal: every page of the layout that -seed, -size and -page-size give
(as wbbench -verify laid it out) must hold version 1; pages outside it are
not read. The run's nonce is taken from the first valid page of the
layout unless -nonce gives it; every page must carry it.

A page that fails is this run's (damaged, misplaced, too old, or all zero
where the run had to have written) or holds another run's page or another
program's data. The report counts the failures by reason, in those two
groups, and lists the first few pages of each reason (-v or -json: every
page). Another run's or program's data where this run had to write nothing
is reported apart and is not a failure: a -verify run zeroes its range
before it writes. Exit status: 0 all pages passed, 1 a page failed (or
reading failed), 2 bad usage.`

// checkMain is wbbench check: it reads what a -verify run left on the
// device (also after the run was killed, or the machine lost power) and
// checks it against the run's journal or its pattern.
func checkMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wbbench check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	device := fs.String("device", "", "the device or file the run wrote (required)")
	journal := fs.String("journal", "", "the run's journal (it names the pattern, seed, nonce, size and what was synced)")
	pattern := fs.String("pattern", "", "without a journal: the run's pattern, seq, runs or single")
	seed := fs.Uint64("seed", 1, "with -pattern: the run's -seed")
	size := fs.String("size", "", "with -pattern: the run's -size (default: the whole device, as wbbench's)")
	pageSize := fs.String("page-size", "4KiB", "with -pattern: the run's -page-size")
	nonce := fs.Uint64("nonce", 0, "with -pattern: the run's nonce (default: the first valid page's)")
	wait := fs.Duration("wait", 10*time.Second, "how long to retry while a block device is busy (a killed writer's I/O draining)")
	jsonOut := fs.Bool("json", false, "print one JSON document on stdout (it lists every page that failed)")
	verbose := fs.Bool("v", false, "list every page that failed (by default: counts by reason and the first few pages of each)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, checkUsage+"\n\nflags:")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return exitOK
		}
		errorf(stderr, "check: %v", flagError(fs, err))
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o := bench.CheckOptions{Device: *device, Journal: *journal, Wait: *wait}
	switch {
	case fs.NArg() > 0:
		errorf(stderr, "check: unexpected argument %q", fs.Arg(0))
		return exitUsage
	case *device == "":
		errorf(stderr, "check: -device is required")
		return exitUsage
	case *journal != "" && *pattern != "":
		errorf(stderr, "check: -journal and -pattern exclude each other: the journal names the pattern (give -journal), or there is none (give -pattern, -seed, -size)")
		return exitUsage
	case *journal == "" && *pattern == "":
		errorf(stderr, "check: -journal is required (it names the pattern, seed, nonce and what was synced), or -pattern with -seed and -size for a seq, runs or single run without one")
		return exitUsage
	case *wait < 0:
		errorf(stderr, "check: -wait %v: must not be negative", *wait)
		return exitUsage
	}
	if *journal != "" {
		for _, name := range []string{"seed", "size", "page-size", "nonce"} {
			if set[name] {
				errorf(stderr, "check: -%s: only with -pattern (the journal names the run's %s)", name, strings.ReplaceAll(name, "-", " "))
				return exitUsage
			}
		}
	} else {
		p, err := bench.ParsePattern(*pattern)
		if err != nil {
			errorf(stderr, "check: -pattern: %v", err)
			return exitUsage
		}
		o.Pattern, o.Seed = p, *seed
		if *size != "" {
			if o.Size, err = parseSize("-size", *size, 1); err != nil {
				errorf(stderr, "check: %v", err)
				return exitUsage
			}
		}
		ps, err := parseSize("-page-size", *pageSize, 1)
		if err == nil && ps > math.MaxInt32 {
			err = usage2("-page-size %s: too large", *pageSize)
		}
		if err != nil {
			errorf(stderr, "check: %v", err)
			return exitUsage
		}
		o.PageSize = int(ps)
		if set["nonce"] {
			if *nonce > math.MaxUint32 {
				errorf(stderr, "check: -nonce %d: nonces are 32-bit (at most %d)", *nonce, uint32(math.MaxUint32))
				return exitUsage
			}
			o.Nonce, o.HasNonce = uint32(*nonce), true
		}
	}
	rep, err := bench.Check(ctx, o)
	if err != nil {
		errorf(stderr, "check: %v", err)
		if bench.IsUsage(err) {
			return exitUsage
		}
		return exitFailed
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			errorf(stderr, "%v", err)
			return exitFailed
		}
	} else if err := writeCheck(stdout, rep, *verbose); err != nil {
		errorf(stderr, "%v", err)
		return exitFailed
	}
	if !rep.OK() {
		return exitFailed
	}
	return exitOK
}

// firstPages is how many pages of each reason check lists without -v.
const firstPages = 5

// writeFailures writes one group of failures: a heading with their
// count, then per reason its count and the first pages (every page with
// verbose, one line each).
func writeFailures(b *strings.Builder, tag, what string, fs []bench.CheckFailure, verbose bool) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintf(b, "%-8s %s: %s\n", tag, what, humanize.Comma(int64(len(fs))))
	var reasons []string
	by := map[string][]bench.CheckFailure{}
	for _, f := range fs {
		if by[f.Reason] == nil {
			reasons = append(reasons, f.Reason)
		}
		by[f.Reason] = append(by[f.Reason], f)
	}
	for _, r := range reasons {
		list := by[r]
		fmt.Fprintf(b, "  %-9s %s\n", r, humanize.Comma(int64(len(list))))
		n := len(list)
		if !verbose {
			n = min(n, firstPages)
		}
		for _, f := range list[:n] {
			fmt.Fprintf(b, "    page %d: expected %s, found %s\n", f.Page, f.Expected, f.Found)
		}
		if n < len(list) {
			fmt.Fprintf(b, "    … and %s more\n", humanize.Comma(int64(len(list)-n)))
		}
	}
}

// hasMore reports whether some reason has more pages than check lists
// without -v.
func hasMore(rep *bench.CheckReport) bool {
	for _, m := range []map[string]uint64{rep.BadByReason, rep.ForeignByReason} {
		for _, n := range m {
			if n > firstPages {
				return true
			}
		}
	}
	return false
}

// writeCheck writes a check report for people: what was checked against
// what, the counts, the failures grouped by whose data the page holds
// and by reason (every page with verbose), and OK or FAILED.
func writeCheck(w io.Writer, rep *bench.CheckReport, verbose bool) error {
	var b strings.Builder
	r := rep.Run
	comma := func(n uint64) string { return humanize.Comma(int64(n)) }
	run := fmt.Sprintf("seed %d, %s pages of %s", r.Seed, comma(r.Pages), humanize.IBytes(uint64(r.PageSize)))
	if r.Source == "journal" {
		fmt.Fprintf(&b, "check    %s against the journal %s of a %s run (%s, nonce %d)\n", rep.Device, r.JournalFile, r.Pattern, run, r.Nonce)
		switch {
		case !rep.Synced:
			fmt.Fprintln(&b, "synced   nothing yet: a page may be all zero or a valid page of the run")
		case r.Pattern == string(bench.Hot):
			fmt.Fprintf(&b, "synced   up to version %s: each page must hold at least the newest version ≤ %s that went to it\n", comma(rep.Last), comma(rep.Last))
		default:
			fmt.Fprintf(&b, "synced   version %d: every page of the pattern must hold version 1\n", rep.Last)
		}
	} else {
		fmt.Fprintf(&b, "check    %s against the %s pattern (%s): every page of it must hold version 1\n", rep.Device, r.Pattern, run)
		switch {
		case r.NonceFrom == "-nonce":
			fmt.Fprintf(&b, "nonce    %d, from -nonce\n", r.Nonce)
		case r.NonceFrom != "":
			fmt.Fprintf(&b, "nonce    %d, taken from %s, the first valid page of the pattern (-nonce gives it)\n", r.Nonce, r.NonceFrom)
		default:
			fmt.Fprintln(&b, "nonce    unknown: no page of the pattern is valid")
		}
	}
	fmt.Fprintf(&b, "pages    %s checked in %.2f s: %s required, %s valid, %s zero (allowed), %s bad",
		comma(rep.Pages), rep.Seconds, comma(rep.Required), comma(rep.Valid), comma(rep.Zero), comma(rep.Bad))
	if rep.Foreign > 0 {
		fmt.Fprintf(&b, ", %s left by another run or program where this run wrote nothing", comma(rep.Foreign))
	}
	b.WriteString("\n")
	var this, other []bench.CheckFailure
	for _, f := range rep.Failures {
		if f.Class == bench.ClassOther {
			other = append(other, f)
		} else {
			this = append(this, f)
		}
	}
	writeFailures(&b, "bad", "this run's pages, damaged, misplaced, too old or missing", this, verbose)
	writeFailures(&b, "bad", "left by another run or another program, where this run had to have written", other, verbose)
	writeFailures(&b, "foreign", "left by another run or another program, where this run wrote nothing (not a failure)", rep.ForeignPages, verbose)
	if !verbose && len(rep.Failures)+len(rep.ForeignPages) > 0 && hasMore(rep) {
		b.WriteString("(the first pages of each reason; -v lists every page, -json too)\n")
	}
	if rep.OK() {
		b.WriteString("OK\n")
	} else {
		fmt.Fprintf(&b, "FAILED   %s of %s pages\n", comma(rep.Bad), comma(rep.Pages))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
