package ring

import (
	"context"
	"errors"
	"syscall"
)

// Op is the operation a Request asks for.
type Op uint8

const (
	// OpWrite writes Iov at Off (IORING_OP_WRITEV, WRITEV_FIXED or
	// WRITE_FIXED; pwritev in the pool backend).
	OpWrite Op = iota + 1
	// OpRead reads into Iov from Off (READV, READV_FIXED, READ_FIXED).
	OpRead
	// OpFlush flushes the device's volatile write cache (IORING_OP_FSYNC
	// with IORING_FSYNC_DATASYNC; fdatasync in the pool backend). A flush
	// covers the writes that completed before it was submitted; ordering a
	// flush after the writes it must cover is the caller's job. Off and Iov
	// are ignored.
	OpFlush
	// OpNop does nothing (IORING_OP_NOP); benchmarks use it to measure the
	// ring's own cost.
	OpNop
)

func (o Op) String() string {
	switch o {
	case OpWrite:
		return "write"
	case OpRead:
		return "read"
	case OpFlush:
		return "flush"
	case OpNop:
		return "nop"
	}
	return "op?"
}

// Request is one I/O handed to a Ring. Submit copies the Request itself;
// the iovec array and the memory it points to belong to the ring from
// Submit until the request's Completion is delivered: the caller must keep
// them alive and unchanged, and the ring may rewrite the iovec array (to
// resubmit the rest of a short transfer).
type Request struct {
	Op Op
	// Fixed says every iovec lies inside registered buffer BufIndex (see
	// RegisterBuffers), so the ring may use the *_FIXED opcodes. A ring
	// that cannot use them ignores it.
	Fixed    bool
	BufIndex uint16
	// RWFlags are per-write RWF_* flags (for example unix.RWF_DSYNC).
	RWFlags uint32
	// Off is the byte offset on the target. Off, every iovec length and
	// every iovec base must be aligned to the target's logical block size.
	Off int64
	Iov []Iovec
	// Tag is the caller's and comes back in the Completion unchanged
	// (the engine uses the index of its in-flight record).
	Tag uint64
}

// Len is the number of bytes the request transfers.
func (r *Request) Len() int64 {
	var n int64
	for i := range r.Iov {
		n += int64(r.Iov[i].Len)
	}
	return n
}

// Completion is the final result of one Request: short transfers,
// -EAGAIN and -EINTR were already resubmitted by the ring (the latter two
// up to Config.MaxRetries times).
type Completion struct {
	Tag uint64
	// N is the number of bytes transferred. N < the request's length
	// only together with a non-zero Err; the bytes [0, N) were written.
	N int64
	// Err is zero on success, else the errno the request failed with.
	Err syscall.Errno
	// Slot is the ring slot the request held: Attempt.Slot of its
	// attempts. It is the request's until the Handler returns, so an
	// interposer that keeps per-slot state (Interposer.Attach) finds it
	// again here; wbbench's timing does.
	Slot int
}

// Handler receives completions. It is called from one goroutine at a
// time (never concurrently), never from inside Submit, and must not
// block or call Submit: it runs on the goroutine that reaps the ring.
// cs is valid only during the call.
type Handler func(cs []Completion)

// Ring is the engine's only way to the device.
type Ring interface {
	// Submit hands reqs to the ring as one batch (one io_uring_enter
	// where the backend has one). It blocks while the ring has fewer free
	// slots than len(reqs) (len(reqs) must be at most Config.Depth). Every
	// accepted request gets exactly one Completion; on error none of reqs
	// was accepted. Submit may be called from any goroutine.
	Submit(reqs []Request) error
	// Run calls fn with the ring's Queue and returns when fn does. On the
	// native ring fn runs on the ring's owner thread, so what it queues
	// goes into the submission queue without a hand-off, one
	// io_uring_enter submits and reaps, and completions are delivered to
	// the Handler inline, from inside the Queue's calls; a caller hands
	// the ring work once per Run, not per batch. Elsewhere fn runs on the
	// caller's goroutine over Submit. Runs are serialized. fn must not
	// block on anything only the ring can release (a completion, a free
	// slot): it waits through Queue.Wait, which reaps while it waits.
	// Once ctx is done, Wait returns at once with ctx's error, so fn can
	// give up. Run returns ErrClosed once the ring is closed.
	Run(ctx context.Context, fn func(q Queue)) error
	// RegisterBuffers registers memory for the *_FIXED opcodes
	// (each buffer at most 1 GiB). It must be called before the first
	// Submit. Backends without registered buffers return ErrNotSupported.
	RegisterBuffers(bufs [][]byte) error
	// Caps reports what the backend probed.
	Caps() Caps
	// Close waits for every accepted request to complete (their
	// completions are delivered), then releases the ring. Submit after
	// Close returns ErrClosed. Close does not close the target.
	Close() error
}

// Queue is a Run function's way to the ring. It is valid only inside
// that function and only on its goroutine.
type Queue interface {
	// Add accepts a request (copying it; its iovecs and memory belong to
	// the ring until its Completion, as with Submit). It goes to the
	// device at the next Flush or Wait at the latest. Add never fails;
	// when no slot is free it reaps until one is.
	Add(req *Request)
	// Flush submits what was added and delivers the completions that are
	// ready, without waiting. It fails only when the ring was closed
	// under it (a ring without an owner thread): then none of the
	// requests added since the last Flush was accepted.
	Flush() error
	// Wait flushes, then waits until at least one completion was
	// delivered (or something else happened the caller may be waiting
	// for: a Submit from another goroutine was taken in). It returns at
	// once when nothing is in flight or queued, and with the error of
	// Run's ctx once that is done.
	Wait() error
	// Reap is Wait for n completions: it returns once n were delivered,
	// or as many as were in flight (fewer if something else woke it;
	// callers loop). One io_uring_enter on the native ring, where a
	// caller that needs a batch of free slots would otherwise make one
	// per completion (fio's iodepth_batch_complete_min).
	Reap(n int) error
	// InFlight is the number of requests accepted and not yet completed
	// (Submit's included).
	InFlight() int
}

// Caps is what a ring can do, probed once at setup.
type Caps struct {
	Backend  string // "native", "pwritev", "iceber", or a wrapper's name around it
	Depth    int    // slots: the most requests accepted at once
	InFlight int    // the most in the kernel at once
	// Setup describes how the ring was set up (for example the io_uring
	// setup flags that were accepted), for logs and reports.
	Setup string
	// RunPath says where a Run function runs: "owner-thread" (the native
	// ring: on the thread that submits and reaps) or "caller" (on the
	// caller's goroutine, over Submit).
	RunPath string
	// Owner is the owner thread's id (gettid) on the native ring, 0
	// elsewhere.
	Owner int

	Writev, WritevFixed, WriteFixed bool
	Readv, ReadvFixed, ReadFixed    bool
	Fsync                           bool
	// RegisteredBuffers is true once RegisterBuffers succeeded.
	RegisteredBuffers bool
	// RegisteredFile is true when requests name the target as a
	// registered file (IORING_REGISTER_FILES: no per-request file
	// lookup); the native ring tries it at setup.
	RegisteredFile bool
}

// Config configures a backend.
type Config struct {
	// Depth is the most requests the ring accepts at once (default 32):
	// its slots. The native ring sizes its SQ to Depth and its CQ to at
	// least twice that.
	Depth int
	// InFlight caps the requests in the kernel (or in the pool's
	// syscalls) at once; accepted requests beyond it wait in the ring and
	// go in as others complete, without waiting for the submitter (a
	// backlog, so the device never waits for the caller to hand it the
	// next batch). Default and maximum: Depth. A backend that cannot cap
	// (iceber) accepts only InFlight requests: its Caps().Depth says so.
	InFlight int
	// Handler receives completions. Required.
	Handler Handler
	// MaxRetries caps resubmissions of a request that completed with
	// -EAGAIN or -EINTR (default 8). Short transfers are resumed without
	// a cap as long as they make progress.
	MaxRetries int
	// EnterFault, if set, is called by the native ring before each
	// io_uring_enter that submits SQEs, with how many it would submit; a
	// non-zero errno is taken as that call's result without entering the
	// kernel, so no SQE is consumed. It is fault injection for tests:
	// EAGAIN and EBUSY are what the kernel returns this way when it
	// cannot allocate requests or flush an overflowed CQ. It is called on
	// the ring's own thread and must not block. Other backends ignore it.
	EnterFault func(toSubmit uint32) syscall.Errno
	// Interposers see every attempt at every request and its result, in
	// this order (see Interposer): fault injection, the power-cut model,
	// timing. Every backend calls them.
	Interposers []Interposer
	// Logf, if set, receives one line when Open "auto" falls back from
	// io_uring to another backend, saying why. Nil: say nothing.
	Logf func(format string, args ...any)
}

// Errors. Each is wrapped with the operation and the target where one is
// involved; test with errors.Is.
var (
	// ErrClosed: the ring was closed.
	ErrClosed = errors.New("ring: closed")
	// ErrNotSupported: the backend, kernel or target cannot do that.
	ErrNotSupported = errors.New("ring: not supported")
	// ErrRefused: io_uring setup was refused (EPERM/ENOSYS: seccomp,
	// kernel.io_uring_disabled); "auto" falls back to the pwritev pool.
	ErrRefused = errors.New("ring: io_uring refused")
	// ErrMisaligned: an offset, length or buffer is not aligned to the
	// target's logical block size.
	ErrMisaligned = errors.New("ring: misaligned")
	// ErrTooMany: one Submit call carried more requests than Config.Depth.
	ErrTooMany = errors.New("ring: batch larger than queue depth")
	// ErrBadConfig: a Config or option value is out of range.
	ErrBadConfig = errors.New("ring: bad config")
	// ErrTarget: the target cannot be used (not a block device or
	// regular file, too small, unreadable limits).
	ErrTarget = errors.New("ring: unusable target")
)
