package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

// TestThrottle: 4 writers dirty faster than the device writes, under a
// hard limit of N pages. Dirty + writeback never exceeds N by more than
// what the writers can dirty between two checks (one page each, as each
// WriteAt here is one page); writers were paced; nobody waited below
// the midpoint between the background and hard thresholds.
func TestThrottle(t *testing.T) {
	const (
		ps      = 4096
		npages  = 4096
		limit   = 256
		writers = 4
	)
	c := heapCache(t, ps, npages)
	var fr *fakeRing
	e, err := Open(c, Config{
		Path:              loopdev.TempFile(t, npages*ps),
		Mapper:            mapper.Linear(0, npages),
		DirtyBytes:        limit * ps,
		WritebackInterval: 20 * time.Millisecond,
		OpenRing:          fakeOpen(&fr, ps),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fr.mu.Lock()
	fr.delay = 200 * time.Microsecond // ~5000 writes/s: slower than the writers
	fr.mu.Unlock()
	var mu sync.Mutex
	var badWaits int
	var freerunSeen int64
	e.onThrottle = func(nr, freerun int64, pause time.Duration) {
		mu.Lock()
		freerunSeen = freerun
		if nr <= freerun {
			badWaits++
		}
		mu.Unlock()
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // sample dirty + writeback
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := e.nrDirtyWB(); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}()
	var written atomic.Int64
	var ww sync.WaitGroup
	for w := 0; w < writers; w++ {
		ww.Add(1)
		go func(w int) {
			defer ww.Done()
			buf := make([]byte, ps)
			r := rand.New(rand.NewPCG(uint64(w), 5))
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				i := r.Int64N(npages)
				binary.LittleEndian.PutUint64(buf, uint64(i))
				if _, err := c.WriteAt(buf, i*ps); err != nil {
					t.Error(err)
					return
				}
				written.Add(1)
			}
		}(w)
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	st := e.Stats()
	t.Logf("%d page writes; peak dirty+writeback %d (limit %d, freerun %d); throttled %v in %d waits; engine wrote %d pages",
		written.Load(), peak.Load(), limit, freerunSeen, st.Throttled, st.ThrottleWaits, st.PagesWritten)
	if p := peak.Load(); p > limit+writers {
		t.Errorf("dirty + writeback peaked at %d, over the limit %d by more than %d writers × 1 page", p, limit, writers)
	}
	if st.Throttled <= 0 || st.ThrottleWaits == 0 {
		t.Errorf("writers were never paced (throttled %v, %d waits)", st.Throttled, st.ThrottleWaits)
	}
	if badWaits != 0 {
		t.Errorf("%d waits happened at or below the freerun midpoint", badWaits)
	}
}

// TestThrottleFreerun: below the midpoint, writers never wait.
func TestThrottleFreerun(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 1024)
	var fr *fakeRing
	e, err := Open(c, Config{Path: loopdev.TempFile(t, 1024*ps), DirtyBytes: 512 * ps, OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fr.setHold(true) // nothing completes: dirty + writeback only grows
	buf := make([]byte, ps)
	// Freerun is (256 + 512) / 2 = 384 pages.
	for i := int64(0); i < 380; i++ {
		if _, err := c.WriteAt(buf, i*ps); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.Stats(); st.ThrottleWaits != 0 {
		t.Fatalf("%d throttle waits below the freerun midpoint", st.ThrottleWaits)
	}
	fr.setHold(false)
}

// TestBackgroundThreshold: with no explicit sync, the flusher brings the
// dirty count under the background threshold.
func TestBackgroundThreshold(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 4096)
	var fr *fakeRing
	e, err := Open(c, Config{
		Path:                 loopdev.TempFile(t, 4096*ps),
		DirtyBackgroundBytes: 100 * ps,
		WritebackInterval:    time.Hour, // only the threshold kick can start it
		OpenRing:             fakeOpen(&fr, ps),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	buf := make([]byte, ps)
	for i := int64(0); i < 3000; i++ {
		c.WriteAt(buf, i*ps)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.nrDirtyWB() > 100 {
		if time.Now().After(deadline) {
			t.Fatalf("dirty+writeback still %d after 10s, threshold 100", e.nrDirtyWB())
		}
		time.Sleep(time.Millisecond)
	}
	st := e.Stats()
	t.Logf("background: %d passes, %d pages written, %d dirty left", st.BgPasses, st.PagesWritten, st.Dirty)
	if st.BgPasses == 0 || st.Syncs != 0 {
		t.Fatalf("BgPasses %d Syncs %d: the flusher did not do the work", st.BgPasses, st.Syncs)
	}
}

// TestBackgroundExpire: a dirty page under every threshold is written
// once it has been dirty longer than the expiry.
func TestBackgroundExpire(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{
		Path:              loopdev.TempFile(t, 64*ps),
		DirtyExpire:       100 * time.Millisecond,
		WritebackInterval: 20 * time.Millisecond,
		OpenRing:          fakeOpen(&fr, ps),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c.WriteAt(bytes.Repeat([]byte{9}, ps), 7*ps)
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Expired == 0 || c.NrDirty() != 0 || c.NrWriteback() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the old dirty page was not written within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fr.mu.Lock()
	got := fr.img[7*ps]
	fr.mu.Unlock()
	if got != 9 {
		t.Fatal("expired page not on the device")
	}
}

// TestGroupCommit: 16 concurrent Syncs share a few rounds and flushes,
// and each still makes its own pages durable.
func TestGroupCommit(t *testing.T) {
	const (
		ps    = 4096
		syncs = 16
	)
	c := heapCache(t, ps, 1024)
	var fr *fakeRing
	e, err := Open(c, Config{Path: loopdev.TempFile(t, 1024*ps), FlushAlways: true, OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fr.mu.Lock()
	fr.delay = 50 * time.Microsecond
	fr.mu.Unlock()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < syncs; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(g + 1)}, ps)
			for i := 0; i < 8; i++ {
				c.WriteAt(buf, int64(g*8+i)*ps)
			}
			<-start
			if err := e.Sync(context.Background()); err != nil {
				t.Error(err)
				return
			}
			// The contract: this goroutine's pages are durable now.
			fr.mu.Lock()
			defer fr.mu.Unlock()
			for i := 0; i < 8; i++ {
				if fr.img[(g*8+i)*ps] != byte(g+1) {
					t.Errorf("sync %d returned before its page %d was written", g, g*8+i)
				}
			}
			if fr.flushFails != 0 {
				t.Error("unexpected flush failure setting")
			}
		}(g)
	}
	close(start)
	wg.Wait()
	st := e.Stats()
	t.Logf("%d syncs: %d rounds, %d joined, %d flushes", st.Syncs, st.SyncRounds, st.SyncsJoined, st.Flushes)
	if st.Flushes > 4 {
		t.Errorf("%d concurrent syncs issued %d flushes, want at most a handful (4)", syncs, st.Flushes)
	}
	if st.Syncs != syncs || st.SyncRounds+st.SyncsJoined != syncs {
		t.Errorf("syncs %d rounds %d joined %d do not add up", st.Syncs, st.SyncRounds, st.SyncsJoined)
	}
}

// TestEvictWorkingSet: a cache of 1,000 pages serves a working set of
// 10,000 (reads and writes, from several goroutines) on a real target;
// every read sees the last write, and the device ends up right. A dirty,
// pinned or in-flight page evicted would lose a write and fail the
// comparison (and the invariants build checks each eviction).
func TestEvictWorkingSet(t *testing.T) {
	const (
		ps      = 4096
		cached  = 1000
		working = 10000
		workers = 4
		ops     = 6000
	)
	path := testTarget(t, working*ps)
	c := heapCache(t, ps, cached)
	e, err := Open(c, Config{Path: path, Mapper: mapper.Linear(0, working), QueueDepth: 16})
	if err != nil {
		t.Fatal(err)
	}
	// Each worker owns the pages i ≡ w (mod workers): its model is its own.
	var wg sync.WaitGroup
	versions := make([][]uint64, workers)
	for w := 0; w < workers; w++ {
		versions[w] = make([]uint64, working)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 11))
			buf := make([]byte, ps)
			want := make([]byte, ps)
			for n := 0; n < ops; n++ {
				i := uint64(r.IntN(working/workers)*workers + w)
				if r.IntN(2) == 0 {
					versions[w][i]++
					pageContent(buf, i, versions[w][i])
					if _, err := c.WriteAt(buf, int64(i)*ps); err != nil {
						t.Errorf("write page %d: %v", i, err)
						return
					}
				} else {
					if _, err := c.ReadAt(buf, int64(i)*ps); err != nil {
						t.Errorf("read page %d: %v", i, err)
						return
					}
					if v := versions[w][i]; v == 0 {
						clear(want)
					} else {
						pageContent(want, i, v)
					}
					if !bytes.Equal(buf, want) {
						t.Errorf("page %d: read version %d, want %d", i, binary.LittleEndian.Uint64(buf[8:]), versions[w][i])
						return
					}
				}
				if n%500 == 0 {
					e.WritePages(context.Background(), &WritebackControl{NrToWrite: 128, RangeCyclic: true})
				}
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		e.Close()
		return
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	t.Logf("evictions %d, reclaims %d, read misses %d, pages written %d", st.Evictions, st.Reclaims, st.ReadMisses, st.PagesWritten)
	if st.Evictions == 0 || st.ReadMisses == 0 {
		t.Fatalf("evictions %d, read misses %d: the working set did not exceed the cache", st.Evictions, st.ReadMisses)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, ps)
	for i := uint64(0); i < working; i++ {
		v := versions[i%workers][i]
		clear(want)
		if v > 0 {
			pageContent(want, i, v)
		}
		if !bytes.Equal(img[i*ps:(i+1)*ps], want) {
			t.Fatalf("page %d on the device: version %d, want %d", i, binary.LittleEndian.Uint64(img[i*ps+8:]), v)
		}
	}
	if c.Close() != nil {
		t.Fatal("pins left in the cache after Close")
	}
	_ = pages.PageDirty
}
