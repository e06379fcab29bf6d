// Package ring owns the engine's way to the device: opening a target
// (OpenTarget: a block device opened O_DIRECT|O_EXCL or a regular file
// opened O_DIRECT, with its size and limits read once) and the rings
// that carry reads, writes, flushes and NOPs to it, behind one small
// interface (Ring). Nothing else in the module makes an io_uring call.
// Raw system calls and unsafe code stay in a few files named for them:
// uring_linux.go (the io_uring binary interface), syspwritev_linux.go
// (pwritev2/preadv2 on raw iovecs), discard_linux.go (BLKDISCARD) and
// iov.go (iovec arithmetic: the package's only iovec code).
//
// # Backends
//
// Open picks one by name from a registry of Openers (the type of
// whatever opens a ring on a target: OpenerOf binds a backend's name,
// engine.Config.OpenRing wraps one) that each backend file fills in its
// init function:
//
//   - "native" (native_linux.go): io_uring on golang.org/x/sys/unix.
//     One owner goroutine per ring, locked to its OS thread, is the only
//     one to touch the ring, so the ring is set up with SINGLE_ISSUER |
//     DEFER_TASKRUN | COOP_TASKRUN (flags the kernel refuses with EINVAL
//     are dropped one by one and named in Caps().Setup). user_data is a
//     slot index; steady-state I/O allocates nothing.
//   - "pwritev": a pool of goroutines calling pwritev/preadv/fdatasync;
//     the fallback where io_uring is refused, and a baseline.
//   - "iceber": github.com/iceber/iouring-go, compiled only with
//     -tags iceber (and -ldflags=-checklinkname=0), for differential
//     tests and benchmarks.
//
// Every backend drives its requests through one state machine
// (reqstate.go): the request, then the rest after a short transfer, or
// the same again after EAGAIN/EINTR. Interposers (Config.Interposers)
// see every one of those attempts and its result, on every backend:
// package faultring injects EIO, partial and short writes, EAGAIN,
// delays and flush errors by rule; package powercut models a volatile
// write cache; wbbench times writes.
//
// # Run: work on the owner thread
//
// Run(ctx, fn) calls fn with a Queue. On the native ring fn runs on the
// owner thread: Queue.Add puts requests into the submission queue
// without a hand-off, Flush is one io_uring_enter that submits and
// reaps, Wait and Reap wait for completions, and completions are
// delivered to the Handler inline, from inside those calls. The engine
// runs its writeback pass this way, so a pass costs one hand-off, not
// one per batch. Elsewhere fn runs on the caller's goroutine over Submit
// (CallerQueue). On the native ring, requests handed over by Submit go
// ahead of those a Run function queued and has not yet submitted (reads
// and flushes that a caller waits for pass the pass's writes).
//
// "auto" (the default) is native, or pwritev when io_uring setup is
// refused (EPERM, EACCES, ENOSYS: seccomp, kernel.io_uring_disabled);
// the reason goes to Config.Logf once and into Caps().Setup.
//
// # Concurrency contract
//
// Submit, RegisterBuffers, Caps and Close may be called from any
// goroutine. Submit hands a batch over in one step: it reserves
// len(reqs) free slots of a table of Config.Depth slots, blocking (not
// spinning) while too few are free, copies each Request into its slot,
// then queues the slots for the owner and wakes it: two short lock
// acquisitions and at most one eventfd write per batch, nothing per
// request. Blocked submitters are woken in batches, as slots free up.
//
// Ownership of a request passes with its slot:
//
//   - The Request value is copied at Submit; the caller may reuse it.
//   - The iovec array (Request.Iov's backing array) and the memory it
//     points to belong to the ring from Submit until the request's
//     Completion is delivered. The caller must keep both alive and not
//     change them; the ring may rewrite the iovecs (a short transfer is
//     resumed by advancing them in place), so a caller that resubmits a
//     failed request must rebuild its iovecs.
//   - A slot is free again only after the Handler returned from the
//     call that delivered its Completion.
//
// The Handler is called only by the goroutine that reaps the ring (the
// native ring's owner, also from inside a Run function's Queue calls),
// one call per reap with every completion of that reap, never
// concurrently and never from inside Submit. Its slice is
// reused: it is valid only during the call. The Handler must not block,
// and must not call Submit or Close (both may wait for the Handler's
// goroutine).
//
// Close stops accepting work (Submit returns ErrClosed, also to Submits
// blocked on free slots), waits until every accepted request completed
// and its Completion was delivered, then releases the ring. It does not
// close the Target: close that after its rings.
//
// # Results
//
// A Completion is final. The ring resubmits the rest of a short
// transfer for as long as each attempt makes progress (one that makes
// none completes with EIO for a write, ENODATA for a read at end of
// file), and resubmits -EAGAIN and -EINTR results up to
// Config.MaxRetries times; any other error completes the request with
// that errno and the bytes transferred so far. Writes and flushes are
// separate requests: a flush covers the writes that completed before it
// was submitted, and ordering is the caller's job.
//
// docs/design.md in the repository puts the packages together: the life
// of a page, the concurrency contract, the error model.
package ring
