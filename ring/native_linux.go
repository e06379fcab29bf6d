package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func init() { backends["native"] = openNative }

// testSetupHook, when set, runs on the owner thread before each
// io_uring_setup attempt: a non-nil error is taken as what that attempt
// failed with (tests return unix.EPERM to play a seccomp filter). Set it
// only from tests, never concurrently with Open.
var testSetupHook func() error

// testRegisterFileHook, when set, stands in for IORING_REGISTER_FILES's
// answer at setup (tests: the fallback to the plain descriptor).
var testRegisterFileHook func() error

// efdTag is the user_data of the read armed on the wake-up eventfd; slot
// indexes are below Depth.
const efdTag = ^uint64(0)

// slot is one accepted request while the ring owns it. A slot is free
// (on nativeRing.free), or reserved by one Submit (taken off free, being
// filled outside the lock), or pending (on nativeRing.pending), or the
// owner's (queued, in the kernel, held back by an interposer's delay, or
// being completed). Who may touch it follows from where it is: mu guards
// the free and pending lists, and a slot's fields pass with it.
type slot struct {
	st   reqState
	next uint32 // the next slot of a Submit's reservation
}

// ctlReq is work that must run on the owner thread (with SINGLE_ISSUER
// only the ring's own task may register resources).
type ctlReq struct {
	fn   func() error
	err  error
	done chan struct{}
}

// nativeRing is the io_uring backend: one owner goroutine, locked to its
// OS thread, is the only one to touch the ring; submitters hand it slot
// indexes through pending and wake it through an eventfd.
type nativeRing struct {
	t   *Target
	fd  int // t's fd
	cfg Config

	// Set by the owner during setup, before Open returns; owner-only
	// afterwards.
	u      *uring
	file   fileRef // how SQEs name t: its registered index, or fd
	efd    int     // wake-up eventfd
	efdBuf []byte  // mmap'd; the armed eventfd read lands here
	slots  []slot
	probed [probeOpsMax]bool
	tid    int // the owner thread (tests signal it to provoke EINTR)

	// Owner-only.
	queue     []uint32     // slots to turn into SQEs: new work and resubmissions
	handed    int          // queue[:handed] came from Submit (see collect)
	cs        []Completion // the Handler's slice, reused
	finished  []uint32     // slots of cs, freed after the Handler returns
	inflight  int          // slot SQEs filled: in the SQ (see uring.unconsumed) or held by the kernel
	ready     []uint32     // slots whose attempt has a result to settle: an interposer completed it, or its delay is over
	stash     []uint32     // free slots a Run function took for its Adds
	delayed   int          // slots whose result an interposer's Delay holds back
	closed    bool         // collect saw closing
	delivered uint64       // Handler calls so far
	efdArmed  bool         // the eventfd read is in the kernel
	nbufs     int          // registered buffers

	// mu guards the hand-off between submitters and the owner: the free
	// and pending lists, ctl, closing, waiters, want and caps. Submit
	// takes it twice per batch, briefly (to reserve slots, then to
	// publish them once filled); the owner once per round that has news
	// (to collect pending work) and once per reap (to free slots).
	mu      sync.Mutex
	space   sync.Cond // L = &mu; broadcast when slots are freed or the ring closes
	free    []uint32  // free slot indexes (a stack; capacity Depth)
	pending []uint32  // accepted slots the owner has not collected yet (capacity Depth)
	ctl     *ctlReq
	runFn   func(Queue)     // a Run waiting for the owner
	runCtx  context.Context // its ctx (owner-only once taken)
	due     []uint32        // held-back results whose delay is over
	closing bool
	waiters int // Submits blocked on space
	want    int // the most slots a blocked Submit needs
	caps    Caps

	// Wake-up protocol (Dekker style; Go's atomics are sequentially
	// consistent). Whoever gives the owner something to do (Submit,
	// Close, a control request) does so under mu, then adds to news,
	// then loads sleeping and, if it wins the CAS true→false, writes the
	// eventfd. The owner stores sleeping=true, then loads news, and
	// blocks only if it is zero. Either the owner sees the news or the
	// giver sees the sleeper, so no wake-up is lost, and at most one
	// eventfd write is made per sleep. The owner zeroes news under mu
	// when it collects the work. Every eventfd write happens under mu,
	// so once the owner has seen closing under mu nobody writes to the
	// eventfd again and teardown may close it.
	news     atomic.Int32
	sleeping atomic.Bool

	runMu   sync.Mutex    // serializes Run
	runDone chan struct{} // the owner's answer to Run (capacity 1)

	regMu    sync.Mutex    // serializes RegisterBuffers
	exited   chan struct{} // closed when the owner has released the ring
	closeErr error         // teardown's error; read after exited
}

func openNative(t *Target, cfg Config) (Ring, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	d := cfg.Depth
	r := &nativeRing{
		t:        t,
		fd:       t.fd,
		cfg:      cfg,
		efd:      -1,
		slots:    make([]slot, d),
		queue:    make([]uint32, 0, d),
		cs:       make([]Completion, 0, d),
		finished: make([]uint32, 0, d),
		free:     make([]uint32, d),
		pending:  make([]uint32, 0, d),
		ready:    make([]uint32, 0, d),
		stash:    make([]uint32, 0, stashBatch),
		exited:   make(chan struct{}),
		runDone:  make(chan struct{}, 1),
	}
	for _, ip := range cfg.Interposers {
		ip.Attach(d)
	}
	r.space.L = &r.mu
	for i := range r.free {
		r.free[i] = uint32(d - 1 - i) // pop order 0, 1, 2, …
	}
	ready := make(chan error, 1)
	go r.run(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return r, nil
}

// run is the owner goroutine.
func (r *nativeRing) run(ready chan<- error) {
	// Never unlocked: when run returns, the runtime retires this thread,
	// and with it the io_uring task context SINGLE_ISSUER tied to it.
	runtime.LockOSThread()
	if err := r.setup(); err != nil {
		r.release()
		ready <- err
		return
	}
	ready <- nil
	r.loop()
	r.closeErr = r.teardown()
	close(r.exited)
}

// setup creates the ring on the owner thread, dropping setup flags one
// by one while the kernel answers EINVAL; probes opcodes; arms nothing
// yet (the loop arms the eventfd read first thing).
func (r *nativeRing) setup() error {
	sq := roundPow2(uint32(r.cfg.Depth) + 1) // +1: the eventfd read
	cq := 2 * sq                             // ≥ 2 × in flight: the CQ cannot overflow
	r.tid = unix.Gettid()
	flags := uint32(0)
	for _, f := range setupFlagNames {
		flags |= f.flag
	}
	var refused []string
	for i := 0; ; {
		var u *uring
		var call string
		var err error
		if hook := testSetupHook; hook != nil {
			err, call = hook(), "io_uring_setup"
		}
		if err == nil {
			u, call, err = newURing(sq, cq, flags)
		}
		if err == nil {
			r.u = u
			break
		}
		var errno unix.Errno
		if call != "io_uring_setup" || !errors.As(err, &errno) {
			return fmt.Errorf("ring: %s: %s: %w", r.t.Path, call, err)
		}
		switch errno {
		case unix.EPERM, unix.EACCES, unix.ENOSYS:
			return fmt.Errorf("ring: %s: io_uring_setup: %w (%w: seccomp, kernel.io_uring_disabled or no io_uring in this kernel)", r.t.Path, errno, ErrRefused)
		case unix.EINVAL:
			for i < len(setupFlagNames) && flags&setupFlagNames[i].flag == 0 {
				i++
			}
			if i == len(setupFlagNames) {
				return fmt.Errorf("ring: %s: io_uring_setup with no optional flags: %w", r.t.Path, errno)
			}
			flags &^= setupFlagNames[i].flag
			refused = append(refused, setupFlagNames[i].name)
		default:
			return fmt.Errorf("ring: %s: io_uring_setup: %w", r.t.Path, errno)
		}
	}

	var err error
	if r.probed, err = r.u.probe(); err != nil {
		return fmt.Errorf("ring: %s: IORING_REGISTER_PROBE: %w", r.t.Path, err)
	}
	// The target as a registered file: no fget/fput per request. Where
	// the kernel refuses, requests name the plain descriptor, and
	// Caps().Setup says why.
	var fileNote string
	if hook := testRegisterFileHook; hook != nil {
		err = hook()
	}
	if err == nil {
		err = r.u.registerFile(r.fd)
	}
	r.file = registeredFile
	if err != nil {
		r.file = plainFile(r.fd)
		fileNote = fmt.Sprintf(" (IORING_REGISTER_FILES refused: %v)", err)
	}
	if r.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		r.efd = -1
		return fmt.Errorf("ring: %s: eventfd: %w", r.t.Path, err)
	}
	if r.efdBuf, err = mapScratch(unix.Getpagesize()); err != nil {
		return fmt.Errorf("ring: %s: mmap: %w", r.t.Path, err)
	}

	var accepted []string
	for _, f := range setupFlagNames {
		if flags&f.flag != 0 {
			accepted = append(accepted, f.name)
		}
	}
	desc := fmt.Sprintf("io_uring sq=%d cq=%d flags=%s", r.u.sqN, r.u.cqN, strings.Join(accepted, "|"))
	if len(refused) > 0 {
		desc += " (kernel refused " + strings.Join(refused, ", ") + ")"
	}
	if r.file.registered() {
		desc += "; registered file"
	}
	desc += fileNote
	r.caps = Caps{
		Backend:        "native",
		RunPath:        "owner-thread",
		Owner:          r.tid,
		Depth:          r.cfg.Depth,
		InFlight:       r.cfg.InFlight,
		Setup:          desc,
		Writev:         r.probed[opWritev],
		WritevFixed:    r.probed[opWritevFixed],
		WriteFixed:     r.probed[opWriteFixed],
		RegisteredFile: r.file.registered(),
		Readv:          r.probed[opReadv],
		ReadvFixed:     r.probed[opReadvFixed],
		ReadFixed:      r.probed[opReadFixed],
		Fsync:          r.probed[opFsync],
	}
	return nil
}

// loop is the owner's work: collect pending slots and Run functions,
// turn slots into SQEs, one io_uring_enter per round (submit, and wait
// for one completion when there is nothing else to do), reap in bulk. A
// Run function runs here, between rounds, and makes rounds of its own
// through its Queue. loop returns once the ring is closing and every
// accepted request has completed.
func (r *nativeRing) loop() {
	for {
		closing := r.collect()
		if fn := r.takeRun(); fn != nil {
			fn(ownerQueue{r})
			r.unstash()
			r.runCtx = nil
			r.runDone <- struct{}{}
			continue
		}
		if closing && !r.outstanding() {
			return
		}
		r.round(true)
	}
}

// collect takes in what other goroutines handed the owner, if anything:
// pending slots, held-back results now due, a control request (run at
// once), and whether the ring is closing.
func (r *nativeRing) collect() (closing bool) {
	if r.news.Load() == 0 {
		return r.closed // closing is news: nothing changed
	}
	r.mu.Lock()
	r.news.Store(0)
	// What other goroutines handed over goes ahead of what a Run
	// function queued: those are the engine's reads and device flushes,
	// a caller waits on each, while the pass's writes are a deep queue
	// of their own (the kernel's block layer likewise lets sync reads
	// pass queued async writes). Among themselves Submits stay in the
	// order they came (behind queue[:handed], the earlier ones not yet
	// in the kernel), so a stream of new Submits cannot starve an older
	// one. No order between Submit and Run is promised: a caller that
	// needs one waits for the completion first.
	if n := len(r.pending); n > 0 {
		at, q := r.handed, len(r.queue)
		r.queue = r.queue[:q+n]
		copy(r.queue[at+n:], r.queue[at:q])
		copy(r.queue[at:], r.pending)
		r.handed += n
	}
	r.pending = r.pending[:0]
	r.ready = append(r.ready, r.due...)
	r.delayed -= len(r.due)
	r.due = r.due[:0]
	ctl := r.ctl
	r.ctl = nil
	closing = r.closing
	r.closed = closing
	r.mu.Unlock()
	if ctl != nil {
		ctl.err = ctl.fn()
		close(ctl.done)
	}
	return closing
}

// takeRun takes the Run function waiting for the owner, if any.
func (r *nativeRing) takeRun() func(Queue) {
	r.mu.Lock()
	fn := r.runFn
	r.runFn = nil
	r.mu.Unlock()
	return fn
}

// outstanding reports whether any accepted request has not completed.
func (r *nativeRing) outstanding() bool {
	return len(r.queue) > 0 || r.inflight > 0 || len(r.ready) > 0 || r.delayed > 0
}

// round is one step of the owner: settle results that need no kernel,
// fill SQEs, one io_uring_enter (with a wait for a completion when
// mayWait and there is nothing else to do), reap.
func (r *nativeRing) round(mayWait bool) { r.roundN(mayWait, 1) }

// roundN is round waiting, if it waits, for n completions (at most as
// many as are in flight; an eventfd wake-up counts as one).
func (r *nativeRing) roundN(mayWait bool, n int) {
	before := r.delivered
	r.settleReady()
	if r.closed && !r.outstanding() || r.delivered != before {
		// Settling finished the last of it (nothing would wake a wait),
		// or delivered something: a Wait has what it waited for.
		mayWait = false
	}
	r.fill()
	toSubmit := r.u.flush()
	var wait uint32
	if mayWait && len(r.ready) == 0 && (len(r.queue) == 0 || r.inflight >= r.cfg.InFlight) && int(r.u.cqReady()) < n {
		// Nothing to do but wait: for a completion, or for the eventfd
		// read that news will complete (see sleeping). The eventfd read
		// is armed (fill), so the wait ends. Work queued behind the
		// InFlight cap waits for a completion too (something is in
		// flight: the cap is ≥ 1).
		r.sleeping.Store(true)
		if r.news.Load() == 0 {
			wait = uint32(max(1, min(n, r.inflight)))
		} else {
			r.sleeping.Store(false)
		}
	}
	if toSubmit == 0 && wait == 0 {
		// CQEs to reap, or news to collect: no syscall needed.
		r.reap()
		return
	}
	var errno unix.Errno
	if f := r.cfg.EnterFault; f != nil && toSubmit > 0 {
		errno = unix.Errno(f(toSubmit))
	}
	if errno == 0 {
		_, errno = r.u.enter(toSubmit, wait)
	}
	if wait != 0 {
		r.sleeping.Store(false)
	}
	switch errno {
	case 0:
	case unix.EINTR:
		// Retried by the next round without limit: what the kernel
		// consumed moved the SQ head, the rest is resubmitted.
	case unix.EAGAIN, unix.EBUSY:
		// Out of request memory, or CQ overflow that cannot be flushed
		// (not with CQ ≥ 2 × in flight): reap, then retry; with nothing
		// to reap, wait for a completion or back off rather than spin.
		if r.reap() == 0 {
			r.backoff()
		}
		return
	default:
		// EFAULT, EINVAL, EBADF, EEXIST (wrong thread): the ring's
		// memory or thread discipline is broken. There is no way to
		// tell which SQEs the kernel holds, so nothing can be
		// completed safely.
		panic(fmt.Sprintf("ring: %s: io_uring_enter: %v (a bug in package ring)", r.t.Path, errno))
	}
	r.reap()
}

// ownerQueue is the Queue a Run function gets on the native ring: it
// works the owner's own state, on the owner thread.
type ownerQueue struct{ r *nativeRing }

// Add implements Queue: it takes a free slot (reaping until one is free)
// and queues it; the next Flush or Wait submits it.
func (q ownerQueue) Add(req *Request) {
	r := q.r
	for len(r.stash) == 0 {
		// Take free slots a batch at a time: one lock per batch, not per
		// request. What is left goes back when the Run function returns.
		r.mu.Lock()
		n := min(len(r.free), stashBatch)
		r.stash = append(r.stash, r.free[len(r.free)-n:]...)
		r.free = r.free[:len(r.free)-n]
		r.mu.Unlock()
		if n == 0 {
			r.collect()
			r.round(r.outstanding())
		}
	}
	idx := r.stash[len(r.stash)-1]
	r.stash = r.stash[:len(r.stash)-1]
	r.slots[idx].st.begin(req, int(idx))
	r.queue = append(r.queue, idx)
}

// stashBatch is how many free slots a Run function's Add takes at once
// (RunSlotBatch).
const stashBatch = RunSlotBatch

// unstash gives the slots a Run function took and did not use back.
func (r *nativeRing) unstash() {
	if len(r.stash) == 0 {
		return
	}
	r.mu.Lock()
	r.free = append(r.free, r.stash...)
	if r.waiters > 0 {
		r.space.Broadcast()
	}
	r.mu.Unlock()
	r.stash = r.stash[:0]
}

// Flush implements Queue.
func (q ownerQueue) Flush() error {
	q.r.collect()
	q.r.round(false)
	return nil
}

// Wait implements Queue.
func (q ownerQueue) Wait() error { return q.Reap(1) }

// Reap implements Queue: one io_uring_enter that waits for n
// completions (or fewer, as many as are in flight).
func (q ownerQueue) Reap(n int) error {
	r := q.r
	if err := r.runCtx.Err(); err != nil {
		return err
	}
	r.collect()
	r.roundN(r.outstanding(), n)
	return nil
}

// InFlight implements Queue.
func (q ownerQueue) InFlight() int {
	r := q.r
	r.mu.Lock()
	n := len(r.pending)
	r.mu.Unlock()
	return n + len(r.queue) + r.inflight + len(r.ready) + r.delayed
}

// Run implements Ring: fn runs on the owner thread. It must not be
// called from the owner thread (from a Handler, or from inside another
// Run).
func (r *nativeRing) Run(ctx context.Context, fn func(Queue)) error {
	r.runMu.Lock()
	defer r.runMu.Unlock()
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	r.runFn, r.runCtx = fn, ctx
	r.wake()
	r.mu.Unlock()
	if ctx.Done() != nil {
		// A done ctx wakes an owner waiting in the kernel (Wait then
		// returns ctx's error).
		stop := context.AfterFunc(ctx, func() {
			r.mu.Lock()
			r.wake()
			r.mu.Unlock()
		})
		defer stop()
	}
	<-r.runDone
	return nil
}

// backoff waits after EAGAIN/EBUSY from io_uring_enter with nothing
// reaped: for a completion when the kernel holds a request, else
// briefly. It never waits for more than the kernel holds: SQEs the
// kernel refused stay in the SQ (the next round's enter submits them
// again) and cannot complete, and an eventfd read the kernel has not
// taken cannot wake the owner.
func (r *nativeRing) backoff() {
	held := r.inflight
	r.u.unconsumed(func(ud uint64) {
		if ud != efdTag {
			held--
		}
	})
	if held > 0 {
		r.u.enter(0, 1)
		return
	}
	time.Sleep(time.Millisecond)
}

// maxSQEsPerEnter caps the SQEs one io_uring_enter carries. Batches
// (at most Depth requests each) queued behind each other go in rounds
// of this size, so a deep ring delivers completions and frees slots
// while the rest is still queued: blocked submitters refill the ring
// before it runs dry instead of after. A Submit of up to this many
// requests is always one enter.
const maxSQEsPerEnter = 128

// fill arms the eventfd read if it is not armed (also while closing: a
// result held back by an interposer's delay wakes the owner through it;
// teardown collects it), then turns queued slots into SQEs while the SQ has room (at
// most maxSQEsPerEnter, and no more than the InFlight cap); the rest
// stays queued for the next round. An attempt an interposer completes
// takes no SQE: its slot goes to ready.
func (r *nativeRing) fill() {
	if !r.efdArmed && r.u.sqFree() > 0 {
		e := r.u.nextSQE()
		prepRead(e, r.efd, r.efdBuf[:8])
		e.userData = efdTag
		r.efdArmed = true
	}
	n := min(len(r.queue), int(r.u.sqFree()), maxSQEsPerEnter, r.cfg.InFlight-r.inflight)
	if n <= 0 {
		return
	}
	taken := 0
	for _, idx := range r.queue[:n] {
		if r.prep(idx) {
			taken++
		}
	}
	r.inflight += taken
	r.queue = r.queue[:copy(r.queue, r.queue[n:])]
	r.handed = max(r.handed-n, 0)
}

// prep runs the interposers on slot idx's next attempt and fills the
// next SQE for it, from where the request stands (a resubmission starts
// at the first byte not yet transferred). It reports whether it took an
// SQE (false: an interposer completed the attempt).
func (r *nativeRing) prep(idx uint32) bool {
	st := &r.slots[idx].st
	if !st.issue(r.cfg.Interposers) {
		r.result(idx, st.a.Result)
		return false
	}
	a := &st.a
	e := r.u.nextSQE()
	switch a.Req.Op {
	case OpWrite, OpRead:
		op := r.rwOp(a.Req.Op == OpWrite, a.Req.Fixed, len(a.Iov))
		prepRW(e, op, r.file, a.Iov, a.Off, a.Req.RWFlags, a.Req.BufIndex)
	case OpFlush:
		prepFsync(e, r.file)
	default:
		// OpNop: a zeroed SQE is IORING_OP_NOP.
	}
	e.userData = uint64(idx)
	return true
}

// rwOp picks the opcode: the *_FIXED ones only when the caller asked,
// buffers are registered and the kernel has the opcode.
func (r *nativeRing) rwOp(write, fixed bool, niov int) uint8 {
	if fixed && r.nbufs > 0 {
		switch {
		case write && niov == 1 && r.probed[opWriteFixed]:
			return opWriteFixed
		case !write && niov == 1 && r.probed[opReadFixed]:
			return opReadFixed
		case write && niov > 1 && r.probed[opWritevFixed]:
			return opWritevFixed
		case !write && niov > 1 && r.probed[opReadvFixed]:
			return opReadvFixed
		}
	}
	if write {
		return opWritev
	}
	return opReadv
}

// reap handles every posted CQE: the eventfd read is marked for
// re-arming, a slot's result goes to settle (or is held back for an
// interposer's delay). It then calls the Handler once with what
// finished and frees those slots. It returns how many CQEs it saw.
func (r *nativeRing) reap() int {
	head, tail := r.u.cqPending()
	for i := head; i != tail; i++ {
		ud, res := r.u.cqeAt(i)
		if ud == efdTag {
			if res < 0 && res != -int32(unix.EINTR) && res != -int32(unix.EAGAIN) && res != -int32(unix.ECANCELED) {
				// Re-arming a read that fails at once would spin.
				panic(fmt.Sprintf("ring: %s: eventfd read: %v (a bug in package ring)", r.t.Path, unix.Errno(-res)))
			}
			r.efdArmed = false
			continue
		}
		r.inflight--
		r.result(uint32(ud), res)
	}
	r.u.cqAdvance(tail)
	r.settleReady()
	return int(tail - head)
}

// result hands slot idx's attempt result to the interposers; the slot
// goes to ready, now or once an interposer's delay is over.
func (r *nativeRing) result(idx uint32, res int32) {
	if d := r.slots[idx].st.result(r.cfg.Interposers, res); d > 0 {
		r.delayed++
		time.AfterFunc(d, func() {
			r.mu.Lock()
			r.due = append(r.due, idx)
			r.wake()
			r.mu.Unlock()
		})
		return
	}
	r.ready = append(r.ready, idx)
}

// settleReady settles every ready slot — a finished request joins cs, a
// short or retried one goes back on the queue — and delivers cs.
func (r *nativeRing) settleReady() {
	for _, idx := range r.ready {
		st := &r.slots[idx].st
		if !st.settle(r.cfg.MaxRetries) {
			r.queue = append(r.queue, idx)
			continue
		}
		r.cs = append(r.cs, st.completion())
		r.finished = append(r.finished, idx)
	}
	r.ready = r.ready[:0]
	if len(r.cs) > 0 {
		r.deliver()
	}
}

// deliver calls the Handler with cs, then frees the slots: a slot is
// free again only after its completion was delivered, so Close, which
// waits for in-flight work, also waits for delivery.
//
// Blocked submitters are woken in batches, as the block layer's tag
// allocator (sbitmap's wake_batch) does: once enough slots are free for
// the largest waiter and either a quarter of the ring is free or the
// owner has nothing left in flight or queued (so no later completion
// would wake them). Each wake-up costs the waker a futex call and the
// woken thread tens of microseconds on a VM; batching keeps that off the
// per-batch path while the owner still has work queued.
func (r *nativeRing) deliver() {
	r.cfg.Handler(r.cs)
	r.delivered++
	for _, idx := range r.finished {
		r.slots[idx].st.release() // drop the references to the caller's memory
	}
	r.mu.Lock()
	r.free = append(r.free, r.finished...)
	if r.waiters > 0 && len(r.free) >= r.want &&
		(4*len(r.free) >= r.cfg.Depth || r.inflight == 0 && len(r.queue) == 0) {
		r.space.Broadcast()
		r.want = 0 // waiters that still lack slots raise it again
	}
	r.mu.Unlock()
	r.cs = r.cs[:0]
	r.finished = r.finished[:0]
}

// wake tells the owner there is news, writing the eventfd if it sleeps.
// Called with mu held, after the news was recorded (see sleeping).
func (r *nativeRing) wake() {
	r.news.Add(1)
	if r.sleeping.Load() && r.sleeping.CompareAndSwap(true, false) {
		r.signal()
	}
}

// signal writes the wake-up eventfd.
func (r *nativeRing) signal() {
	if errno := eventfdSignal(r.efd); errno != 0 {
		panic(fmt.Sprintf("ring: %s: eventfd write: %v", r.t.Path, errno))
	}
}

// copyUnderLock is the largest batch Submit copies into its slots while
// holding mu; larger batches reserve slots, copy outside the lock, and
// take mu again to publish them.
const copyUnderLock = 4

// Submit implements Ring.
func (r *nativeRing) Submit(reqs []Request) error {
	n := len(reqs)
	if err := checkBatch(reqs, r.cfg.Depth); err != nil {
		return err
	}
	r.mu.Lock()
	for !r.closing && len(r.free) < n {
		r.waiters++
		r.want = max(r.want, n)
		r.space.Wait()
		r.waiters--
		if r.waiters == 0 {
			r.want = 0
		}
	}
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	if n == 0 {
		r.mu.Unlock()
		return nil
	}
	if n <= copyUnderLock {
		for i := range reqs {
			idx := r.free[len(r.free)-1]
			r.free = r.free[:len(r.free)-1]
			r.slots[idx].st.begin(&reqs[i], int(idx))
			r.pending = append(r.pending, idx)
		}
		r.wake()
		r.mu.Unlock()
		return nil
	}
	// Reserve n slots, chained through slot.next in request order, and
	// fill them outside the lock: the owner, a locked thread, must not
	// park on mu (parking and waking it costs futex calls) while a
	// batch is copied.
	first := r.free[len(r.free)-1]
	last := first
	for i := 1; i < n; i++ {
		idx := r.free[len(r.free)-1-i]
		r.slots[last].next = idx
		last = idx
	}
	r.free = r.free[:len(r.free)-n]
	r.mu.Unlock()

	idx := first
	for i := range reqs {
		s := &r.slots[idx]
		s.st.begin(&reqs[i], int(idx))
		idx = s.next
	}

	r.mu.Lock()
	if r.closing {
		// Closed meanwhile: the owner may be gone. Nothing was accepted.
		for i, idx := 0, first; i < n; i, idx = i+1, r.slots[idx].next {
			r.slots[idx].st.release()
			r.free = append(r.free, idx)
		}
		r.mu.Unlock()
		return ErrClosed
	}
	for i, idx := 0, first; i < n; i, idx = i+1, r.slots[idx].next {
		r.pending = append(r.pending, idx)
	}
	r.wake()
	r.mu.Unlock()
	return nil
}

// RegisterBuffers implements Ring: IORING_REGISTER_BUFFERS, run on the
// owner thread.
func (r *nativeRing) RegisterBuffers(bufs [][]byte) error {
	if len(bufs) == 0 || len(bufs) > maxRegBuffers {
		return fmt.Errorf("%w: %d buffers (1 to %d)", ErrBadConfig, len(bufs), maxRegBuffers)
	}
	var total int64
	for i, b := range bufs {
		if len(b) == 0 || len(b) > maxRegBufBytes {
			return fmt.Errorf("%w: buffer %d is %d bytes (1 byte to 1 GiB)", ErrBadConfig, i, len(b))
		}
		total += int64(len(b))
	}
	r.regMu.Lock()
	defer r.regMu.Unlock()
	err := r.onOwner(func() error {
		if r.nbufs > 0 {
			return fmt.Errorf("%w: buffers are already registered", ErrBadConfig)
		}
		if err := r.u.registerBuffers(bufs); err != nil {
			return err
		}
		r.nbufs = len(bufs)
		r.mu.Lock()
		r.caps.RegisteredBuffers = true
		r.mu.Unlock()
		return nil
	})
	var errno unix.Errno
	switch {
	case err == nil || !errors.As(err, &errno):
		return err
	case errno == unix.ENOMEM:
		return fmt.Errorf("ring: %s: register %d buffers (%d bytes): %w: %w: pinning them would pass RLIMIT_MEMLOCK (raise ulimit -l, or run with CAP_IPC_LOCK)", r.t.Path, len(bufs), total, errno, ErrNotSupported)
	default:
		return fmt.Errorf("ring: %s: register %d buffers (%d bytes): %w (%w)", r.t.Path, len(bufs), total, errno, ErrNotSupported)
	}
}

// onOwner runs fn on the owner thread and returns its error.
func (r *nativeRing) onOwner(fn func() error) error {
	c := &ctlReq{fn: fn, done: make(chan struct{})}
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrClosed
	}
	r.ctl = c
	r.wake()
	r.mu.Unlock()
	<-c.done
	return c.err
}

// Caps implements Ring.
func (r *nativeRing) Caps() Caps {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.caps
}

// Close implements Ring. It must not be called from the Handler (it
// waits for the goroutine that runs the Handler).
func (r *nativeRing) Close() error {
	r.mu.Lock()
	if !r.closing {
		r.closing = true
		r.space.Broadcast()
		r.wake()
	}
	r.mu.Unlock()
	<-r.exited
	return r.closeErr
}

// teardown runs on the owner once everything accepted has completed:
// it collects the eventfd read (so the kernel can no longer write into
// efdBuf), then releases everything.
func (r *nativeRing) teardown() error {
	if r.efdArmed {
		if errno := eventfdSignal(r.efd); errno != 0 {
			return r.release()
		}
		for r.efdArmed {
			// Submit the read too if the kernel has not taken it yet.
			if _, errno := r.u.enter(r.u.flush(), 1); errno != 0 && errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY {
				break // closing the ring cancels the read
			}
			r.reap()
		}
	}
	return r.release()
}

// release unregisters buffers, unmaps and closes the ring, and closes
// the eventfd. It tolerates a partial setup.
func (r *nativeRing) release() error {
	var errs []error
	if r.u != nil {
		if r.file.registered() {
			// Drop the ring's reference to the target now: the kernel
			// frees a closed ring asynchronously, and until then a file
			// still registered keeps the block device open, so an O_EXCL
			// open right after Close would fail with EBUSY.
			if err := r.u.unregisterFiles(); err != nil {
				errs = append(errs, fmt.Errorf("unregister files: %w", err))
			}
			r.file = plainFile(r.fd)
		}
		if r.nbufs > 0 {
			if err := r.u.unregisterBuffers(); err != nil {
				errs = append(errs, fmt.Errorf("unregister buffers: %w", err))
			}
			r.nbufs = 0
		}
		if err := r.u.close(); err != nil {
			errs = append(errs, fmt.Errorf("close ring: %w", err))
		}
	}
	if r.efd >= 0 {
		if err := unix.Close(r.efd); err != nil {
			errs = append(errs, fmt.Errorf("close eventfd: %w", err))
		}
		r.efd = -1
	}
	if r.efdBuf != nil {
		if err := unmapScratch(r.efdBuf); err != nil {
			errs = append(errs, fmt.Errorf("munmap: %w", err))
		}
		r.efdBuf = nil
	}
	if len(errs) > 0 {
		return fmt.Errorf("ring: %s: close: %w", r.t.Path, errors.Join(errs...))
	}
	return nil
}

// roundPow2 rounds n up to a power of two.
func roundPow2(n uint32) uint32 {
	p := uint32(1)
	for p < n {
		p <<= 1
	}
	return p
}
