package engine

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// nullRing completes every request at once, from its own goroutine,
// without touching memory: it measures the engine, not a device.
type nullRing struct {
	h     ring.Handler
	depth int
	mu    sync.Mutex
	cond  *sync.Cond
	q     []ring.Completion
	spare []ring.Completion
	free  int
	stop  bool
	done  chan struct{}
	cq    *ring.CallerQueue
}

func newNullRing(cfg ring.Config) *nullRing {
	r := &nullRing{h: cfg.Handler, depth: cfg.InFlight, free: cfg.InFlight, done: make(chan struct{})}
	r.cond = sync.NewCond(&r.mu)
	r.cq = ring.NewCallerQueue(r.Submit, func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.depth - r.free
	}, r.depth)
	go r.loop()
	return r
}

func (r *nullRing) Run(ctx context.Context, fn func(ring.Queue)) error { return r.cq.Run(ctx, fn) }

func (r *nullRing) Submit(reqs []ring.Request) error {
	r.mu.Lock()
	for r.free < len(reqs) {
		r.cond.Wait()
	}
	r.free -= len(reqs)
	for i := range reqs {
		r.q = append(r.q, ring.Completion{Tag: reqs[i].Tag, N: reqs[i].Len()})
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	return nil
}

func (r *nullRing) loop() {
	defer close(r.done)
	r.mu.Lock()
	for {
		for len(r.q) == 0 && !r.stop {
			r.cond.Wait()
		}
		if len(r.q) == 0 {
			r.mu.Unlock()
			return
		}
		cs := r.q
		r.q = r.spare[:0]
		r.mu.Unlock()
		r.h(cs)
		// Free the slots before telling the CallerQueue: a Reap woken by
		// Delivered rechecks InFlight, and nothing wakes it again after.
		r.mu.Lock()
		r.free += len(cs)
		r.spare = cs
		r.cond.Broadcast()
		r.mu.Unlock()
		r.cq.Delivered()
		r.mu.Lock()
	}
}

func (r *nullRing) RegisterBuffers([][]byte) error { return ring.ErrNotSupported }
func (r *nullRing) Caps() ring.Caps                { return ring.Caps{Backend: "null", Depth: r.depth} }
func (r *nullRing) Close() error {
	r.mu.Lock()
	r.stop = true
	r.cond.Broadcast()
	r.mu.Unlock()
	<-r.done
	return nil
}

// BenchmarkWritePages: the engine's cost per page, over a ring that
// completes at once. Each iteration dirties n pages in runs of 16 (gaps
// of 16) and runs one SyncAll WritePages over them; ns/page and
// allocs/op (per WritePages call) are reported. Allocations must not
// grow with the number of pages.
func BenchmarkWritePages(b *testing.B) {
	for _, n := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("pages=%dKi", n>>10), func(b *testing.B) {
			const ps = 4096
			c, err := pages.New(pages.Config{PageSize: ps, Capacity: n})
			if err != nil {
				b.Fatal(err)
			}
			span := uint64(2 * n)
			e, err := Open(c, Config{
				Path:     loopdev.TempFile(b, int64(span)*ps),
				Mapper:   mapper.Linear(0, span),
				OpenRing: func(_ *ring.Target, rc ring.Config) (ring.Ring, error) { return newNullRing(rc), nil },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			var ps_ []*pages.Page
			for i := uint64(0); i < span; i += 32 {
				for j := i; j < i+16; j++ {
					p, err := c.Grab(j)
					if err != nil {
						b.Fatal(err)
					}
					p.Unlock()
					ps_ = append(ps_, p) // stay pinned: no eviction, no read-in
				}
			}
			ctx := context.Background()
			wbc := &WritebackControl{SyncMode: SyncAll}
			// One round first, so buffers that grow once are grown.
			for _, p := range ps_ {
				c.SetDirty(p)
			}
			if err := e.WritePages(ctx, wbc); err != nil {
				b.Fatal(err)
			}
			written := e.Stats().PagesWritten
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for _, p := range ps_ {
					c.SetDirty(p)
				}
				b.StartTimer()
				if err := e.WritePages(ctx, wbc); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(ps_)), "ns/page")
			if st := e.Stats(); st.PagesWritten-written != int64(b.N*len(ps_)) {
				b.Fatalf("wrote %d pages, want %d", st.PagesWritten-written, b.N*len(ps_))
			}
		})
	}
}

// firstSyncAllocs opens a fresh engine on a cache of n pages, dirties
// n pages stride apart (page i·stride), and counts the heap allocations
// of its first Sync (testing.AllocsPerRun warms up first and cannot see
// them).
func firstSyncAllocs(t testing.TB, n, stride int) (mallocs, bytes uint64) {
	const ps = 4096
	c, err := pages.New(pages.Config{PageSize: ps, Capacity: n})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(c, Config{
		Path:        loopdev.TempFile(t, int64(n*stride)*ps),
		Mapper:      mapper.Linear(0, uint64(n*stride)),
		FlushAlways: true,
		OpenRing:    func(_ *ring.Target, rc ring.Config) (ring.Ring, error) { return newNullRing(rc), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer e.Close()
	for i := range n {
		p, err := c.Grab(uint64(i * stride))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDirty(p)
		p.Unlock()
		c.Put(p)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs, after.TotalAlloc - before.TotalAlloc
}

// TestFirstSyncAllocs: the first Sync of a fresh engine allocates no more
// at 64 Ki dirty pages than at 4 Ki: per-page state is sized at Open,
// not grown by the first pass. So too for pages eight apart (as sparse
// as the reference single pattern, one in 8.5): the dirty set's pools
// are sized for that at Open.
func TestFirstSyncAllocs(t *testing.T) {
	for _, stride := range []int{1, 8} {
		m4, b4 := firstSyncAllocs(t, 4<<10, stride)
		m64, b64 := firstSyncAllocs(t, 64<<10, stride)
		t.Logf("first Sync, pages %d apart: 4 Ki pages: %d allocations, %d bytes; 64 Ki pages: %d allocations, %d bytes", stride, m4, b4, m64, b64)
		if m64 > m4+16 || b64 > b4+64<<10 {
			t.Errorf("pages %d apart: the first Sync allocates with the dirty set: %d allocations (%d bytes) at 4 Ki pages, %d (%d bytes) at 64 Ki", stride, m4, b4, m64, b64)
		}
	}
}
