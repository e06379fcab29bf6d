package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/wbengine/wbengine/ring"
)

// Latency bounds: 1 ns to 1 hour at 3 significant digits; batch sizes
// up to 65536 requests.
const (
	latMin    = 1
	latMax    = int64(time.Hour)
	latDigits = 3
	batchMax  = 1 << 16
)

func newHist() *hdr.Histogram      { return hdr.New(latMin, latMax, latDigits) }
func newBatchHist() *hdr.Histogram { return hdr.New(1, batchMax, latDigits) }

// TimedRing wraps a ring and records, for every write and flush, the
// time from when the ring issues it to the device to the delivery of its
// Completion, and the size of every batch: requests per submission (a
// Submit call, or what a Run function added between two Flush or Wait
// calls: one io_uring_enter on the native ring), completions per call of
// the handler (one reap). It is also an interposer (ring.Interposer) of
// the ring it wraps, so it sees the engine's writes on the native ring's
// owner-thread path too. It goes by a request's Op, not by its Tag
// (the caller's): writes and flushes are timed, reads and NOPs pass
// through untimed. It keeps its clocks per ring slot, found again by a
// Completion's Slot, so timing a request allocates nothing.
type TimedRing struct {
	inner   ring.Ring
	handler ring.Handler
	base    time.Time
	// starts holds, for the request in ring slot i, what it is timed as
	// and when its first attempt was issued: ns since base << 2 | a
	// timed kind, or 0 for a request not timed. Written by Issue before
	// the request reaches the device, read by the handler after its
	// completion (the slot is the request's until the handler returns).
	starts []atomic.Int64
	q      timedQueue // Run's

	mu sync.Mutex // protects t (the histograms)
	t  Timings
}

// What a slot's request is timed as: the low two bits of its starts
// entry.
const (
	timedWrite = 1
	timedFlush = 2
	timedKinds = 3 // the mask
)

// timedQueue counts what a Run function adds between submissions.
type timedQueue struct {
	t     *TimedRing
	inner ring.Queue
	added int
}

func (q *timedQueue) Add(r *ring.Request) { q.added++; q.inner.Add(r) }
func (q *timedQueue) Flush() error        { q.batch(); return q.inner.Flush() }
func (q *timedQueue) Wait() error         { q.batch(); return q.inner.Wait() }
func (q *timedQueue) Reap(n int) error    { q.batch(); return q.inner.Reap(n) }
func (q *timedQueue) InFlight() int       { return q.inner.InFlight() }

func (q *timedQueue) batch() {
	if q.added > 0 {
		q.t.mu.Lock()
		_ = q.t.t.Submits.RecordValue(min(int64(q.added), batchMax))
		q.t.mu.Unlock()
		q.added = 0
	}
}

// Timings is what a TimedRing recorded: write and flush latency from
// Submit to the delivery of the completion (ns), requests per Submit
// call and completions per handler call.
type Timings struct {
	Writes, Flushes      *hdr.Histogram
	Submits, Completions *hdr.Histogram
}

func newTimings() Timings {
	return Timings{Writes: newHist(), Flushes: newHist(), Submits: newBatchHist(), Completions: newBatchHist()}
}

var (
	_ ring.Ring       = (*TimedRing)(nil)
	_ ring.Interposer = (*TimedRing)(nil)
)

// OpenTimed opens a ring on t with open, giving it cfg with the Handler
// replaced by the wrapper's and the wrapper first among its
// interposers, and wraps it.
func OpenTimed(open ring.Opener, t *ring.Target, cfg ring.Config) (*TimedRing, error) {
	tr := &TimedRing{
		handler: cfg.Handler,
		base:    time.Now(),
		t:       newTimings(),
	}
	tr.q.t = tr
	icfg := cfg
	icfg.Handler = tr.handle
	icfg.Interposers = append([]ring.Interposer{tr}, cfg.Interposers...)
	inner, err := open(t, icfg)
	if err != nil {
		return nil, err
	}
	tr.inner = inner
	return tr, nil
}

// Submit implements ring.Ring.
func (t *TimedRing) Submit(reqs []ring.Request) error {
	if len(reqs) > 0 {
		t.mu.Lock()
		_ = t.t.Submits.RecordValue(min(int64(len(reqs)), batchMax))
		t.mu.Unlock()
	}
	return t.inner.Submit(reqs)
}

// Run implements ring.Ring: fn gets the inner ring's queue, counted.
func (t *TimedRing) Run(ctx context.Context, fn func(ring.Queue)) error {
	return t.inner.Run(ctx, func(q ring.Queue) {
		t.q.inner, t.q.added = q, 0
		fn(&t.q)
		t.q.batch()
		t.q.inner = nil
	})
}

// Attach implements ring.Interposer: a clock per slot.
func (t *TimedRing) Attach(depth int) { t.starts = make([]atomic.Int64, depth) }

// Issue implements ring.Interposer: a write's or flush's first attempt
// starts its clock; any other request's clears its slot's.
func (t *TimedRing) Issue(a *ring.Attempt) {
	if a.Seq != 0 {
		return // the rest of a request, or a retry: its clock runs
	}
	var v int64
	switch a.Req.Op {
	case ring.OpWrite:
		v = int64(time.Since(t.base))<<2 | timedWrite
	case ring.OpFlush:
		v = int64(time.Since(t.base))<<2 | timedFlush
	}
	t.starts[a.Slot].Store(v)
}

// Done implements ring.Interposer.
func (t *TimedRing) Done(*ring.Attempt) {}

// handle records the completions' latencies, then passes them on.
func (t *TimedRing) handle(cs []ring.Completion) {
	now := int64(time.Since(t.base))
	t.mu.Lock()
	if len(cs) > 0 {
		_ = t.t.Completions.RecordValue(min(int64(len(cs)), batchMax))
	}
	for i := range cs {
		k := cs[i].Slot
		if uint(k) >= uint(len(t.starts)) {
			continue
		}
		v := t.starts[k].Load()
		if v == 0 {
			continue
		}
		d := max(now-v>>2, latMin)
		h := t.t.Writes
		if v&timedKinds == timedFlush {
			h = t.t.Flushes
		}
		_ = h.RecordValue(min(d, latMax))
	}
	t.mu.Unlock()
	t.handler(cs)
}

// RegisterBuffers implements ring.Ring.
func (t *TimedRing) RegisterBuffers(bufs [][]byte) error { return t.inner.RegisterBuffers(bufs) }

// Caps implements ring.Ring: the inner ring's.
func (t *TimedRing) Caps() ring.Caps { return t.inner.Caps() }

// Close implements ring.Ring.
func (t *TimedRing) Close() error { return t.inner.Close() }

// Take returns what was recorded since the last Take and starts over.
func (t *TimedRing) Take() Timings {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.t
	t.t = newTimings()
	return r
}
