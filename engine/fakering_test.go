package engine

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/wbengine/wbengine/ring"
)

// fakeRing is an in-memory device behind the Ring interface: writes land
// in img when they complete. In hold mode, submitted requests wait until
// the test calls completeAll; otherwise a goroutine completes them at
// once (never from inside Submit, as the contract says).
type fakeRing struct {
	mu      sync.Mutex
	cond    *sync.Cond
	h       ring.Handler
	depth   int
	img     []byte
	hold    bool
	pending []ring.Request
	free    int
	closed  bool
	log     []string // one line per submitted write or flush

	// faults: a write touching a block in failBlocks fails with that
	// errno, and the count is decremented (negative: forever).
	failBlocks map[uint64]fault
	flushErr   syscall.Errno
	flushFails int // flushes still to fail with flushErr
	shortNext  int // the next write completes with only this many bytes and EIO (0: off)

	subs  []sub         // every write submitted, in order
	delay time.Duration // per request, when not holding (a slow device)

	fixedOK bool     // accept RegisterBuffers
	regErr  error    // RegisterBuffers fails with it (as under RLIMIT_MEMLOCK)
	bufs    [][]byte // registered buffers

	bs     int // block (page) size, for the log
	writes int
	iovs   int
	done   chan struct{}
	cq     *ring.CallerQueue // Run's
}

// sub is a write as submitted.
type sub struct {
	off, len int64
	iovs     int
	fixed    bool
	buf      int
}

type fault struct {
	errno syscall.Errno
	count int
}

func newFakeRing(size int64, bs int, cfg ring.Config) *fakeRing {
	f := &fakeRing{
		h:          cfg.Handler,
		depth:      cfg.InFlight,
		free:       cfg.InFlight,
		img:        make([]byte, size),
		failBlocks: map[uint64]fault{},
		bs:         bs,
		done:       make(chan struct{}),
	}
	f.cond = sync.NewCond(&f.mu)
	f.cq = ring.NewCallerQueue(f.Submit, func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.depth - f.free
	}, f.depth)
	go f.loop()
	return f
}

// Run implements ring.Ring: on the caller's goroutine.
func (f *fakeRing) Run(ctx context.Context, fn func(ring.Queue)) error { return f.cq.Run(ctx, fn) }

func (f *fakeRing) Caps() ring.Caps {
	return ring.Caps{Backend: "fake", Depth: f.depth, Writev: true, Fsync: true, WritevFixed: f.fixedOK || f.regErr != nil, RegisteredBuffers: f.bufs != nil}
}

func (f *fakeRing) RegisterBuffers(bufs [][]byte) error {
	if f.regErr != nil {
		return f.regErr
	}
	if !f.fixedOK {
		return ring.ErrNotSupported
	}
	f.bufs = bufs
	return nil
}

func (f *fakeRing) Submit(reqs []ring.Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ring.ErrClosed
	}
	if len(reqs) > f.depth {
		return ring.ErrTooMany
	}
	for f.free < len(reqs) {
		f.cond.Wait()
	}
	f.free -= len(reqs)
	for _, r := range reqs {
		// Copy the iovec slice header only: the array stays the caller's.
		f.pending = append(f.pending, r)
		switch r.Op {
		case ring.OpWrite:
			f.subs = append(f.subs, sub{off: r.Off, len: r.Len(), iovs: len(r.Iov), fixed: r.Fixed, buf: int(r.BufIndex)})
			f.writes++
			f.iovs += len(r.Iov)
			b := r.Off / int64(f.bs)
			line := fmt.Sprintf("write blocks %d-%d (%d pages, %d iovs)", b, b+r.Len()/int64(f.bs)-1, r.Len()/int64(f.bs), len(r.Iov))
			if r.Fixed {
				if err := f.checkFixed(r); err != nil {
					line += " " + err.Error()
				} else {
					line += fmt.Sprintf(" buf %d", r.BufIndex)
				}
			}
			f.log = append(f.log, line)
		case ring.OpFlush:
			f.log = append(f.log, "flush")
		}
	}
	f.cond.Broadcast()
	return nil
}

// loop completes requests when not holding.
func (f *fakeRing) loop() {
	defer close(f.done)
	f.mu.Lock()
	for {
		for !f.closed && (f.hold || len(f.pending) == 0) {
			f.cond.Wait()
		}
		if f.closed && len(f.pending) == 0 {
			f.mu.Unlock()
			return
		}
		if f.hold && !f.closed {
			continue
		}
		n := len(f.pending)
		if f.delay > 0 {
			// A slow device: one write per delay.
			n = 1
			f.mu.Unlock()
			time.Sleep(f.delay)
			f.mu.Lock()
		}
		cs := f.completeLocked(n)
		f.mu.Unlock()
		f.h(cs)
		f.mu.Lock()
		f.free += len(cs)
		f.cond.Broadcast()
		f.mu.Unlock()
		f.cq.Delivered()
		f.mu.Lock()
	}
}

// completeAll delivers every pending completion from the caller's
// goroutine (hold mode).
func (f *fakeRing) completeAll() int {
	f.mu.Lock()
	cs := f.completeLocked(len(f.pending))
	f.mu.Unlock()
	if len(cs) > 0 {
		f.h(cs)
	}
	f.mu.Lock()
	f.free += len(cs)
	f.cond.Broadcast()
	f.mu.Unlock()
	f.cq.Delivered()
	return len(cs)
}

func (f *fakeRing) setHold(h bool) {
	f.mu.Lock()
	f.hold = h
	f.cond.Broadcast()
	f.mu.Unlock()
}

// completeLocked performs the first n pending requests and returns their
// completions.
func (f *fakeRing) completeLocked(n int) []ring.Completion {
	cs := make([]ring.Completion, 0, n)
	for _, r := range f.pending[:n] {
		c := ring.Completion{Tag: r.Tag}
		switch r.Op {
		case ring.OpFlush:
			if f.flushFails != 0 {
				f.flushFails--
				c.Err = f.flushErr
			}
		case ring.OpWrite:
			c.N, c.Err = f.write(r)
		}
		cs = append(cs, c)
	}
	f.pending = append(f.pending[:0], f.pending[n:]...)
	return cs
}

func (f *fakeRing) write(r ring.Request) (int64, syscall.Errno) {
	length := r.Len()
	first, last := uint64(r.Off)/uint64(f.bs), uint64(r.Off+length-1)/uint64(f.bs)
	limit := length
	var errno syscall.Errno
	for b := first; b <= last; b++ {
		if ft, ok := f.failBlocks[b]; ok && ft.count != 0 {
			if ft.count > 0 {
				ft.count--
				f.failBlocks[b] = ft
			}
			// Blocks before the bad one are written: a partial write.
			limit, errno = int64(b-first)*int64(f.bs), ft.errno
			break
		}
	}
	if errno == 0 && f.shortNext > 0 && int64(f.shortNext) < length {
		limit, errno = int64(f.shortNext), syscall.EIO
		f.shortNext = 0
	}
	off := r.Off
	var n int64
	for _, v := range r.Iov {
		if n >= limit {
			break
		}
		l := min(int64(v.Len), limit-n)
		src := unsafe.Slice(v.Base, v.Len)
		copy(f.img[off:off+l], src[:l])
		off += l
		n += l
	}
	return n, errno
}

func (f *fakeRing) Close() error {
	f.mu.Lock()
	f.closed = true
	f.hold = false
	f.cond.Broadcast()
	f.mu.Unlock()
	<-f.done
	return nil
}

func (f *fakeRing) takeLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log
	f.log = nil
	return l
}

// checkFixed verifies that every iovec of a fixed write lies inside its
// registered buffer, as WRITEV_FIXED requires.
func (f *fakeRing) checkFixed(r ring.Request) error {
	if int(r.BufIndex) >= len(f.bufs) {
		return fmt.Errorf("BAD: buffer %d not registered", r.BufIndex)
	}
	b := f.bufs[r.BufIndex]
	lo := uintptr(unsafe.Pointer(&b[0]))
	hi := lo + uintptr(len(b))
	for _, v := range r.Iov {
		p := uintptr(unsafe.Pointer(v.Base))
		if p < lo || p+uintptr(v.Len) > hi {
			return fmt.Errorf("BAD: iovec outside buffer %d", r.BufIndex)
		}
	}
	return nil
}
