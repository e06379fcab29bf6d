// Package bench is wbbench's machinery: dirty patterns, targets and
// their safety checks, the engine's measurement and the baselines it is
// compared with, and the reports.
//
// A benchmark (Open) checks its options and its target before anything
// is written, lays the pattern out over the target (NewLayout), and
// opens the engine on a page cache whose capacity is the pattern's
// pages, with its ring wrapped for timing (TimedRing) and, with -inject,
// for fault injection (ring/faultring). Run then measures the engine and
// each baseline in turn, Runs times, and returns a Report: run 1 apart,
// the steady median of runs 2..N with its spread, each ratio to the
// engine with its spread, what the block layer counted, and the
// provenance; Sweep does that at several queue depths and I/O sizes.
// Check reads back what a -verify -journal run left on a device and
// tells this run's damage from what another run or program left.
//
// What is timed: for the engine, Sync after the pattern was dirtied
// into the cache; for the kernel baseline, fdatasync after buffered
// pwrite of the same pages (the device's write counters show how much
// the kernel wrote back before it: HoldKernelWriteback holds that back); for the pwrite baseline, O_DIRECT pwritev
// of the engine's writes from QueueDepth goroutines plus fdatasync; for
// fio, its own runtime. Each result also has the total with dirtying
// included. README.md in this directory has the details.
//
// A pattern is one row of a table (pattern.go): its name, its layout,
// the fio job of the same shape or why it has none; the timing wrapper
// goes by a request's Op and ring slot, not by the engine's tags.
//
// # Concurrency
//
// A Bench is used by one goroutine. Inside a run, the hot pattern's
// writers, the pwrite baseline's goroutines and the ring's completion
// handler work concurrently; what they share is atomic or guarded as
// its field comments say. Monitor may be read from any goroutine.
package bench
