package ring

import (
	"syscall"
	"time"
)

// reqState is a backend's working state for one accepted request: it
// cuts the request into attempts — the whole of it, then the rest after
// a short transfer, or the same again after -EAGAIN/-EINTR — runs the
// interposers on each, and decides what each result means. Every backend
// (native, pwritev, iceber) drives its requests through it, so they
// resume and retry alike and interposers see every attempt the same way.
//
// A reqState belongs to whoever holds its slot: the submitter while it
// fills it, then the backend's goroutine that issues and completes it.
type reqState struct {
	req     Request // a copy; req.Iov is the caller's array, advanced in place
	total   int64   // req.Len() for reads and writes
	done    int64   // bytes transferred so far
	first   int     // index in req.Iov of the first iovec with bytes left
	retries int     // -EAGAIN/-EINTR retries so far
	err     syscall.Errno
	scratch []Iovec // a trimmed attempt's iovecs
	a       Attempt
}

// begin starts the request req in slot.
func (s *reqState) begin(req *Request, slot int) {
	s.req = *req
	s.total, s.done, s.first, s.retries, s.err = 0, 0, 0, 0, 0
	if req.Op == OpWrite || req.Op == OpRead {
		s.total = req.Len()
	}
	s.a.Slot, s.a.Req, s.a.Seq = slot, &s.req, 0
}

// issue prepares the next attempt in s.a and runs the interposers'
// Issue on it. It reports whether the device should get the attempt;
// if not, s.a.Result is its result. An interposer's Limit trims the
// attempt at once, so later interposers and the device see the trimmed
// one.
func (s *reqState) issue(is []Interposer) bool {
	a := &s.a
	a.Off, a.Iov, a.Len = s.req.Off, nil, 0
	if s.total > 0 {
		a.Off += s.done
		a.Iov = s.req.Iov[s.first:]
		a.Len = s.total - s.done
	}
	a.Done = s.done
	if len(is) == 0 {
		a.issued = 0
		return true
	}
	a.Limit, a.Complete, a.Result, a.Fail, a.Delay, a.issued = 0, false, 0, 0, 0, 0
	for _, ip := range is {
		a.issued++
		ip.Issue(a)
		if a.Complete {
			return false
		}
		if a.Limit > 0 && a.Limit < a.Len {
			s.scratch = iovPrefix(s.scratch, a.Iov, a.Limit)
			a.Iov, a.Len = s.scratch, a.Limit
		}
		a.Limit = 0
	}
	return true
}

// result records res, the attempt's result (a CQE's), runs the
// interposers' Done on it, and returns how long to hold it before
// settle (an interposer's Delay).
func (s *reqState) result(is []Interposer, res int32) time.Duration {
	s.a.Result = res
	for i := s.a.issued - 1; i >= 0; i-- {
		is[i].Done(&s.a)
	}
	return s.a.Delay
}

// settle acts on the attempt's result and reports whether the request is
// finished (its Completion is s.completion()) or needs another attempt:
// a short transfer that made progress, or -EAGAIN/-EINTR under the retry
// cap.
func (s *reqState) settle(maxRetries int) bool {
	a := &s.a
	res := a.Result
	a.Seq++
	if res < 0 {
		errno := syscall.Errno(-res)
		if (errno == syscall.EAGAIN || errno == syscall.EINTR) && s.retries < maxRetries && a.Fail == 0 {
			s.retries++
			return false
		}
		s.err = errno
		return true
	}
	if s.req.Op != OpWrite && s.req.Op != OpRead {
		if a.Fail != 0 {
			s.err = a.Fail
		}
		return true // NOP, FLUSH: nothing to count
	}
	n := min(int64(res), a.Len) // the kernel never reports more than it was asked for
	s.done += n
	if a.Fail != 0 {
		s.err = a.Fail
		return true
	}
	if s.done == s.total {
		return true
	}
	if n == 0 {
		// No progress: a write the device will not take, or a read at
		// end of file. Resubmitting would loop.
		if s.req.Op == OpWrite {
			s.err = syscall.EIO
		} else {
			s.err = syscall.ENODATA
		}
		return true
	}
	s.first = advanceIov(s.req.Iov, s.first, n)
	return false
}

// completion is the request's final Completion.
func (s *reqState) completion() Completion {
	return Completion{Tag: s.req.Tag, N: s.done, Err: s.err, Slot: s.a.Slot}
}

// release drops the references to the caller's memory.
func (s *reqState) release() {
	s.req.Iov = nil
	s.a.Iov = nil
	clear(s.scratch)
}
