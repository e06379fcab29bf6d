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

const checkUsage = `usage: wbbench check -device D -journal FILE [-wait 10s] [-json]
       wbbench check -device D -pattern seq|runs|single [-seed S] [-size N] [-page-size B] [-nonce X] [-wait 10s] [-json]

With -journal, checks what a -verify -journal run left (also after it was
killed): every page must be a valid page of the run holding at least the
newest version the journal says was synced for it (hot), or version 1
once the journal says "synced 1" (seq, runs, single).

With -pattern, checks a seq, runs or single -verify run that kept no
journal: every page of the layout that -seed, -size and -page-size give
(as wbbench -verify laid it out) must hold version 1; pages outside it are
not read. The run's nonce is taken from the first valid page of the
layout unless -nonce gives it; every page must carry it.

Every failure is printed as: page, expected, found. Exit status: 0 all
pages passed, 1 a page failed (or reading failed), 2 bad usage.`

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
	jsonOut := fs.Bool("json", false, "print one JSON document on stdout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, checkUsage+"\n\nflags:")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return exitOK
		}
		errorf(stderr, "check: %v", err)
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
	} else if err := writeCheck(stdout, rep); err != nil {
		errorf(stderr, "%v", err)
		return exitFailed
	}
	if !rep.OK() {
		return exitFailed
	}
	return exitOK
}

// writeCheck writes a check report for people: what was checked against
// what, the counts, every failure, and OK or FAILED.
func writeCheck(w io.Writer, rep *bench.CheckReport) error {
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
	fmt.Fprintf(&b, "pages    %s checked in %.2f s: %s required, %s valid, %s zero (allowed), %s bad\n",
		comma(rep.Pages), rep.Seconds, comma(rep.Required), comma(rep.Valid), comma(rep.Zero), comma(rep.Bad))
	for _, f := range rep.Failures {
		fmt.Fprintf(&b, "bad      page %d: expected %s, found %s\n", f.Page, f.Expected, f.Found)
	}
	if rep.OK() {
		b.WriteString("OK\n")
	} else {
		fmt.Fprintf(&b, "FAILED   %s of %s pages\n", comma(rep.Bad), comma(rep.Pages))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
