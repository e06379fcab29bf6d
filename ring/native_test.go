package ring

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// tkFileTarget is an O_DIRECT regular file of size bytes (no root
// needed), closed at cleanup.
func tkFileTarget(t testing.TB, size int64) *Target {
	t.Helper()
	return tkTarget{name: "file"}.open(t, size)
}

// tkNative opens a native ring with a tkSink; it is closed at cleanup
// (a test may close it earlier).
func tkNative(t testing.TB, tg *Target, depth int) (Ring, *tkSink) {
	t.Helper()
	sink := newTKSink()
	r, err := Open(tg, "native", Config{Depth: depth, Handler: sink.handle})
	if err != nil {
		t.Fatalf("Open native: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, sink
}

func TestNativeCaps(t *testing.T) {
	tkNoLeaks(t)
	r, _ := tkNative(t, tkFileTarget(t, 1<<20), 5)
	c := r.Caps()
	t.Logf("caps: %+v", c)
	if c.Backend != "native" || c.Depth != 5 {
		t.Errorf("Backend, Depth = %q, %d; want native, 5", c.Backend, c.Depth)
	}
	if !c.Writev || !c.Readv || !c.Fsync || !c.WriteFixed || !c.ReadFixed {
		t.Errorf("probe missed an opcode every io_uring kernel has: %+v", c)
	}
	if c.RegisteredBuffers {
		t.Error("RegisteredBuffers before RegisterBuffers")
	}
	if !c.RegisteredFile || !strings.Contains(c.Setup, "registered file") {
		t.Errorf("RegisteredFile %v, Setup %q: want the target registered (IORING_REGISTER_FILES) and Setup saying so", c.RegisteredFile, c.Setup)
	}
	if !strings.Contains(c.Setup, "sq=8 cq=16") {
		t.Errorf("Setup = %q: want sq=8 (Depth 5 + the eventfd read, rounded up) and cq=16", c.Setup)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// An idle owner sleeps in io_uring_enter; a Submit must wake it. If the
// wake-up were lost the completion would never come and take fails.
func TestNativeIdleWakeup(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	r, sink := tkNative(t, tg, 4)
	buf := tkMmap(t, 4096)
	var worst time.Duration
	for i := 0; i < 20; i++ {
		// Let the owner go to sleep; vary the pause to hit both the
		// "already asleep" and the "about to sleep" windows.
		time.Sleep(time.Duration(i%4) * 5 * time.Millisecond)
		req := Request{Op: OpNop, Tag: uint64(i)}
		if i%2 == 1 {
			buf[0] = byte(i)
			req = Request{Op: OpWrite, Off: 4096, Iov: []unix.Iovec{tkIov(buf)}, Tag: uint64(i)}
		}
		start := time.Now()
		if err := r.Submit([]Request{req}); err != nil {
			t.Fatal(err)
		}
		c := sink.take(t, 1)[0]
		if c.Tag != uint64(i) || c.Err != 0 {
			t.Fatalf("completion %+v for request %d", c, i)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("slowest round trip on an idle ring: %v", worst)
}

// Signals interrupt the owner's io_uring_enter (EINTR), which it
// retries without limit; the ring keeps working.
func TestNativeEnterEINTR(t *testing.T) {
	tkNoLeaks(t)
	rr, sink := tkNative(t, tkFileTarget(t, 1<<20), 4)
	r := rr.(*nativeRing)
	for i := 0; i < 50; i++ {
		// SIGURG: the Go runtime's preemption signal, harmless to send.
		if err := unix.Tgkill(unix.Getpid(), r.tid, unix.SIGURG); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			time.Sleep(time.Millisecond)
			if err := r.Submit([]Request{{Op: OpNop, Tag: uint64(i)}}); err != nil {
				t.Fatal(err)
			}
			if c := sink.take(t, 1)[0]; c.Tag != uint64(i) {
				t.Fatalf("completion %+v", c)
			}
		}
	}
}

// TestNativeEnterRefused: io_uring_enter failing with EAGAIN or EBUSY
// without consuming an SQE — fault-injected at each of the first calls in
// turn, several times in a row — must neither lose the request nor hang
// the ring: the owner waits only for what the kernel holds and submits
// the rest again.
func TestNativeEnterRefused(t *testing.T) {
	tkNoLeaks(t)
	for _, errno := range []syscall.Errno{syscall.EAGAIN, syscall.EBUSY} {
		for nth := int32(1); nth <= 6; nth++ {
			var calls atomic.Int32
			sink := newTKSink()
			r, err := Open(tkFileTarget(t, 1<<20), "native", Config{Depth: 4, Handler: sink.handle,
				EnterFault: func(uint32) syscall.Errno {
					if n := calls.Add(1); n >= nth && n < nth+3 {
						return errno
					}
					return 0
				}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := r.Submit([]Request{{Op: OpNop, Tag: uint64(i)}, {Op: OpNop, Tag: uint64(10 + i)}}); err != nil {
					t.Fatal(err)
				}
				sink.take(t, 2)
			}
			done := make(chan error, 1)
			go func() { done <- r.Close() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(tkTimeout):
				t.Fatalf("%v at enter calls %d..%d: Close hangs", errno, nth, nth+2)
			}
		}
	}
}

// TestNativeRun: a Run function runs on the owner thread; what it adds
// goes to the kernel without a hand-off, completions are delivered
// inline (on the owner thread, inside the Queue's calls), Add past the
// depth reaps until a slot frees, Wait returns at once with nothing in
// flight, and a Submit from another goroutine during the Run is taken in.
func TestNativeRun(t *testing.T) {
	tkNoLeaks(t)
	var onOwner, inHandler atomic.Int32
	var owner int
	sink := newTKSink()
	r, err := Open(tkFileTarget(t, 1<<20), "native", Config{Depth: 4, Handler: func(cs []Completion) {
		if unix.Gettid() == owner {
			onOwner.Add(int32(len(cs)))
		}
		inHandler.Add(int32(len(cs)))
		sink.handle(cs)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	owner = r.(*nativeRing).tid
	other := make(chan error, 1)
	err = r.Run(context.Background(), func(q Queue) {
		if tid := unix.Gettid(); tid != owner {
			t.Errorf("Run function on thread %d, owner %d", tid, owner)
		}
		q.Wait() // nothing in flight: returns at once
		for i := range 10 {
			q.Add(&Request{Op: OpNop, Tag: uint64(i)}) // past the depth of 4
		}
		go func() { other <- r.Submit([]Request{{Op: OpNop, Tag: 100}}) }()
		for inHandler.Load() < 11 {
			q.Wait()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	if got := sink.take(t, 11); len(got) != 11 {
		t.Fatalf("%d completions", len(got))
	}
	if n := onOwner.Load(); n != 11 {
		t.Errorf("%d of 11 completions delivered on the owner thread", n)
	}
}

// TestNativeSubmitPassesRun: a request handed over by Submit while a
// Run function holds queued requests behind the InFlight cap goes to the
// kernel before them (the engine's reads pass its pass's writes). With
// InFlight 1 the kernel completes them one at a time in submission
// order, so the Submit's request must complete first of those queued.
func TestNativeSubmitPassesRun(t *testing.T) {
	tkNoLeaks(t)
	var order []uint64 // appended on the owner thread only
	r, err := Open(tkFileTarget(t, 1<<20), "native", Config{Depth: 64, InFlight: 1, Handler: func(cs []Completion) {
		for _, c := range cs {
			order = append(order, c.Tag)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Run(context.Background(), func(q Queue) {
		for i := range 32 {
			q.Add(&Request{Op: OpNop, Tag: uint64(i)})
		}
		// Free slots are plenty: Submit needs nothing from the owner.
		if err := r.Submit([]Request{{Op: OpNop, Tag: 100}}); err != nil {
			t.Error(err)
			return
		}
		for len(order) < 33 {
			q.Wait()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != 33 {
		t.Fatalf("%d completions, want 33", len(order))
	}
	// Nothing was submitted before the Submit's request was collected
	// (Add only queues), so it must be first.
	if order[0] != 100 {
		t.Fatalf("completion order %v: the submitted request (tag 100) waited behind the Run function's queued ones", order)
	}
}

// TestNativeCollectKeepsSubmitOrder: Submits go ahead of a Run
// function's queued requests but stay in the order they came among
// themselves, also when an earlier one is still queued (behind the
// InFlight cap) as a later one is collected; putting each new one first
// would let a stream of Submits starve an old one.
func TestNativeCollectKeepsSubmitOrder(t *testing.T) {
	r := &nativeRing{queue: make([]uint32, 0, 16), pending: make([]uint32, 0, 16)}
	r.queue = append(r.queue, 1, 2, 3) // queued by a Run function
	for _, tag := range []uint32{100, 101, 102} {
		r.pending = append(r.pending, tag)
		r.news.Store(1)
		r.collect()
	}
	want := []uint32{100, 101, 102, 1, 2, 3}
	if !slices.Equal(r.queue, want) || r.handed != 3 {
		t.Fatalf("queue %v (handed %d), want %v (handed 3)", r.queue, r.handed, want)
	}
}

// A batch larger than one io_uring_enter carries (maxSQEsPerEnter) is
// queued and submitted in rounds.
func TestNativeDeepBatch(t *testing.T) {
	tkNoLeaks(t)
	const depth = 3*maxSQEsPerEnter + 5
	r, sink := tkNative(t, tkFileTarget(t, 1<<20), depth)
	reqs := make([]Request, depth)
	for round := 0; round < 3; round++ {
		for i := range reqs {
			reqs[i] = Request{Op: OpNop, Tag: uint64(i)}
		}
		if err := r.Submit(reqs); err != nil {
			t.Fatal(err)
		}
		seen := make([]bool, depth)
		for _, c := range sink.take(t, depth) {
			if seen[c.Tag] {
				t.Fatalf("tag %d twice", c.Tag)
			}
			seen[c.Tag] = true
		}
	}
}

// Many submitters at once, with a depth that makes them wait for slots:
// every request completes exactly once.
func TestNativeConcurrentSubmitters(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	checkConcurrentSubmitters(t, 8, func(h Handler) Ring {
		r, err := Open(tg, "native", Config{Depth: 8, Handler: h})
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

func TestNativeRefused(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	testSetupHook = func() error { return unix.EPERM }
	defer func() { testSetupHook = nil }()
	sink := newTKSink()

	_, err := Open(tg, "native", Config{Handler: sink.handle})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, unix.EPERM) {
		t.Fatalf("Open native with EPERM at setup: %v, want ErrRefused and EPERM", err)
	}
	t.Logf("native: %v", err)

	if _, ok := backends["pwritev"]; !ok {
		_, err := Open(tg, "auto", Config{Handler: sink.handle})
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Open auto without pwritev: %v, want ErrRefused", err)
		}
		t.Skip("skipping the fallback half: no pwritev backend compiled in")
	}
	var logs []string
	r, err := Open(tg, "auto", Config{Handler: sink.handle, Logf: func(f string, a ...any) {
		logs = append(logs, fmt.Sprintf(f, a...))
	}})
	if err != nil {
		t.Fatalf("Open auto with io_uring refused: %v", err)
	}
	defer r.Close()
	c := r.Caps()
	if c.Backend != "pwritev" || !strings.Contains(c.Setup, "io_uring refused") {
		t.Errorf("auto fell back to Caps %+v, want Backend pwritev and the reason in Setup", c)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "operation not permitted") {
		t.Errorf("Logf lines %q, want one giving the reason", logs)
	}
	if err := r.Submit([]Request{{Op: OpNop, Tag: 1}}); err != nil {
		t.Fatal(err)
	}
	sink.take(t, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// EINVAL at setup drops flags one by one; the ring still works.
func TestNativeSetupFlagFallback(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	calls := 0
	testSetupHook = func() error {
		calls++
		if calls <= 2 {
			return unix.EINVAL // as a kernel without DEFER_TASKRUN, SINGLE_ISSUER
		}
		return nil
	}
	defer func() { testSetupHook = nil }()
	r, sink := tkNative(t, tg, 4)
	setup := r.Caps().Setup
	if !strings.Contains(setup, "refused DEFER_TASKRUN, SINGLE_ISSUER") || strings.Contains(setup, "flags=DEFER_TASKRUN") || !strings.Contains(setup, "COOP_TASKRUN") {
		t.Errorf("Setup = %q", setup)
	}
	if err := r.Submit([]Request{{Op: OpNop, Tag: 3}}); err != nil {
		t.Fatal(err)
	}
	sink.take(t, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// Close with writes in flight waits for them and delivers every
// completion before it returns.
func TestNativeCloseWaitsForInflight(t *testing.T) {
	tkNoLeaks(t)
	const depth, n = 16, 64
	tg := tkFileTarget(t, 4<<20)
	var delivered atomic.Int64
	var bad atomic.Int64
	r, err := Open(tg, "native", Config{Depth: depth, Handler: func(cs []Completion) {
		for _, c := range cs {
			if c.Err != 0 || c.N != 64<<10 {
				bad.Add(1)
			}
		}
		delivered.Add(int64(len(cs)))
	}})
	if err != nil {
		t.Fatal(err)
	}
	mem := tkMmap(t, n*64<<10)
	for i := 0; i < n; i += depth / 2 {
		reqs := make([]Request, depth/2)
		for j := range reqs {
			k := i + j
			reqs[j] = Request{Op: OpWrite, Off: int64(k) * 64 << 10, Iov: []unix.Iovec{tkIov(mem[k*64<<10 : (k+1)*64<<10])}}
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
	if err := r.Submit([]Request{{Op: OpNop}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := r.RegisterBuffers([][]byte{mem}); !errors.Is(err, ErrClosed) {
		t.Errorf("RegisterBuffers after Close = %v, want ErrClosed", err)
	}
}

// Close racing busy submitters: every Submit returns nil or ErrClosed,
// and exactly the requests of the Submits that returned nil are
// delivered, once each, before Close returns.
func TestNativeCloseRace(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	for iter := 0; iter < 20; iter++ {
		var delivered atomic.Int64
		var dup atomic.Int64
		seen := make([]atomic.Bool, 1<<16)
		r, err := Open(tg, "native", Config{Depth: 8, Handler: func(cs []Completion) {
			for _, c := range cs {
				if seen[c.Tag].Swap(true) {
					dup.Add(1)
				}
			}
			delivered.Add(int64(len(cs)))
		}})
		if err != nil {
			t.Fatal(err)
		}
		var accepted atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 3; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reqs := make([]Request, 1+g*3)
				for k := 0; ; k++ {
					for j := range reqs {
						reqs[j] = Request{Op: OpNop, Tag: uint64(g<<14 | (k*len(reqs)+j)&(1<<14-1))}
					}
					err := r.Submit(reqs)
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					accepted.Add(int64(len(reqs)))
					if k*len(reqs) > 1<<13 {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(iter%5) * 100 * time.Microsecond)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		atClose := delivered.Load()
		wg.Wait()
		if got, want := delivered.Load(), accepted.Load(); got != want || atClose != want {
			t.Fatalf("iteration %d: %d accepted, %d delivered by Close, %d in all", iter, want, atClose, got)
		}
		if dup.Load() != 0 {
			t.Fatalf("iteration %d: %d completions delivered twice", iter, dup.Load())
		}
	}
}

// A Submit blocked on free slots returns ErrClosed when the ring
// closes, with none of its requests accepted; Close still waits for and
// delivers what was accepted.
func TestNativeCloseReleasesBlockedSubmit(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	// The Handler holds the owner (as a slow handler would) so the two
	// accepted NOPs keep their slots: a test-only breach of "must not
	// block".
	release := make(chan struct{})
	var delivered atomic.Int64
	rr, err := Open(tg, "native", Config{Depth: 2, Handler: func(cs []Completion) {
		<-release
		delivered.Add(int64(len(cs)))
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := rr.(*nativeRing)
	if err := r.Submit([]Request{{Op: OpNop}, {Op: OpNop}}); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- r.Submit([]Request{{Op: OpNop}}) }()
	tkWaitFor(t, "a Submit waiting for slots", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.waiters == 1
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

// tkNoLeaks checks, after every cleanup of the test (rings close in
// cleanups), that the test left no goroutine behind: in particular that
// every ring's owner exited.
func tkNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// tkWaitFor polls cond until it holds or tkTimeout passes.
func tkWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(tkTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNativeSubmitErrors(t *testing.T) {
	tkNoLeaks(t)
	r, sink := tkNative(t, tkFileTarget(t, 1<<20), 4)
	if err := r.Submit(make([]Request, 5)); !errors.Is(err, ErrTooMany) {
		t.Errorf("5 requests at depth 4: %v, want ErrTooMany", err)
	}
	if err := r.Submit([]Request{{Op: OpNop}, {Op: 0}}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("op 0: %v, want ErrBadConfig", err)
	}
	if err := r.Submit([]Request{{Op: OpWrite, Iov: make([]unix.Iovec, 1025)}}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("1025 iovecs: %v, want ErrBadConfig", err)
	}
	if err := r.Submit(nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	// Nothing of the rejected batches was accepted.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sink.count(); n != 0 {
		t.Errorf("%d completions from rejected batches", n)
	}
}

// A request the kernel rejects completes with its errno; the ring goes
// on.
func TestNativeErrorCompletion(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	r, sink := tkNative(t, tg, 4)
	buf := tkMmap(t, 8192)
	// O_DIRECT at a misaligned offset: EINVAL from the kernel.
	bad := Request{Op: OpWrite, Off: 1, Iov: []unix.Iovec{tkIov(buf[:4096])}, Tag: 1}
	good := Request{Op: OpWrite, Off: 0, Iov: []unix.Iovec{tkIov(buf[4096:])}, Tag: 2}
	if err := r.Submit([]Request{bad, good}); err != nil {
		t.Fatal(err)
	}
	for _, c := range sink.take(t, 2) {
		switch c.Tag {
		case 1:
			if c.Err != syscall.EINVAL || c.N != 0 {
				t.Errorf("misaligned write: %+v, want EINVAL, N 0", c)
			}
		case 2:
			if c.Err != 0 || c.N != 4096 {
				t.Errorf("good write: %+v", c)
			}
		}
	}
}

// A read that runs into the end of a file comes back short; the ring
// resubmits the rest (advancing the iovecs in place), which makes no
// progress, and reports the bytes it did read.
func TestNativeShortRead(t *testing.T) {
	tkNoLeaks(t)
	const size = 8192
	path := loopdevtest.TempFile(t, size)
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	r, sink := tkNative(t, tg, 2)
	mem := tkMmap(t, 16384)
	iov := []unix.Iovec{tkIov(mem[:4096]), tkIov(mem[4096:12288]), tkIov(mem[12288:])}
	if err := r.Submit([]Request{{Op: OpRead, Off: 0, Iov: iov, Tag: 9}}); err != nil {
		t.Fatal(err)
	}
	c := sink.take(t, 1)[0]
	if c.N != size || c.Err != syscall.ENODATA {
		t.Fatalf("read of 16 KiB from an 8 KiB file: N=%d Err=%v, want N=%d, ENODATA", c.N, c.Err, size)
	}
	tkCompare(t, "short read", mem[:size], want)
	// The ring advanced the iovecs in place to the first unread byte.
	if iov[1].Len != 4096 || iov[1].Base != &mem[8192] {
		t.Errorf("iovec 1 after the short read: len %d, want 4096 at byte 8192", iov[1].Len)
	}
}

// A write that runs over the end of a block device is cut short by the
// kernel; the resubmitted rest fails with ENOSPC and the completion
// reports the bytes written.
func TestNativeShortWrite(t *testing.T) {
	tkNoLeaks(t)
	const size = 1 << 20
	tg := tkTarget{name: "loop4096", sector: 4096}.open(t, size)
	r, sink := tkNative(t, tg, 2)
	mem := tkMmap(t, 16384)
	for i := range mem {
		mem[i] = byte(i)
	}
	if err := r.Submit([]Request{{Op: OpWrite, Off: size - 4096, Iov: []unix.Iovec{tkIov(mem[:8192]), tkIov(mem[8192:])}}}); err != nil {
		t.Fatal(err)
	}
	c := sink.take(t, 1)[0]
	if c.N != 4096 || c.Err != syscall.ENOSPC {
		t.Fatalf("16 KiB write at 4 KiB before the end: N=%d Err=%v, want N=4096, ENOSPC", c.N, c.Err)
	}
	got := make([]byte, 4096)
	f, err := os.Open(tg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, size-4096); err != nil {
		t.Fatal(err)
	}
	tkCompare(t, "tail", got, mem[:4096])
}

// The completion logic on made-up results: short transfers resume where
// they stopped, -EAGAIN/-EINTR retry up to the cap, anything else ends
// the request with the bytes done so far.
func TestSlotComplete(t *testing.T) {
	complete := func(s *reqState, res int32, maxRetries int) bool {
		s.issue(nil)
		s.result(nil, res)
		return s.settle(maxRetries)
	}
	mem := make([]byte, 12288)
	newSlot := func(op Op) *reqState {
		iov := []unix.Iovec{tkIov(mem[:4096]), tkIov(mem[4096:])}
		s := &reqState{}
		s.begin(&Request{Op: op, Iov: iov, Tag: 5}, 0)
		return s
	}
	eagain, eintr, eio := -int32(syscall.EAGAIN), -int32(syscall.EINTR), -int32(syscall.EIO)

	s := newSlot(OpWrite)
	for _, step := range []struct {
		res   int32
		done  bool
		first int
		base  int // offset of iov[first] in mem
	}{
		{1024, false, 0, 1024},
		{eagain, false, 0, 1024},
		{3072 + 512, false, 1, 4608},
		{eintr, false, 1, 4608},
		{7680, true, 2, 0},
	} {
		if got := complete(s, step.res, 8); got != step.done {
			t.Fatalf("res %d: done = %v, want %v", step.res, got, step.done)
		}
		if !step.done && s.first != step.first {
			t.Fatalf("res %d: first = %d, want %d", step.res, s.first, step.first)
		}
		if !step.done && s.req.Iov[s.first].Base != &mem[step.base] {
			t.Fatalf("res %d: iovec %d does not start at byte %d", step.res, s.first, step.base)
		}
	}
	if c := s.completion(); c != (Completion{Tag: 5, N: 12288}) {
		t.Errorf("completion %+v", c)
	}

	s = newSlot(OpWrite)
	for i := 0; i < 3; i++ {
		if complete(s, eagain, 3) {
			t.Fatalf("EAGAIN retry %d ended the request", i+1)
		}
	}
	if !complete(s, eagain, 3) || s.completion().Err != syscall.EAGAIN {
		t.Errorf("EAGAIN past the cap: %+v", s.completion())
	}

	s = newSlot(OpWrite)
	complete(s, 8192, 8)
	if !complete(s, eio, 8) || s.completion() != (Completion{Tag: 5, N: 8192, Err: syscall.EIO}) {
		t.Errorf("EIO after 8 KiB: %+v", s.completion())
	}

	s = newSlot(OpWrite)
	complete(s, 4096, 8)
	if !complete(s, 0, 8) || s.completion() != (Completion{Tag: 5, N: 4096, Err: syscall.EIO}) {
		t.Errorf("no progress on a write: %+v", s.completion())
	}
	s = newSlot(OpRead)
	if !complete(s, 0, 8) || s.completion() != (Completion{Tag: 5, N: 0, Err: syscall.ENODATA}) {
		t.Errorf("read at end of file: %+v", s.completion())
	}
	s = &reqState{}
	s.begin(&Request{Op: OpFlush, Tag: 1}, 0)
	if !complete(s, 0, 8) || s.completion() != (Completion{Tag: 1}) {
		t.Errorf("flush: %+v", s.completion())
	}
}

// Steady-state Submit and completion allocate nothing.
func TestNativeZeroAllocs(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	var done atomic.Int64
	kick := make(chan struct{}, 1)
	r, err := Open(tg, "native", Config{Depth: 32, Handler: func(cs []Completion) {
		done.Add(int64(len(cs)))
		select {
		case kick <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	nops := make([]Request, 32)
	for i := range nops {
		nops[i] = Request{Op: OpNop, Tag: uint64(i)}
	}
	buf := tkMmap(t, 4096)
	iov := []unix.Iovec{tkIov(buf)}
	write := []Request{{Op: OpWrite, Off: 8192, Iov: iov}}
	var want int64
	run := func(reqs []Request) {
		want += int64(len(reqs))
		if err := r.Submit(reqs); err != nil {
			panic(err)
		}
		for done.Load() < want {
			<-kick
		}
	}
	if a := testing.AllocsPerRun(200, func() { run(nops) }); a != 0 {
		t.Errorf("%v allocations per batch of 32 NOPs, want 0", a)
	}
	if a := testing.AllocsPerRun(200, func() { iov[0] = tkIov(buf); run(write) }); a != 0 {
		t.Errorf("%v allocations per write, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { tg.CheckRequest(&write[0]) }); a != 0 {
		t.Errorf("%v allocations per CheckRequest, want 0", a)
	}
}

func TestNativeRegisteredBuffers(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	r, sink := tkNative(t, tg, 8)
	arena := tkMmap(t, 256<<10)
	outside := tkMmap(t, 8192)
	if err := r.RegisterBuffers([][]byte{arena[:128<<10], arena[128<<10:]}); err != nil {
		if errors.Is(err, ErrNotSupported) {
			t.Skipf("skipping: %v", err)
		}
		t.Fatal(err)
	}
	caps := r.Caps()
	if !caps.RegisteredBuffers {
		t.Error("Caps().RegisteredBuffers false after RegisterBuffers")
	}
	if err := r.RegisterBuffers([][]byte{arena}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("second RegisterBuffers = %v, want ErrBadConfig", err)
	}
	src := arena[:64<<10]
	for i := range src {
		src[i] = byte(i*13 + 5)
	}
	// Buffer 0: a single iovec (WRITE_FIXED); three scattered iovecs in
	// buffer 0 (WRITEV_FIXED where the kernel has it).
	reqs := []Request{
		{Op: OpWrite, Fixed: true, BufIndex: 0, Off: 0, Iov: []unix.Iovec{tkIov(src[:16<<10])}, Tag: 1},
		{Op: OpWrite, Fixed: true, BufIndex: 0, Off: 64 << 10, Iov: []unix.Iovec{
			tkIov(src[32<<10 : 40<<10]), tkIov(src[16<<10 : 20<<10]), tkIov(src[48<<10 : 64<<10])}, Tag: 2},
	}
	if err := r.Submit(reqs); err != nil {
		t.Fatal(err)
	}
	for _, c := range sink.take(t, 2) {
		if c.Err != 0 {
			t.Fatalf("fixed write %d: %v", c.Tag, c.Err)
		}
	}
	// Read back into buffer 1 with READ_FIXED / READV_FIXED.
	dst := arena[128<<10:]
	reads := []Request{
		{Op: OpRead, Fixed: true, BufIndex: 1, Off: 0, Iov: []unix.Iovec{tkIov(dst[:16<<10])}, Tag: 3},
		{Op: OpRead, Fixed: true, BufIndex: 1, Off: 64 << 10, Iov: []unix.Iovec{tkIov(dst[16<<10 : 24<<10]), tkIov(dst[24<<10 : 44<<10])}, Tag: 4},
	}
	if err := r.Submit(reads); err != nil {
		t.Fatal(err)
	}
	for _, c := range sink.take(t, 2) {
		if c.Err != 0 {
			t.Fatalf("fixed read %d: %v", c.Tag, c.Err)
		}
	}
	tkCompare(t, "WRITE_FIXED/READ_FIXED", dst[:16<<10], src[:16<<10])
	want := append(append(append([]byte(nil), src[32<<10:40<<10]...), src[16<<10:20<<10]...), src[48<<10:64<<10]...)
	tkCompare(t, "vectored fixed", dst[16<<10:44<<10], want)

	// Proof that the fixed opcodes were used: memory outside the
	// registered buffer is refused (EFAULT) by them, where plain
	// WRITEV would have taken it.
	single := Request{Op: OpWrite, Fixed: true, Off: 0, Iov: []unix.Iovec{tkIov(outside[:4096])}, Tag: 5}
	if err := r.Submit([]Request{single}); err != nil {
		t.Fatal(err)
	}
	if c := sink.take(t, 1)[0]; c.Err != syscall.EFAULT {
		t.Errorf("WRITE_FIXED outside the buffer: %+v, want EFAULT", c)
	}
	if caps.WritevFixed {
		vec := Request{Op: OpWrite, Fixed: true, Off: 0, Iov: []unix.Iovec{tkIov(outside[:4096]), tkIov(outside[4096:])}, Tag: 6}
		if err := r.Submit([]Request{vec}); err != nil {
			t.Fatal(err)
		}
		if c := sink.take(t, 1)[0]; c.Err != syscall.EFAULT {
			t.Errorf("WRITEV_FIXED outside the buffer: %+v, want EFAULT", c)
		}
	} else {
		t.Log("kernel has no IORING_OP_WRITEV_FIXED: vectored fixed writes used WRITEV")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// Requests name the target as a registered file, not by descriptor: the
// ring's descriptor number is made to point at /dev/null opened
// read-only after Open, so a write or flush that went by descriptor
// would fail (EBADF), and one through the registered file reaches the
// target. The data is read back through the target's own descriptor.
func TestNativeRegisteredFile(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	orig := tg.fd
	dup, err := unix.Dup(orig)
	if err != nil {
		t.Fatal(err)
	}
	tg.fd = dup
	r, sink := tkNative(t, tg, 4)
	tg.fd = orig
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// dup's number now names /dev/null, read-only (atomically: the
	// number is never free for another test's open to take).
	if err := unix.Dup3(null, dup, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(null)
	defer unix.Close(dup)
	if !r.Caps().RegisteredFile {
		t.Fatalf("Caps %+v: the target is not registered", r.Caps())
	}
	tkWriteFlushReadBack(t, r, sink, orig, "through the registered file")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// Where IORING_REGISTER_FILES is refused the ring still works, naming
// the target by its descriptor, and says why in Caps().Setup.
func TestNativeRegisterFileRefused(t *testing.T) {
	tkNoLeaks(t)
	testRegisterFileHook = func() error { return unix.EMFILE }
	defer func() { testRegisterFileHook = nil }()
	tg := tkFileTarget(t, 1<<20)
	r, sink := tkNative(t, tg, 4)
	c := r.Caps()
	if c.RegisteredFile || !strings.Contains(c.Setup, "IORING_REGISTER_FILES refused: too many open files") {
		t.Errorf("RegisteredFile %v, Setup %q: want the refusal named", c.RegisteredFile, c.Setup)
	}
	tkWriteFlushReadBack(t, r, sink, tg.fd, "by descriptor")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// tkWriteFlushReadBack writes two pages (two iovecs) at 4096 and
// flushes, each of which must succeed, then reads them back through
// descriptor fd (how names the way the requests went, for errors).
func tkWriteFlushReadBack(t *testing.T, r Ring, sink *tkSink, fd int, how string) {
	t.Helper()
	buf := tkMmap(t, 8192)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	reqs := []Request{
		{Op: OpWrite, Off: 4096, Iov: []unix.Iovec{tkIov(buf[:4096]), tkIov(buf[4096:])}, Tag: 1},
		{Op: OpFlush, Tag: 2},
	}
	for _, req := range reqs {
		// One at a time: a flush covers only writes completed before it.
		if err := r.Submit([]Request{req}); err != nil {
			t.Fatal(err)
		}
		if c := sink.take(t, 1)[0]; c.Err != 0 {
			t.Fatalf("request %d %s: %v", c.Tag, how, c.Err)
		}
	}
	got := tkMmap(t, 8192)
	if _, err := unix.Pread(fd, got, 4096); err != nil {
		t.Fatal(err)
	}
	tkCompare(t, "written "+how, got, buf)
}

// Close drops the ring's reference to the registered target before it
// returns: the kernel frees a closed ring asynchronously, and a block
// device still registered there stays open, so an exclusive open right
// after Close would fail with EBUSY now and then.
func TestNativeRegisteredFileReleasedAtClose(t *testing.T) {
	tkNoLeaks(t)
	d := loopdevtest.ForTest(t, 1<<20, 4096)
	buf := tkMmap(t, 4096)
	for i := range 50 {
		tg, err := OpenTarget(d.Path, TargetOptions{})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		sink := newTKSink()
		r, err := Open(tg, "native", Config{Depth: 4, Handler: sink.handle})
		if err != nil {
			tg.Close()
			t.Fatal(err)
		}
		if !r.Caps().RegisteredFile {
			t.Errorf("Caps %+v: the target is not registered", r.Caps())
		}
		err = r.Submit([]Request{{Op: OpWrite, Off: int64(i%16) * 4096, Iov: []unix.Iovec{tkIov(buf)}, Tag: 1}})
		if err == nil {
			if c := sink.take(t, 1)[0]; c.Err != 0 {
				err = c.Err
			}
		}
		if cerr := r.Close(); err == nil {
			err = cerr
		}
		if cerr := tg.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	tg, err := OpenTarget(d.Path, TargetOptions{})
	if err != nil {
		t.Fatalf("exclusive open after the last Close: %v", err)
	}
	tg.Close()
}

// An io_uring_enter that only submits is a raw system call (the runtime
// does not see it as a syscall): a stop-the-world must still get
// through while the owner submits and reaps without pause, and the
// owner must keep going through collections.
func TestNativeSubmitThroughGC(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	r, sink := tkNative(t, tg, 64)
	buf := tkMmap(t, 4096)
	stop := make(chan struct{})
	gcs := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				gcs <- n
				return
			default:
				runtime.GC()
				n++
			}
		}
	}()
	reqs := make([]Request, 32)
	for round := range 200 {
		for i := range reqs {
			reqs[i] = Request{Op: OpWrite, Off: int64((round*32+i)%256) * 4096, Iov: []unix.Iovec{tkIov(buf)}, Tag: uint64(i)}
		}
		if err := r.Submit(reqs); err != nil {
			t.Fatal(err)
		}
		for _, c := range sink.take(t, len(reqs)) {
			if c.Err != 0 {
				t.Fatalf("write: %v", c.Err)
			}
		}
	}
	close(stop)
	t.Logf("%d collections ran during 6400 writes", <-gcs)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNativeRegisterBuffersErrors(t *testing.T) {
	tkNoLeaks(t)
	r, _ := tkNative(t, tkFileTarget(t, 1<<20), 4)
	if err := r.RegisterBuffers(nil); !errors.Is(err, ErrBadConfig) {
		t.Errorf("no buffers: %v, want ErrBadConfig", err)
	}
	// 1 GiB + 4 KiB of address space, never touched.
	big, err := unix.Mmap(-1, 0, 1<<30+4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(big)
	if err := r.RegisterBuffers([][]byte{big}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("a buffer over 1 GiB: %v, want ErrBadConfig", err)
	}
	if r.Caps().RegisteredBuffers {
		t.Error("RegisteredBuffers after failures")
	}

	// Over RLIMIT_MEMLOCK: only without CAP_IPC_LOCK (root is exempt).
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 || lim.Cur >= 512<<20 {
		t.Skipf("skipping the RLIMIT_MEMLOCK half: root (CAP_IPC_LOCK) or a large limit (%d)", lim.Cur)
	}
	mem := tkMmap(t, int(lim.Cur)+(1<<20))
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	err = r.RegisterBuffers([][]byte{mem})
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "RLIMIT_MEMLOCK") {
		t.Errorf("registering more than RLIMIT_MEMLOCK: %v, want ErrNotSupported naming RLIMIT_MEMLOCK", err)
	}
}

func TestOpenConfig(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, 1<<20)
	h := func([]Completion) {}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Depth: -1, Handler: h}, "Depth -1"},
		{Config{Depth: 4097, Handler: h}, "Depth 4097"},
		{Config{MaxRetries: -2, Handler: h}, "MaxRetries -2"},
		{Config{}, "Handler"},
	} {
		_, err := Open(tg, "native", c.cfg)
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v) = %v, want ErrBadConfig naming %s", c.cfg, err, c.want)
		}
	}
	_, err := Open(tg, "uring9", Config{Handler: h})
	if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), `"uring9"`) || !strings.Contains(err.Error(), "native") {
		t.Errorf("unknown backend: %v", err)
	}
	if _, ok := backends["iceber"]; !ok {
		_, err := Open(tg, "iceber", Config{Handler: h})
		if err == nil || !strings.Contains(err.Error(), "-tags iceber -ldflags=-checklinkname=0") {
			t.Errorf("iceber not compiled in: %v", err)
		}
	}
	for _, name := range []string{"", "auto", "native"} {
		r, err := Open(tg, name, Config{Handler: h})
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		if c := r.Caps(); c.Depth != DefaultDepth || c.Backend != "native" {
			t.Errorf("Open(%q): Caps %+v, want native at depth %d", name, c, DefaultDepth)
		}
		r.Close()
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(tg, "native", Config{Handler: h}); !errors.Is(err, ErrTarget) {
		t.Errorf("Open on a closed target: %v, want ErrTarget", err)
	}
}

// TestNativeInFlightCap: with InFlight below Depth, the ring accepts
// Depth requests but keeps at most InFlight in the kernel, feeding the
// rest in as others complete; while work waits behind the cap, the
// owner sleeps rather than spins.
func TestNativeInFlightCap(t *testing.T) {
	// Reads from an empty pipe stay in flight until the test writes to
	// it: two of them fill an in-flight cap of 2, NOPs queue behind.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	tgt := &Target{Path: "pipe", Kind: KindFile, Size: 1 << 30, LogicalBlockSize: 1, fd: p[0]}
	var mu sync.Mutex
	got := 0
	done := make(chan struct{})
	r, err := Open(tgt, "native", Config{Depth: 16, InFlight: 2, Handler: func(cs []Completion) {
		mu.Lock()
		got += len(cs)
		if got == 12 {
			close(done)
		}
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if c := r.Caps(); c.Depth != 16 || c.InFlight != 2 {
		t.Fatalf("caps depth %d in flight %d", c.Depth, c.InFlight)
	}
	bufs := [2][8]byte{}
	reqs := []Request{
		{Op: OpRead, Iov: []unix.Iovec{{Base: &bufs[0][0], Len: 8}}, Tag: 100},
		{Op: OpRead, Iov: []unix.Iovec{{Base: &bufs[1][0], Len: 8}}, Tag: 101},
	}
	for i := 0; i < 10; i++ {
		reqs = append(reqs, Request{Op: OpNop, Tag: uint64(i)})
	}
	if err := r.Submit(reqs); err != nil {
		t.Fatal(err)
	}
	tid := r.(*nativeRing).tid
	before := threadTicks(t, tid)
	time.Sleep(300 * time.Millisecond)
	used := threadTicks(t, tid) - before
	mu.Lock()
	early := got
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d requests completed while the cap was full of blocked reads", early)
	}
	if used > 5 {
		t.Fatalf("the owner thread used %d clock ticks in 300ms while work waited behind the cap: it spins", used)
	}
	unix.Write(p[1], make([]byte, 16)) // release both reads
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the queued NOPs did not complete after the reads did")
	}
	if _, err := Open(tgt, "native", Config{Depth: 4, InFlight: 8, Handler: func([]Completion) {}}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("InFlight above Depth: %v", err)
	}
}

// threadTicks is a thread's user+system CPU time in clock ticks.
func threadTicks(t *testing.T, tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Skipf("no per-thread CPU times: %v", err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var utime, stime int
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return utime + stime
}

// delayWrites holds every write's result back by d.
type delayWrites struct{ d time.Duration }

func (delayWrites) Attach(int)     {}
func (delayWrites) Issue(*Attempt) {}
func (w delayWrites) Done(a *Attempt) {
	if a.Req.Op == OpWrite {
		a.Delay = w.d
	}
}

// TestNativeRunWaitDelayed: a Run function waiting for a result an
// interposer held back gets it: Wait returns once it is delivered, and
// does not go on to wait in the kernel for nothing (it hung so).
func TestNativeRunWaitDelayed(t *testing.T) {
	tkNoLeaks(t)
	sink := newTKSink()
	r, err := Open(tkFileTarget(t, 1<<20), "native", Config{Depth: 4, Handler: sink.handle, Interposers: []Interposer{delayWrites{20 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mem := tkMmap(t, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(context.Background(), func(q Queue) {
			q.Add(&Request{Op: OpWrite, Iov: []Iovec{tkIov(mem)}, Tag: 1})
			for sink.count() == 0 {
				q.Wait()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(tkTimeout):
		t.Fatal("Wait inside Run hangs after a delayed result was delivered")
	}
}
