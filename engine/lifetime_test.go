package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/ring"
)

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestCloseReleasesEverything: after Close no engine goroutine remains,
// and the ring's and the target's descriptors are closed — with the
// native ring, the background flusher and group commit all running.
func TestCloseReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t)
	const ps = 4096
	path := testTarget(t, 256*ps)
	before := openFDs(t)
	c := heapCache(t, ps, 256)
	e, err := Open(c, Config{Path: path, Mapper: mapper.Linear(0, 256), DirtyBackgroundBytes: 16 * ps, DirtyExpire: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if during := openFDs(t); during <= before {
		t.Fatalf("open descriptors %d while open, %d before: the engine holds none?", during, before)
	}
	c.WriteAt(make([]byte, 64*ps), 0)
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if after := openFDs(t); after != before {
		t.Fatalf("open descriptors: %d before Open, %d after Close", before, after)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWaitsForInflight: Close with writes in flight waits for
// them; when it returns their completions were handled and the data is
// on the device.
func TestCloseWaitsForInflight(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	fr.setHold(true)
	c.WriteAt(bytes.Repeat([]byte{3}, 8*ps), 0)
	if err := e.WritePages(context.Background(), &WritebackControl{}); err != nil {
		t.Fatal(err)
	}
	if c.NrWriteback() != 8 {
		t.Fatalf("%d pages in flight, want 8", c.NrWriteback())
	}
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	// Close must not return while the device holds the writes; release
	// them once Close is waiting (a Sync waiter is registered).
	for e.nWaiters.Load() == 0 {
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) with writes in flight", err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	fr.setHold(false)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if c.NrWriteback() != 0 || c.NrDirty() != 0 {
		t.Fatalf("after Close: %d in flight, %d dirty", c.NrWriteback(), c.NrDirty())
	}
	if !bytes.Equal(fr.img[:8*ps], bytes.Repeat([]byte{3}, 8*ps)) {
		t.Fatal("the in-flight writes did not land before Close returned")
	}
}

// callRacingClose runs call on an engine in a goroutine, stops it at a
// test hook (installed by hook, which is given the function to put
// there, or nil to take it out) right after its "closed?" check, closes
// the engine, then lets call go on: it must fail with ErrClosed, not
// wait forever for machinery Close has stopped.
func callRacingClose(t *testing.T, what string, hook func(e *Engine, fn func()), call func(e *Engine) error) {
	t.Helper()
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	hook(e, func() {
		close(entered)
		<-release
	})
	errs := make(chan error, 1)
	go func() { errs <- call(e) }()
	<-entered
	hook(e, nil) // Close's own Sync goes straight through
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case err := <-errs:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("%s after Close = %v, want ErrClosed", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s after Close hangs", what)
	}
}

// TestSyncRacingClose: a Sync that passed its "closed?" check just
// before Close, and joins a round only after Close stopped the
// group-commit runner, fails with ErrClosed instead of waiting forever.
func TestSyncRacingClose(t *testing.T) {
	callRacingClose(t, "a Sync that joined",
		func(e *Engine, fn func()) { e.testBeforeJoin = fn },
		func(e *Engine) error { return e.Sync(context.Background()) })
}

// TestPassRacingClose: a SyncAll pass that got past its "closed?" check
// just before Close, and asks for the pass lock only after Close took it
// for good, fails with ErrClosed instead of waiting forever.
func TestPassRacingClose(t *testing.T) {
	callRacingClose(t, "a pass that asked for the lock",
		func(e *Engine, fn func()) { e.testBeforePass = fn },
		func(e *Engine) error {
			return e.WritePages(context.Background(), &WritebackControl{SyncMode: SyncAll})
		})
}

// TestInvalidateThenDirectWrite: a direct writer that kept its pin on a
// page across Invalidate, then dirties it, while the index gets a new
// page: the old data is discarded, the new page is written, nothing
// panics (a dropped page must never reach the dirty set).
func TestInvalidateThenDirectWrite(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 16)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	c.WriteAt(bytes.Repeat([]byte{1}, ps), 5*ps)
	old := c.Lookup(5) // the direct writer's pin
	if err := e.Invalidate(ctx, 5, 6); err != nil {
		t.Fatal(err)
	}
	copy(old.Data(), bytes.Repeat([]byte{2}, ps))
	c.SetDirty(old)
	c.WriteAt(bytes.Repeat([]byte{3}, ps), 5*ps) // a new page at index 5
	if err := e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c.Put(old)
	fr.mu.Lock()
	got := fr.img[5*ps]
	fr.mu.Unlock()
	if got != 3 {
		t.Fatalf("block 5 holds %d, want the new page's 3", got)
	}
	if c.NrDirty() != 0 {
		t.Fatalf("%d dirty pages left", c.NrDirty())
	}
}

// TestFlushFailRacingInvalidate: a failing flush makes its pages dirty
// again while Invalidate drops them; whatever the order, no page that
// left the cache comes back dirty, and the cache's pins balance.
func TestFlushFailRacingInvalidate(t *testing.T) {
	const (
		ps = 4096
		n  = 256
	)
	for round := 0; round < 30; round++ {
		c := heapCache(t, ps, n)
		var fr *fakeRing
		e, err := Open(c, Config{Path: testTarget(t, n*ps), OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		c.WriteAt(bytes.Repeat([]byte{1}, n*ps), 0)
		if err := e.WritePages(ctx, &WritebackControl{SyncMode: SyncAll}); err != nil {
			t.Fatal(err)
		}
		fr.mu.Lock()
		fr.flushErr, fr.flushFails = syscall.EIO, 1
		fr.mu.Unlock()
		fr.setHold(true)
		synced := make(chan error, 1)
		go func() { synced <- e.Sync(ctx) }()
		for {
			fr.mu.Lock()
			ready := len(fr.pending) > 0 && fr.pending[0].Op == ring.OpFlush
			fr.mu.Unlock()
			if ready {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); e.Invalidate(ctx, 0, 0) }()
		go func() { defer wg.Done(); fr.completeAll() }()
		wg.Wait()
		fr.setHold(false)
		<-synced
		c.WriteAt(bytes.Repeat([]byte{2}, n*ps), 0)
		if err := e.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// TestReclaimWithHeldPage: one page held in error does not stop a full
// cache from making room: the writeback for reclaim fails (it names that
// page) but cleans the rest, and Grab goes on.
func TestReclaimWithHeldPage(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 8)
	var fr *fakeRing
	e, err := Open(c, Config{Path: testTarget(t, 64*ps), OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	fr.mu.Lock()
	fr.failBlocks[0] = fault{errno: syscall.EIO, count: -1}
	fr.mu.Unlock()
	c.WriteAt(bytes.Repeat([]byte{1}, ps), 0)
	if err := e.Sync(ctx); !errors.Is(err, ErrIO) {
		t.Fatalf("Sync over a bad block = %v", err)
	}
	c.WriteAt(bytes.Repeat([]byte{2}, 7*ps), ps) // the cache is full of dirty pages
	if _, err := c.WriteAt(bytes.Repeat([]byte{3}, ps), 20*ps); err != nil {
		t.Fatalf("WriteAt needing room, with one page held in error: %v", err)
	}
}
