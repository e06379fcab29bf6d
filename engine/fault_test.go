package engine

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/faultring"
)

// openFaulty opens an engine whose ring injects faults; *out gets the
// injector.
func openFaulty(t *testing.T, c *pages.Cache, cfg Config, out **faultring.Injector, rules ...faultring.Rule) *Engine {
	t.Helper()
	cfg.OpenRing = func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
		f, err := faultring.New(faultring.Config{Rules: rules, BlockSize: int64(c.PageSize()), Align: int64(tg.LogicalBlockSize)})
		if err != nil {
			return nil, err
		}
		*out = f
		rc.Interposers = append(rc.Interposers, f)
		return ring.Open(tg, "auto", rc)
	}
	e, err := Open(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestFaultsRandom: 1% EIO, 1% short and 1% EAGAIN writes during a long
// run of writers, background passes and syncs; then faults off and a
// final Sync: the target equals the cache, no page is left under
// writeback, and every failed Sync said so.
func TestFaultsRandom(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		ps     = 4096
		npages = 2048
	)
	path := testTarget(t, npages*ps)
	c := heapCache(t, ps, npages)
	var fw *faultring.Injector
	var recovered int
	var mu sync.Mutex
	e := openFaulty(t, c, Config{Path: path, Mapper: mapper.Linear(0, npages), QueueDepth: 16, MaxIOBytes: 64 << 10,
		OnError: func(error) { mu.Lock(); recovered++; mu.Unlock() }}, &fw,
		faultring.Rule{Kind: faultring.EIO, Fraction: 0.01, Seed: 1},
		faultring.Rule{Kind: faultring.Short, Fraction: 0.01, Seed: 2},
		faultring.Rule{Kind: faultring.EAGAIN, Fraction: 0.01, Seed: 3, Times: 2},
	)
	versions := make([]uint64, npages)
	buf := make([]byte, ps)
	r := rand.New(rand.NewPCG(9, 9))
	var syncErrs, syncOK int
	deadline := time.Now().Add(3 * time.Second)
	for round := 0; time.Now().Before(deadline); round++ {
		for k := 0; k < 200; k++ {
			i := r.Uint64N(npages)
			versions[i]++
			pageContent(buf, i, versions[i])
			if _, err := c.WriteAt(buf, int64(i)*ps); err != nil {
				t.Fatal(err)
			}
		}
		if round%3 == 0 {
			e.WritePages(context.Background(), &WritebackControl{NrToWrite: 100, RangeCyclic: true})
		}
		if err := e.Sync(context.Background()); err != nil {
			if !errors.Is(err, ErrIO) {
				t.Fatalf("Sync failed with a non-I/O error: %v", err)
			}
			syncErrs++
		} else {
			syncOK++
		}
	}
	fs := fw.Stats()
	fw.SetEnabled(false)
	if err := e.Sync(context.Background()); err != nil {
		t.Fatalf("final Sync with faults off: %v", err)
	}
	st := e.Stats()
	t.Logf("injected: %d EIO, %d short, %d EAGAIN attempts over %d requests; syncs ok %d, failed %d; engine: %d write errors, %d retries, %d errors reported to OnError",
		fs.EIO, fs.Short, fs.EAGAIN, fs.Requests, syncOK, syncErrs, st.WriteErrors, st.Retries, recovered)
	if fs.EIO == 0 || fs.Short == 0 || fs.EAGAIN == 0 {
		t.Fatalf("not every fault kind fired: %+v", fs)
	}
	if st.WriteErrors == 0 || recovered == 0 {
		t.Fatalf("the engine saw no write errors (%d) or did not report them (%d)", st.WriteErrors, recovered)
	}
	if c.NrWriteback() != 0 || c.NrDirty() != 0 || st.PagesInError != 0 {
		t.Fatalf("after the final Sync: %d under writeback, %d dirty, %d in error", c.NrWriteback(), c.NrDirty(), st.PagesInError)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, ps)
	for i := uint64(0); i < npages; i++ {
		clear(want)
		if versions[i] > 0 {
			pageContent(want, i, versions[i])
		}
		if !bytes.Equal(img[i*ps:(i+1)*ps], want) {
			t.Fatalf("page %d differs on the target after the final Sync", i)
		}
	}
}

// TestFaultsBadBlock: with a permanent EIO on one block, every Sync
// covering it fails, naming it, until the page is invalidated; the other
// pages are written; nothing is left under writeback.
func TestFaultsBadBlock(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		ps     = 4096
		npages = 256
		bad    = 100
	)
	path := testTarget(t, npages*ps)
	c := heapCache(t, ps, npages)
	var fw *faultring.Injector
	e := openFaulty(t, c, Config{Path: path, Mapper: mapper.Linear(0, npages)}, &fw,
		faultring.Rule{Kind: faultring.EIO, FirstBlock: bad, EndBlock: bad + 1})
	buf := make([]byte, ps)
	for i := uint64(0); i < npages; i++ {
		pageContent(buf, i, 1)
		c.WriteAt(buf, int64(i)*ps)
	}
	for k := 0; k < 3; k++ {
		err := e.Sync(context.Background())
		if !errors.Is(err, ErrIO) || !strings.Contains(err.Error(), "page 100 held in error") {
			t.Fatalf("Sync %d with a bad block = %v", k, err)
		}
		if err := e.SyncRange(context.Background(), bad+1, 0); err != nil {
			t.Fatalf("SyncRange not covering the bad page: %v", err)
		}
		if c.NrWriteback() != 0 {
			t.Fatalf("%d pages left under writeback", c.NrWriteback())
		}
	}
	if st := e.Stats(); st.PagesInError != 1 || c.NrDirty() != 1 {
		t.Fatalf("PagesInError %d dirty %d, want 1 and 1", st.PagesInError, c.NrDirty())
	}
	if err := e.Invalidate(context.Background(), bad, bad+1); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatalf("Sync after Invalidate: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(path)
	for i := uint64(0); i < npages; i++ {
		pageContent(buf, i, 1)
		if i == bad {
			continue
		}
		if !bytes.Equal(img[i*ps:(i+1)*ps], buf) {
			t.Fatalf("page %d (a good block) not written", i)
		}
	}
}

// TestFaultsFlush: a failed flush makes the pages it covered dirty
// again; the Sync fails with ErrFlush; the next one writes them again.
func TestFaultsFlush(t *testing.T) {
	defer goleak.VerifyNone(t)
	const ps = 4096
	path := testTarget(t, 64*ps)
	c := heapCache(t, ps, 64)
	var fw *faultring.Injector
	e := openFaulty(t, c, Config{Path: path, FlushAlways: true}, &fw, faultring.Rule{Kind: faultring.FlushErr, Nth: 1})
	defer e.Close()
	c.WriteAt(bytes.Repeat([]byte{5}, 4*ps), 0)
	err := e.Sync(context.Background())
	if !errors.Is(err, ErrFlush) || !errors.Is(err, ErrIO) {
		t.Fatalf("Sync over a failing flush = %v, want ErrFlush", err)
	}
	if c.NrDirty() != 4 {
		t.Fatalf("dirty after the failed flush = %d, want 4", c.NrDirty())
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatalf("next Sync: %v", err)
	}
	if st := e.Stats(); st.FlushErrors != 1 || st.Flushes != 1 || st.PagesWritten != 8 {
		t.Fatalf("flush errors %d flushes %d pages written %d, want 1, 1, 8", st.FlushErrors, st.Flushes, st.PagesWritten)
	}
}

// TestSlowWrite: one write held back while hundreds of later ones
// complete and their records are reused (generations run far ahead of
// the slow one). Sync still waits for it, and nothing is confused.
func TestSlowWrite(t *testing.T) {
	const ps = 4096
	path := testTarget(t, 2048*ps)
	c := heapCache(t, ps, 2048)
	var fw *faultring.Injector
	e := openFaulty(t, c, Config{Path: path, Mapper: mapper.Linear(0, 2048), QueueDepth: 4, MaxIOBytes: ps}, &fw,
		faultring.Rule{Kind: faultring.Delay, Nth: 1, Delay: 300 * time.Millisecond})
	defer e.Close()
	buf := make([]byte, ps)
	for i := uint64(0); i < 1000; i++ {
		pageContent(buf, i, 1)
		c.WriteAt(buf, int64(i)*ps)
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.PagesWritten != 1000 || c.NrWriteback() != 0 || c.NrDirty() != 0 {
		t.Fatalf("written %d, in flight %d, dirty %d", st.PagesWritten, c.NrWriteback(), c.NrDirty())
	}
	if fw.Stats().Delayed != 1 {
		t.Fatalf("the first write was not delayed: %+v", fw.Stats())
	}
}
