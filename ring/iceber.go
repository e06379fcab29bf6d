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
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
	cq      *CallerQueue        // Run's

	// fmu protects finishedEarly: requests an interposer finished in
	// Submit, for the reaper to deliver (never from inside Submit); kick
	// wakes it.
	fmu           sync.Mutex
	finishedEarly []int32
	kick          chan struct{}

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
	st reqState
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
			RunPath:  "caller",
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
	r.kick = make(chan struct{}, 1)
	r.cq = NewCallerQueue(r.Submit, r.pool.inUse, cfg.Depth)
	for _, ip := range cfg.Interposers {
		ip.Attach(cfg.Depth)
	}
	go r.reap()
	return r, nil
}

// prep returns the PrepRequest for slot i.
func (r *iceberRing) prep(i int) iouring.PrepRequest {
	return func(sqe iouring_syscall.SubmissionQueueEntry, ud *iouring.UserData) {
		a := &r.slots[i].st.a
		ud.SetRequestInfo(r.infos[i])
		switch a.Req.Op {
		case OpNop:
			sqe.PrepOperation(iouring_syscall.IORING_OP_NOP, -1, 0, 0, 0)
		case OpFlush:
			sqe.PrepOperation(iouring_syscall.IORING_OP_FSYNC, int32(r.fd), 0, 0, 0)
			sqe.SetOpFlags(iouring_syscall.IORING_FSYNC_DATASYNC)
		case OpWrite, OpRead:
			op := iouring_syscall.IORING_OP_WRITEV
			if a.Req.Op == OpRead {
				op = iouring_syscall.IORING_OP_READV
			}
			sqe.PrepOperation(op, int32(r.fd), iovArrayAddr(a.Iov), uint32(len(a.Iov)), uint64(a.Off))
			sqe.SetOpFlags(a.Req.RWFlags)
		}
	}
}

// Submit implements Ring.
func (r *iceberRing) Submit(reqs []Request) error {
	if err := checkBatch(reqs, r.cfg.Depth); err != nil {
		return err
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
	var early []int32
	send := idx[:0:0]
	for k, i := range idx {
		r.slots[i].st.begin(&reqs[k], int(i))
		if finished, submit := r.advance(i); submit {
			send = append(send, i)
		} else if finished {
			early = append(early, i)
		}
	}
	if len(send) > 0 {
		if err := r.enter(send); err != nil {
			if len(early) == 0 && len(send) == len(idx) {
				for _, i := range idx {
					r.slots[i].st.release()
				}
				r.pool.release(idx)
				return err
			}
			// Some were already finished by an interposer: fail the rest
			// as completions, so every accepted request gets one.
			early = append(early, send...)
			for _, i := range send {
				r.slots[i].st.err = unix.EIO
			}
		}
	}
	if len(early) > 0 {
		r.fmu.Lock()
		r.finishedEarly = append(r.finishedEarly, early...)
		r.fmu.Unlock()
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// advance runs slot i's request up to its next attempt for the device:
// it reports submit when that attempt must go to the library, or
// finished when interposers finished the request without it.
func (r *iceberRing) advance(i int32) (finished, submit bool) {
	st := &r.slots[i].st
	is := r.cfg.Interposers
	for !st.issue(is) {
		if d := st.result(is, st.a.Result); d > 0 {
			time.Sleep(d)
		}
		if st.settle(r.cfg.MaxRetries) {
			return true, false
		}
	}
	return false, true
}

// Run implements Ring: fn runs on the caller's goroutine (CallerQueue).
func (r *iceberRing) Run(ctx context.Context, fn func(Queue)) error { return r.cq.Run(ctx, fn) }

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

// reap is the completion goroutine. An interposer's delay is slept
// here, holding up every completion behind it (iceber is a comparison
// backend; the native ring holds delayed results apart).
func (r *iceberRing) reap() {
	defer close(r.exited)
	cs := make([]Completion, 0, r.cfg.Depth)
	finished := make([]int32, 0, r.cfg.Depth)
	again := make([]int32, 0, r.cfg.Depth)
	is := r.cfg.Interposers
	for {
		var res iouring.Result
		have := false
		select {
		case res = <-r.results:
			have = true
		case <-r.kick:
		case <-r.stop:
			return
		}
		r.fmu.Lock()
		finished = append(finished, r.finishedEarly...)
		r.finishedEarly = r.finishedEarly[:0]
		r.fmu.Unlock()
		for _, i := range finished {
			cs = append(cs, r.slots[i].st.completion())
		}
		for have {
			i := int32(res.GetRequestInfo().(int))
			n, _ := res.(iouring.Request).GetRes()
			st := &r.slots[i].st
			if d := st.result(is, int32(n)); d > 0 {
				time.Sleep(d)
			}
			done := st.settle(r.cfg.MaxRetries)
			if !done {
				var submit bool
				done, submit = r.advance(i)
				if submit {
					again = append(again, i)
				}
			}
			if done {
				cs = append(cs, st.completion())
				finished = append(finished, i)
			}
			select {
			case res = <-r.results:
			default:
				have = false
			}
		}
		if len(again) > 0 {
			if err := r.enter(again); err != nil {
				for _, i := range again {
					st := &r.slots[i].st
					st.err = unix.EIO
					cs = append(cs, st.completion())
					finished = append(finished, i)
				}
			}
			again = again[:0]
		}
		if len(cs) > 0 {
			r.cfg.Handler(cs)
			for _, i := range finished {
				r.slots[i].st.release()
			}
			r.pool.release(finished)
			r.cq.Delivered()
			cs, finished = cs[:0], finished[:0]
		}
	}
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
