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

// Latency bounds: 1 ns to 1 hour at 3 significant digits.
const (
	latMin    = 1
	latMax    = int64(time.Hour)
	latDigits = 3
)

func newHist() *hdr.Histogram { return hdr.New(latMin, latMax, latDigits) }

// TimedRing wraps a ring and records, for every write and flush, the
// time from Submit to the delivery of its Completion. It costs no
// allocation per request: a request's tag picks its start-time slot
// directly. The engine tags its writes with record indexes below the
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

	mu      sync.Mutex     // protects writes and flushes
	writes  *hdr.Histogram // write completion latency, ns
	flushes *hdr.Histogram // flush completion latency, ns
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
		writes:  newHist(),
		flushes: newHist(),
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
	return t.inner.Submit(reqs)
}

// handle records the completions' latencies, then passes them on.
func (t *TimedRing) handle(cs []ring.Completion) {
	now := int64(time.Since(t.base))
	t.mu.Lock()
	for i := range cs {
		k := t.slot(cs[i].Tag)
		if k < 0 {
			continue
		}
		d := max(now-t.starts[k].Load(), latMin)
		h := t.writes
		if k == t.depth {
			h = t.flushes
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

// Take returns the write and flush latencies recorded since the last
// Take and starts over.
func (t *TimedRing) Take() (writes, flushes *hdr.Histogram) {
	t.mu.Lock()
	defer t.mu.Unlock()
	writes, flushes = t.writes, t.flushes
	t.writes, t.flushes = newHist(), newHist()
	return writes, flushes
}

// Latency is completion-latency percentiles in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

// latencyOf reads the percentiles off h (nil when h is empty).
func latencyOf(h *hdr.Histogram) *Latency {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	us := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1e3 }
	return &Latency{P50: us(50), P99: us(99), P999: us(99.9)}
}
