package ring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// Test kit shared by this package's native, target, conformance and
// benchmark tests (prefixed tk so other backends' test files can add
// their own helpers without clashing).

// tkTimeout bounds every wait for completions: a lost wake-up hangs,
// and the test fails instead.
const tkTimeout = 5 * time.Second

// tkMmap maps n bytes of anonymous memory, page-aligned as O_DIRECT
// needs, and unmaps it when the test ends.
func tkMmap(t testing.TB, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap %d bytes: %v", n, err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// tkIov is one iovec over b.
func tkIov(b []byte) unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return v
}

// tkSink is a Handler that collects completions; wait blocks until it
// has n of them or tkTimeout passes.
type tkSink struct {
	mu   sync.Mutex
	got  []Completion
	kick chan struct{}
}

func newTKSink() *tkSink { return &tkSink{kick: make(chan struct{}, 1)} }

func (s *tkSink) handle(cs []Completion) {
	s.mu.Lock()
	s.got = append(s.got, cs...)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *tkSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// take waits for n completions and removes them from the sink.
func (s *tkSink) take(t testing.TB, n int) []Completion {
	t.Helper()
	deadline := time.NewTimer(tkTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.got) >= n {
			cs := append([]Completion(nil), s.got[:n]...)
			s.got = append(s.got[:0], s.got[n:]...)
			s.mu.Unlock()
			for i := range cs {
				cs[i].Slot = 0 // the ring's, not the test's (tkSlotSpy checks it)
			}
			return cs
		}
		have := len(s.got)
		s.mu.Unlock()
		select {
		case <-s.kick:
		case <-deadline.C:
			t.Fatalf("only %d of %d completions after %v: a lost wake-up or a stuck ring", have, n, tkTimeout)
		}
	}
}

// tkSlotSpy is an interposer that notes the slot of each request's
// attempts by tag, and a handler's check that each Completion names
// that slot (tags must be unique among requests in flight).
type tkSlotSpy struct {
	t     testing.TB
	mu    sync.Mutex
	depth int
	slots map[uint64]int
}

func (s *tkSlotSpy) Attach(depth int) { s.depth = depth }

func (s *tkSlotSpy) Issue(a *Attempt) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.Slot < 0 || a.Slot >= s.depth {
		s.t.Errorf("tag %d: attempt in slot %d, depth %d", a.Req.Tag, a.Slot, s.depth)
	}
	if prev, ok := s.slots[a.Req.Tag]; a.Seq > 0 && ok && prev != a.Slot {
		s.t.Errorf("tag %d: attempt %d in slot %d, the first in slot %d", a.Req.Tag, a.Seq, a.Slot, prev)
	}
	s.slots[a.Req.Tag] = a.Slot
}

func (s *tkSlotSpy) Done(*Attempt) {}

func (s *tkSlotSpy) check(cs []Completion) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		if want, ok := s.slots[c.Tag]; !ok || c.Slot != want {
			s.t.Errorf("completion of tag %d: Slot %d, its attempts were in slot %d (seen: %v)", c.Tag, c.Slot, want, ok)
		}
		delete(s.slots, c.Tag)
	}
}

// tkTarget is a target for a table test: a loop device with the given
// sector size (root only; the test is skipped otherwise) or, with
// sector 0, an O_DIRECT regular file.
type tkTarget struct {
	name   string
	sector int // 0: a regular file
}

var tkTargets = []tkTarget{
	{"loop4096", 4096},
	{"loop512", 512},
	{"file", 0},
}

// open makes the target (removed at cleanup) and opens it.
func (k tkTarget) open(t testing.TB, size int64) *Target {
	t.Helper()
	var path string
	if k.sector == 0 {
		path = loopdevtest.TempFile(t, size)
	} else {
		path = loopdevtest.ForTest(t, size, k.sector).Path
	}
	tg, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatalf("OpenTarget(%s): %v", path, err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// tkBackends lists the registered backends, sorted, so pwritev and
// iceber are covered wherever they are compiled in.
func tkBackends() []string {
	var names []string
	for name := range backends {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func TestConformance(t *testing.T) {
	for _, backend := range tkBackends() {
		for _, k := range tkTargets {
			t.Run(backend+"/"+k.name, func(t *testing.T) {
				conformance(t, backend, k)
			})
		}
	}
}

// conformance writes random patterns through the ring (random offsets,
// multi-iovec writes, many batches, more requests than Depth per
// round), flushes, and reads everything back through the ring and
// through a separate pread, comparing with a model of what was written.
func conformance(t *testing.T, backend string, k tkTarget) {
	const (
		size   = 8 << 20
		depth  = 8
		rounds = 4
		perRnd = 3 * depth // more than Depth: Submit must wait for slots
	)
	tg := k.open(t, size)
	blk := tg.LogicalBlockSize
	if k.sector == 0 && blk < 512 {
		blk = 512
	}
	// Work in units of 4 KiB (a page); loop512 also gets sub-page
	// pieces so 512-byte alignment is exercised.
	unit := 4096
	if blk == 512 {
		unit = 512
	}
	nunits := size / unit
	model := make([]byte, size)
	sink := newTKSink()
	spy := &tkSlotSpy{t: t, slots: map[uint64]int{}}
	r, err := Open(tg, backend, Config{Depth: depth, Interposers: []Interposer{spy},
		Handler: func(cs []Completion) { spy.check(cs); sink.handle(cs) }})
	if err != nil {
		t.Fatalf("Open(%s): %v", backend, err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if got := r.Caps().Depth; got != depth {
		t.Errorf("Caps().Depth = %d, want %d", got, depth)
	}
	rng := rand.New(rand.NewPCG(uint64(len(backend)), uint64(k.sector)))

	for round := 0; round < rounds; round++ {
		// perRnd writes of 1–16 units at distinct (non-overlapping)
		// places, each split into 1–4 iovecs whose memory is scattered.
		type wr struct {
			off int64
			iov []unix.Iovec
			mem [][]byte
		}
		taken := make([]bool, nunits)
		var writes []wr
		arena := tkMmap(t, perRnd*16*unit)
		next := 0
		for len(writes) < perRnd {
			n := 1 + rng.IntN(16)
			at := rng.IntN(nunits - n)
			free := true
			for u := at; u < at+n; u++ {
				free = free && !taken[u]
			}
			if !free {
				continue
			}
			for u := at; u < at+n; u++ {
				taken[u] = true
			}
			w := wr{off: int64(at * unit)}
			left := n
			for left > 0 {
				piece := 1 + rng.IntN(left)
				if len(w.iov) == 3 {
					piece = left
				}
				mem := arena[next*unit : (next+piece)*unit]
				next += piece
				fillRandom(rng, mem)
				w.mem = append(w.mem, mem)
				w.iov = append(w.iov, tkIov(mem))
				left -= piece
			}
			writes = append(writes, w)
		}
		for i := 0; i < len(writes); {
			batch := 1 + rng.IntN(depth)
			if i+batch > len(writes) {
				batch = len(writes) - i
			}
			reqs := make([]Request, batch)
			for j := range reqs {
				w := writes[i+j]
				reqs[j] = Request{Op: OpWrite, Off: w.off, Iov: w.iov, Tag: uint64(i + j)}
				if err := tg.CheckRequest(&reqs[j]); err != nil {
					t.Fatalf("CheckRequest of a well-formed write: %v", err)
				}
			}
			if err := r.Submit(reqs); err != nil {
				t.Fatalf("round %d: Submit: %v", round, err)
			}
			i += batch
		}
		for _, c := range sink.take(t, len(writes)) {
			w := writes[c.Tag]
			var want int64
			for _, m := range w.mem {
				want += int64(len(m))
			}
			if c.Err != 0 || c.N != want {
				t.Fatalf("round %d: write %d at %d: N=%d Err=%v, want N=%d", round, c.Tag, w.off, c.N, c.Err, want)
			}
		}
		for _, w := range writes {
			off := w.off
			for _, m := range w.mem {
				copy(model[off:], m)
				off += int64(len(m))
			}
		}
	}

	if err := r.Submit([]Request{{Op: OpFlush, Tag: 7}}); err != nil {
		t.Fatalf("Submit flush: %v", err)
	}
	if c := sink.take(t, 1)[0]; c.Err != 0 || c.Tag != 7 {
		t.Fatalf("flush: %+v", c)
	}

	// Read back through the ring: 1 MiB at a time in two iovecs.
	const chunk = 1 << 20
	back := tkMmap(t, size)
	for off := 0; off < size; off += chunk {
		half := chunk / 2
		req := Request{Op: OpRead, Off: int64(off), Tag: uint64(off),
			Iov: []unix.Iovec{tkIov(back[off : off+half]), tkIov(back[off+half : off+chunk])}}
		if err := r.Submit([]Request{req}); err != nil {
			t.Fatalf("Submit read: %v", err)
		}
	}
	for _, c := range sink.take(t, size/chunk) {
		if c.Err != 0 || c.N != chunk {
			t.Fatalf("read at %d: N=%d Err=%v", c.Tag, c.N, c.Err)
		}
	}
	tkCompare(t, "ring read", back, model)

	// And through the kernel's own path.
	f, err := os.Open(tg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	plain := make([]byte, size)
	if _, err := f.ReadAt(plain, 0); err != nil {
		t.Fatalf("pread %s: %v", tg.Path, err)
	}
	tkCompare(t, "pread", plain, model)

	// Misaligned requests never reach the ring: CheckRequest rejects them.
	odd := back[1 : 1+blk]
	for _, bad := range []Request{
		{Op: OpWrite, Off: int64(blk / 2), Iov: []unix.Iovec{tkIov(back[:blk])}},
		{Op: OpWrite, Off: 0, Iov: []unix.Iovec{tkIov(back[:blk+blk/2])}},
		{Op: OpWrite, Off: 0, Iov: []unix.Iovec{tkIov(odd)}},
	} {
		if err := tg.CheckRequest(&bad); !errors.Is(err, ErrMisaligned) {
			t.Errorf("CheckRequest(off %d, %d bytes) = %v, want ErrMisaligned", bad.Off, bad.Len(), err)
		}
	}
	past := Request{Op: OpWrite, Off: size - int64(blk), Iov: []unix.Iovec{tkIov(back[:2*blk])}}
	if err := tg.CheckRequest(&past); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("CheckRequest past the end = %v, want ErrOutOfRange", err)
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// tkCompare fails the test at the first differing block.
func tkCompare(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %d (block %d): got %#x, want %#x", what, i, i/512, got[i], want[i])
		}
	}
	t.Fatalf("%s: %s", what, fmt.Sprintf("lengths %d and %d", len(got), len(want)))
}

// checkConcurrentSubmitters has several goroutines submit batches of
// every size up to depth through the ring open makes: every request
// completes exactly once, the Handler is never entered twice at once,
// and no batch waits forever. Every backend's test calls it.
func checkConcurrentSubmitters(t *testing.T, depth int, open func(h Handler) Ring) {
	t.Helper()
	const workers, per = 4, 500
	var inside atomic.Int32
	var overlap atomic.Bool
	var mu sync.Mutex
	seen := make(map[uint64]int)
	r := open(func(cs []Completion) {
		if inside.Add(1) != 1 {
			overlap.Store(true)
		}
		mu.Lock()
		for _, c := range cs {
			seen[c.Tag]++
		}
		mu.Unlock()
		inside.Add(-1)
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; {
				n := min(1+(i+w)%depth, per-i)
				reqs := make([]Request, n)
				for j := range reqs {
					reqs[j] = Request{Op: OpNop, Tag: uint64(w*per + i + j)}
				}
				if err := r.Submit(reqs); err != nil {
					t.Error(err)
					return
				}
				i += n
			}
		}()
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if overlap.Load() {
		t.Error("Handler called concurrently")
	}
	if len(seen) != workers*per {
		t.Errorf("%d distinct tags completed, want %d", len(seen), workers*per)
	}
	for tag, n := range seen {
		if n != 1 {
			t.Errorf("tag %d completed %d times", tag, n)
		}
	}
}
