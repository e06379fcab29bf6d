package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wbengine/wbengine/internal/verify"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/powercut"
)

// hotRun is an in-process `wbbench -pattern hot -verify` over a ring
// that models a volatile write cache, cut at a random moment.
type hotRun struct {
	seed, n  uint64
	nonce    uint32
	synced   uint64 // the journal's last "synced V"
	syncs    int
	pc       *powercut.Model
	required int // pages the check required (need > 0)
	caps     ring.Caps
}

// minSynced is the least version the journal must promise before the
// cut: with fewer, too few pages are required for the check to mean much.
const minSynced = 1500

// runHot runs writers and syncs until at least three syncs succeeded
// and then cutAfter more, cuts the power, and returns what the check
// needs.
func runHot(t *testing.T, seed uint64, cutAfter time.Duration, breakOrder bool) *hotRun {
	const (
		ps      = 4096
		npages  = 2048
		writers = 4
	)
	h := &hotRun{seed: seed, n: npages, nonce: uint32(seed*2654435761 + 1)}
	path := testTarget(t, npages*ps)
	c := heapCache(t, ps, npages)
	e, err := Open(c, Config{
		Path:        path,
		Mapper:      mapper.Linear(0, npages),
		FlushAlways: true, // the model has a volatile cache, whatever the loop device says
		OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
			h.pc = powercut.New(tg.Size, nil)
			rc.Interposers = append(rc.Interposers, h.pc)
			return ring.Open(tg, "auto", rc)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if breakOrder {
		e.testBreak = breakFlushFirst
	}
	h.caps = e.RingCaps()

	var (
		next    atomic.Uint64
		locks   [npages]sync.Mutex
		cur     [npages]uint64
		doneMu  sync.Mutex
		through uint64 // every version ≤ through was written or superseded
		done    = map[uint64]bool{}
	)
	markDone := func(v uint64) {
		doneMu.Lock()
		done[v] = true
		for done[through+1] {
			delete(done, through+1)
			through++
		}
		doneMu.Unlock()
	}
	var synced, syncs atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, ps)
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := next.Add(1)
				p := verify.HotPage(seed, v, npages)
				locks[p].Lock()
				if cur[p] < v {
					verify.Encode(buf, p, v, h.nonce)
					if _, err := c.WriteAt(buf, int64(p)*ps); err != nil {
						locks[p].Unlock()
						t.Error(err)
						return
					}
					cur[p] = v
				}
				locks[p].Unlock()
				markDone(v)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			doneMu.Lock()
			v := through
			doneMu.Unlock()
			if err := e.Sync(context.Background()); err == nil {
				synced.Store(v)
				syncs.Add(1)
			} else if !errors.Is(err, ErrIO) {
				t.Errorf("Sync: %v", err)
			}
		}
	}()
	// As the crash test does: once at least three syncs succeeded (and
	// enough versions were promised that the check proves something),
	// wait a further random moment, then cut.
	deadline := time.Now().Add(60 * time.Second)
	for syncs.Load() < 3 || synced.Load() < minSynced {
		if time.Now().After(deadline) {
			t.Fatalf("only %d syncs (V=%d) in 60s", syncs.Load(), synced.Load())
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(cutAfter)
	// Cut while everything runs; the journal's last line is what was
	// synced before the cut.
	h.pc.Cut(seed)
	h.synced = synced.Load()
	close(stop)
	wg.Wait()
	h.syncs = int(syncs.Load())
	e.Close() // fails (the device is gone) but releases everything
	return h
}

// check applies the verify rule (docs/design.md) to the durable image: page p must be
// valid with a version ≥ need(p); where need(p) = 0 it may be zero.
func (h *hotRun) check(t *testing.T) (failures int) {
	const ps = 4096
	img := h.pc.Image()
	need := verify.Need(h.seed, h.synced, h.n)
	for p := uint64(0); p < h.n; p++ {
		page := img[p*ps : (p+1)*ps]
		v, err := verify.Check(page, p, h.nonce)
		switch {
		case need[p] == 0 && (err == nil || errors.Is(err, verify.ErrZero)):
		case need[p] == 0:
			t.Logf("page %d: not required, but neither zero nor valid: %v", p, err)
			failures++
		case err != nil:
			h.required++
			if failures < 5 {
				t.Logf("page %d: need version %d, found invalid page: %v", p, need[p], err)
			}
			failures++
		case v < need[p]:
			h.required++
			if failures < 5 {
				t.Logf("page %d: need version %d, found %d", p, need[p], v)
			}
			failures++
		default:
			h.required++
		}
	}
	return failures
}

// TestPowerCut: cut the power at random points of a hot run; every
// version a successful Sync promised survives.
func TestPowerCut(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := rand.New(rand.NewPCG(2026, 11))
	rounds := 5
	if *stressLong {
		rounds = 25
	}
	for round := 0; round < rounds; round++ {
		seed := r.Uint64()
		cut := time.Duration(r.IntN(300)) * time.Millisecond
		h := runHot(t, seed, cut, false)
		if h.caps.Backend == "native" && h.caps.RunPath != "owner-thread" {
			t.Fatalf("the engine's passes ran on %q, not the native ring's owner thread", h.caps.RunPath)
		}
		fails := h.check(t)
		st := h.pc.Stats()
		t.Logf("round %d: cut after %v; synced V=%d after %d syncs; %d pages required; durable writes %d, unflushed at the cut: %d lost, %d kept; %d failures",
			round, cut, h.synced, h.syncs, h.required, st.Durable, st.Lost, st.Survived, fails)
		if fails != 0 {
			t.Fatalf("round %d: %d pages broke the promise of a successful Sync", round, fails)
		}
		if h.required < 200 {
			t.Fatalf("round %d checked only %d required pages: it proved nothing", round, h.required)
		}
	}
}

// TestPowerCutCatchesBrokenOrder: with Sync broken on purpose (its flush
// submitted before the writes it should cover), the same check fails —
// the test can see the bug it exists for. The cut comes right after a
// Sync returned, before the next one's flush could cover its writes by
// luck.
func TestPowerCutCatchesBrokenOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	caught := 0
	for round := 0; round < 3; round++ {
		h := runHot(t, uint64(round+1)*977, 0, true)
		if fails := h.check(t); fails > 0 {
			caught++
			t.Logf("round %d: broken ordering caught: %d pages lost of %d required (synced V=%d)", round, fails, h.required, h.synced)
		}
	}
	if caught == 0 {
		t.Fatal("a Sync that flushes before its writes was never caught by the power-cut check")
	}
}
