package engine

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/pages"
)

// BenchmarkReadDuringFlush: how long a cache miss waits for its read
// while the engine flushes 2 GiB. The pass runs on the ring's owner
// thread; a read (ReadPages) goes out at that thread's next
// io_uring_enter, so it waits for at most one batch of the pass, not for
// the flush. One reader reads random uncached pages one at a time (QD 1,
// as a B-tree lookup would) from a 64 MiB region the flush does not
// touch: first with the engine idle (the anchor), then while a Sync of
// 2 GiB of dirty pages (pattern seq: 1 MiB writes; single: isolated
// pages) runs. Reported: read latency p50/p99/max in µs, idle and during
// the flush, the reads done during it, and the flush's GB/s.
//
// Needs root and loop devices (a 2 GiB + 64 MiB /dev/shm loop device);
// run it alone: go test -run '^$' -bench ReadDuringFlush -benchtime 3x ./engine
func BenchmarkReadDuringFlush(b *testing.B) {
	if err := loopdev.Available(); err != nil {
		b.Skipf("skipping: needs a loop device (%v)", err)
	}
	for _, pattern := range []string{"seq", "single"} {
		b.Run("pattern="+pattern, func(b *testing.B) { benchReadDuringFlush(b, pattern) })
	}
}

func benchReadDuringFlush(b *testing.B, pattern string) {
	const (
		ps        = 4096
		flushSize = 2 << 30
		readSize  = 64 << 20
	)
	nFlush := uint64(flushSize / ps)
	nRead := uint64(readSize / ps)
	dev := loopdev.ForTest(b, flushSize+readSize, 0)
	c, err := pages.New(pages.Config{PageSize: ps, Capacity: int(nFlush + nRead)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	e, err := Open(c, Config{Path: dev.Path})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	buf := make([]byte, ps)
	dirty := patternPages(pattern, nFlush, 1)
	dirtyAll := func(v byte) {
		for i := range buf {
			buf[i] = v
		}
		for _, idx := range dirty {
			if _, err := c.WriteAt(buf, int64(idx)*ps); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Warm the device: one full write of the whole flush range and the
	// read region (a fresh /dev/shm page costs its first write).
	for i := range buf {
		buf[i] = 1
	}
	for idx := uint64(0); idx < nFlush+nRead; idx++ {
		if _, err := c.WriteAt(buf, int64(idx)*ps); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	drop := func(idx uint64) {
		if p := c.Lookup(idx); p != nil {
			p.Lock()
			c.Remove(p)
			p.Unlock()
			c.Put(p)
		}
	}
	for idx := nFlush; idx < nFlush+nRead; idx++ {
		drop(idx)
	}
	rng := rand.New(rand.NewPCG(2, 0))
	// readOne reads one page of the read region that is not cached (it is
	// dropped again after, so the region never runs out of misses).
	readOne := func(h *hdr.Histogram) {
		idx := nFlush + rng.Uint64N(nRead)
		drop(idx)
		t0 := time.Now()
		if _, err := c.ReadAt(buf, int64(idx)*ps); err != nil {
			b.Fatal(err)
		}
		h.RecordValue(time.Since(t0).Nanoseconds())
		drop(idx)
	}
	newH := func() *hdr.Histogram { return hdr.New(1, int64(10*time.Second), 3) }
	idle, during := newH(), newH()
	var flushNs int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range 2000 {
			readOne(idle)
		}
		dirtyAll(byte(2 + i))
		done := make(chan error, 1)
		t0 := time.Now()
		go func() { done <- e.Sync(ctx) }()
	loop:
		for {
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				break loop
			default:
				readOne(during)
			}
		}
		flushNs += time.Since(t0).Nanoseconds()
	}
	b.StopTimer()
	us := func(h *hdr.Histogram, q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1e3 }
	b.ReportMetric(us(idle, 50), "idle-p50-µs")
	b.ReportMetric(us(idle, 99), "idle-p99-µs")
	b.ReportMetric(us(during, 50), "flush-p50-µs")
	b.ReportMetric(us(during, 99), "flush-p99-µs")
	b.ReportMetric(float64(during.Max())/1e3, "flush-max-µs")
	b.ReportMetric(float64(during.TotalCount())/float64(b.N), "reads/flush")
	b.ReportMetric(float64(len(dirty))*ps*float64(b.N)/float64(flushNs), "flush-GB/s")
	if during.TotalCount() == 0 {
		b.Fatal("no read completed while the flush ran")
	}
	b.Logf("%s: %d dirty pages; reads idle: %d, p50 %.1f µs, p99 %.1f µs; during the flush: %d, p50 %.1f µs, p99 %.1f µs, max %.1f µs",
		pattern, len(dirty), idle.TotalCount(), us(idle, 50), us(idle, 99), during.TotalCount(), us(during, 50), us(during, 99), float64(during.Max())/1e3)
}
