// Package uringtrace counts, for tests, the requests io_uring hands to
// its io-wq worker threads instead of issuing them inline: the kernel's
// io_uring_queue_async_work tracepoint, read through a tracefs instance
// of its own (so it neither sees nor disturbs other tracing).
//
// A punted write costs a thread hand-off and the worker's blocking
// submit; the engine sizes its writes and its queue so the block layer
// never has to refuse one inline, and tests use this package to check
// that it does not.
//
// It needs root and tracefs with the io_uring events; Start reports
// ErrUnavailable otherwise, and tests skip. A Trace is used by one
// goroutine; events of every process are recorded, and Stop counts
// only the calling process's (by thread group id).
package uringtrace
