package ring

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func init() { backends["pwritev"] = openPwritev }

// pwritevRing is the "pwritev" backend: a pool of InFlight goroutines, each
// doing one request at a time with pwritev2, preadv2 or fdatasync. It is
// the fallback where io_uring is refused, and the baseline the ring
// backends are measured against.
//
// A request's life: Submit takes a slot from pool (all or nothing,
// waiting in FIFO order when too few are free), copies the request into
// it and appends the slot index to the work queue: one pass under the
// pool's and the queue's locks per batch, waking one worker per request. A worker pops the index, does the I/O
// (resuming short transfers, retrying EAGAIN/EINTR up to MaxRetries) and
// hands the Completion to complete, which batches completions and calls
// the Handler from one worker at a time; the slot is freed after the
// Handler returned, so Close's drain means every completion was
// delivered. Nothing allocates per request.
type pwritevRing struct {
	fd   int
	t    *Target
	cfg  Config
	caps Caps

	slots []pwSlot
	pool  slotPool

	// wmu protects the work queue and stop; wcond wakes workers.
	wmu   sync.Mutex
	wcond sync.Cond
	queue []int32 // ring buffer of slot indexes, capacity Depth
	qhead int     // index of the first queued slot in queue
	qlen  int
	stop  bool
	wg    sync.WaitGroup

	del deliverer
	cq  *CallerQueue // Run's

	// The syscalls, as fields so tests can play short transfers, EAGAIN
	// and EINTR (set before the first Submit).
	rw    func(write bool, fd int, iov *unix.Iovec, n int, off int64, flags uint32) (int64, unix.Errno)
	fsync func(fd int) unix.Errno

	closeOnce sync.Once
}

// sysRW is the real rw: pwritev2 or preadv2.
func sysRW(write bool, fd int, iov *unix.Iovec, n int, off int64, flags uint32) (int64, unix.Errno) {
	if write {
		return pwritev2(fd, iov, n, off, flags)
	}
	return preadv2(fd, iov, n, off, flags)
}

// pwSlot is one in-flight request. Between Submit and the worker that
// pops its index it belongs to Submit; then to that worker alone.
type pwSlot struct {
	st reqState
}

var _ Ring = (*pwritevRing)(nil)

func openPwritev(t *Target, cfg Config) (Ring, error) {
	r := &pwritevRing{
		fd:    t.fd,
		t:     t,
		cfg:   cfg,
		slots: make([]pwSlot, cfg.Depth),
		queue: make([]int32, cfg.Depth),
		rw:    sysRW,
		fsync: fdatasync,
		caps: Caps{
			Backend:  "pwritev",
			RunPath:  "caller",
			Depth:    cfg.Depth,
			InFlight: cfg.InFlight,
			Setup:    fmt.Sprintf("pool of %d goroutines (pwritev2/preadv2/fdatasync)", cfg.InFlight),
			Writev:   true,
			Readv:    true,
			Fsync:    true,
		},
	}
	r.pool.init(cfg.Depth)
	r.del.init(cfg.Depth, cfg.Handler, &r.pool)
	r.cq = NewCallerQueue(r.Submit, r.pool.inUse, cfg.Depth)
	r.del.queue = r.cq
	for _, ip := range cfg.Interposers {
		ip.Attach(cfg.Depth)
	}
	r.wcond.L = &r.wmu
	r.wg.Add(cfg.InFlight)
	for range cfg.InFlight {
		go r.worker()
	}
	return r, nil
}

// Submit implements Ring.
func (r *pwritevRing) Submit(reqs []Request) error {
	if err := checkBatch(reqs, r.cfg.Depth); err != nil {
		return err
	}
	if err := r.pool.lockAcquire(len(reqs)); err != nil {
		return err
	}
	if len(reqs) == 0 {
		r.pool.mu.Unlock()
		return nil
	}
	// Slots are popped under pool.mu; their contents are ours until the
	// indexes are queued.
	r.wmu.Lock()
	for i := range reqs {
		s := r.pool.pop()
		r.slots[s].st.begin(&reqs[i], int(s))
		r.queue[(r.qhead+r.qlen)%len(r.queue)] = s
		r.qlen++
	}
	r.pool.mu.Unlock()
	for range reqs {
		r.wcond.Signal() // one worker each; Broadcast would wake all Depth
	}
	r.wmu.Unlock()
	return nil
}

// Run implements Ring: fn runs on the caller's goroutine (CallerQueue).
func (r *pwritevRing) Run(ctx context.Context, fn func(Queue)) error { return r.cq.Run(ctx, fn) }

// worker pops slot indexes and does their I/O until stop.
func (r *pwritevRing) worker() {
	defer r.wg.Done()
	for {
		r.wmu.Lock()
		for r.qlen == 0 && !r.stop {
			r.wcond.Wait()
		}
		if r.qlen == 0 {
			r.wmu.Unlock()
			return
		}
		s := r.queue[r.qhead]
		r.qhead = (r.qhead + 1) % len(r.queue)
		r.qlen--
		r.wmu.Unlock()
		st := &r.slots[s].st
		r.do(st)
		c := st.completion()
		st.release()
		r.del.complete(s, c)
	}
}

// do performs one request synchronously, attempt after attempt.
func (r *pwritevRing) do(st *reqState) {
	is := r.cfg.Interposers
	for {
		var res int32
		if st.issue(is) {
			res = r.attempt(&st.a)
		} else {
			res = st.a.Result
		}
		if d := st.result(is, res); d > 0 {
			time.Sleep(d)
		}
		if st.settle(r.cfg.MaxRetries) {
			return
		}
	}
}

// attempt makes one system call for a and returns its result as a CQE
// would (bytes, or -errno).
func (r *pwritevRing) attempt(a *Attempt) int32 {
	switch a.Req.Op {
	case OpNop:
		return 0
	case OpFlush:
		if e := r.fsync(r.fd); e != 0 {
			return -int32(e)
		}
		return 0
	case OpWrite, OpRead:
		n, e := r.rw(a.Req.Op == OpWrite, r.fd, &a.Iov[0], len(a.Iov), a.Off, a.Req.RWFlags)
		if e != 0 {
			return -int32(e)
		}
		return int32(min(n, a.Len))
	}
	return -int32(unix.EINVAL)
}

// RegisterBuffers implements Ring: the pool has no registered buffers.
func (r *pwritevRing) RegisterBuffers(bufs [][]byte) error {
	return fmt.Errorf("ring: pwritev: register buffers: %w", ErrNotSupported)
}

// Caps implements Ring.
func (r *pwritevRing) Caps() Caps { return r.caps }

// Close implements Ring: it refuses new requests, waits until every
// accepted one was completed and delivered, then stops the workers.
func (r *pwritevRing) Close() error {
	r.closeOnce.Do(func() {
		r.pool.closeAndDrain()
		r.wmu.Lock()
		r.stop = true
		r.wcond.Broadcast()
		r.wmu.Unlock()
		r.wg.Wait()
	})
	return nil
}
