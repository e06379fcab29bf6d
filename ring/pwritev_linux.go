package ring

import (
	"fmt"
	"sync"

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
	req Request
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
	r.wcond.L = &r.wmu
	r.wg.Add(cfg.InFlight)
	for range cfg.InFlight {
		go r.worker()
	}
	return r, nil
}

// Submit implements Ring.
func (r *pwritevRing) Submit(reqs []Request) error {
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
	if len(reqs) == 0 {
		r.pool.mu.Unlock()
		return nil
	}
	// Slots are popped under pool.mu; their contents are ours until the
	// indexes are queued.
	r.wmu.Lock()
	for i := range reqs {
		s := r.pool.pop()
		r.slots[s].req = reqs[i]
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
		c := r.do(&r.slots[s].req)
		r.slots[s].req = Request{} // drop references to the caller's memory
		r.del.complete(s, c)
	}
}

// do performs one request synchronously.
func (r *pwritevRing) do(q *Request) Completion {
	c := Completion{Tag: q.Tag}
	retries := 0
	retry := func(e unix.Errno) bool {
		if (e == unix.EAGAIN || e == unix.EINTR) && retries < r.cfg.MaxRetries {
			retries++
			return true
		}
		return false
	}
	switch q.Op {
	case OpNop:
		return c
	case OpFlush:
		for {
			e := r.fsync(r.fd)
			if e == 0 || !retry(e) {
				c.Err = e
				return c
			}
		}
	case OpWrite, OpRead:
	default:
		c.Err = unix.EINVAL
		return c
	}
	total := q.Len()
	iov := q.Iov
	for c.N < total {
		n, e := r.rw(q.Op == OpWrite, r.fd, &iov[0], len(iov), q.Off+c.N, q.RWFlags)
		if e != 0 {
			if retry(e) {
				continue
			}
			c.Err = e
			return c
		}
		if n <= 0 {
			// No progress and no error: a write the target will not
			// take, or a read at its end. Retrying would loop; fail as
			// the native ring does.
			c.Err = unix.EIO
			if q.Op == OpRead {
				c.Err = unix.ENODATA
			}
			return c
		}
		n = min(n, total-c.N) // the kernel never reports more than asked
		c.N += n
		if c.N < total {
			iov = iovAdvance(iov, n)
		}
	}
	return c
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

// slotPool hands out slot indexes [0, n) in all-or-nothing batches. A
// batch that does not fit waits, in FIFO order with other waiting
// batches (so a large batch is not starved by small ones), without
// spinning.
type slotPool struct {
	// mu protects every field; cond signals freed slots and close.
	mu   sync.Mutex
	cond sync.Cond
	free []int32 // stack of free slot indexes
	n    int
	// closed: no more acquisitions; closeAndDrain waits for all slots.
	closed bool
	// FIFO tickets for waiting acquirers: the one holding ticket
	// serving goes next.
	next, serving uint64
	waiting       int
}

func (p *slotPool) init(n int) {
	p.n = n
	p.free = make([]int32, n)
	for i := range p.free {
		p.free[i] = int32(n - 1 - i)
	}
	p.cond.L = &p.mu
}

// lockAcquire waits until k slots are free and returns with p.mu held;
// the caller pops k slots and unlocks. It returns ErrClosed, without
// p.mu held, once the pool is closed (also while waiting).
func (p *slotPool) lockAcquire(k int) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if p.waiting == 0 && len(p.free) >= k {
		return nil
	}
	t := p.next
	p.next++
	p.waiting++
	for !p.closed && (p.serving != t || len(p.free) < k) {
		p.cond.Wait()
	}
	p.waiting--
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.serving++
	if p.waiting > 0 {
		// The next ticket may fit in what is left.
		p.cond.Broadcast()
	}
	return nil
}

// pop takes one free slot; p.mu must be held and a slot reserved by
// lockAcquire.
func (p *slotPool) pop() int32 {
	s := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return s
}

// release frees slots.
func (p *slotPool) release(slots []int32) {
	p.mu.Lock()
	p.free = append(p.free, slots...)
	if p.waiting > 0 || (p.closed && len(p.free) == p.n) {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// closeAndDrain refuses further acquisitions (waiting ones return
// ErrClosed) and waits until every slot was released.
func (p *slotPool) closeAndDrain() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	for len(p.free) < p.n {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

// deliverer batches completions and calls the Handler from one goroutine
// at a time: whoever finds no delivery running becomes the deliverer and
// delivers until nothing is pending; the others only append. Slots are
// released after their completion was delivered.
type deliverer struct {
	handler Handler
	pool    *slotPool

	// mu protects pend, pendSlots and busy. out and outSlots belong to
	// the goroutine delivering.
	mu        sync.Mutex
	pend      []Completion
	pendSlots []int32
	busy      bool
	out       []Completion
	outSlots  []int32
}

func (d *deliverer) init(depth int, h Handler, pool *slotPool) {
	d.handler, d.pool = h, pool
	d.pend = make([]Completion, 0, depth)
	d.pendSlots = make([]int32, 0, depth)
	d.out = make([]Completion, 0, depth)
	d.outSlots = make([]int32, 0, depth)
}

// complete queues c for slot s and delivers, unless another goroutine
// is delivering already (it will deliver c too).
func (d *deliverer) complete(s int32, c Completion) {
	d.mu.Lock()
	d.pend = append(d.pend, c)
	d.pendSlots = append(d.pendSlots, s)
	if d.busy {
		d.mu.Unlock()
		return
	}
	d.busy = true
	for len(d.pend) > 0 {
		d.pend, d.out = d.out[:0], d.pend
		d.pendSlots, d.outSlots = d.outSlots[:0], d.pendSlots
		d.mu.Unlock()
		d.handler(d.out)
		d.pool.release(d.outSlots)
		d.mu.Lock()
	}
	d.busy = false
	d.mu.Unlock()
}
