package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/wbengine/wbengine/bench"
)

// checkMain is wbbench check: it reads what a -verify -journal run left
// on the device (also after the run was killed, or the machine lost
// power) and checks it against the journal.
func checkMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wbbench check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	device := fs.String("device", "", "the device or file the run wrote (required)")
	journal := fs.String("journal", "", "the run's journal (required)")
	wait := fs.Duration("wait", 10*time.Second, "how long to retry while a block device is busy (a killed writer's I/O draining)")
	jsonOut := fs.Bool("json", false, "print one JSON document on stdout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: wbbench check -device D -journal FILE [-wait 10s] [-json]\n\nflags:")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return exitOK
		}
		errorf(stderr, "%v", err)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		errorf(stderr, "check: unexpected argument %q", fs.Arg(0))
		return exitUsage
	case *device == "":
		errorf(stderr, "check: -device is required")
		return exitUsage
	case *journal == "":
		errorf(stderr, "check: -journal is required (it names the pattern, seed, nonce and what was synced)")
		return exitUsage
	case *wait < 0:
		errorf(stderr, "check: -wait %v: must not be negative", *wait)
		return exitUsage
	}
	rep, err := bench.Check(ctx, *device, *journal, *wait)
	if err != nil {
		errorf(stderr, "%v", err)
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
	} else {
		h := rep.Journal
		fmt.Fprintf(stdout, "check    %s against the journal of a %s run (seed %d, nonce %d, %s pages of %s)\n",
			rep.Device, h.Pattern, h.Seed, h.Nonce, humanize.Comma(int64(h.Pages)), humanize.IBytes(uint64(h.PageSize)))
		if rep.Synced {
			fmt.Fprintf(stdout, "synced   up to version %d\n", rep.Last)
		} else {
			fmt.Fprintln(stdout, "synced   nothing yet: only the format of written pages is checked")
		}
		fmt.Fprintf(stdout, "pages    %s checked: %s valid, %s zero (allowed), %s bad, in %.2f s\n",
			humanize.Comma(int64(rep.Pages)), humanize.Comma(int64(rep.Valid)), humanize.Comma(int64(rep.Zero)),
			humanize.Comma(int64(rep.Bad)), rep.Seconds)
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "bad      %s\n", p)
		}
		if rep.Bad > uint64(len(rep.Problems)) {
			fmt.Fprintf(stdout, "bad      … and %s more\n", humanize.Comma(int64(rep.Bad-uint64(len(rep.Problems)))))
		}
		if rep.OK() {
			fmt.Fprintln(stdout, "OK")
		} else {
			fmt.Fprintln(stdout, "FAILED")
		}
	}
	if !rep.OK() {
		return exitFailed
	}
	return exitOK
}
