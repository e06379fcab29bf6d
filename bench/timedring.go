package bench

import (
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
// time from Submit to the delivery of its Completion, and the size of
// every batch: requests per Submit call, completions per call of the
// handler (one reap). It costs no allocation per request: a request's
// tag picks its start-time slot directly. The engine tags its writes with record indexes below the
// queue depth and its flush with 1<<63; other requests (the engine's
// reads carry 1<<62 in their tags) pass through untimed.
type TimedRing struct {
	inner   ring.Ring
	handler ring.Handler
	depth   int
	base    time.Time
	// starts holds the submit time of the request in flight with tag i
	// (i < depth) or of the flush (i == depth), in ns since base. Written
	// by Submit before the request reaches the inner ring, read by the
	// handler after its completion: the ring's hand-off orders the two.
	starts []atomic.Int64

	mu sync.Mutex // protects t (the histograms)
	t  Timings
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

var _ ring.Ring = (*TimedRing)(nil)

// OpenTimed opens a ring with open, giving it cfg with the Handler
// replaced by the wrapper's, and wraps it.
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
	icfg := cfg
	icfg.Handler = t.handle
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
	now := int64(time.Since(t.base))
	for i := range reqs {
		if op := reqs[i].Op; op != ring.OpWrite && op != ring.OpFlush {
			continue // reads are tagged apart from writes and not timed
		}
		if k := t.slot(reqs[i].Tag); k >= 0 {
			t.starts[k].Store(now)
		}
	}
	if len(reqs) > 0 {
		t.mu.Lock()
		_ = t.t.Submits.RecordValue(min(int64(len(reqs)), batchMax))
		t.mu.Unlock()
	}
	return t.inner.Submit(reqs)
}

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
