//go:build linux

package ring

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev"
)

const (
	ftBlock = 4096
	ftSize  = 1 << 20
)

// ftTarget is a loop device with 4 KiB sectors when root, else an
// O_DIRECT file; removed at cleanup.
func ftTarget(t testing.TB) *Target {
	t.Helper()
	if err := loopdev.Available(); err != nil {
		t.Logf("using an O_DIRECT file instead of a loop device: %v", err)
		return tkFileTarget(t, ftSize)
	}
	return tkTarget{name: "loop4096", sector: 4096}.open(t, ftSize)
}

// ftOpen wraps a backend on tg in a Faulty ring with 4 KiB rule blocks
// and 4 KiB alignment; it is closed at cleanup.
func ftOpen(t testing.TB, tg *Target, backend string, cfg Config, rules ...FaultRule) (*Faulty, *tkSink) {
	t.Helper()
	sink := newTKSink()
	if cfg.Handler == nil {
		cfg.Handler = sink.handle
	}
	f, err := OpenFaulty(tg, backend, cfg, FaultConfig{Rules: rules, BlockSize: ftBlock, Align: ftBlock})
	if err != nil {
		t.Fatalf("OpenFaulty(%s): %v", backend, err)
	}
	t.Cleanup(func() { f.Close() })
	return f, sink
}

// ftReq describes a test request: op on blocks [block, block+n) in
// pieces iovecs of scattered memory filled with the byte tag+1.
// A write's bytes [0, wantN) must reach the target, and no more.
type ftReq struct {
	op       Op
	block, n int
	pieces   int
	tag      uint64
	wantN    int
	wantErr  syscall.Errno
}

// request builds the Request and returns the memory its iovecs cover,
// in order.
func (q ftReq) request(t testing.TB) (Request, [][]byte) {
	r := Request{Op: q.op, Tag: q.tag, Off: int64(q.block * ftBlock)}
	if q.op != OpWrite && q.op != OpRead {
		return r, nil
	}
	var mems [][]byte
	pieces := max(q.pieces, 1)
	left := q.n
	for i := range pieces {
		blocks := left / (pieces - i)
		mem := tkMmap(t, (blocks+1)*ftBlock)[ftBlock:] // scattered: skip a page
		for j := range mem {
			mem[j] = byte(q.tag + 1)
		}
		r.Iov = append(r.Iov, tkIov(mem))
		mems = append(mems, mem)
		left -= blocks
	}
	return r, mems
}

func TestFaultyKinds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rules      []FaultRule
		spec       string // parsed with ParseFaultRules when set
		maxRetries int
		reqs       []ftReq
		want       FaultStats
	}{
		{
			name:  "eio on the second write",
			rules: []FaultRule{{Kind: FaultEIO, Nth: 2}},
			reqs: []ftReq{
				{op: OpWrite, block: 0, n: 2, tag: 0, wantN: 2 * ftBlock},
				{op: OpWrite, block: 2, n: 2, tag: 1, wantErr: unix.EIO},
				{op: OpWrite, block: 4, n: 2, tag: 2, wantN: 2 * ftBlock},
			},
			want: FaultStats{Requests: 3, EIO: 1},
		},
		{
			name:  "eio after a partial write",
			rules: []FaultRule{{Kind: FaultPartialEIO}},
			reqs: []ftReq{
				// Half of 8 blocks, written; the test checks the other
				// half is not.
				{op: OpWrite, block: 8, n: 8, pieces: 3, tag: 0, wantN: 4 * ftBlock, wantErr: unix.EIO},
			},
			want: FaultStats{Requests: 1, PartialEIO: 1},
		},
		{
			name:  "eio-partial of one block fails whole",
			rules: []FaultRule{{Kind: FaultPartialEIO}},
			reqs:  []ftReq{{op: OpWrite, block: 1, n: 1, tag: 0, wantErr: unix.EIO}},
			want:  FaultStats{Requests: 1, EIO: 1},
		},
		{
			name:  "short write resumed",
			rules: []FaultRule{{Kind: FaultShort, Fraction: 1}},
			reqs: []ftReq{
				{op: OpWrite, block: 3, n: 7, pieces: 3, tag: 0, wantN: 7 * ftBlock},
				{op: OpWrite, block: 20, n: 1, tag: 1, wantN: ftBlock}, // one block: not split
			},
			want: FaultStats{Requests: 2, Short: 1, Resumed: 1},
		},
		{
			name:  "short read resumed",
			rules: []FaultRule{{Kind: FaultShort, Ops: OpSetOf(OpRead)}},
			reqs: []ftReq{
				{op: OpWrite, block: 0, n: 4, tag: 0, wantN: 4 * ftBlock},
				{op: OpRead, block: 0, n: 4, pieces: 2, tag: 1, wantN: 4 * ftBlock},
			},
			want: FaultStats{Requests: 2, Short: 1, Resumed: 1},
		},
		{
			name:  "eagain under the cap is invisible",
			rules: []FaultRule{{Kind: FaultEAGAIN, Times: 3}},
			reqs:  []ftReq{{op: OpWrite, block: 0, n: 2, tag: 0, wantN: 2 * ftBlock}},
			want:  FaultStats{Requests: 1, EAGAIN: 3},
		},
		{
			name: "eagain past the default cap surfaces",
			spec: "eagain=1x9",
			reqs: []ftReq{{op: OpWrite, block: 0, n: 2, tag: 0, wantErr: unix.EAGAIN}},
			want: FaultStats{Requests: 1, EAGAIN: 9, EAGAINSurfaced: 1},
		},
		{
			name:       "eagain past a small cap surfaces",
			rules:      []FaultRule{{Kind: FaultEAGAIN, Times: 3}},
			maxRetries: 2,
			reqs:       []ftReq{{op: OpWrite, block: 0, n: 2, tag: 0, wantErr: unix.EAGAIN}},
			want:       FaultStats{Requests: 1, EAGAIN: 3, EAGAINSurfaced: 1},
		},
		{
			name: "flush error",
			spec: "flusherr=1",
			reqs: []ftReq{
				{op: OpWrite, block: 0, n: 1, tag: 0, wantN: ftBlock},
				{op: OpFlush, tag: 1, wantErr: unix.EIO},
				{op: OpNop, tag: 2},
			},
			want: FaultStats{Requests: 3, FlushErr: 1},
		},
		{
			name: "bad blocks",
			spec: "badblock=3-4",
			reqs: []ftReq{
				{op: OpWrite, block: 0, n: 3, tag: 0, wantN: 3 * ftBlock},
				{op: OpWrite, block: 2, n: 2, tag: 1, wantErr: unix.EIO},
				{op: OpWrite, block: 4, n: 1, tag: 2, wantErr: unix.EIO},
				{op: OpWrite, block: 5, n: 3, tag: 3, wantN: 3 * ftBlock},
				{op: OpRead, block: 3, n: 1, tag: 4, wantN: ftBlock},
				{op: OpFlush, tag: 5},
			},
			want: FaultStats{Requests: 6, EIO: 2},
		},
		{
			name: "eio on the first read only",
			spec: "eio:read=#1",
			reqs: []ftReq{
				{op: OpWrite, block: 0, n: 1, tag: 0, wantN: ftBlock},
				{op: OpRead, block: 0, n: 1, tag: 1, wantErr: unix.EIO},
				{op: OpRead, block: 0, n: 1, tag: 2, wantN: ftBlock},
			},
			want: FaultStats{Requests: 3, EIO: 1},
		},
		{
			name: "first firing rule decides",
			rules: []FaultRule{
				{Kind: FaultShort},
				{Kind: FaultEIO},
			},
			reqs: []ftReq{{op: OpWrite, block: 0, n: 4, tag: 0, wantN: 4 * ftBlock}},
			want: FaultStats{Requests: 1, Short: 1, Resumed: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tkNoLeaks(t)
			rules := tc.rules
			if tc.spec != "" {
				var err error
				if rules, err = ParseFaultRules(tc.spec); err != nil {
					t.Fatal(err)
				}
			}
			tg := ftTarget(t)
			f, sink := ftOpen(t, tg, "pwritev", Config{Depth: 8, MaxRetries: tc.maxRetries}, rules...)
			// One request at a time, so "Nth" and the model are in
			// request order.
			var mems [][][]byte
			for _, q := range tc.reqs {
				r, mem := q.request(t)
				mems = append(mems, mem)
				if err := f.Submit([]Request{r}); err != nil {
					t.Fatalf("Submit tag %d: %v", q.tag, err)
				}
				c := sink.take(t, 1)[0]
				want := Completion{Tag: q.tag, N: int64(q.wantN), Err: q.wantErr}
				if c != want {
					t.Errorf("tag %d (%s of %d blocks at %d): got %+v, want %+v", q.tag, q.op, q.n, q.block, c, want)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if got := f.Stats(); got != tc.want {
				t.Errorf("Stats() = %+v\nwant      %+v", got, tc.want)
			}
			// What reached the target: each write's bytes [0, N), and
			// nothing past N.
			for i, q := range tc.reqs {
				if q.op != OpWrite {
					continue
				}
				disk := pwReadFile(t, tg.Path, int64(q.block*ftBlock), q.n*ftBlock)
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
				if q.op != OpRead || q.wantErr != 0 {
					continue
				}
				disk := pwReadFile(t, tg.Path, int64(q.block*ftBlock), q.n*ftBlock)
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
		if j != i && b.op == OpWrite && b.wantErr == 0 && b.block < a.block+a.n && a.block < b.block+b.n {
			return true
		}
	}
	return false
}

// Delayed completions arrive no earlier than the delay, and Close waits
// for them.
func TestFaultyDelay(t *testing.T) {
	tkNoLeaks(t)
	const d = 40 * time.Millisecond
	tg := ftTarget(t)
	f, sink := ftOpen(t, tg, "pwritev", Config{Depth: 4}, FaultRule{Kind: FaultDelay, Delay: d, Ops: OpSetOf(OpWrite)})
	w, _ := ftReq{op: OpWrite, block: 0, n: 1, tag: 1}.request(t)
	start := time.Now()
	if err := f.Submit([]Request{w, {Op: OpNop, Tag: 2}}); err != nil {
		t.Fatal(err)
	}
	c := sink.take(t, 1)[0]
	if c.Tag != 2 {
		t.Errorf("first completion %+v, want the NOP (not delayed)", c)
	}
	c = sink.take(t, 1)[0]
	if el := time.Since(start); c.Tag != 1 || el < d {
		t.Errorf("write completed after %v (%+v), want tag 1 after at least %v", el, c, d)
	}

	// Close with a delayed completion pending waits for it.
	if err := f.Submit([]Request{w}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < d/2 || sink.count() != 1 {
		t.Errorf("Close returned after %v with %d completions: it must wait for the held one", el, sink.count())
	}
	if got := f.Stats().Delayed; got != 2 {
		t.Errorf("Stats().Delayed = %d, want 2", got)
	}
}

// ftFailures runs n NOPs through a fresh Faulty ring with rules and
// returns the tags that failed.
func ftFailures(t *testing.T, tg *Target, n int, rules []FaultRule) map[uint64]bool {
	t.Helper()
	f, sink := ftOpen(t, tg, "pwritev", Config{Depth: 8}, rules...)
	for i := 0; i < n; i += 8 {
		reqs := make([]Request, 8)
		for j := range reqs {
			reqs[j] = Request{Op: OpNop, Tag: uint64(i + j)}
		}
		if err := f.Submit(reqs); err != nil {
			t.Fatal(err)
		}
	}
	failed := make(map[uint64]bool)
	for _, c := range sink.take(t, n) {
		if c.Err != 0 {
			failed[c.Tag] = true
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return failed
}

// Fractions follow the seed: the same seed fails the same requests.
func TestFaultyFractionSeeded(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, ftSize)
	rules := func(seed uint64) []FaultRule {
		r, err := ParseFaultRules(fmt.Sprintf("eio:nop=0.25,seed=%d", seed))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const n = 400
	a, b, c := ftFailures(t, tg, n, rules(7)), ftFailures(t, tg, n, rules(7)), ftFailures(t, tg, n, rules(8))
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

func TestFaultySetEnabledAndClear(t *testing.T) {
	tkNoLeaks(t)
	tg := tkFileTarget(t, ftSize)
	f, sink := ftOpen(t, tg, "pwritev", Config{Depth: 2}, FaultRule{Kind: FaultEIO, Ops: OpSetOf(OpNop)})
	check := func(what string, want syscall.Errno) {
		t.Helper()
		if err := f.Submit([]Request{{Op: OpNop}}); err != nil {
			t.Fatal(err)
		}
		if c := sink.take(t, 1)[0]; c.Err != want {
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
	if err := f.SetRules([]FaultRule{{Kind: FaultFlushErr, Fraction: 2}}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("SetRules with fraction 2 = %v, want ErrBadConfig", err)
	}
	if got := f.Caps().Backend; got != "faulty(pwritev)" {
		t.Errorf("Caps().Backend = %q", got)
	}
	if err := f.RegisterBuffers([][]byte{make([]byte, 4096)}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("RegisterBuffers over pwritev = %v, want ErrNotSupported", err)
	}
	if st := f.Stats(); st.EIO != 2 || st.Requests != 4 {
		t.Errorf("Stats() = %+v, want 2 EIO of 4 requests", st)
	}
}

// Every fault at once, many submitters, over each backend: every
// request completes exactly once, the Handler is never entered twice at
// once, completions are consistent (N < length only with an error), and
// Close leaves no goroutine behind.
func TestFaultyStress(t *testing.T) {
	for _, backend := range []string{"pwritev", "native"} {
		t.Run(backend, func(t *testing.T) {
			tkNoLeaks(t)
			const depth, workers, per = 8, 4, 300
			rules, err := ParseFaultRules("eio=0.05,eio-partial=0.05,short=0.1,eagain=0.05x3,eagain=0.01x20,delay=1ms@0.05,flusherr=0.2,badblock=200-201,seed=3")
			if err != nil {
				t.Fatal(err)
			}
			tg := tkFileTarget(t, ftSize)
			var inside atomic.Int32
			var overlap atomic.Bool
			var mu sync.Mutex
			got := make(map[uint64]Completion)
			dup := 0
			f, _ := ftOpen(t, tg, backend, Config{Depth: depth, Handler: func(cs []Completion) {
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
			// Each worker writes its own quarter of the target.
			lens := make(map[uint64]int64)
			var lmu sync.Mutex
			var wg sync.WaitGroup
			for w := range workers {
				mem := tkMmap(t, 64*ftBlock)
				wg.Add(1)
				go func() {
					defer wg.Done()
					base := w * (ftSize / ftBlock / workers)
					for i := 0; i < per; {
						n := min(1+(i+w)%depth, per-i)
						reqs := make([]Request, n)
						for j := range reqs {
							tag := uint64(w*per + i + j)
							switch tag % 7 {
							case 0:
								reqs[j] = Request{Op: OpFlush, Tag: tag}
							case 1:
								reqs[j] = Request{Op: OpNop, Tag: tag}
							default:
								blocks := 1 + int(tag%8)
								at := base + int(tag*5)%(ftSize/ftBlock/workers-8)
								reqs[j] = Request{Op: OpWrite, Tag: tag, Off: int64(at * ftBlock),
									Iov: []unix.Iovec{tkIov(mem[:ftBlock]), tkIov(mem[8*ftBlock : (8+blocks-1)*ftBlock+ftBlock])}}
								if blocks == 1 {
									reqs[j].Iov = reqs[j].Iov[:1]
								}
							}
							lmu.Lock()
							lens[tag] = reqs[j].Len()
							if reqs[j].Op != OpWrite {
								lens[tag] = 0
							}
							lmu.Unlock()
						}
						if err := f.Submit(reqs); err != nil {
							t.Error(err)
							return
						}
						i += n
					}
				}()
			}
			wg.Wait()
			if err := f.Close(); err != nil {
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

func TestParseFaultRules(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []FaultRule
	}{
		{"", nil},
		{"  ", nil},
		{"eio=0.01", []FaultRule{{Kind: FaultEIO, Fraction: 0.01}}},
		{
			"eio=0.01,short=0.01,eagain=0.01,delay=5ms@0.001,flusherr=0.1,badblock=4096-4100,seed=7",
			[]FaultRule{
				{Kind: FaultEIO, Fraction: 0.01, Seed: 7},
				{Kind: FaultShort, Fraction: 0.01, Seed: 7},
				{Kind: FaultEAGAIN, Fraction: 0.01, Times: 1, Seed: 7},
				{Kind: FaultDelay, Delay: 5 * time.Millisecond, Fraction: 0.001, Seed: 7},
				{Kind: FaultFlushErr, Fraction: 0.1, Seed: 7},
				{Kind: FaultEIO, FirstBlock: 4096, EndBlock: 4101, Seed: 7},
			},
		},
		{"badblock=100", []FaultRule{{Kind: FaultEIO, FirstBlock: 100, EndBlock: 101}}},
		{"eio-partial=#3", []FaultRule{{Kind: FaultPartialEIO, Nth: 3}}},
		{"eagain=1x9", []FaultRule{{Kind: FaultEAGAIN, Fraction: 1, Times: 9}}},
		{"eagain=#2x4", []FaultRule{{Kind: FaultEAGAIN, Nth: 2, Times: 4}}},
		{"delay=1s", []FaultRule{{Kind: FaultDelay, Delay: time.Second, Fraction: 1}}},
		{"delay:flush=2ms@#5", []FaultRule{{Kind: FaultDelay, Ops: OpSetOf(OpFlush), Delay: 2 * time.Millisecond, Nth: 5}}},
		{" eio:read+write = 0.5 , seed = 1 ", []FaultRule{{Kind: FaultEIO, Ops: OpSetOf(OpRead, OpWrite), Fraction: 0.5, Seed: 1}}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseFaultRules(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("ParseFaultRules(%q)\n got %+v\nwant %+v", tc.spec, got, tc.want)
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
			_, err := ParseFaultRules(tc.spec)
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("ParseFaultRules(%q) = %v, want ErrBadConfig", tc.spec, err)
			}
			if !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("error %q does not name %s", err, tc.bad)
			}
		})
	}
}

func TestFaultRuleValidate(t *testing.T) {
	for _, r := range []FaultRule{
		{},
		{Kind: 42},
		{Kind: FaultEIO, Fraction: 1.5},
		{Kind: FaultEIO, FirstBlock: 5, EndBlock: 5},
		{Kind: FaultEAGAIN, Times: -1},
		{Kind: FaultDelay},
		{Kind: FaultEIO, Ops: 1},
	} {
		if err := r.validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("validate(%+v) = %v, want ErrBadConfig", r, err)
		}
	}
	_, err := NewFaulty(func(Config) (Ring, error) { t.Fatal("opened the inner ring with bad rules"); return nil, nil },
		Config{Handler: func([]Completion) {}}, FaultConfig{Rules: []FaultRule{{Kind: FaultDelay}}})
	if !errors.Is(err, ErrBadConfig) {
		t.Errorf("NewFaulty with a bad rule = %v, want ErrBadConfig", err)
	}
}
