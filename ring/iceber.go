//go:build iceber

package ring

// The "iceber" backend: the Ring interface over
// github.com/iceber/iouring-go, for differential tests and benchmarks
// against the native ring. Built only with -tags iceber, and linked only
// with -ldflags=-checklinkname=0 (the library linknames into package
// syscall, which Go 1.23+ refuses by default).
//
// How the library is used, and why:
//   - A batch goes through one SubmitRequests call (one io_uring_enter).
//     The library refuses more requests than its SQ size per call, so
//     the ring is made with at least Depth entries; at most Depth
//     requests are ever in flight, so the SQ never fills.
//   - Every request is built by a PrepRequest made once per slot at Open
//     (no closure per I/O): it prepares WRITEV/READV/FSYNC(DATASYNC)/NOP
//     straight from the slot, with the RWF flags the library's own
//     helpers cannot pass, and tags the library's request with the slot
//     index (boxed once at Open).
//   - Results come back on one channel of capacity Depth: the library's
//     completion goroutine blocks on a full channel and would stall the
//     ring, and with at most Depth in flight it never is full. The
//     reaper goroutine here turns results into Completions, resubmits
//     short transfers and -EAGAIN/-EINTR (capped), and calls the
//     Handler: one goroutine, so calls are serialized and never come
//     from inside Submit.
//   - If io_uring_enter fails inside SubmitRequests, the library has
//     already published the SQEs and forgotten their requests, so they
//     would run on the next enter with no one to report them. The ring
//     then refuses all further submissions (its SQEs are never entered)
//     and returns the error; requests accepted earlier still complete.
//
// The library allocates several objects per request, and its completion
// path goes through an epoll goroutine shared by every ring in the
// process (which never exits); it has no fixed-buffer opcodes, so
// RegisterBuffers returns ErrNotSupported.

import (
	"errors"
	"fmt"
	"sync"

	iouring "github.com/iceber/iouring-go"
	iouring_syscall "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

func init() { backends["iceber"] = openIceber }

type iceberRing struct {
	t    *Target
	fd   int
	cfg  Config
	caps Caps
	iour *iouring.IOURing

	slots []iceberSlot
	preps []iouring.PrepRequest // preps[i] prepares slot i's current attempt
	infos []any                 // infos[i] is i, boxed once
	pool  slotPool

	results chan iouring.Result // capacity Depth
	stop    chan struct{}       // closed by Close after the drain
	exited  chan struct{}       // closed when the reaper returns

	// smu serializes SubmitRequests calls so the batch scratch can be
	// reused; it protects scratch and broken.
	smu     sync.Mutex
	scratch []iouring.PrepRequest
	broken  error // set when an enter failed; nothing is entered again

	closeOnce sync.Once
	closeErr  error
}

// iceberSlot is one accepted request. Submit fills it; then only the
// library (reading it in the PrepRequest, under SubmitRequests) and the
// reaper touch it.
type iceberSlot struct {
	req     Request // a copy; Iov is advanced in place on a short transfer
	total   int64
	done    int64
	retries int
}

var _ Ring = (*iceberRing)(nil)

func openIceber(t *Target, cfg Config) (Ring, error) {
	// The library submits what it is given: no backlog, so accept only
	// InFlight requests (Caps().Depth says so).
	cfg.Depth = cfg.InFlight

	entries := uint(1)
	for entries < uint(cfg.Depth) {
		entries <<= 1
	}
	iour, err := iouring.New(entries)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("ring: iceber: %w: %w", ErrRefused, err)
		}
		return nil, fmt.Errorf("ring: iceber: setup: %w", err)
	}
	r := &iceberRing{
		t:       t,
		fd:      t.fd,
		cfg:     cfg,
		iour:    iour,
		slots:   make([]iceberSlot, cfg.Depth),
		preps:   make([]iouring.PrepRequest, cfg.Depth),
		infos:   make([]any, cfg.Depth),
		results: make(chan iouring.Result, cfg.Depth),
		stop:    make(chan struct{}),
		exited:  make(chan struct{}),
		scratch: make([]iouring.PrepRequest, 0, cfg.Depth),
		caps: Caps{
			Backend:  "iceber",
			Depth:    cfg.Depth,
			InFlight: cfg.InFlight,
			Setup:    fmt.Sprintf("github.com/iceber/iouring-go: sq=%d", iour.Size()),
			Writev:   true,
			Readv:    true,
			Fsync:    true,
		},
	}
	for i := range r.preps {
		r.infos[i] = i
		r.preps[i] = r.prep(i)
	}
	r.pool.init(cfg.Depth)
	go r.reap()
	return r, nil
}

// prep returns the PrepRequest for slot i.
func (r *iceberRing) prep(i int) iouring.PrepRequest {
	return func(sqe iouring_syscall.SubmissionQueueEntry, ud *iouring.UserData) {
		s := &r.slots[i]
		ud.SetRequestInfo(r.infos[i])
		switch s.req.Op {
		case OpNop:
			sqe.PrepOperation(iouring_syscall.IORING_OP_NOP, -1, 0, 0, 0)
		case OpFlush:
			sqe.PrepOperation(iouring_syscall.IORING_OP_FSYNC, int32(r.fd), 0, 0, 0)
			sqe.SetOpFlags(iouring_syscall.IORING_FSYNC_DATASYNC)
		case OpWrite, OpRead:
			op := iouring_syscall.IORING_OP_WRITEV
			if s.req.Op == OpRead {
				op = iouring_syscall.IORING_OP_READV
			}
			sqe.PrepOperation(op, int32(r.fd), iovArrayAddr(s.req.Iov), uint32(len(s.req.Iov)), uint64(s.req.Off+s.done))
			sqe.SetOpFlags(s.req.RWFlags)
		}
	}
}

// Submit implements Ring.
func (r *iceberRing) Submit(reqs []Request) error {
	if len(reqs) > r.cfg.Depth {
		return fmt.Errorf("%w: %d requests, depth %d", ErrTooMany, len(reqs), r.cfg.Depth)
	}
	for i := range reqs {
		if err := checkOp(&reqs[i]); err != nil {
			return err
		}
	}
	if err := r.pool.lockAcquire(len(reqs)); err != nil {
		return err
	}
	var small [32]int32
	idx := small[:0]
	if len(reqs) > len(small) {
		idx = make([]int32, 0, len(reqs))
	}
	for range reqs {
		idx = append(idx, r.pool.pop())
	}
	r.pool.mu.Unlock()
	if len(reqs) == 0 {
		return nil
	}
	for k, i := range idx {
		s := &r.slots[i]
		*s = iceberSlot{req: reqs[k]}
		if s.req.Op == OpWrite || s.req.Op == OpRead {
			s.total = s.req.Len()
		}
	}
	if err := r.enter(idx); err != nil {
		for _, i := range idx {
			r.slots[i] = iceberSlot{}
		}
		r.pool.release(idx)
		return err
	}
	return nil
}

// enter submits the current attempt of each slot in idx with one
// SubmitRequests call.
func (r *iceberRing) enter(idx []int32) error {
	r.smu.Lock()
	defer r.smu.Unlock()
	if r.broken != nil {
		return r.broken
	}
	batch := r.scratch[:0]
	for _, i := range idx {
		batch = append(batch, r.preps[i])
	}
	_, err := r.iour.SubmitRequests(batch, r.results)
	clear(batch)
	if err != nil {
		r.broken = fmt.Errorf("ring: iceber: %s: submit failed, ring unusable: %w", r.t.Path, err)
		return r.broken
	}
	return nil
}

// reap is the completion goroutine.
func (r *iceberRing) reap() {
	defer close(r.exited)
	cs := make([]Completion, 0, r.cfg.Depth)
	finished := make([]int32, 0, r.cfg.Depth)
	again := make([]int32, 0, r.cfg.Depth)
	for {
		var res iouring.Result
		select {
		case res = <-r.results:
		case <-r.stop:
			return
		}
		for {
			i, done := r.result(res)
			if done {
				s := &r.slots[i]
				cs = append(cs, Completion{Tag: s.req.Tag, N: s.done, Err: r.errOf(i, res)})
				finished = append(finished, i)
			} else {
				again = append(again, i)
			}
			select {
			case res = <-r.results:
				continue
			default:
			}
			break
		}
		if len(again) > 0 {
			if err := r.enter(again); err != nil {
				for _, i := range again {
					s := &r.slots[i]
					cs = append(cs, Completion{Tag: s.req.Tag, N: s.done, Err: unix.EIO})
					finished = append(finished, i)
				}
			}
			again = again[:0]
		}
		if len(cs) > 0 {
			r.cfg.Handler(cs)
			for _, i := range finished {
				r.slots[i] = iceberSlot{}
			}
			r.pool.release(finished)
			cs, finished = cs[:0], finished[:0]
		}
	}
}

// result takes one result for its slot and reports whether the request
// is finished or its next attempt must be submitted (a short transfer
// that made progress, or -EAGAIN/-EINTR under the retry cap).
func (r *iceberRing) result(res iouring.Result) (slot int32, finished bool) {
	i := int32(res.GetRequestInfo().(int))
	s := &r.slots[i]
	n, _ := res.(iouring.Request).GetRes()
	if n < 0 {
		e := unix.Errno(-n)
		if (e == unix.EAGAIN || e == unix.EINTR) && s.retries < r.cfg.MaxRetries {
			s.retries++
			return i, false
		}
		return i, true
	}
	if s.req.Op != OpWrite && s.req.Op != OpRead {
		return i, true
	}
	got := min(int64(n), s.total-s.done)
	s.done += got
	if s.done == s.total || got == 0 {
		return i, true
	}
	s.req.Iov = iovAdvance(s.req.Iov, got)
	return i, false
}

// errOf is the errno a finished request completes with.
func (r *iceberRing) errOf(i int32, res iouring.Result) unix.Errno {
	n, _ := res.(iouring.Request).GetRes()
	s := &r.slots[i]
	switch {
	case n < 0:
		return unix.Errno(-n)
	case s.done < s.total && s.req.Op == OpRead:
		return unix.ENODATA // no progress: a read at the end
	case s.done < s.total:
		return unix.EIO // no progress: a write the target will not take
	}
	return 0
}

// RegisterBuffers implements Ring: the library has no fixed-buffer
// opcodes.
func (r *iceberRing) RegisterBuffers(bufs [][]byte) error {
	return fmt.Errorf("ring: iceber: register buffers: %w", ErrNotSupported)
}

// Caps implements Ring.
func (r *iceberRing) Caps() Caps { return r.caps }

// Close implements Ring: it refuses new requests, waits until every
// accepted one was completed and delivered, then stops the reaper and
// closes the library's ring. The library's process-wide epoll goroutine
// stays.
func (r *iceberRing) Close() error {
	r.closeOnce.Do(func() {
		r.pool.closeAndDrain()
		close(r.stop)
		<-r.exited
		if err := r.iour.Close(); err != nil {
			r.closeErr = fmt.Errorf("ring: iceber: %s: close: %w", r.t.Path, err)
		}
	})
	return r.closeErr
}
