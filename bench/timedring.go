package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/wbengine/wbengine/ring"
)

// flushTag is the tag the engine gives its device flush (engine.go).
const flushTag = 1 << 63

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
// owner-thread path too. It costs no allocation per request: a
// request's tag picks its start-time slot directly. The engine tags its
// writes with record indexes below the queue depth and its flush with
// 1<<63; other requests (the engine's reads carry 1<<62 in their tags)
// pass through untimed.
type TimedRing struct {
	inner   ring.Ring
	handler ring.Handler
	depth   int
	base    time.Time
	// starts holds the issue time of the request in flight with tag i
	// (i < depth) or of the flush (i == depth), in ns since base. Written
	// by Issue before the request reaches the device, read by the
	// handler after its completion.
	starts []atomic.Int64
	q      timedQueue // Run's

	mu sync.Mutex // protects t (the histograms)
	t  Timings
}

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

// OpenTimed opens a ring with open, giving it cfg with the Handler
// replaced by the wrapper's and the wrapper first among its
// interposers, and wraps it.
func OpenTimed(open func(ring.Config) (ring.Ring, error), cfg ring.Config) (*TimedRing, error) {
	depth := cfg.Depth
	if depth == 0 {
		depth = ring.DefaultDepth
	}
	t := &TimedRing{
		handler: cfg.Handler,
		depth:   depth,
		base:    time.Now(),
		starts:  make([]atomic.Int64, depth+1),
		t:       newTimings(),
	}
	t.q.t = t
	icfg := cfg
	icfg.Handler = t.handle
	icfg.Interposers = append([]ring.Interposer{t}, cfg.Interposers...)
	inner, err := open(icfg)
	if err != nil {
		return nil, err
	}
	t.inner = inner
	return t, nil
}

// slot maps a tag to its start-time slot, or -1.
func (t *TimedRing) slot(tag uint64) int {
	switch {
	case tag < uint64(t.depth):
		return int(tag)
	case tag == flushTag:
		return t.depth
	}
	return -1
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

// Attach implements ring.Interposer.
func (t *TimedRing) Attach(int) {}

// Issue implements ring.Interposer: a write's or flush's first attempt
// starts its clock.
func (t *TimedRing) Issue(a *ring.Attempt) {
	if a.Seq != 0 || (a.Req.Op != ring.OpWrite && a.Req.Op != ring.OpFlush) {
		return // reads are tagged apart from writes and not timed
	}
	if k := t.slot(a.Req.Tag); k >= 0 {
		t.starts[k].Store(int64(time.Since(t.base)))
	}
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
		k := t.slot(cs[i].Tag)
		if k < 0 {
			continue
		}
		d := max(now-t.starts[k].Load(), latMin)
		h := t.t.Writes
		if k == t.depth {
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
