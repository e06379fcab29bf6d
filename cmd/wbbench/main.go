// Command wbbench measures the writeback engine on a device against the
// alternatives on the same device in the same run: the kernel's own
// writeback (buffered pwrite + fdatasync), hand-written O_DIRECT pwritev
// from QueueDepth goroutines, and fio's io_uring engine.
//
// Usage:
//
//	wbbench [flags]                 flush benchmark (or -pattern hot)
//	wbbench sweep -qd 1,2,4,...,128 the same flush at each queue depth
//	                                (and -max-io list), -plot FILE.svg
//	wbbench check -device D -journal FILE
//	                                check what a -verify -journal run left
//	wbbench check -device D -pattern P -seed S -size N
//	                                check a seq/runs/single -verify run
//	                                that kept no journal
//	wbbench -version                the version, VCS revision, Go
//
// With no -device, wbbench makes its own 1 GiB target — as root a loop
// device over a file in /dev/shm, else a temporary file — and removes it
// at exit, also on SIGINT, SIGTERM and on error. A named device is
// refused (exit status 2) if it is mounted, held open exclusively, or
// carries a file-system or partition signature, and a named file if it
// holds data wbbench did not write, unless -force.
//
// Each system runs -runs times (default 5), alternated; run 1 is
// reported apart from the median of the rest. -hold-kernel-writeback
// raises vm.dirty_* for the run and puts them back on every exit path
// (the first SIGINT or SIGTERM puts them back before anything else).
//
// Human output ends with one table; -json prints one JSON document on
// stdout and nothing else. Exit status: 0 success, 1 a run failed (an
// error is printed; results measured before it still are), 2 bad usage
// or a refused target (nothing was written), 130 interrupted.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wbengine/wbengine/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// The first signal puts back the sysctls -hold-kernel-writeback
		// raised, before anything else; after it, a second signal kills
		// at once (the default action) instead of waiting for the
		// cleanup.
		<-ctx.Done()
		bench.RestoreSysctls()
		stop()
	}()
	code := runMain(ctx)
	stop()
	os.Exit(code)
}

// runMain is wbbench; whatever way it ends (a panic too), the sysctls
// are put back.
func runMain(ctx context.Context) int {
	defer bench.RestoreSysctls()
	progName = os.Args[0]
	return runContext(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// progName is the program's name in the command line a report records.
var progName = "wbbench"

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "sweep" {
		return sweepMain(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "check" {
		return checkMain(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "help" {
		usage(stdout, newFlags(false))
		return exitOK
	}
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintln(stdout, bench.BuildVersion())
		return exitOK
	}
	return benchMain(ctx, args, stdout, stderr)
}

// commandLine is the command line that ran wbbench with args (args
// without the program name), for the report.
func commandLine(args []string) []string {
	return append([]string{progName}, args...)
}

func errorf(stderr io.Writer, format string, args ...any) {
	fmt.Fprintf(stderr, "wbbench: "+format+"\n", args...)
}
