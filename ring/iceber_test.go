//go:build iceber

package ring

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// The iceber backend runs the conformance table (conformance_test.go)
// too; these tests cover its own edges. Run them with
//
//	go test -tags iceber -ldflags=-checklinkname=0 ./ring/
//
// (not under -race: the library has known races and hangs).

// icNoLeaks is tkNoLeaks minus the library's process-wide epoll
// goroutine, which starts with the first ring and never exits.
func icNoLeaks(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("github.com/iceber/iouring-go.(*iourPoller).run")}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

func icOpen(t testing.TB, tg *Target, depth int, h Handler) *iceberRing {
	t.Helper()
	r, err := Open(tg, "iceber", Config{Depth: depth, Handler: h})
	if err != nil {
		t.Fatalf("Open iceber: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r.(*iceberRing)
}

func TestIceberCaps(t *testing.T) {
	icNoLeaks(t)
	r := icOpen(t, tkFileTarget(t, 1<<20), 5, newTKSink().handle)
	c := r.Caps()
	t.Logf("caps: %+v", c)
	if c.Backend != "iceber" || c.Depth != 5 || !c.Writev || !c.Readv || !c.Fsync || c.WritevFixed || c.WriteFixed {
		t.Errorf("Caps() = %+v", c)
	}
	if r.iour.Size() < 5 {
		t.Errorf("SQ of %d entries for depth 5: SubmitRequests would refuse a full batch", r.iour.Size())
	}
	if err := r.RegisterBuffers([][]byte{make([]byte, 4096)}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("RegisterBuffers = %v, want ErrNotSupported", err)
	}
	if err := r.Submit(make([]Request, 6)); !errors.Is(err, ErrTooMany) {
		t.Errorf("Submit of 6 at depth 5 = %v, want ErrTooMany", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Submit([]Request{{Op: OpNop}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// Close with writes in flight delivers every completion first.
func TestIceberCloseWithInflight(t *testing.T) {
	icNoLeaks(t)
	const depth, n, size = 8, 64, 64 << 10
	tg := tkFileTarget(t, n*size)
	var delivered, bad atomic.Int64
	r := icOpen(t, tg, depth, func(cs []Completion) {
		for _, c := range cs {
			if c.Err != 0 || c.N != size {
				bad.Add(1)
			}
		}
		delivered.Add(int64(len(cs)))
	})
	mem := tkMmap(t, n*size)
	for i := 0; i < n; i += depth {
		reqs := make([]Request, depth)
		for j := range reqs {
			k := i + j
			reqs[j] = Request{Op: OpWrite, Off: int64(k * size), Iov: []unix.Iovec{tkIov(mem[k*size : (k+1)*size])}}
		}
		if err := r.Submit(reqs); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != n || bad.Load() != 0 {
		t.Errorf("Close returned with %d of %d completions delivered, %d failed", got, n, bad.Load())
	}
}

// A Submit blocked on free slots returns ErrClosed when the ring closes.
func TestIceberCloseReleasesBlockedSubmit(t *testing.T) {
	icNoLeaks(t)
	release := make(chan struct{})
	var delivered atomic.Int64
	r := icOpen(t, tkFileTarget(t, 1<<20), 2, func(cs []Completion) {
		<-release // test-only: hold the reaper so the slots stay taken
		delivered.Add(int64(len(cs)))
	})
	if err := r.Submit([]Request{{Op: OpNop}, {Op: OpNop}}); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- r.Submit([]Request{{Op: OpNop}}) }()
	tkWaitFor(t, "a Submit waiting for slots", func() bool {
		r.pool.mu.Lock()
		defer r.pool.mu.Unlock()
		return r.pool.waiting == 1
	})
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("blocked Submit = %v, want ErrClosed", err)
		}
	case <-time.After(tkTimeout):
		t.Fatal("Close did not release a Submit waiting for slots")
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != 2 {
		t.Errorf("delivered %d completions, want 2", got)
	}
}

// A read running past the end of the target is resumed after its short
// first part, then fails with ENODATA and the bytes it read, as the
// other backends do.
func TestIceberShortRead(t *testing.T) {
	icNoLeaks(t)
	const size = 64 << 10
	sink := newTKSink()
	r := icOpen(t, tkFileTarget(t, size), 4, sink.handle)
	back := tkMmap(t, 16<<10)
	rd := Request{Op: OpRead, Off: size - 8192, Iov: []unix.Iovec{tkIov(back[:4096]), tkIov(back[4096:])}, Tag: 2}
	if err := r.Submit([]Request{rd}); err != nil {
		t.Fatal(err)
	}
	if c := sink.take(t, 1)[0]; c != (Completion{Tag: 2, N: 8192, Err: unix.ENODATA}) {
		t.Errorf("read past the end: %+v, want N=8192 Err=ENODATA", c)
	}
}

// Concurrent submitters: every request completes once and the Handler
// is never entered twice at once.
func TestIceberConcurrentSubmitters(t *testing.T) {
	icNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	checkConcurrentSubmitters(t, 16, func(h Handler) Ring { return icOpen(t, tg, 16, h) })
}

// halfShort is an interposer that cuts every write's first attempt to
// half (the ring resumes the rest) and fails every flush with EIO.
type halfShort struct{ cut, resumed, flushes atomic.Int64 }

func (h *halfShort) Attach(int) {}
func (h *halfShort) Issue(a *Attempt) {
	switch {
	case a.Req.Op == OpFlush:
		h.flushes.Add(1)
		a.Complete, a.Result = true, -int32(unix.EIO)
	case a.Req.Op == OpWrite && a.Done == 0 && a.Len >= 8192:
		h.cut.Add(1)
		a.Limit = a.Len / 2 / 4096 * 4096
	case a.Req.Op == OpWrite && a.Done > 0:
		h.resumed.Add(1)
	}
}
func (h *halfShort) Done(*Attempt) {}

// Interposers work over iceber too: every write is cut short and
// resumed, every flush fails.
func TestIceberInterposers(t *testing.T) {
	icNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	h := &halfShort{}
	sink := newTKSink()
	r, err := Open(tg, "iceber", Config{Depth: 8, Handler: sink.handle, Interposers: []Interposer{h}})
	if err != nil {
		t.Fatal(err)
	}
	mem := tkMmap(t, 8*4096)
	for i := range 40 {
		reqs := []Request{
			{Op: OpWrite, Tag: uint64(2 * i), Off: int64(i%16) * 8 * 4096, Iov: []unix.Iovec{tkIov(mem[:4096]), tkIov(mem[4096:])}},
			{Op: OpFlush, Tag: uint64(2*i + 1)},
		}
		if err := r.Submit(reqs); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range sink.take(t, 80) {
		if c.Tag%2 == 0 && (c.Err != 0 || c.N != 8*4096) {
			t.Errorf("write %d: %+v", c.Tag, c)
		}
		if c.Tag%2 == 1 && c.Err != unix.EIO {
			t.Errorf("flush %d: %+v, want EIO", c.Tag, c)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if h.cut.Load() != 40 || h.resumed.Load() != 40 || h.flushes.Load() != 40 {
		t.Errorf("cut %d, resumed %d, flushes %d; want 40 each", h.cut.Load(), h.resumed.Load(), h.flushes.Load())
	}
}
