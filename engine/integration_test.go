package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
)

var stressLong = flag.Bool("stress.long", false, "run stress tests for longer (make stress)")

// testTarget returns a /dev/shm loop device (root) or an O_DIRECT file
// of size bytes, and says which.
func testTarget(t *testing.T, size int64) string {
	t.Helper()
	if err := loopdev.Available(); err != nil {
		t.Logf("no loop device (%v): using an O_DIRECT file", err)
		return loopdev.TempFile(t, size)
	}
	return loopdev.ForTest(t, size, 0).Path
}

// patternPages returns the page indexes of a dirty pattern over n pages
// (bench/pattern.go: seq every page; runs of 1–32 with gaps of 1–32; single
// pages with gaps of 1–14).
func patternPages(pattern string, n uint64, seed uint64) []uint64 {
	r := rand.New(rand.NewPCG(seed, 0))
	var out []uint64
	switch pattern {
	case "seq":
		for i := uint64(0); i < n; i++ {
			out = append(out, i)
		}
	case "runs":
		for i := uint64(0); i < n; {
			run := 1 + r.Uint64N(32)
			for j := uint64(0); j < run && i < n; j++ {
				out = append(out, i)
				i++
			}
			i += 1 + r.Uint64N(32)
		}
	case "single":
		for i := r.Uint64N(14); i < n; i += 2 + r.Uint64N(14) {
			out = append(out, i)
		}
	}
	return out
}

// scatter builds an extent map over n pages that puts extents of 1–64
// pages at shuffled places on a device of nblocks ≥ n blocks.
func scatter(t *testing.T, n, nblocks uint64, seed uint64) mapper.Mapper {
	r := rand.New(rand.NewPCG(seed, 1))
	var lens []uint64
	for i := uint64(0); i < n; {
		l := min(1+r.Uint64N(64), n-i)
		lens = append(lens, l)
		i += l
	}
	// Place the extents in shuffled order, with random gaps, so blocks
	// are neither in index order nor contiguous.
	order := r.Perm(len(lens))
	slack := nblocks - n
	blocks := make([]uint64, len(lens))
	pos := uint64(0)
	for _, k := range order {
		gap := uint64(0)
		if slack > 0 {
			gap = r.Uint64N(min(slack, 8) + 1)
			slack -= gap
		}
		pos += gap
		blocks[k] = pos
		pos += lens[k]
	}
	var exts []mapper.Extent
	idx := uint64(0)
	for k, l := range lens {
		exts = append(exts, mapper.Extent{Index: idx, Block: blocks[k], Len: l})
		idx += l
	}
	m, err := mapper.NewExtentMap(exts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pageContent is a page's test content: index, version, then a pattern.
func pageContent(buf []byte, idx, v uint64) {
	binary.LittleEndian.PutUint64(buf, idx)
	binary.LittleEndian.PutUint64(buf[8:], v)
	x := idx*0x9E3779B97F4A7C15 + v
	for i := 16; i+8 <= len(buf); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(buf[i:], x)
	}
}

// readBlock reads block b of the target through a separate descriptor.
func readBlock(t *testing.T, f *os.File, b uint64, ps int) []byte {
	buf := make([]byte, ps)
	if _, err := f.ReadAt(buf, int64(b)*int64(ps)); err != nil {
		t.Fatalf("read block %d: %v", b, err)
	}
	return buf
}

// TestIntegration writes seq, runs and single patterns through a Linear
// mapper, a scattering extent map and no mapper, on a real target, and
// reads every page back.
func TestIntegration(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		ps     = 4096
		npages = 4096 // 16 MiB
	)
	size := int64(2 * npages * ps)
	for _, mname := range []string{"linear", "extents", "nil"} {
		for _, pattern := range []string{"seq", "runs", "single"} {
			t.Run(mname+"/"+pattern, func(t *testing.T) {
				path := testTarget(t, size)
				c := heapCache(t, ps, npages)
				var m mapper.Mapper
				switch mname {
				case "linear":
					m = mapper.Linear(0, npages)
				case "extents":
					m = scatter(t, npages, uint64(size/ps), 42)
				}
				e, err := Open(c, Config{Path: path, Mapper: m})
				if err != nil {
					t.Fatal(err)
				}
				idxs := patternPages(pattern, npages, 7)
				buf := make([]byte, ps)
				for _, i := range idxs {
					pageContent(buf, i, 1)
					if _, err := c.WriteAt(buf, int64(i)*ps); err != nil {
						t.Fatal(err)
					}
				}
				if err := e.Sync(context.Background()); err != nil {
					t.Fatal(err)
				}
				st := e.Stats()
				if st.PagesWritten != int64(len(idxs)) {
					t.Errorf("PagesWritten = %d, want %d", st.PagesWritten, len(idxs))
				}
				if mname == "nil" && st.Writes != int64(len(idxs)) {
					t.Errorf("no mapper: %d writes for %d pages, want one each", st.Writes, len(idxs))
				}
				if mname == "linear" && pattern == "seq" && st.Writes > int64(len(idxs))/int64(e.maxPages)+1 {
					t.Errorf("seq through Linear: %d writes for %d pages at %d pages per write", st.Writes, len(idxs), e.maxPages)
				}
				t.Logf("%s/%s: %d pages in %d writes (%.1f pages/write), backend %s", mname, pattern, st.PagesWritten, st.Writes, st.PagesPerWrite, st.Backend)
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				for _, i := range idxs {
					b := i
					if m != nil {
						ext, err := m.Map(i)
						if err != nil {
							t.Fatal(err)
						}
						b = ext.BlockOf(i)
					}
					pageContent(buf, i, 1)
					if got := readBlock(t, f, b, ps); !bytes.Equal(got, buf) {
						t.Fatalf("page %d (block %d) differs on the device", i, b)
					}
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestStress: 8 writers dirty pages with WriteAt and with direct Data
// writes (which may change a page under writeback: legal, and the
// engine writes such a page again), a SyncNone flusher and periodic
// Syncs run together; after the last Sync the target equals the cache
// byte for byte. The in-flight checksum check is off in this test
// because of the direct writers.
func TestStress(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		ps     = 4096
		npages = 2048
	)
	dur := 8 * time.Second
	if *stressLong {
		dur = 20 * time.Second
	}
	path := testTarget(t, npages*ps)
	c := heapCache(t, ps, npages)
	var oneErrs atomic.Int64
	e, err := Open(c, Config{Path: path, Mapper: mapper.Linear(0, npages), QueueDepth: 8, MaxIOBytes: 64 << 10,
		OnError: func(error) { oneErrs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	e.noStableCheck = true
	// Fill every page once so direct writers find them cached.
	buf := make([]byte, ps)
	for i := uint64(0); i < npages; i++ {
		pageContent(buf, i, 0)
		c.WriteAt(buf, int64(i)*ps)
	}
	var version atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			buf := make([]byte, ps)
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := r.Uint64N(npages)
				v := version.Add(1)
				if w%2 == 0 {
					pageContent(buf, i, v)
					if _, err := c.WriteAt(buf, int64(i)*ps); err != nil {
						t.Error(err)
						return
					}
				} else {
					p := c.Lookup(i)
					p.Lock() // against other writers; not waiting for writeback
					pageContent(p.Data(), i, v)
					c.SetDirty(p)
					p.Unlock()
					c.Put(p)
				}
				writes.Add(1)
			}
		}(w)
	}
	wg.Add(2)
	var syncs, passes atomic.Int64
	var maxSync time.Duration
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			wbc := &WritebackControl{NrToWrite: 256, RangeCyclic: true}
			if err := e.WritePages(context.Background(), wbc); err != nil {
				t.Error(err)
			}
			passes.Add(1)
			if wbc.PagesWritten == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			t0 := time.Now()
			if err := e.Sync(context.Background()); err != nil {
				t.Error(err)
			}
			syncs.Add(1)
			if d := time.Since(t0); d > maxSync {
				maxSync = d
			}
		}
	}()
	time.Sleep(dur)
	close(stop)
	wg.Wait()
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	t.Logf("%d page writes by writers, %d passes, %d syncs (longest %v); engine wrote %d pages in %d writes, skipped %d",
		writes.Load(), passes.Load(), syncs.Load(), maxSync, st.PagesWritten, st.Writes, st.PagesSkipped)
	if c.NrDirty() != 0 || c.NrWriteback() != 0 {
		t.Fatalf("after the last Sync: %d dirty, %d under writeback", c.NrDirty(), c.NrWriteback())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < npages; i++ {
		p := c.Lookup(i)
		if !bytes.Equal(img[i*ps:(i+1)*ps], p.Data()) {
			t.Fatalf("page %d: the target differs from the cache (cache version %d, target version %d)",
				i, binary.LittleEndian.Uint64(p.Data()[8:]), binary.LittleEndian.Uint64(img[i*ps+8:]))
		}
		c.Put(p)
	}
	if n := oneErrs.Load(); n != 0 {
		t.Errorf("%d write errors on a healthy device", n)
	}
}
