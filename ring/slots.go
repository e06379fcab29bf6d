package ring

// Machinery the backends without an owner thread share: the slot pool,
// the deliverer that serializes Handler calls, the opening checks of
// Submit, and CallerQueue, which runs Run functions over Submit.

import (
	"context"
	"fmt"
	"sync"
)

// checkBatch is Submit's opening check, the same for every backend: no
// more requests than depth, and each one an operation a backend can do.
func checkBatch(reqs []Request, depth int) error {
	if len(reqs) > depth {
		return fmt.Errorf("%w: %d requests, depth %d", ErrTooMany, len(reqs), depth)
	}
	for i := range reqs {
		if err := checkOp(&reqs[i]); err != nil {
			return err
		}
	}
	return nil
}

// checkOp rejects what no backend can do: an unknown op, or more
// iovecs than one vectored I/O takes (IOV_MAX).
func checkOp(req *Request) error {
	switch req.Op {
	case OpWrite, OpRead:
		if len(req.Iov) > iovMax {
			return fmt.Errorf("%w: %s with %d iovecs (at most %d)", ErrBadConfig, req.Op, len(req.Iov), iovMax)
		}
	case OpFlush, OpNop:
	default:
		return fmt.Errorf("%w: unknown op %d", ErrBadConfig, req.Op)
	}
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

// inUse is the number of slots taken and not yet released.
func (p *slotPool) inUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n - len(p.free)
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
	// queue, if set, hears of every delivery (CallerQueue.Wait).
	queue *CallerQueue

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
		if d.queue != nil {
			d.queue.Delivered()
		}
		d.mu.Lock()
	}
	d.busy = false
	d.mu.Unlock()
}

// CallerQueue runs Run functions on the caller's goroutine, over Submit,
// for a ring with no owner thread (the pwritev pool, iceber, test
// doubles): Add collects requests, Flush submits them (in batches of at
// most the ring's depth; Submit blocks for slots, which the ring's own
// goroutines free), Wait waits until the ring delivers a completion.
// The ring calls Delivered after each Handler call.
type CallerQueue struct {
	submit   func([]Request) error
	inFlight func() int // requests accepted and not yet delivered
	depth    int

	runMu sync.Mutex // serializes Run; owns batch and ctx
	batch []Request
	ctx   context.Context

	mu   sync.Mutex // protects seq; cond's lock
	cond sync.Cond
	seq  uint64 // deliveries so far
}

var _ Queue = (*CallerQueue)(nil)

// NewCallerQueue makes a CallerQueue for a ring of depth slots whose
// Submit is submit and which has inFlight requests accepted and not yet
// delivered.
func NewCallerQueue(submit func([]Request) error, inFlight func() int, depth int) *CallerQueue {
	q := &CallerQueue{submit: submit, inFlight: inFlight, depth: depth, batch: make([]Request, 0, depth)}
	q.cond.L = &q.mu
	return q
}

// Run implements Ring.Run: fn runs on the caller's goroutine; what it
// added and did not flush is flushed when it returns.
func (q *CallerQueue) Run(ctx context.Context, fn func(Queue)) error {
	q.runMu.Lock()
	defer q.runMu.Unlock()
	q.ctx = ctx
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, q.Delivered) // wakes a Wait
		defer stop()
	}
	fn(q)
	q.ctx = nil
	return q.Flush()
}

// Add implements Queue.
func (q *CallerQueue) Add(req *Request) { q.batch = append(q.batch, *req) }

// Flush implements Queue. On error (the ring closed) none of the
// requests added since the last Flush was accepted.
func (q *CallerQueue) Flush() error {
	var err error
	for b := q.batch; len(b) > 0 && err == nil; {
		n := min(len(b), q.depth)
		err = q.submit(b[:n])
		b = b[n:]
	}
	clear(q.batch)
	q.batch = q.batch[:0]
	return err
}

// Wait implements Queue.
func (q *CallerQueue) Wait() error { return q.Reap(1) }

// Reap implements Queue. It waits for n deliveries (Handler calls, each
// one or more completions), or until nothing is in flight.
func (q *CallerQueue) Reap(n int) error {
	if err := q.Flush(); err != nil {
		return err
	}
	if q.ctx != nil {
		if err := q.ctx.Err(); err != nil {
			return err
		}
	}
	q.mu.Lock()
	seq := q.seq
	for q.seq < seq+uint64(max(n, 1)) && q.inFlight() > 0 && (q.ctx == nil || q.ctx.Err() == nil) {
		q.cond.Wait()
	}
	q.mu.Unlock()
	return nil
}

// InFlight implements Queue.
func (q *CallerQueue) InFlight() int { return q.inFlight() + len(q.batch) }

// Delivered tells waiters that completions were delivered (the ring
// calls it after its Handler returned, holding none of its locks).
func (q *CallerQueue) Delivered() {
	q.mu.Lock()
	q.seq++
	q.cond.Broadcast()
	q.mu.Unlock()
}
