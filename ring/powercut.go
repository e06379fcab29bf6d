package ring

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"unsafe"
)

// ErrPowerCut: the simulated power was cut; the device is gone.
var ErrPowerCut = errors.New("ring: power cut")

// PowerCut is a Ring that models a device with a volatile write cache
// over another ring, for crash tests in process (bbolt's dm-flakey
// "drop writes" and pebble's error-injecting file system play this role
// for them). It keeps, in memory, the image a power cut would leave
// behind — the durable image — and updates it by the rule a volatile
// write cache follows:
//
//   - A write that completed is not durable yet: the wrapper copies its
//     data aside when its completion passes through.
//   - A flush covers the writes that completed before it was submitted:
//     at Submit it takes the writes completed so far; when it completes
//     successfully, their data is applied to the durable image in the
//     order they completed. A failed flush covers nothing: its writes
//     wait for the next flush.
//   - Cut keeps a random subset of the writes that completed but that no
//     successful flush covered, and loses the rest: a volatile cache
//     writes back whatever it holds, in any order, until the power goes.
//     The survivors are applied to the durable image in a random order
//     (so of two unflushed writes to one block either may win). Then the
//     image is frozen, every request in flight completes with EIO, and
//     every later Submit fails with ErrPowerCut.
//
// Writes and reads still go to the inner ring (so the engine's own
// behaviour is the real one); only the durable image says what survives.
// It assumes the target was zero-filled (or equal to the initial image
// given) when the wrapper was made.
type PowerCut struct {
	inner Ring
	h     Handler

	mu        sync.Mutex
	durable   []byte
	pending   map[uint64]pcReq     // by tag: requests submitted and not completed
	completed []pcWrite            // completed writes no submitted flush covers yet
	flushes   map[uint64][]pcWrite // by tag: what each flush in flight covers
	cut       bool
	stats     PowerCutStats
}

// PowerCutStats counts what passed through a PowerCut ring.
type PowerCutStats struct {
	Writes      int // writes completed before the cut
	Flushes     int // flushes that made writes durable
	Durable     int // writes applied to the durable image
	Lost        int // completed writes not durable at the cut, lost
	Survived    int // completed writes not covered by a flush that the cut kept anyway
	FailedAfter int // requests failed because of the cut
}

type pcReq struct {
	op  Op
	off int64
	iov [][]byte // views of the request's memory, for copying at completion
}

type pcWrite struct {
	off  int64
	data []byte
}

// NewPowerCut opens the inner ring through open (with its own handler)
// and wraps it. initial is the target's content now (nil: size zero
// bytes).
func NewPowerCut(open func(Config) (Ring, error), cfg Config, size int64, initial []byte) (*PowerCut, error) {
	if cfg.Handler == nil {
		return nil, fmt.Errorf("%w: nil Handler", ErrBadConfig)
	}
	p := &PowerCut{
		h:       cfg.Handler,
		durable: make([]byte, size),
		pending: make(map[uint64]pcReq),
		flushes: make(map[uint64][]pcWrite),
	}
	copy(p.durable, initial)
	inner := cfg
	inner.Handler = p.handle
	r, err := open(inner)
	if err != nil {
		return nil, err
	}
	p.inner = r
	return p, nil
}

// Submit implements Ring.
func (p *PowerCut) Submit(reqs []Request) error {
	p.mu.Lock()
	if p.cut {
		p.stats.FailedAfter += len(reqs)
		p.mu.Unlock()
		return ErrPowerCut
	}
	for i := range reqs {
		r := &reqs[i]
		pr := pcReq{op: r.Op, off: r.Off}
		switch r.Op {
		case OpWrite:
			for _, v := range r.Iov {
				pr.iov = append(pr.iov, unsafe.Slice(v.Base, v.Len))
			}
		case OpFlush:
			p.flushes[r.Tag] = p.completed
			p.completed = nil
		}
		p.pending[r.Tag] = pr
	}
	p.mu.Unlock()
	err := p.inner.Submit(reqs)
	if err != nil {
		p.mu.Lock()
		for i := range reqs {
			if reqs[i].Op == OpFlush {
				p.completed = append(p.flushes[reqs[i].Tag], p.completed...)
				delete(p.flushes, reqs[i].Tag)
			}
			delete(p.pending, reqs[i].Tag)
		}
		p.mu.Unlock()
	}
	return err
}

func (p *PowerCut) handle(cs []Completion) {
	p.mu.Lock()
	for i := range cs {
		c := &cs[i]
		r := p.pending[c.Tag]
		delete(p.pending, c.Tag)
		if p.cut {
			// The device lost power: whatever the inner ring did, the
			// caller sees a failure, and nothing becomes durable.
			if r.op == OpFlush {
				delete(p.flushes, c.Tag)
			}
			c.N, c.Err = 0, syscall.EIO
			p.stats.FailedAfter++
			continue
		}
		switch r.op {
		case OpWrite:
			if c.N > 0 {
				p.completed = append(p.completed, pcWrite{off: r.off, data: gather(r.iov, c.N)})
				p.stats.Writes++
			}
		case OpFlush:
			covered := p.flushes[c.Tag]
			delete(p.flushes, c.Tag)
			if c.Err != 0 {
				// Not covered after all: the next flush must cover them.
				p.completed = append(covered, p.completed...)
				break
			}
			for _, w := range covered {
				copy(p.durable[w.off:], w.data)
			}
			p.stats.Flushes++
			p.stats.Durable += len(covered)
		}
	}
	p.mu.Unlock()
	p.h(cs)
}

// gather copies the first n bytes of the views.
func gather(iov [][]byte, n int64) []byte {
	out := make([]byte, 0, n)
	for _, v := range iov {
		if int64(len(out)) >= n {
			break
		}
		out = append(out, v[:min(int64(len(v)), n-int64(len(out)))]...)
	}
	return out
}

// Cut cuts the power. Of the completed writes no successful flush
// covered (also those whose flush is still in flight), each survives
// with probability 1/2, drawn from seed; the survivors are applied to
// the durable image in an order drawn from seed too. From then on only
// the durable image counts. A second Cut does nothing.
func (p *PowerCut) Cut(seed uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return
	}
	p.cut = true
	unflushed := p.completed
	// Flushes in flight in tag order, so the outcome depends on seed only.
	for _, tag := range slices.Sorted(maps.Keys(p.flushes)) {
		unflushed = append(unflushed, p.flushes[tag]...)
	}
	p.completed = nil
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	rng.Shuffle(len(unflushed), func(i, j int) { unflushed[i], unflushed[j] = unflushed[j], unflushed[i] })
	for _, w := range unflushed {
		if rng.IntN(2) == 0 {
			p.stats.Lost++
			continue
		}
		copy(p.durable[w.off:], w.data)
		p.stats.Survived++
	}
}

// Image returns a copy of the durable image: what the device would
// hold after a power cut now (or at the cut, once Cut was called).
func (p *PowerCut) Image() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.durable...)
}

// ReadDurable copies the durable image at byte offset off into b: what
// the device would hold there after a cut now that kept none of the
// unflushed writes.
func (p *PowerCut) ReadDurable(b []byte, off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	copy(b, p.durable[off:])
}

// Stats reports what passed through.
func (p *PowerCut) Stats() PowerCutStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// RegisterBuffers implements Ring.
func (p *PowerCut) RegisterBuffers(bufs [][]byte) error { return p.inner.RegisterBuffers(bufs) }

// Caps implements Ring.
func (p *PowerCut) Caps() Caps {
	c := p.inner.Caps()
	c.Backend = "powercut(" + c.Backend + ")"
	return c
}

// Close implements Ring.
func (p *PowerCut) Close() error { return p.inner.Close() }
