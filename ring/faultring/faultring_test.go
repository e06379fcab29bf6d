package faultring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/ring"
)

const (
	ftBlock = 4096
	ftSize  = 1 << 20
)

// ftTarget is a loop device with 4 KiB sectors when root, else an
// O_DIRECT file; closed and removed at cleanup.
func ftTarget(t testing.TB) *ring.Target {
	t.Helper()
	path := ""
	if err := loopdevtest.Available(); err != nil {
		t.Logf("using an O_DIRECT file instead of a loop device: %v", err)
		path = loopdevtest.TempFile(t, ftSize)
	} else {
		path = loopdevtest.ForTest(t, ftSize, 4096).Path
	}
	tg, err := ring.OpenTarget(path, ring.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// ftOpen opens backend on tg with an Injector of rules (4 KiB rule
// blocks and alignment) as its interposer; the ring is closed at
// cleanup.
func ftOpen(t testing.TB, tg *ring.Target, backend string, cfg ring.Config, rules ...Rule) (*Injector, ring.Ring, *sink) {
	t.Helper()
	s := newSink()
	if cfg.Handler == nil {
		cfg.Handler = s.handle
	}
	f, err := New(Config{Rules: rules, BlockSize: ftBlock, Align: ftBlock, MaxRetries: cfg.MaxRetries})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Interposers = []ring.Interposer{f}
	r, err := ring.Open(tg, backend, cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", backend, err)
	}
	t.Cleanup(func() { r.Close() })
	return f, r, s
}

// sink is a Handler that collects completions.
type sink struct {
	mu   sync.Mutex
	got  []ring.Completion
	kick chan struct{}
}

func newSink() *sink { return &sink{kick: make(chan struct{}, 1)} }

func (s *sink) handle(cs []ring.Completion) {
	s.mu.Lock()
	s.got = append(s.got, cs...)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// take waits for n completions (5 s at most) and removes them.
func (s *sink) take(t testing.TB, n int) []ring.Completion {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.got) >= n {
			out := append([]ring.Completion(nil), s.got[:n]...)
			s.got = s.got[n:]
			s.mu.Unlock()
			return out
		}
		have := len(s.got)
		s.mu.Unlock()
		select {
		case <-s.kick:
		case <-deadline.C:
			t.Fatalf("only %d of %d completions after 5s", have, n)
		}
	}
}

// mmapMem maps n bytes of page-aligned memory, unmapped at cleanup.
func mmapMem(t testing.TB, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// ftReq describes a test request: op on blocks [block, block+n) in
// pieces iovecs of scattered memory filled with the byte tag+1.
// A write's bytes [0, wantN) must reach the target, and no more.
type ftReq struct {
	op       ring.Op
	block, n int
	pieces   int
	tag      uint64
	wantN    int
	wantErr  syscall.Errno
}

// request builds the Request and returns the memory its iovecs cover,
// in order.
func (q ftReq) request(t testing.TB) (ring.Request, [][]byte) {
	r := ring.Request{Op: q.op, Tag: q.tag, Off: int64(q.block * ftBlock)}
	if q.op != ring.OpWrite && q.op != ring.OpRead {
		return r, nil
	}
	var mems [][]byte
	pieces := max(q.pieces, 1)
	left := q.n
	for i := range pieces {
		blocks := left / (pieces - i)
		mem := mmapMem(t, (blocks+1)*ftBlock)[ftBlock:] // scattered: skip a page
		for j := range mem {
			mem[j] = byte(q.tag + 1)
		}
		r.Iov = append(r.Iov, ring.IovecOf(mem))
		mems = append(mems, mem)
		left -= blocks
	}
	return r, mems
}

// readFile reads n bytes at off of the target through the kernel's own
// path (no O_DIRECT).
func readFile(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("pread %s at %d: %v", path, off, err)
	}
	return b
}

// TestKinds: each kind of fault, over the pwritev pool and over the
// native ring's owner-thread path (Run), does what its doc says to the
// completions, to what reaches the target, and to the counts.
func TestKinds(t *testing.T) {
	for _, backend := range []string{"pwritev", "native"} {
		t.Run(backend, func(t *testing.T) { testKinds(t, backend) })
	}
}

func testKinds(t *testing.T, backend string) {
	for _, tc := range []struct {
		name       string
		rules      []Rule
		spec       string // parsed with Parse when set
		maxRetries int
		reqs       []ftReq
		want       Stats
	}{
		{
			name:  "eio on the second write",
			rules: []Rule{{Kind: EIO, Nth: 2}},
			reqs: []ftReq{
				{op: ring.OpWrite, block: 0, n: 2, tag: 0, wantN: 2 * ftBlock},
				{op: ring.OpWrite, block: 2, n: 2, tag: 1, wantErr: unix.EIO},
				{op: ring.OpWrite, block: 4, n: 2, tag: 2, wantN: 2 * ftBlock},
			},
			want: Stats{Requests: 3, EIO: 1},
		},
		{
			name:  "eio after a partial write",
			rules: []Rule{{Kind: PartialEIO}},
			reqs: []ftReq{
				// Half of 8 blocks, written; the test checks the other
				// half is not.
				{op: ring.OpWrite, block: 8, n: 8, pieces: 3, tag: 0, wantN: 4 * ftBlock, wantErr: unix.EIO},
			},
			want: Stats{Requests: 1, PartialEIO: 1},
		},
		{
			name:  "eio-partial of one block fails whole",
			rules: []Rule{{Kind: PartialEIO}},
			reqs:  []ftReq{{op: ring.OpWrite, block: 1, n: 1, tag: 0, wantErr: unix.EIO}},
			want:  Stats{Requests: 1, EIO: 1},
		},
		{
			name:  "short write resumed",
			rules: []Rule{{Kind: Short, Fraction: 1}},
			reqs: []ftReq{
				{op: ring.OpWrite, block: 3, n: 7, pieces: 3, tag: 0, wantN: 7 * ftBlock},
				{op: ring.OpWrite, block: 20, n: 1, tag: 1, wantN: ftBlock}, // one block: not split
			},
			want: Stats{Requests: 2, Short: 1, Resumed: 1},
		},
		{
			name:  "short read resumed",
			rules: []Rule{{Kind: Short, Ops: OpSetOf(ring.OpRead)}},
			reqs: []ftReq{
				{op: ring.OpWrite, block: 0, n: 4, tag: 0, wantN: 4 * ftBlock},
				{op: ring.OpRead, block: 0, n: 4, pieces: 2, tag: 1, wantN: 4 * ftBlock},
			},
			want: Stats{Requests: 2, Short: 1, Resumed: 1},
		},
		{
			name:  "eagain under the cap is invisible",
			rules: []Rule{{Kind: EAGAIN, Times: 3}},
			reqs:  []ftReq{{op: ring.OpWrite, block: 0, n: 2, tag: 0, wantN: 2 * ftBlock}},
			want:  Stats{Requests: 1, EAGAIN: 3},
		},
		{
			name: "eagain past the default cap surfaces",
			spec: "eagain=1x9",
			reqs: []ftReq{{op: ring.OpWrite, block: 0, n: 2, tag: 0, wantErr: unix.EAGAIN}},
			want: Stats{Requests: 1, EAGAIN: 9, EAGAINSurfaced: 1},
		},
		{
			name:       "eagain past a small cap surfaces",
			rules:      []Rule{{Kind: EAGAIN, Times: 3}},
			maxRetries: 2,
			reqs:       []ftReq{{op: ring.OpWrite, block: 0, n: 2, tag: 0, wantErr: unix.EAGAIN}},
			want:       Stats{Requests: 1, EAGAIN: 3, EAGAINSurfaced: 1},
		},
		{
			name: "flush error",
			spec: "flusherr=1",
			reqs: []ftReq{
				{op: ring.OpWrite, block: 0, n: 1, tag: 0, wantN: ftBlock},
				{op: ring.OpFlush, tag: 1, wantErr: unix.EIO},
				{op: ring.OpNop, tag: 2},
			},
			want: Stats{Requests: 3, FlushErr: 1},
		},
		{
			name: "bad blocks",
			spec: "badblock=3-4",
			reqs: []ftReq{
				{op: ring.OpWrite, block: 0, n: 3, tag: 0, wantN: 3 * ftBlock},
				{op: ring.OpWrite, block: 2, n: 2, tag: 1, wantErr: unix.EIO},
				{op: ring.OpWrite, block: 4, n: 1, tag: 2, wantErr: unix.EIO},
				{op: ring.OpWrite, block: 5, n: 3, tag: 3, wantN: 3 * ftBlock},
				{op: ring.OpRead, block: 3, n: 1, tag: 4, wantN: ftBlock},
				{op: ring.OpFlush, tag: 5},
			},
			want: Stats{Requests: 6, EIO: 2},
		},
		{
			name: "eio on the first read only",
			spec: "eio:read=#1",
			reqs: []ftReq{
				{op: ring.OpWrite, block: 0, n: 1, tag: 0, wantN: ftBlock},
				{op: ring.OpRead, block: 0, n: 1, tag: 1, wantErr: unix.EIO},
				{op: ring.OpRead, block: 0, n: 1, tag: 2, wantN: ftBlock},
			},
			want: Stats{Requests: 3, EIO: 1},
		},
		{
			name: "first firing rule decides",
			rules: []Rule{
				{Kind: Short},
				{Kind: EIO},
			},
			reqs: []ftReq{{op: ring.OpWrite, block: 0, n: 4, tag: 0, wantN: 4 * ftBlock}},
			want: Stats{Requests: 1, Short: 1, Resumed: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			rules := tc.rules
			if tc.spec != "" {
				var err error
				if rules, err = Parse(tc.spec); err != nil {
					t.Fatal(err)
				}
			}
			tg := ftTarget(t)
			f, r, sink := ftOpen(t, tg, backend, ring.Config{Depth: 8, MaxRetries: tc.maxRetries}, rules...)
			// One request at a time, so "Nth" and the model are in
			// request order; through Run, the engine's path.
			var mems [][][]byte
			for _, q := range tc.reqs {
				req, mem := q.request(t)
				mems = append(mems, mem)
				if err := r.Run(context.Background(), func(rq ring.Queue) { rq.Add(&req); rq.Flush() }); err != nil {
					t.Fatalf("Run tag %d: %v", q.tag, err)
				}
				c := sink.take(t, 1)[0]
				want := ring.Completion{Tag: q.tag, N: int64(q.wantN), Err: q.wantErr, Slot: c.Slot} // the slot is the ring's choice
				if c != want {
					t.Errorf("tag %d (%s of %d blocks at %d): got %+v, want %+v", q.tag, q.op, q.n, q.block, c, want)
				}
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if got := f.Stats(); got != tc.want {
				t.Errorf("Stats() = %+v\nwant      %+v", got, tc.want)
			}
			// What reached the target: each write's bytes [0, N), and
			// nothing past N.
			for i, q := range tc.reqs {
				if q.op != ring.OpWrite {
					continue
				}
				disk := readFile(t, tg.Path, int64(q.block*ftBlock), q.n*ftBlock)
				n := q.wantN
				want := bytes.Repeat([]byte{byte(q.tag + 1)}, n)
				if !bytes.Equal(disk[:n], want) {
					t.Errorf("tag %d: bytes [0, %d) not on the target", q.tag, n)
				}
				if rest := disk[n:]; bytes.Count(rest, []byte{0}) != len(rest) && !laterWriteCovers(tc.reqs, i) {
					t.Errorf("tag %d: bytes past %d reached the target", q.tag, n)
				}
			}
			// Reads got the data on the target.
			for i, q := range tc.reqs {
				if q.op != ring.OpRead || q.wantErr != 0 {
					continue
				}
				disk := readFile(t, tg.Path, int64(q.block*ftBlock), q.n*ftBlock)
				if !bytes.Equal(bytes.Join(mems[i], nil), disk) {
					t.Errorf("tag %d: read different data than the target holds", q.tag)
				}
			}
		})
	}
}

// laterWriteCovers reports whether a successful write other than reqs[i]
// overlaps it (so its blocks are not all zero for a good reason).
func laterWriteCovers(reqs []ftReq, i int) bool {
	a := reqs[i]
	for j, b := range reqs {
		if j != i && b.op == ring.OpWrite && b.wantErr == 0 && b.block < a.block+a.n && a.block < b.block+b.n {
			return true
		}
	}
	return false
}

// TestDelay: a delayed result arrives no earlier than the delay, others
// pass it, and Close waits for it; on both paths.
func TestDelay(t *testing.T) {
	for _, backend := range []string{"pwritev", "native"} {
		t.Run(backend, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			const d = 40 * time.Millisecond
			tg := ftTarget(t)
			f, r, s := ftOpen(t, tg, backend, ring.Config{Depth: 4}, Rule{Kind: Delay, Delay: d, Ops: OpSetOf(ring.OpWrite)})
			w, _ := ftReq{op: ring.OpWrite, block: 0, n: 1, tag: 1}.request(t)
			start := time.Now()
			if err := r.Submit([]ring.Request{w, {Op: ring.OpNop, Tag: 2}}); err != nil {
				t.Fatal(err)
			}
			c := s.take(t, 1)[0]
			if c.Tag != 2 {
				t.Errorf("first completion %+v, want the NOP (not delayed)", c)
			}
			c = s.take(t, 1)[0]
			if el := time.Since(start); c.Tag != 1 || el < d {
				t.Errorf("write completed after %v (%+v), want tag 1 after at least %v", el, c, d)
			}
			if err := r.Run(context.Background(), func(q ring.Queue) { q.Add(&w) }); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el < d/2 || s.count() != 1 {
				t.Errorf("Close returned after %v with %d completions: it must wait for the held one", el, s.count())
			}
			if got := f.Stats().Delayed; got != 2 {
				t.Errorf("Stats().Delayed = %d, want 2", got)
			}
		})
	}
}

// failures runs n NOPs through a fresh ring with rules and returns the
// tags that failed.
func failures(t *testing.T, tg *ring.Target, n int, rules []Rule) map[uint64]bool {
	t.Helper()
	// The native ring issues attempts in submission order, so the same
	// seed draws for the same requests (the pool's workers race).
	_, r, s := ftOpen(t, tg, "native", ring.Config{Depth: 8}, rules...)
	for i := 0; i < n; i += 8 {
		reqs := make([]ring.Request, 8)
		for j := range reqs {
			reqs[j] = ring.Request{Op: ring.OpNop, Tag: uint64(i + j)}
		}
		if err := r.Submit(reqs); err != nil {
			t.Fatal(err)
		}
	}
	failed := make(map[uint64]bool)
	for _, c := range s.take(t, n) {
		if c.Err != 0 {
			failed[c.Tag] = true
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return failed
}

// TestFractionSeeded: fractions follow the seed: the same seed fails the
// same requests.
func TestFractionSeeded(t *testing.T) {
	defer goleak.VerifyNone(t)
	tg := ftTarget(t)
	rules := func(seed uint64) []Rule {
		r, err := Parse(fmt.Sprintf("eio:nop=0.25,seed=%d", seed))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const n = 400
	a, b, c := failures(t, tg, n, rules(7)), failures(t, tg, n, rules(7)), failures(t, tg, n, rules(8))
	if len(a) < n/8 || len(a) > n*3/8 {
		t.Errorf("%d of %d failed at fraction 0.25", len(a), n)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("the same seed failed different requests")
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Error("different seeds failed the same requests")
	}
}

func TestSetEnabledAndClear(t *testing.T) {
	defer goleak.VerifyNone(t)
	tg := ftTarget(t)
	f, r, s := ftOpen(t, tg, "native", ring.Config{Depth: 2}, Rule{Kind: EIO, Ops: OpSetOf(ring.OpNop)})
	check := func(what string, want syscall.Errno) {
		t.Helper()
		if err := r.Submit([]ring.Request{{Op: ring.OpNop}}); err != nil {
			t.Fatal(err)
		}
		if c := s.take(t, 1)[0]; c.Err != want {
			t.Errorf("%s: Err = %v, want %v", what, c.Err, want)
		}
	}
	check("enabled", unix.EIO)
	f.SetEnabled(false)
	if f.Enabled() {
		t.Error("Enabled() after SetEnabled(false)")
	}
	check("disabled", 0)
	f.SetEnabled(true)
	check("enabled again", unix.EIO)
	f.Clear()
	check("cleared", 0)
	if err := f.SetRules([]Rule{{Kind: FlushErr, Fraction: 2}}); !errors.Is(err, ring.ErrBadConfig) {
		t.Errorf("SetRules with fraction 2 = %v, want ErrBadConfig", err)
	}
	if st := f.Stats(); st.EIO != 2 || st.Requests != 4 {
		t.Errorf("Stats() = %+v, want 2 EIO of 4 requests", st)
	}
	r.Close()
}

// TestStress: every fault at once, many submitters and a Run caller, over
// each backend: every request completes exactly once, the Handler is
// never entered twice at once, completions are consistent (N < length
// only with an error), and Close leaves no goroutine behind.
func TestStress(t *testing.T) {
	for _, backend := range []string{"pwritev", "native"} {
		t.Run(backend, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			const depth, workers, per = 8, 4, 300
			rules, err := Parse("eio=0.05,eio-partial=0.05,short=0.1,eagain=0.05x3,eagain=0.01x20,delay=1ms@0.05,flusherr=0.2,badblock=200-201,seed=3")
			if err != nil {
				t.Fatal(err)
			}
			tg := ftTarget(t)
			var inside atomic.Int32
			var overlap atomic.Bool
			var mu sync.Mutex
			got := make(map[uint64]ring.Completion)
			dup := 0
			f, r, _ := ftOpen(t, tg, backend, ring.Config{Depth: depth, Handler: func(cs []ring.Completion) {
				if inside.Add(1) != 1 {
					overlap.Store(true)
				}
				mu.Lock()
				for _, c := range cs {
					if _, ok := got[c.Tag]; ok {
						dup++
					}
					got[c.Tag] = c
				}
				mu.Unlock()
				inside.Add(-1)
			}}, rules...)
			// Each worker writes its own quarter of the target; worker 0
			// goes through Run, the others through Submit.
			lens := make(map[uint64]int64)
			var lmu sync.Mutex
			var wg sync.WaitGroup
			for w := range workers {
				mem := mmapMem(t, 64*ftBlock)
				wg.Add(1)
				go func() {
					defer wg.Done()
					base := w * (ftSize / ftBlock / workers)
					for i := 0; i < per; {
						n := min(1+(i+w)%depth, per-i)
						reqs := make([]ring.Request, n)
						for j := range reqs {
							tag := uint64(w*per + i + j)
							switch tag % 7 {
							case 0:
								reqs[j] = ring.Request{Op: ring.OpFlush, Tag: tag}
							case 1:
								reqs[j] = ring.Request{Op: ring.OpNop, Tag: tag}
							default:
								blocks := 1 + int(tag%8)
								at := base + int(tag*5)%(ftSize/ftBlock/workers-8)
								reqs[j] = ring.Request{Op: ring.OpWrite, Tag: tag, Off: int64(at * ftBlock),
									Iov: []ring.Iovec{ring.IovecOf(mem[:ftBlock]), ring.IovecOf(mem[8*ftBlock : (8+blocks-1)*ftBlock+ftBlock])}}
								if blocks == 1 {
									reqs[j].Iov = reqs[j].Iov[:1]
								}
							}
							lmu.Lock()
							lens[tag] = reqs[j].Len()
							if reqs[j].Op != ring.OpWrite {
								lens[tag] = 0
							}
							lmu.Unlock()
						}
						var err error
						if w == 0 {
							err = r.Run(context.Background(), func(q ring.Queue) {
								for j := range reqs {
									q.Add(&reqs[j])
								}
								q.Wait()
							})
						} else {
							err = r.Submit(reqs)
						}
						if err != nil {
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
			if dup != 0 || len(got) != workers*per {
				t.Errorf("%d completions for %d requests (%d duplicates)", len(got), workers*per, dup)
			}
			var failed int
			for tag, c := range got {
				if c.Err == 0 && c.N != lens[tag] || c.Err != 0 && c.N >= lens[tag] && lens[tag] > 0 {
					t.Errorf("tag %d: %+v for %d bytes", tag, c, lens[tag])
				}
				if c.Err != 0 {
					failed++
				}
			}
			st := f.Stats()
			t.Logf("%d of %d failed; stats %+v", failed, len(got), st)
			if st.EIO == 0 || st.PartialEIO == 0 || st.Short == 0 || st.EAGAIN == 0 || st.Delayed == 0 || st.FlushErr == 0 || st.Resumed == 0 {
				t.Errorf("some fault never fired: %+v", st)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []Rule
	}{
		{"", nil},
		{"  ", nil},
		{"eio=0.01", []Rule{{Kind: EIO, Fraction: 0.01}}},
		{
			"eio=0.01,short=0.01,eagain=0.01,delay=5ms@0.001,flusherr=0.1,badblock=4096-4100,seed=7",
			[]Rule{
				{Kind: EIO, Fraction: 0.01, Seed: 7},
				{Kind: Short, Fraction: 0.01, Seed: 7},
				{Kind: EAGAIN, Fraction: 0.01, Times: 1, Seed: 7},
				{Kind: Delay, Delay: 5 * time.Millisecond, Fraction: 0.001, Seed: 7},
				{Kind: FlushErr, Fraction: 0.1, Seed: 7},
				{Kind: EIO, FirstBlock: 4096, EndBlock: 4101, Seed: 7},
			},
		},
		{"badblock=100", []Rule{{Kind: EIO, FirstBlock: 100, EndBlock: 101}}},
		{"eio-partial=#3", []Rule{{Kind: PartialEIO, Nth: 3}}},
		{"eagain=1x9", []Rule{{Kind: EAGAIN, Fraction: 1, Times: 9}}},
		{"eagain=#2x4", []Rule{{Kind: EAGAIN, Nth: 2, Times: 4}}},
		{"delay=1s", []Rule{{Kind: Delay, Delay: time.Second, Fraction: 1}}},
		{"delay:flush=2ms@#5", []Rule{{Kind: Delay, Ops: OpSetOf(ring.OpFlush), Delay: 2 * time.Millisecond, Nth: 5}}},
		{" eio:read+write = 0.5 , seed = 1 ", []Rule{{Kind: EIO, Ops: OpSetOf(ring.OpRead, ring.OpWrite), Fraction: 0.5, Seed: 1}}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := Parse(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.spec, got, tc.want)
			}
			for _, r := range got {
				if err := r.validate(); err != nil {
					t.Errorf("parsed rule %+v does not validate: %v", r, err)
				}
			}
		})
	}
	for _, tc := range []struct{ spec, bad string }{
		{"eio", `"eio"`},
		{"eio=2", `"eio=2"`},
		{"eio=0", `"eio=0"`},
		{"eio=-0.1", `"eio=-0.1"`},
		{"eio=abc", `"eio=abc"`},
		{"eio=#0", `"eio=#0"`},
		{"boom=0.1", `"boom=0.1"`},
		{"eio:sideways=0.1", `"eio:sideways=0.1"`},
		{"delay=fast", `"delay=fast"`},
		{"delay=-5ms", `"delay=-5ms"`},
		{"delay=5ms@2", `"delay=5ms@2"`},
		{"eagain=0.1x0", `"eagain=0.1x0"`},
		{"badblock=9-3", `"badblock=9-3"`},
		{"badblock=x", `"badblock=x"`},
		{"badblock:read=1", `"badblock:read=1"`},
		{"seed=1,seed=2", `"seed=2"`},
		{"seed=-1", `"seed=-1"`},
		{"eio=0.1,,short=0.1", "empty item"},
	} {
		t.Run("bad/"+tc.spec, func(t *testing.T) {
			_, err := Parse(tc.spec)
			if !errors.Is(err, ring.ErrBadConfig) {
				t.Fatalf("Parse(%q) = %v, want ring.ErrBadConfig", tc.spec, err)
			}
			if !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("error %q does not name %s", err, tc.bad)
			}
		})
	}
}

func TestRuleValidate(t *testing.T) {
	for _, r := range []Rule{
		{},
		{Kind: 42},
		{Kind: EIO, Fraction: 1.5},
		{Kind: EIO, FirstBlock: 5, EndBlock: 5},
		{Kind: EAGAIN, Times: -1},
		{Kind: Delay},
		{Kind: EIO, Ops: 1},
	} {
		if err := r.validate(); !errors.Is(err, ring.ErrBadConfig) {
			t.Errorf("validate(%+v) = %v, want ring.ErrBadConfig", r, err)
		}
	}
	if _, err := New(Config{Rules: []Rule{{Kind: Delay}}}); !errors.Is(err, ring.ErrBadConfig) {
		t.Errorf("New with a bad rule = %v, want ring.ErrBadConfig", err)
	}
}
