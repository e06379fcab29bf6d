package pages

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wbengine/wbengine/internal/invariants"
)

// TestLock: Grab returns a locked page; TryLock fails on a locked page
// and succeeds on an unlocked one; unlocking an unlocked page panics.
func TestLock(t *testing.T) {
	c := newTestCache(t, 4096, 4)
	p, err := c.Grab(7)
	if err != nil {
		t.Fatal(err)
	}
	if f := p.Flags(); !f.IsLocked() || f.IsDirty() || f.IsUptodate() {
		t.Fatalf("new page flags %v, want locked, not dirty, not uptodate", f)
	}
	if p.TryLock() {
		t.Fatal("TryLock on a locked page succeeded")
	}
	p.Unlock()
	mustPanic(t, "Unlock of unlocked page", p.Unlock)
	if !p.TryLock() {
		t.Fatal("TryLock on an unlocked page failed")
	}
	p.Unlock()
}

// TestDirtyWritebackTransitions: dirty → clean for I/O → writeback set
// under the lock → writeback ended, each transition reported once.
func TestDirtyWritebackTransitions(t *testing.T) {
	c := newTestCache(t, 4096, 4)
	p, err := c.Grab(7)
	if err != nil {
		t.Fatal(err)
	}
	if !c.SetDirty(p) {
		t.Fatal("SetDirty on a clean page returned false")
	}
	if c.SetDirty(p) {
		t.Fatal("SetDirty on a dirty page returned true")
	}
	if !p.ClearDirtyForIO() {
		t.Fatal("ClearDirtyForIO of a dirty page returned false")
	}
	if p.ClearDirtyForIO() {
		t.Fatal("ClearDirtyForIO of a clean page returned true")
	}
	if p.TestSetWriteback() {
		t.Fatal("TestSetWriteback reported writeback already set")
	}
	if invariants.Enabled {
		mustPanic(t, "writeback set twice", func() { p.TestSetWriteback() })
	}
	p.Unlock()
	if invariants.Enabled {
		mustPanic(t, "writeback set on unlocked page", func() {
			q, _ := c.Grab(8)
			q.Unlock()
			q.TestSetWriteback()
		})
	}
	c.EndWritebackPages([]*Page{p})
	mustPanic(t, "EndWriteback twice", func() { c.EndWritebackPages([]*Page{p}) })
	if f := p.Flags(); f.IsWriteback() || f.IsLocked() {
		t.Fatalf("flags after EndWriteback = %v", f)
	}
}

func TestFlagsString(t *testing.T) {
	if got := Flags(PageLocked | PageDirty | PageWriteback).String(); got != "locked|dirty|writeback" {
		t.Errorf("Flags.String = %q", got)
	}
}

func TestLockWaiters(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(0)
	var mu sync.Mutex
	order := []int{}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p.Lock()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			p.Unlock()
		}(i)
	}
	for p.Flags()&PageWaiters == 0 {
		time.Sleep(time.Millisecond)
	}
	p.Unlock()
	wg.Wait()
	if len(order) != 8 {
		t.Fatalf("%d lockers got the lock, want 8", len(order))
	}
	c.Put(p)
}

// TestLockHandoff: a goroutine that keeps taking and releasing a page
// lock cannot starve another that waits for it: the waiter claims the
// next turn. (Without the handoff the waiter would only get the lock
// once the other goroutine stopped after its last round.)
func TestLockHandoff(t *testing.T) {
	c := newTestCache(t, 512, 4)
	p, _ := c.Grab(0)
	p.Unlock()
	// The other goroutine holds the lock for a while each round and
	// takes it again the moment it lets go, faster than a woken waiter
	// can run: without the handoff it wins every race.
	const rounds = 2000
	var hog atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < rounds && !stop.Load(); i++ {
			p.Lock()
			hog.Add(1)
			for t0 := time.Now(); time.Since(t0) < 50*time.Microsecond; {
			}
			p.Unlock()
		}
	}()
	for hog.Load() < 10 {
		runtime.Gosched()
	}
	p.Lock()
	at := hog.Load()
	p.Unlock()
	stop.Store(true)
	<-done
	if at >= rounds {
		t.Fatalf("the waiter got the lock only after the other goroutine's %d rounds ended", rounds)
	}
	t.Logf("waiter got the lock after %d rounds of the other goroutine", at)
	c.Put(p)
}
