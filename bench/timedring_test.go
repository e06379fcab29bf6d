package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/ring"
)

// fakeRing completes every request when complete is called; it issues
// each request to its interposers in a slot of its own, as a ring does.
type fakeRing struct {
	handler ring.Handler
	ips     []ring.Interposer
	mu      sync.Mutex
	free    []int // free slots, a stack
	pending []ring.Completion
	out     []ring.Completion
	a       ring.Attempt
	cq      *ring.CallerQueue
}

func (f *fakeRing) Submit(reqs []ring.Request) error {
	f.mu.Lock()
	for i := range reqs {
		slot := f.free[len(f.free)-1]
		f.free = f.free[:len(f.free)-1]
		f.a = ring.Attempt{Slot: slot, Req: &reqs[i]}
		for _, ip := range f.ips {
			ip.Issue(&f.a)
		}
		f.a.Req = nil
		f.pending = append(f.pending, ring.Completion{Tag: reqs[i].Tag, N: reqs[i].Len(), Slot: slot})
	}
	f.mu.Unlock()
	return nil
}

func (f *fakeRing) Run(ctx context.Context, fn func(ring.Queue)) error { return f.cq.Run(ctx, fn) }

// complete delivers every pending completion, the way a ring's reaper
// would (never from inside Submit).
func (f *fakeRing) complete() {
	f.mu.Lock()
	n := len(f.pending)
	f.mu.Unlock()
	f.completeN(n)
}

// completeN delivers the first n pending completions in one call, and
// frees their slots after it.
func (f *fakeRing) completeN(n int) {
	f.mu.Lock()
	f.out = append(f.out[:0], f.pending[:n]...)
	f.pending = append(f.pending[:0], f.pending[n:]...)
	f.mu.Unlock()
	f.handler(f.out)
	f.mu.Lock()
	for _, c := range f.out {
		f.free = append(f.free, c.Slot)
	}
	f.mu.Unlock()
	f.cq.Delivered()
}

func (f *fakeRing) RegisterBuffers([][]byte) error { return ring.ErrNotSupported }
func (f *fakeRing) Caps() ring.Caps                { return ring.Caps{Backend: "fake"} }
func (f *fakeRing) Close() error                   { return nil }

func openFakeTimed(t *testing.T, depth int, seen *int) (*TimedRing, *fakeRing) {
	t.Helper()
	var fr *fakeRing
	tr, err := OpenTimed(func(_ *ring.Target, c ring.Config) (ring.Ring, error) {
		fr = &fakeRing{handler: c.Handler, ips: c.Interposers, pending: make([]ring.Completion, 0, 64), out: make([]ring.Completion, 0, 64)}
		for s := range c.Depth {
			fr.free = append(fr.free, c.Depth-1-s)
		}
		for _, ip := range c.Interposers {
			ip.Attach(c.Depth)
		}
		fr.cq = ring.NewCallerQueue(fr.Submit, func() int { fr.mu.Lock(); defer fr.mu.Unlock(); return len(fr.pending) }, 64)
		return fr, nil
	}, nil, ring.Config{Depth: depth, Handler: func(cs []ring.Completion) { *seen += len(cs) }})
	if err != nil {
		t.Fatal(err)
	}
	return tr, fr
}

// TestTimedRingRecords: writes and flushes are timed, reads and NOPs
// not, whatever their tags (the caller's: the timing goes by Op and by
// the ring's slot).
func TestTimedRingRecords(t *testing.T) {
	seen := 0
	tr, fr := openFakeTimed(t, 8, &seen)
	buf := make([]byte, 4096)
	reqs := []ring.Request{
		{Op: ring.OpWrite, Tag: 0, Iov: iov(buf)},
		{Op: ring.OpWrite, Tag: 1 << 63, Iov: iov(buf)}, // a tag like the engine's flush's: a write all the same
		{Op: ring.OpFlush, Tag: 5},
		{Op: ring.OpRead, Tag: 3, Iov: iov(buf)}, // a read: not timed
		{Op: ring.OpNop, Tag: 1 << 62},           // a NOP: not timed
		{Op: ring.OpWrite, Tag: 99, Iov: iov(buf)},
	}
	if err := tr.Submit(reqs); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	fr.complete()
	if seen != len(reqs) {
		t.Fatalf("handler saw %d completions, want %d", seen, len(reqs))
	}
	// A second, smaller batch in slots the first one used, completed in
	// two reaps: its read is not timed although its slot last held a
	// timed request.
	second := []ring.Request{reqs[3], reqs[0], reqs[1]}
	if err := tr.Submit(second); err != nil {
		t.Fatal(err)
	}
	fr.completeN(1)
	fr.completeN(2)
	tm := tr.Take()
	w, f := tm.Writes, tm.Flushes
	if w.TotalCount() != 5 || f.TotalCount() != 1 {
		t.Fatalf("recorded %d writes and %d flushes, want 5 and 1", w.TotalCount(), f.TotalCount())
	}
	if l := latencyOf(w); l == nil || l.Max < 1000 || l.Max > 1e6 {
		t.Fatalf("write latency %+v: want a max of about 2 ms (in µs)", l)
	}
	if l := latencyOf(f); l == nil || l.Max < 1000 || l.Max > 1e6 {
		t.Fatalf("flush latency %+v: want about 2 ms (in µs)", l)
	}
	// Batches: submits of 6 and 3 requests; reaps of 6, 1 and 2.
	if b := batchOf(tm.Submits); b == nil || b.N != 2 || b.Min != 3 || b.Max != 6 || b.Mean != 4.5 {
		t.Fatalf("submit batches %+v, want 2 of them, sizes 6 and 3", b)
	}
	if b := batchOf(tm.Completions); b == nil || b.N != 3 || b.Min != 1 || b.Max != 6 {
		t.Fatalf("completion batches %+v, want 3 of them, sizes 6, 1, 2", b)
	}
	if tm2 := tr.Take(); tm2.Writes.TotalCount() != 0 || tm2.Submits.TotalCount() != 0 {
		t.Fatalf("Take did not start over: %d writes, %d submits", tm2.Writes.TotalCount(), tm2.Submits.TotalCount())
	}
	if latencyOf(newHist()) != nil {
		t.Fatal("latency of an empty histogram is not nil")
	}
}

// TestTimedRingRun: requests a Run function adds are timed too (the
// engine's path), and what it adds between two Flush calls is one batch.
func TestTimedRingRun(t *testing.T) {
	seen := 0
	tr, fr := openFakeTimed(t, 4, &seen)
	buf := make([]byte, 4096)
	err := tr.Run(context.Background(), func(q ring.Queue) {
		for tag := range uint64(3) {
			q.Add(&ring.Request{Op: ring.OpWrite, Tag: tag, Iov: iov(buf)})
		}
		q.Flush()
		q.Add(&ring.Request{Op: ring.OpWrite, Tag: 3, Iov: iov(buf)})
	})
	if err != nil {
		t.Fatal(err)
	}
	fr.complete()
	tm := tr.Take()
	if tm.Writes.TotalCount() != 4 {
		t.Fatalf("recorded %d writes through Run, want 4", tm.Writes.TotalCount())
	}
	if b := batchOf(tm.Submits); b == nil || b.N != 2 || b.Min != 1 || b.Max != 3 {
		t.Fatalf("submit batches %+v, want 2: 3 then 1", b)
	}
}

// TestTimedRingNoAllocs: timing a request allocates nothing.
func TestTimedRingNoAllocs(t *testing.T) {
	seen := 0
	tr, fr := openFakeTimed(t, 32, &seen)
	buf := make([]byte, 4096)
	reqs := make([]ring.Request, 8)
	for i := range reqs {
		reqs[i] = ring.Request{Op: ring.OpWrite, Tag: uint64(i), Iov: iov(buf)}
	}
	reqs[7] = ring.Request{Op: ring.OpFlush, Tag: 7}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := tr.Submit(reqs); err != nil {
			t.Fatal(err)
		}
		fr.complete()
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch, want 0", allocs)
	}
}

func iov(b []byte) []unix.Iovec {
	return []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
}
