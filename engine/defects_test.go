package engine

// Regression tests for the defects an adversarial review of the engine
// found (issue 11): each one failed before its fix.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/faultring"
)

// holeMap maps pages [0, n) to blocks [0, n), except the pages in holes.
func holeMap(t *testing.T, n uint64, holes ...uint64) mapper.Mapper {
	t.Helper()
	var exts []mapper.Extent
	start := uint64(0)
	for _, h := range append(holes, n) {
		if h > start {
			exts = append(exts, mapper.Extent{Index: start, Block: start, Len: h - start})
		}
		start = h + 1
	}
	m, err := mapper.NewExtentMap(exts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// dirtyPage writes one page of fill at index idx.
func dirtyPage(t *testing.T, c *pages.Cache, idx uint64, fill byte) {
	t.Helper()
	ps := c.PageSize()
	if _, err := c.WriteAt(bytes.Repeat([]byte{fill}, ps), int64(idx)*int64(ps)); err != nil {
		t.Fatalf("write page %d: %v", idx, err)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestJoinedSyncRangeOwnPages (defect 1): two SyncRanges that join one
// group-commit round each get the failures of their own range — here a
// dirty page over a hole in each range.
func TestJoinedSyncRangeOwnPages(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 128)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 128*ps), Mapper: holeMap(t, 128, 5, 60), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	dirtyPage(t, c, 5, 1)
	dirtyPage(t, c, 60, 2)
	hold := make(chan struct{})
	e.testBeforeRound = func() { <-hold }
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range [][2]uint64{{0, 10}, {50, 100}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.SyncRange(context.Background(), r[0], r[1])
		}()
		if i == 0 {
			waitFor(t, "the first sync to start a round", func() bool { return e.stats.syncs.Load() == 1 })
		}
	}
	waitFor(t, "the second sync to join", func() bool { return e.stats.syncsJoined.Load() == 1 })
	close(hold)
	wg.Wait()
	for i, want := range []uint64{5, 60} {
		if errs[i] == nil {
			t.Errorf("SyncRange %d returned nil with page %d dirty over a hole", i, want)
			continue
		}
		if !errors.Is(errs[i], ErrHole) {
			t.Errorf("SyncRange %d = %v, want ErrHole", i, errs[i])
		}
		if !strings.Contains(errs[i].Error(), "page "+strconv.FormatUint(want, 10)) {
			t.Errorf("SyncRange %d = %v, want it to name page %d", i, errs[i], want)
		}
	}
	e.Invalidate(context.Background(), 0, 0)
}

// TestFlushFailWindow (defect 2): a write reaped after a flush took its
// list but before the flush was submitted belongs to that flush's
// outcome: when the flush fails, that page is dirty again and the next
// Sync writes it before its flush.
func TestFlushFailWindow(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), Mapper: mapper.Linear(0, 64), OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	dirtyPage(t, c, 1, 1)
	var once sync.Once
	e.testInFlush = func() {
		once.Do(func() {
			// A write that completes in the window.
			dirtyPage(t, c, 7, 7)
			if err := e.WritePages(context.Background(), &WritebackControl{}); err != nil {
				t.Error(err)
			}
			waitFor(t, "page 7's write to complete", func() bool { return c.NrWriteback() == 0 })
			fr.mu.Lock()
			fr.flushFails, fr.flushErr = 1, syscall.EIO
			fr.mu.Unlock()
		})
	}
	if err := e.Sync(context.Background()); !errors.Is(err, ErrFlush) {
		t.Fatalf("Sync with a failing flush = %v, want ErrFlush", err)
	}
	e.testInFlush = nil
	fr.takeLog()
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	log := strings.Join(fr.takeLog(), "; ")
	if !strings.Contains(log, "write blocks 7-7") {
		t.Fatalf("after the failed flush the next Sync did %q: page 7, written in the failed flush's window, was not written again", log)
	}
}

// TestNativeEnterEAGAIN (defect 3): io_uring_enter failing with EAGAIN
// or EBUSY without consuming an SQE must not hang the ring: the write
// completes and Close returns.
func TestNativeEnterEAGAIN(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EAGAIN, syscall.EBUSY} {
		// The first enter only arms the ring's wake-up read; the second
		// carries the write.
		for nth := int32(1); nth <= 3; nth++ {
			t.Run(fmt.Sprintf("%v/enter#%d", errno, nth), func(t *testing.T) {
				const ps = 4096
				c := heapCache(t, ps, 16)
				var calls atomic.Int32
				e, err := Open(c, Config{Path: testTarget(t, 16*ps), Ring: "native", Mapper: mapper.Linear(0, 16),
					OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
						rc.EnterFault = func(uint32) syscall.Errno {
							if calls.Add(1) == nth {
								return errno
							}
							return 0
						}
						return ring.Open(tg, "native", rc)
					}})
				if err != nil {
					t.Fatal(err)
				}
				dirtyPage(t, c, 3, 3)
				done := make(chan error, 1)
				go func() { done <- e.Sync(context.Background()) }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("Sync hangs after %v from io_uring_enter call %d", errno, nth)
				}
				closed := make(chan error, 1)
				go func() { closed <- e.Close() }()
				select {
				case err := <-closed:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Close hangs")
				}
			})
		}
	}
}

// TestFlusherNoSpin (defect 4): with writeback, not dirty pages, over
// the background threshold, the flusher waits for completions instead
// of running pass after pass.
func TestFlusherNoSpin(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 128)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 128*ps), Mapper: mapper.Linear(0, 128), OpenRing: fakeOpen(&fr, ps),
		QueueDepth: 64, MaxIOBytes: ps, DirtyBackgroundBytes: 16 * ps})
	if err != nil {
		t.Fatal(err)
	}
	fr.setHold(true)
	if _, err := c.WriteAt(make([]byte, 64*ps), 0); err != nil { // kicks the flusher
		t.Fatal(err)
	}
	waitFor(t, "the flusher to put 64 pages under writeback", func() bool { return c.NrWriteback() == 64 })
	before := e.stats.bgPasses.Load()
	time.Sleep(300 * time.Millisecond)
	passes := e.stats.bgPasses.Load() - before
	fr.setHold(false)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if passes > 10 {
		t.Fatalf("the flusher ran %d passes in 300ms with nothing dirty and 64 pages in flight: it spins", passes)
	}
	t.Logf("%d background passes in 300ms with 64 pages in flight", passes)
}

// TestFailedCloseReturnsDirtyPages (defect 5): a Close that fails
// because a page cannot be written leaves that page dirty on the cache's
// intake list, with its pins accounted for, so a new engine on the cache
// writes it and the cache then closes.
func TestFailedCloseReturnsDirtyPages(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	path := testTarget(t, 64*ps)
	e, err := Open(c, Config{Path: path, Mapper: holeMap(t, 64, 5)})
	if err != nil {
		t.Fatal(err)
	}
	dirtyPage(t, c, 5, 5)
	dirtyPage(t, c, 6, 6)
	if err := e.Close(); !errors.Is(err, ErrHole) {
		t.Fatalf("Close with a dirty page over a hole = %v, want ErrHole", err)
	}
	var fr *fakeRing
	e2, err := Open(c, Config{Path: path, Mapper: mapper.Linear(0, 64), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatalf("a new engine on the cache: %v", err)
	}
	if err := e2.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fr.img[5*ps]; got != 5 {
		t.Errorf("page 5 on the device holds %d after the new engine's Sync, want 5: the failed Close stranded it", got)
	}
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("cache.Close after both engines closed: %v", err)
	}
}

// TestCloseTimeoutRetry (defect 6): a Close that timed out keeps the
// cache claimed and what it needs; a later Close with the device still
// stuck fails again, and once the device completes a Close finishes the
// job, returns nil and releases the target.
func TestCloseTimeoutRetry(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	path := testTarget(t, 64*ps)
	fdsBefore := openFDs(t)
	var fr *fakeRing
	e, err := Open(c, Config{Path: path, Mapper: mapper.Linear(0, 64), OpenRing: fakeOpen(&fr, ps), CloseTimeout: 100 * time.Millisecond, FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	fr.setHold(true)
	dirtyPage(t, c, 2, 2)
	if err := e.WritePages(context.Background(), &WritebackControl{}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err == nil {
		t.Fatal("Close returned nil with a write stuck in the device")
	}
	if _, err := Open(c, Config{Path: path}); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "clos") {
		t.Errorf("Open on a cache whose engine is still closing = %v, want ErrConfig saying it is closing", err)
	}
	if err := e.Close(); err == nil {
		t.Fatal("a second Close returned nil with the write still stuck in the device")
	}
	if openFDs(t) == fdsBefore {
		t.Error("the target was closed while the device still holds a write")
	}
	fr.setHold(false)
	if err := e.Close(); err != nil {
		t.Fatalf("Close once the device completed: %v", err)
	}
	if got := fr.img[2*ps]; got != 2 {
		t.Errorf("page 2 on the device holds %d, want 2", got)
	}
	if fds := openFDs(t); fds != fdsBefore {
		t.Errorf("descriptors: %d before Open, %d after the Close that succeeded", fdsBefore, fds)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenHugeMaxIOBytes (defect 7): a huge MaxIOBytes is refused with
// ErrConfig naming it, without a panic or a leaked descriptor.
func TestOpenHugeMaxIOBytes(t *testing.T) {
	const ps = 4096
	path := testTarget(t, 64*ps)
	before := openFDs(t)
	for _, n := range []int{1 << 62, 1 << 40, 1 << 31} {
		c := heapCache(t, ps, 64)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("Open with MaxIOBytes %d panicked: %v", n, r)
				}
			}()
			e, err := Open(c, Config{Path: path, MaxIOBytes: n})
			if err == nil {
				e.Close()
				t.Errorf("Open with MaxIOBytes %d succeeded", n)
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), strconv.Itoa(n)) {
				t.Errorf("Open with MaxIOBytes %d = %v, want ErrConfig naming the value", n, err)
			}
		}()
	}
	if after := openFDs(t); after != before {
		t.Errorf("descriptors: %d before, %d after the refused Opens", before, after)
	}
}

// TestConcurrentOpen (defect 8): of two Opens racing on one cache,
// exactly one succeeds.
func TestConcurrentOpen(t *testing.T) {
	const ps = 4096
	path := testTarget(t, 64*ps)
	path2 := testTarget(t, 64*ps)
	for round := range 20 {
		c := heapCache(t, ps, 64)
		var wg sync.WaitGroup
		engines := make([]*Engine, 2)
		errs := make([]error, 2)
		for i, p := range []string{path, path2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				engines[i], errs[i] = Open(c, Config{Path: p})
			}()
		}
		wg.Wait()
		ok := 0
		for i := range engines {
			if errs[i] == nil {
				ok++
				if err := engines[i].Close(); err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(errs[i], ErrConfig) {
				t.Fatalf("round %d: Open = %v, want success or ErrConfig", round, errs[i])
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of two concurrent Opens on one cache succeeded", round, ok)
		}
	}
}

// TestNrToWriteDecrements: WritePages takes each submitted page from the
// caller's NrToWrite and stops when it reaches 0, so a caller can loop
// on it as the kernel's writeback_sb_inodes does.
func TestNrToWriteDecrements(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), Mapper: mapper.Linear(0, 64), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := c.WriteAt(make([]byte, 20*ps), 0); err != nil {
		t.Fatal(err)
	}
	wbc := &WritebackControl{NrToWrite: 8}
	if err := e.WritePages(context.Background(), wbc); err != nil {
		t.Fatal(err)
	}
	if wbc.NrToWrite != 0 || wbc.PagesWritten != 8 {
		t.Fatalf("after a pass with budget 8 over 20 dirty pages: NrToWrite %d, PagesWritten %d; want 0 and 8", wbc.NrToWrite, wbc.PagesWritten)
	}
	// The kernel's loop: refill the budget while work remains.
	calls := 0
	for c.NrDirty() > 0 && calls < 10 {
		waitFor(t, "writes to complete", func() bool { return c.NrWriteback() == 0 })
		wbc.NrToWrite = 5
		if err := e.WritePages(context.Background(), wbc); err != nil {
			t.Fatal(err)
		}
		calls++
		if wbc.NrToWrite != 0 && c.NrDirty() > 0 {
			t.Fatalf("call %d: NrToWrite %d left with %d pages still dirty", calls, wbc.NrToWrite, c.NrDirty())
		}
	}
	if calls != 3 || wbc.PagesWritten != 20 {
		t.Fatalf("%d calls of budget 5 wrote %d pages in all; want 3 calls and 20 pages", calls, wbc.PagesWritten)
	}
	// A spent control passed in again as it is (NrToWrite 0) has no
	// budget: it writes every dirty page.
	waitFor(t, "writes to complete", func() bool { return c.NrWriteback() == 0 })
	if _, err := c.WriteAt(make([]byte, 12*ps), 0); err != nil {
		t.Fatal(err)
	}
	spent := &WritebackControl{NrToWrite: 4}
	e.WritePages(context.Background(), spent)
	waitFor(t, "writes to complete", func() bool { return c.NrWriteback() == 0 })
	if err := e.WritePages(context.Background(), spent); err != nil {
		t.Fatal(err)
	}
	if spent.PagesWritten != 12 || spent.NrToWrite != 0 {
		t.Fatalf("a spent control passed in again wrote %d pages in all (NrToWrite %d); want all 12 (no budget)", spent.PagesWritten, spent.NrToWrite)
	}
}

// TestThrottleHolePages: pages that cannot be written because they map
// to holes (no allocator) do not count against the dirty limit, so
// writers are not throttled forever.
func TestThrottleHolePages(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 128)
	var fr *fakeRing
	holes := make([]uint64, 32)
	for i := range holes {
		holes[i] = uint64(i)
	}
	e, err := Open(c, Config{Path: testTarget(t, 128*ps), Mapper: holeMap(t, 128, holes...), OpenRing: fakeOpen(&fr, ps),
		DirtyBytes: 16 * ps, DirtyBackgroundBytes: 8 * ps, WritebackInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.WriteAt(make([]byte, 32*ps), 0) // all over holes
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a writer of 32 pages over holes is still throttled after 10s (dirty %d, limit 16)", c.NrDirty())
	}
	if err := e.Invalidate(context.Background(), 0, 32); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPassRacingCloseIsFlushed: a pass that starts after Close's final
// Sync and before Close holds the pass lock for good has its writes
// flushed before Close returns nil.
func TestPassRacingCloseIsFlushed(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), Mapper: mapper.Linear(0, 64), OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	e.testBeforePass = func() {
		close(entered)
		<-release
	}
	passErr := make(chan error, 1)
	go func() { passErr <- e.WritePages(context.Background(), &WritebackControl{}) }()
	<-entered
	e.testBeforePass = nil
	e.testInClose = func() {
		dirtyPage(t, c, 9, 9)
		close(release)
		err := <-passErr
		t.Logf("the racing pass returned %v", err)
		waitFor(t, "the racing pass's writes", func() bool { return c.NrWriteback() == 0 })
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	log := fr.takeLog()
	last := -1
	for i, l := range log {
		if strings.HasPrefix(l, "write blocks 9-9") {
			last = i
		}
	}
	if last < 0 {
		t.Fatalf("page 9 was never written: %q", log)
	}
	flushed := false
	for _, l := range log[last+1:] {
		flushed = flushed || l == "flush"
	}
	if !flushed {
		t.Fatalf("Close returned nil, but page 9's write was not followed by a flush: %q", log)
	}
}

// TestWritePastMapperRange: a page past the mapper's range is refused
// when it is written, with an error naming the page and the limit,
// instead of failing every later Sync.
func TestWritePastMapperRange(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 4096*ps), Mapper: mapper.Linear(0, 1024), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	_, werr := c.WriteAt(make([]byte, ps), 2000*ps)
	if werr == nil || !strings.Contains(werr.Error(), "2000") || !strings.Contains(werr.Error(), "1024") {
		t.Errorf("WriteAt at page 2000 with Linear(0, 1024) = %v, want an error naming page 2000 and the limit 1024", werr)
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Errorf("Sync after the refused write: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestOwnerPassWaitsForWriteAt: on the native ring the pass runs on the
// thread that reaps completions. A WriteAt holding a page's lock while
// it waits for that page's writeback, and a Sync whose pass wants the
// page (dirtied again through Data while in flight), must both finish:
// the pass reaps while it waits for the lock. The write is held back by
// the ring (an interposer's delay) so the wait is real; a timeout fails
// the test instead of hanging it.
func TestOwnerPassWaitsForWriteAt(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 16)
	inj, err := faultring.New(faultring.Config{Rules: []faultring.Rule{{Kind: faultring.Delay, Nth: 1, Delay: 200 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	e := openNativeWith(t, c, Config{Path: testTarget(t, 16*ps), Mapper: mapper.Linear(0, 16), FlushAlways: true}, inj)
	defer e.Close()
	if e.RingCaps().RunPath != "owner-thread" {
		t.Fatalf("run path %q", e.RingCaps().RunPath)
	}
	dirtyPage(t, c, 4, 1)
	if err := e.WritePages(context.Background(), &WritebackControl{}); err != nil { // the delayed write
		t.Fatal(err)
	}
	if c.NrWriteback() != 1 {
		t.Fatalf("%d pages under writeback, want 1", c.NrWriteback())
	}
	// Dirty it again directly (legal under writeback), so the Sync's pass
	// must take it again.
	p := c.Lookup(4)
	p.Data()[0] = 2
	c.SetDirty(p)
	c.Put(p)
	e.noStableCheck = true
	writeDone := make(chan error, 1)
	go func() { // takes the page lock, then waits for its writeback
		_, err := c.WriteAt(bytes.Repeat([]byte{3}, ps), 4*ps)
		writeDone <- err
	}()
	waitFor(t, "WriteAt to hold the page lock", func() bool {
		p := c.Lookup(4)
		defer c.Put(p)
		return p.Flags().IsLocked()
	})
	syncDone := make(chan error, 1)
	go func() { syncDone <- e.Sync(context.Background()) }()
	for _, ch := range []chan error{writeDone, syncDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WriteAt and a Sync on the owner thread deadlocked")
		}
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, ps)
	if _, err := c.ReadAt(got, 4*ps); err != nil || got[0] != 3 {
		t.Fatalf("page 4 holds %d (%v), want 3", got[0], err)
	}
}

// TestFillGaps: with FillGaps n, clean cached pages in a gap of at most n
// pages between two dirty runs go out in the same write (stable while in
// flight, counted in Stats); a gap page that is pinned, not cached, or
// over a discontiguity is not taken; a failed fill makes the gap page
// dirty again.
func TestFillGaps(t *testing.T) {
	const ps = 4096
	for _, tc := range []struct {
		name  string
		fill  int
		setup func(c *pages.Cache) *pages.Page // after pages 0..19 are cached and clean; returns a page to unpin at the end
		want  string
	}{
		{"off", 0, nil, "write blocks 0-3 (4 pages, 1 iovs); write blocks 6-9 (4 pages, 1 iovs); flush"},
		{"gap of 2, fill 2", 2, nil, "write blocks 0-9 (10 pages, 1 iovs); flush"},
		{"gap of 2, fill 1", 1, nil, "write blocks 0-3 (4 pages, 1 iovs); write blocks 6-9 (4 pages, 1 iovs); flush"},
		{"gap page pinned", 2, func(c *pages.Cache) *pages.Page { return c.Lookup(5) }, "write blocks 0-3 (4 pages, 1 iovs); write blocks 6-9 (4 pages, 1 iovs); flush"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := heapCache(t, ps, 32)
			var fr *fakeRing
			e, err := Open(c, Config{Path: testTarget(t, 32*ps), Mapper: mapper.Linear(0, 32), OpenRing: fakeOpen(&fr, ps), FlushAlways: true, FillGaps: tc.fill})
			if err != nil {
				t.Fatal(err)
			}
			for i := range uint64(20) {
				dirtyPage(t, c, i, byte(i+1))
			}
			if err := e.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			fr.takeLog()
			var pinned *pages.Page
			if tc.setup != nil {
				pinned = tc.setup(c)
			}
			for _, i := range []uint64{0, 1, 2, 3, 6, 7, 8, 9} {
				dirtyPage(t, c, i, byte(100+i))
			}
			if err := e.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(fr.takeLog(), "; "); got != tc.want {
				t.Errorf("writes %q, want %q", got, tc.want)
			}
			for i, want := range map[uint64]byte{3: 103, 4: 5, 5: 6, 6: 106} {
				if fr.img[i*ps] != want {
					t.Errorf("page %d on the device holds %d, want %d", i, fr.img[i*ps], want)
				}
			}
			filled := e.Stats().PagesFilled
			if (tc.want == "write blocks 0-9 (10 pages, 1 iovs); flush") != (filled == 2) {
				t.Errorf("Stats().PagesFilled = %d", filled)
			}
			if c.NrWriteback() != 0 || c.NrDirty() != 0 {
				t.Errorf("after: %d under writeback, %d dirty", c.NrWriteback(), c.NrDirty())
			}
			if pinned != nil {
				c.Put(pinned)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFillGapsFailure: when a write that filled a gap fails, the gap
// page is dirty again (the device's copy may be torn) and a Sync writes
// it.
func TestFillGapsFailure(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 32)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 32*ps), Mapper: mapper.Linear(0, 32), OpenRing: fakeOpen(&fr, ps), FlushAlways: true, FillGaps: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for i := range uint64(10) {
		dirtyPage(t, c, i, byte(i+1))
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	dirtyPage(t, c, 3, 33)
	dirtyPage(t, c, 6, 66)
	fr.mu.Lock()
	fr.failBlocks[4] = fault{errno: syscall.EIO, count: 1}
	fr.mu.Unlock()
	if err := e.WritePages(context.Background(), &WritebackControl{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed write", func() bool { return c.NrWriteback() == 0 })
	if p := c.Lookup(4); !p.Flags().IsDirty() {
		t.Errorf("gap page 4 is clean after its write failed: %v", p.Flags())
		c.Put(p)
	} else {
		c.Put(p)
	}
	fr.takeLog()
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fr.img[4*ps] != 5 || fr.img[6*ps] != 66 {
		t.Errorf("after the Sync: page 4 holds %d (want 5), page 6 %d (want 66)", fr.img[4*ps], fr.img[6*ps])
	}
}

// TestReadPassesHeldWrites: a cache miss's read does not wait for the
// pass's writes. The ring holds every record's write back (an
// interposer's delay on blocks 0..7; QueueDepth 4 gives 8 records), a
// Sync's pass waits for a record, and a reader misses a page elsewhere:
// its read must complete while those writes are still held, not after
// (the ring has slots for reads beyond what a pass can hold, and on the
// native ring a Submit goes ahead of the pass's queue). The delay only
// tells "before" from "after"; a read that waited would also pass the
// test, 3 s later, if nothing checked the order.
func TestReadPassesHeldWrites(t *testing.T) {
	const ps, n = 4096, 256
	c := heapCache(t, ps, n)
	inj, err := faultring.New(faultring.Config{BlockSize: ps, Rules: []faultring.Rule{{
		Kind: faultring.Delay, Ops: faultring.OpSetOf(ring.OpWrite), FirstBlock: 0, EndBlock: 8, Delay: 3 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	e := openNativeWith(t, c, Config{Path: testTarget(t, n*ps), Mapper: mapper.Linear(0, n), QueueDepth: 4, MaxIOBytes: ps}, inj)
	defer e.Close()
	for i := range 64 {
		dirtyPage(t, c, uint64(i), byte(i))
	}
	synced := make(chan error, 1)
	go func() { synced <- e.Sync(context.Background()) }()
	recs := int64(len(e.recs))
	waitFor(t, "the pass to hold every record", func() bool { return e.Stats().InFlight == recs })
	buf := make([]byte, ps)
	if _, err := c.ReadAt(buf, 200*ps); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Writes != 0 || st.InFlight != recs {
		t.Fatalf("the read returned after %d writes completed (%d in flight): it waited for the pass's held writes", st.Writes, st.InFlight)
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
}

// openNativeWith opens an engine on the native ring (the owner-thread
// path) with ip among the ring's interposers.
func openNativeWith(t *testing.T, c *pages.Cache, cfg Config, ip ring.Interposer) *Engine {
	t.Helper()
	cfg.OpenRing = func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
		rc.Interposers = append(rc.Interposers, ip)
		return ring.Open(tg, "native", rc)
	}
	e, err := Open(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
