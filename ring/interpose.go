package ring

import (
	"syscall"
	"time"
)

// An Interposer sees every attempt a ring makes at a request — the
// request itself, the rest of it after a short transfer, a retry after
// EAGAIN — before it goes to the device, and every result before the
// ring acts on it. Fault injection (faultring), the power-cut model
// (powercut) and wbbench's timing are interposers, so they see exactly
// what the device sees on every path, including the native ring's
// owner-thread path (Run) that writes SQEs directly.
//
// Interposers are given in Config.Interposers. Issue is called in that
// order; an interposer that completes the attempt (Attempt.Complete)
// stops the chain, and the device never sees it. Done is called in the
// reverse order, on every interposer whose Issue was called. Both run on
// the ring's own goroutines — the native ring's owner thread, or one of
// the pwritev pool's workers (several at once) — and must not block; an
// interposer used with the pool must be safe for concurrent use.
type Interposer interface {
	// Attach is called once, when the ring opens, with its depth:
	// Attempt.Slot is below it. An interposer may keep per-slot state
	// in arrays of that size.
	Attach(depth int)
	// Issue is called before the attempt goes to the device. It may set
	// Limit (carry at most that many bytes: the ring resumes the rest as
	// after a short transfer), or set Complete and Result (finish the
	// attempt now, with that result, as if the device had answered).
	Issue(a *Attempt)
	// Done is called with the attempt's result (Result). It may change
	// Result, set Fail (end the request with that error once Result's
	// bytes are counted), or set Delay (act on the result that much
	// later).
	Done(a *Attempt)
}

// An Attempt is one try at a request: what goes to the device now.
// Between Issue and Done an interposer may keep a pointer to it; the
// ring reuses it for the request's next attempt and for later requests
// in the same slot.
type Attempt struct {
	// Slot identifies the request while it is in the ring (below the
	// depth given to Attach); Req is the request as the caller gave it.
	Slot int
	Req  *Request
	// Seq counts the attempts at this request: 0 for the first.
	Seq int
	// Done is the number of bytes of the request transferred before this
	// attempt; Off, Iov and Len describe what this attempt carries (for
	// a write or read: Off = Req.Off + Done). Iov must not be changed.
	Done int64
	Off  int64
	Iov  []Iovec
	Len  int64

	// Set by Issue.
	Limit    int64 // > 0: carry at most this many bytes
	Complete bool  // finish the attempt now with Result
	// Result is the attempt's result, as in a CQE: bytes transferred,
	// or -errno. Issue sets it with Complete; the ring sets it before
	// Done; Done may change it.
	Result int32

	// Set by Done.
	Fail  syscall.Errno // end the request with this error
	Delay time.Duration // act on the result this much later

	issued int // interposers whose Issue was called (reqState.issue)
}
