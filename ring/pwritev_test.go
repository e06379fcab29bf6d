package ring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The pwritev backend also runs the conformance table (conformance_test.go)
// once it is registered; these tests cover what that table does not.

// pwOpen opens a pwritev ring over tg; it is closed at cleanup (a test
// may close it earlier).
func pwOpen(t testing.TB, tg *Target, depth int, h Handler) *pwritevRing {
	t.Helper()
	r, err := Open(tg, "pwritev", Config{Depth: depth, Handler: h})
	if err != nil {
		t.Fatalf("Open pwritev: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r.(*pwritevRing)
}

func TestPwritevCaps(t *testing.T) {
	tkNoLeaks(t)
	r := pwOpen(t, tkFileTarget(t, 1<<20), 5, newTKSink().handle)
	c := r.Caps()
	if c.Backend != "pwritev" || c.Depth != 5 || !c.Writev || !c.Readv || !c.Fsync {
		t.Errorf("Caps() = %+v, want pwritev, depth 5, writev, readv, fsync", c)
	}
	if c.WritevFixed || c.WriteFixed || c.ReadvFixed || c.ReadFixed || c.RegisteredBuffers {
		t.Errorf("Caps() = %+v: the pool has no fixed ops", c)
	}
	if err := r.RegisterBuffers([][]byte{make([]byte, 4096)}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("RegisterBuffers = %v, want ErrNotSupported", err)
	}
}

func TestPwritevSubmitErrors(t *testing.T) {
	tkNoLeaks(t)
	sink := newTKSink()
	r := pwOpen(t, tkFileTarget(t, 1<<20), 4, sink.handle)
	if err := r.Submit(make([]Request, 5)); !errors.Is(err, ErrTooMany) {
		t.Errorf("Submit of 5 at depth 4 = %v, want ErrTooMany", err)
	}
	if err := r.Submit([]Request{{Op: OpNop}, {Op: 99}}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("Submit with an unknown op = %v, want ErrBadConfig", err)
	}
	if err := r.Submit(nil); err != nil {
		t.Errorf("Submit(nil) = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sink.count(); n != 0 {
		t.Errorf("%d completions from refused batches", n)
	}
	if err := r.Submit([]Request{{Op: OpNop}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := r.Submit(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit(nil) after Close = %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// Close with writes in flight delivers every completion before it
// returns, and stops every worker.
func TestPwritevCloseWithInflight(t *testing.T) {
	tkNoLeaks(t)
	const depth, n, size = 8, 64, 64 << 10
	tg := tkFileTarget(t, n*size)
	var delivered, bad atomic.Int64
	r := pwOpen(t, tg, depth, func(cs []Completion) {
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
	if got := delivered.Load(); got != n {
		t.Errorf("Close returned with %d of %d completions delivered", got, n)
	}
	if bad.Load() != 0 {
		t.Errorf("%d writes failed", bad.Load())
	}
}

// A Submit blocked on free slots returns ErrClosed when the ring closes;
// Close still waits for what was accepted.
func TestPwritevCloseReleasesBlockedSubmit(t *testing.T) {
	tkNoLeaks(t)
	release := make(chan struct{})
	var delivered atomic.Int64
	// The Handler holds the deliverer so the accepted NOPs keep their
	// slots: a test-only breach of "must not block".
	r := pwOpen(t, tkFileTarget(t, 1<<20), 2, func(cs []Completion) {
		<-release
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
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the accepted requests were delivered", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != 2 {
		t.Errorf("delivered %d completions, want 2", got)
	}
}

// Many submitters with batches of every size up to Depth: every request
// completes exactly once, the Handler is never entered twice at once,
// and no batch waits forever (FIFO slot hand-out).
func TestPwritevConcurrentSubmitters(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	checkConcurrentSubmitters(t, 8, func(h Handler) Ring { return pwOpen(t, tg, 8, h) })
}

// A read that runs past the end of the target is resumed after its
// short first part and then fails for lack of progress with ENODATA and
// the bytes it did read; a write past the end of a regular file extends
// it.
func TestPwritevShortRead(t *testing.T) {
	tkNoLeaks(t)
	const size = 64 << 10
	tg := tkFileTarget(t, size)
	sink := newTKSink()
	r := pwOpen(t, tg, 4, sink.handle)
	mem := tkMmap(t, 16<<10)
	for i := range mem {
		mem[i] = byte(i/4096 + 1)
	}
	w := Request{Op: OpWrite, Off: size - 8192, Iov: []unix.Iovec{tkIov(mem[:4096]), tkIov(mem[4096:8192])}, Tag: 1}
	if err := r.Submit([]Request{w}); err != nil {
		t.Fatal(err)
	}
	if c := sink.take(t, 1)[0]; c != (Completion{Tag: 1, N: 8192}) {
		t.Fatalf("write: %+v", c)
	}
	back := tkMmap(t, 16<<10)
	rd := Request{Op: OpRead, Off: size - 8192, Iov: []unix.Iovec{tkIov(back[:4096]), tkIov(back[4096:16384])}, Tag: 2}
	if err := r.Submit([]Request{rd}); err != nil {
		t.Fatal(err)
	}
	if c := sink.take(t, 1)[0]; c != (Completion{Tag: 2, N: 8192, Err: unix.ENODATA}) {
		t.Errorf("read past the end: %+v, want N=8192 Err=ENODATA", c)
	}
	if !bytes.Equal(back[:8192], mem[:8192]) {
		t.Error("read back different data")
	}
}

// The pool resumes short transfers where they stopped, retries EAGAIN
// and EINTR up to MaxRetries, and fails a transfer that stops making
// progress. The syscalls are played by a hook around the real ones.
func TestPwritevResumeAndRetry(t *testing.T) {
	type call struct {
		iovs int
		off  int64
	}
	// Results the hook plays, in order; a zero step does the real call
	// on the first iovec only (a short transfer), real: the whole call.
	type step struct {
		real, firstOnly bool
		n               int64
		e               unix.Errno
	}
	real := step{real: true}
	first := step{firstOnly: true}
	for _, tc := range []struct {
		name       string
		op         Op
		maxRetries int
		steps      []step
		want       Completion // Tag 1
		wantCalls  []call
	}{
		{
			name: "short write resumed", op: OpWrite,
			steps:     []step{first, first, real},
			want:      Completion{Tag: 1, N: 6 * 4096},
			wantCalls: []call{{3, 0}, {2, 4096}, {1, 3 * 4096}},
		},
		{
			name: "short read resumed", op: OpRead,
			steps:     []step{first, real},
			want:      Completion{Tag: 1, N: 6 * 4096},
			wantCalls: []call{{3, 0}, {2, 4096}},
		},
		{
			name: "eintr and eagain retried", op: OpWrite,
			steps:     []step{{e: unix.EINTR}, {e: unix.EAGAIN}, first, {e: unix.EAGAIN}, real},
			want:      Completion{Tag: 1, N: 6 * 4096},
			wantCalls: []call{{3, 0}, {3, 0}, {3, 0}, {2, 4096}, {2, 4096}},
		},
		{
			name: "eagain past the cap", op: OpWrite, maxRetries: 2,
			steps:     []step{{e: unix.EAGAIN}, {e: unix.EAGAIN}, {e: unix.EAGAIN}},
			want:      Completion{Tag: 1, Err: unix.EAGAIN},
			wantCalls: []call{{3, 0}, {3, 0}, {3, 0}},
		},
		{
			name: "eio after a partial write", op: OpWrite,
			steps:     []step{first, {e: unix.EIO}},
			want:      Completion{Tag: 1, N: 4096, Err: unix.EIO},
			wantCalls: []call{{3, 0}, {2, 4096}},
		},
		{
			name: "write without progress", op: OpWrite,
			steps:     []step{first, {n: 0}},
			want:      Completion{Tag: 1, N: 4096, Err: unix.EIO},
			wantCalls: []call{{3, 0}, {2, 4096}},
		},
		{
			name: "flush retried", op: OpFlush,
			steps:     []step{{e: unix.EINTR}, {e: unix.EAGAIN}, real},
			want:      Completion{Tag: 1},
			wantCalls: []call{{0, 0}, {0, 0}, {0, 0}},
		},
		{
			name: "flush error", op: OpFlush,
			steps:     []step{{e: unix.EIO}},
			want:      Completion{Tag: 1, Err: unix.EIO},
			wantCalls: []call{{0, 0}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tkNoLeaks(t)
			tg := tkFileTarget(t, 1<<20)
			sink := newTKSink()
			r, err := Open(tg, "pwritev", Config{Depth: 2, MaxRetries: tc.maxRetries, Handler: sink.handle})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			p := r.(*pwritevRing)
			var calls []call
			next := func() step {
				if len(calls) > len(tc.steps) {
					t.Errorf("call %d: only %d steps", len(calls), len(tc.steps))
					return real
				}
				return tc.steps[len(calls)-1]
			}
			p.rw = func(write bool, fd int, iov *unix.Iovec, n int, off int64, flags uint32) (int64, unix.Errno) {
				calls = append(calls, call{n, off})
				switch s := next(); {
				case s.real:
					return sysRW(write, fd, iov, n, off, flags)
				case s.firstOnly:
					return sysRW(write, fd, iov, 1, off, flags)
				default:
					return s.n, s.e
				}
			}
			p.fsync = func(fd int) unix.Errno {
				calls = append(calls, call{})
				if s := next(); !s.real {
					return s.e
				}
				return fdatasync(fd)
			}
			// Three iovecs of 1, 2 and 3 blocks, far apart in memory.
			mem := tkMmap(t, 16*4096)
			for i := range mem {
				mem[i] = byte(i / 4096)
			}
			pieces := [][]byte{mem[4096 : 2*4096], mem[6*4096 : 8*4096], mem[11*4096 : 14*4096]}
			if tc.op == OpRead {
				// Write the data first (through the real calls), then
				// read it into zeroed memory.
				v := tkIov(mem[4096 : 7*4096])
				if n, e := sysRW(true, tg.Fd(), &v, 1, 0, 0); n != 6*4096 || e != 0 {
					t.Fatalf("writing the data to read: %d, %v", n, e)
				}
				clear(mem)
				pieces = [][]byte{mem[4096 : 2*4096], mem[6*4096 : 8*4096], mem[11*4096 : 14*4096]}
			}
			req := Request{Op: tc.op, Tag: 1}
			if tc.op != OpFlush {
				for _, b := range pieces {
					req.Iov = append(req.Iov, tkIov(b))
				}
			}
			if err := r.Submit([]Request{req}); err != nil {
				t.Fatal(err)
			}
			if c := sink.take(t, 1)[0]; c != tc.want {
				t.Errorf("completion %+v, want %+v", c, tc.want)
			}
			if fmt.Sprint(calls) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("calls (iovecs, offset) %v, want %v", calls, tc.wantCalls)
			}
			if tc.want.Err == 0 && tc.op != OpFlush {
				var want []byte
				for i := range 6 {
					want = append(want, bytes.Repeat([]byte{byte([]int{1, 6, 7, 11, 12, 13}[i])}, 4096)...)
				}
				got := bytes.Join(pieces, nil)
				if tc.op == OpWrite {
					got = pwReadFile(t, tg.Path, 0, 6*4096)
				} else {
					want = nil
					for i := 1; i < 7; i++ {
						want = append(want, bytes.Repeat([]byte{byte(i)}, 4096)...)
					}
				}
				if !bytes.Equal(got, want) {
					t.Error("data differs after the resumed transfer")
				}
			}
		})
	}
}

// Steady-state Submit and completion allocate nothing.
func TestPwritevZeroAllocs(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	var done atomic.Int64
	kick := make(chan struct{}, 1)
	r := pwOpen(t, tg, 32, func(cs []Completion) {
		done.Add(int64(len(cs)))
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	nops := make([]Request, 32)
	for i := range nops {
		nops[i] = Request{Op: OpNop, Tag: uint64(i)}
	}
	buf := tkMmap(t, 8192)
	iov := []unix.Iovec{tkIov(buf[:4096]), tkIov(buf[4096:])}
	write := []Request{{Op: OpWrite, Off: 8192, Iov: iov}}
	flush := []Request{{Op: OpFlush}}
	var want int64
	run := func(reqs []Request) {
		want += int64(len(reqs))
		if err := r.Submit(reqs); err != nil {
			t.Fatal(err)
		}
		for done.Load() < want {
			<-kick
		}
	}
	for range 10 { // warm up: goroutines parked, buffers sized
		run(nops)
		run(write)
	}
	for _, tc := range []struct {
		name string
		reqs []Request
	}{{"nop batch", nops}, {"write", write}, {"flush", flush}} {
		if a := testing.AllocsPerRun(200, func() { run(tc.reqs) }); a != 0 {
			t.Errorf("%s: %v allocations per Submit and completion, want 0", tc.name, a)
		}
	}
}

func TestIovAdvanceAndRange(t *testing.T) {
	// mem[i] = i, so an iovec's first byte says where it starts.
	mem := make([]byte, 100)
	for i := range mem {
		mem[i] = byte(i)
	}
	mk := func(lens ...int) []unix.Iovec {
		var iov []unix.Iovec
		off := 0
		for _, l := range lens {
			iov = append(iov, unix.Iovec{Base: &mem[off], Len: uint64(l)})
			off += l
		}
		return iov
	}
	// describe renders iovecs as (offset in mem, length) pairs.
	describe := func(iov []unix.Iovec) [][2]int {
		var d [][2]int
		for _, v := range iov {
			d = append(d, [2]int{int(*v.Base), int(v.Len)})
		}
		return d
	}
	for _, tc := range []struct {
		name string
		lens []int
		n    int64
		want [][2]int
	}{
		{"nothing", []int{10, 20}, 0, [][2]int{{0, 10}, {10, 20}}},
		{"inside first", []int{10, 20}, 4, [][2]int{{4, 6}, {10, 20}}},
		{"whole first", []int{10, 20}, 10, [][2]int{{10, 20}}},
		{"into second", []int{10, 20}, 15, [][2]int{{15, 15}}},
		{"all", []int{10, 20}, 30, nil},
		{"skips empties", []int{10, 0, 0, 5}, 10, [][2]int{{10, 5}}},
	} {
		t.Run("advance/"+tc.name, func(t *testing.T) {
			iov := mk(tc.lens...)
			got := describe(iov[advanceIov(iov, 0, tc.n):])
			if !equalPairs(got, tc.want) {
				t.Errorf("advanceIov(%v, %d) = %v, want %v", tc.lens, tc.n, got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		lens []int
		n    int64
		want [][2]int
	}{
		{"whole", []int{10, 20}, 30, [][2]int{{0, 10}, {10, 20}}},
		{"inside first", []int{10, 20}, 4, [][2]int{{0, 4}}},
		{"across", []int{10, 20}, 14, [][2]int{{0, 10}, {10, 4}}},
		{"empty", []int{10}, 0, nil},
	} {
		t.Run("prefix/"+tc.name, func(t *testing.T) {
			src := mk(tc.lens...)
			orig := describe(src)
			got := describe(iovPrefix(nil, src, tc.n))
			if !equalPairs(got, tc.want) {
				t.Errorf("iovPrefix(%v, %d) = %v, want %v", tc.lens, tc.n, got, tc.want)
			}
			if !equalPairs(describe(src), orig) {
				t.Errorf("iovPrefix changed its source: %v, was %v", describe(src), orig)
			}
		})
	}
}

func equalPairs(a, b [][2]int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pwReadFile reads n bytes at off of the target through the kernel's own
// path (no O_DIRECT), for tests that check what reached the device.
func pwReadFile(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("pread %s at %d: %v", path, off, err)
	}
	return b
}
