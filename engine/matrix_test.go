package engine

// The fault matrix (issue 11). A fixed, seeded script of engine calls —
// page writes and redirties, WritePages with budgets, ranges and the
// cyclic index, Sync, SyncRange, SyncRanges joined in one group-commit
// round, the background flusher's pass, Invalidate, Close — runs from
// one goroutine again and again, each time with exactly one fault at its
// N-th opportunity, for N = 1, 2, … until the script ends without
// reaching it (pebble's habit). The ring under the engine is the native
// io_uring ring wrapped in the power-cut model (a volatile write cache)
// and the fault wrapper, so every promise is checked against what a
// power cut would leave, not against what reads back:
//
//   - a Sync or SyncRange that returned nil: every page of its range
//     holds, in the durable image at that moment, at least the version
//     it had in the cache when the call was made;
//   - a Sync that failed names only pages of its own range;
//
// (A write that fails part way is cut at a page boundary: a page torn by
// a failed write of newer content holds neither version, which no
// engine can promise against; the ring's own tests cover sub-page
// resumes.)
//   - a Close that returned nil made every page durable;
//   - at the end (faults off, a final Sync, Close — after a Close that
//     failed, a new engine on the same cache finishes the job), the
//     power is cut keeping a random subset of unflushed writes, and every
//     promise still holds; the cache closes (no pin left), the target's
//     descriptor is closed, and after the whole matrix no goroutine or
//     descriptor is left.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/internal/verify"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
	"github.com/wbengine/wbengine/ring/faultring"
	"github.com/wbengine/wbengine/ring/powercut"
)

const (
	mxPS    = 4096
	mxPages = 256
	mxNonce = 0x5eed
)

// mxKind is a fault kind of the matrix: what fails at the N-th
// opportunity, and what counts as an opportunity.
type mxKind int

const (
	mxEIO          mxKind = iota // the N-th write fails with EIO, nothing written; one failure holds its pages in error (MaxRetries 1)
	mxPartialEIO                 // the N-th write writes its first half, then fails; retried (MaxRetries 3)
	mxShort                      // the N-th write is short and resumed
	mxFlushErr                   // the N-th flush fails
	mxEnterEAGAIN                // the N-th io_uring_enter that submits fails with EAGAIN, consuming nothing
	mxEnterEBUSY                 // … with EBUSY
	mxHole                       // the N-th mapper lookup finds a hole
	mxCancel                     // the N-th request cancels the context of the call that made it
	mxCloseTimeout               // the N-th request during Close is held past CloseTimeout
	mxKinds
)

var mxKindNames = [...]string{"eio", "eio-partial", "short", "flusherr", "enter-eagain", "enter-ebusy", "hole", "ctx-cancel", "close-timeout"}

func (k mxKind) String() string { return mxKindNames[k] }

type mxOpKind int

const (
	opWrite mxOpKind = iota
	opWritePages
	opSync
	opSyncRange
	opJoined
	opBackground
	opInvalidate
)

type mxOp struct {
	kind       mxOpKind
	pages      []uint64
	nr         int64
	start, end uint64
	cyclic     bool
	ranges     [][2]uint64
}

// mxScript is the seeded workload: n calls.
func mxScript(seed uint64, n int) []mxOp {
	r := rand.New(rand.NewPCG(seed, 11))
	rng := func() (uint64, uint64) {
		a := r.Uint64N(mxPages)
		return a, min(mxPages, a+1+r.Uint64N(64))
	}
	ops := make([]mxOp, 0, n)
	for i := range n {
		var op mxOp
		switch x := r.IntN(100); {
		case i < 3 || x < 35:
			op.kind = opWrite
			if r.IntN(2) == 0 {
				a := r.Uint64N(mxPages)
				for p := a; p < min(mxPages, a+1+r.Uint64N(24)); p++ {
					op.pages = append(op.pages, p)
				}
			} else {
				for range 1 + r.IntN(12) {
					op.pages = append(op.pages, r.Uint64N(mxPages))
				}
			}
		case x < 50:
			op.kind = opWritePages
			if r.IntN(2) == 0 {
				op.nr = 1 + r.Int64N(16)
			}
			switch r.IntN(3) {
			case 0:
				op.start, op.end = rng()
			case 1:
				op.cyclic = true
			}
		case x < 60:
			op.kind = opSync
		case x < 70:
			op.kind = opSyncRange
			op.start, op.end = rng()
		case x < 80:
			op.kind = opJoined
			for range 2 + r.IntN(2) {
				a, b := rng()
				op.ranges = append(op.ranges, [2]uint64{a, b})
			}
		case x < 90:
			op.kind = opBackground
		default:
			op.kind = opInvalidate
			op.start = r.Uint64N(mxPages)
			op.end = min(mxPages, op.start+1+r.Uint64N(8))
		}
		ops = append(ops, op)
	}
	// End with dirty pages, so Close has writes to make.
	return append(ops, mxOp{kind: opWrite, pages: []uint64{3, 4, 5, 6, 40, 41, 200}})
}

// mxCounts counts the opportunities of each kind a run met.
type mxCounts struct {
	writes, flushes, requests, enters, maps, closeReqs atomic.Int64
}

func (c *mxCounts) of(k mxKind) int64 {
	switch k {
	case mxEIO, mxPartialEIO, mxShort:
		return c.writes.Load()
	case mxFlushErr:
		return c.flushes.Load()
	case mxEnterEAGAIN, mxEnterEBUSY:
		return c.enters.Load()
	case mxHole:
		return c.maps.Load()
	case mxCancel:
		return c.requests.Load()
	}
	return c.closeReqs.Load()
}

// mxCounter is the first interposer: it counts requests (first
// attempts) on their way to the fault injector, and cancels the current
// call's context at the N-th (mxCancel).
type mxCounter struct{ run *mxRun }

// mxPaths counts, over the whole matrix, write attempts issued on the
// native ring's owner thread and elsewhere: the matrix must exercise the
// owner-thread path (the engine's pass in ring.Run).
var mxPaths struct{ owner, other atomic.Int64 }

func (m *mxCounter) Attach(int) {}

func (m *mxCounter) Issue(a *ring.Attempt) {
	if a.Seq != 0 {
		return
	}
	r := m.run
	n := r.counts.requests.Add(1)
	switch a.Req.Op {
	case ring.OpWrite:
		r.counts.writes.Add(1)
		if o := r.owner.Load(); o != 0 && int64(unix.Gettid()) == o {
			mxPaths.owner.Add(1)
		} else {
			mxPaths.other.Add(1)
		}
	case ring.OpFlush:
		r.counts.flushes.Add(1)
	}
	if r.inClose.Load() {
		r.counts.closeReqs.Add(1)
	}
	if r.kind == mxCancel && r.armed.Load() && n == int64(r.nth) {
		r.fired.Store(true)
		r.cancelOp()
	}
}

func (m *mxCounter) Done(*ring.Attempt) {}

// mxMapper maps pages in extents of 16 (so a pass looks up often) and
// finds a hole at the N-th lookup (mxHole).
type mxMapper struct {
	inner mapper.Mapper
	run   *mxRun
}

func (m *mxMapper) Map(idx uint64) (mapper.Extent, error) {
	r := m.run
	n := r.counts.maps.Add(1)
	if r.kind == mxHole && r.armed.Load() && n == int64(r.nth) {
		r.fired.Store(true)
		return mapper.Extent{Index: idx, Len: 1}, mapper.ErrHole
	}
	return m.inner.Map(idx)
}

func (m *mxMapper) IndexLimit() uint64 { return mxPages }

// mxRun is one run of the script with one fault.
type mxRun struct {
	t      testing.TB
	kind   mxKind
	nth    int
	seed   uint64
	path   string
	counts mxCounts
	armed  atomic.Bool // the fault may fire
	fired  atomic.Bool
	hold   atomic.Pointer[chan struct{}] // while set, the run's group-commit runner waits for it to close (a joined op)
	// inClose is set while Close runs (mxCloseTimeout counts requests).
	inClose atomic.Bool
	// owner is the ring's owner thread (ring.Caps.Owner).
	owner atomic.Int64

	c  *pages.Cache
	e  *Engine
	pc *powercut.Model
	fy *faultring.Injector

	opMu     sync.Mutex
	opCancel context.CancelFunc

	cur      [mxPages]uint64 // the version each page has in the cache (0: none, or invalidated)
	required [mxPages]uint64 // the least version a successful Sync or Close promised
	version  uint64
	buf      []byte

	violations []string
	syncsOK    int
	syncsFail  int
	closeFails int
}

func (r *mxRun) violate(format string, args ...any) {
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

func (r *mxRun) cancelOp() {
	r.opMu.Lock()
	if r.opCancel != nil {
		r.opCancel()
	}
	r.opMu.Unlock()
}

// opCtx is the context of the next call (mxCancel may cancel it).
func (r *mxRun) opCtx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	r.opMu.Lock()
	r.opCancel = cancel
	r.opMu.Unlock()
	return ctx, cancel
}

// open opens an engine on r.c over the fault and power-cut stack;
// initial is the durable image to start from (nil: zeros). With
// faults false nothing is injected (the engine that finishes after a
// failed Close).
func (r *mxRun) open(initial []byte, faults bool) {
	m, err := mapper.NewExtentMap(func() []mapper.Extent {
		var exts []mapper.Extent
		for i := uint64(0); i < mxPages; i += 16 {
			exts = append(exts, mapper.Extent{Index: i, Block: i, Len: 16})
		}
		return exts
	}())
	if err != nil {
		r.t.Fatal(err)
	}
	var rules []faultring.Rule
	if faults {
		switch r.kind {
		case mxEIO:
			rules = []faultring.Rule{{Kind: faultring.EIO, Nth: uint64(r.nth)}}
		case mxPartialEIO:
			rules = []faultring.Rule{{Kind: faultring.PartialEIO, Nth: uint64(r.nth)}}
		case mxShort:
			rules = []faultring.Rule{{Kind: faultring.Short, Nth: uint64(r.nth)}}
		case mxFlushErr:
			rules = []faultring.Rule{{Kind: faultring.FlushErr, Nth: uint64(r.nth)}}
		}
	}
	// eio holds a failed write's pages in error at once, so the Syncs
	// that cover them fail until they are written again (the held
	// path); eio-partial keeps the default and walks the retry path.
	retries := 0
	if r.kind == mxEIO && faults {
		retries = 1
	}
	e, err := Open(r.c, Config{
		MaxRetries:   retries,
		Path:         r.path,
		Mapper:       &mxMapper{inner: m, run: r},
		QueueDepth:   8,
		MaxIOBytes:   16 * mxPS,
		FlushAlways:  true,
		CloseTimeout: 100 * time.Millisecond,
		OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
			rc.EnterFault = func(uint32) syscall.Errno {
				n := r.counts.enters.Add(1)
				if r.armed.Load() && n == int64(r.nth) {
					switch r.kind {
					case mxEnterEAGAIN:
						r.fired.Store(true)
						return syscall.EAGAIN
					case mxEnterEBUSY:
						r.fired.Store(true)
						return syscall.EBUSY
					}
				}
				return 0
			}
			// A write failing part way is cut at a page boundary (see the
			// top of the file); a short transfer, which the ring resumes,
			// at the target's block size: it tears nothing.
			align := int64(mxPS)
			if r.kind == mxShort {
				align = int64(tg.LogicalBlockSize)
			}
			fy, err := faultring.New(faultring.Config{Rules: rules, BlockSize: mxPS, Align: align})
			if err != nil {
				return nil, err
			}
			r.fy = fy
			r.pc = powercut.New(tg.Size, initial)
			rc.Interposers = []ring.Interposer{&mxCounter{run: r}, fy, r.pc}
			return ring.Open(tg, "native", rc)
		},
	})
	if err != nil {
		r.t.Fatalf("%v N=%d: Open: %v", r.kind, r.nth, err)
	}
	if caps := e.RingCaps(); caps.RunPath != "owner-thread" {
		r.t.Fatalf("the matrix runs on %q, not the native ring's owner-thread path", caps.RunPath)
	} else {
		r.owner.Store(int64(caps.Owner))
	}
	e.testBeforeRound = func() {
		if ch := r.hold.Load(); ch != nil {
			<-*ch
		}
	}
	r.e = e
}

// waitIdle waits until nothing is in flight and no round runs, so the
// next call starts from the same state in every run.
func (r *mxRun) waitIdle() {
	deadline := time.Now().Add(20 * time.Second)
	for r.e.stats.inFlight.Load() != 0 || r.e.roundBusy.Load() || len(r.e.flushSem) != 0 || r.e.nextSyncPending() {
		if time.Now().After(deadline) {
			r.t.Fatalf("%v N=%d: the engine did not go idle in 20s (in flight %d)", r.kind, r.nth, r.e.stats.inFlight.Load())
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (e *Engine) nextSyncPending() bool {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	return e.nextSync != nil
}

// write puts a new version of each page in the cache.
func (r *mxRun) write(ps []uint64) {
	for _, p := range ps {
		r.version++
		verify.Encode(r.buf, p, r.version, mxNonce)
		if _, err := r.c.WriteAt(r.buf, int64(p)*mxPS); err != nil {
			r.violate("write page %d: %v", p, err)
			continue
		}
		r.cur[p] = r.version
	}
}

// syncResult checks a SyncRange over [start, end) that was called when
// the cache held snap and returned err.
func (r *mxRun) syncResult(what string, start, end uint64, snap *[mxPages]uint64, err error) {
	if end == 0 {
		end = mxPages
	}
	if err != nil {
		r.syncsFail++
		named := namedPages(err)
		for _, p := range named {
			if p < start || p >= end {
				r.violate("%s [%d, %d) failed naming page %d, outside its range: %v", what, start, end, p, err)
			}
		}
		// A page held in error or mapping to a hole is a page of the
		// caller's range: the error names it (a failed flush or a
		// cancelled call has no page to name).
		if len(named) == 0 && (errors.Is(err, ErrHole) || errors.Is(err, ErrIO) && !errors.Is(err, ErrFlush)) {
			r.violate("%s [%d, %d) failed without naming a page: %v", what, start, end, err)
		}
		return
	}
	r.syncsOK++
	page := make([]byte, mxPS)
	for p := start; p < end; p++ {
		want := snap[p]
		if want == 0 {
			continue
		}
		r.required[p] = max(r.required[p], want)
		r.pc.ReadDurable(page, int64(p)*mxPS)
		if v, cerr := verify.Check(page, p, mxNonce); cerr != nil || v < want {
			r.violate("%s [%d, %d) returned nil, but page %d is not durable: need version %d, the durable image has %d (%v)", what, start, end, p, want, v, cerr)
		}
	}
}

// namedPages returns every page a (joined) error names.
func namedPages(err error) []uint64 {
	var out []uint64
	var walk func(error)
	walk = func(err error) {
		if pe, ok := err.(*PageError); ok {
			out = append(out, pe.Pages...)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

func (r *mxRun) do(op mxOp) {
	ctx, cancel := r.opCtx()
	defer cancel()
	e := r.e
	switch op.kind {
	case opWrite:
		r.write(op.pages)
	case opWritePages:
		wbc := &WritebackControl{NrToWrite: op.nr, RangeStart: op.start, RangeEnd: op.end, RangeCyclic: op.cyclic}
		before := wbc.NrToWrite
		e.WritePages(ctx, wbc)
		if before > 0 && wbc.NrToWrite != before-wbc.PagesWritten {
			r.violate("WritePages budget %d: %d pages written, NrToWrite left %d", before, wbc.PagesWritten, wbc.NrToWrite)
		}
	case opSync, opSyncRange:
		snap := r.cur
		err := e.SyncRange(ctx, op.start, op.end)
		if ctx.Err() == nil || err == nil {
			r.syncResult("SyncRange", op.start, op.end, &snap, err)
		}
	case opJoined:
		snap := r.cur
		// Hold this run's group-commit runner (the hold is the run's own:
		// kinds run in parallel) while the syncs join one round.
		hold := make(chan struct{})
		r.hold.Store(&hold)
		joined := e.stats.syncsJoined.Load()
		errs := make([]error, len(op.ranges))
		var wg sync.WaitGroup
		for i, rg := range op.ranges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = e.SyncRange(ctx, rg[0], rg[1])
			}()
			if i > 0 {
				// Each later one joins the round the first started.
				deadline := time.Now().Add(10 * time.Second)
				for e.stats.syncsJoined.Load() != joined+int64(i) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Microsecond)
				}
				if e.stats.syncsJoined.Load() != joined+int64(i) {
					r.t.Errorf("%v N=%d: SyncRange %d of a joined op did not join the held round in 10s", r.kind, r.nth, i+1)
				}
			} else {
				deadline := time.Now().Add(10 * time.Second)
				for !e.nextSyncPending() && time.Now().Before(deadline) {
					time.Sleep(20 * time.Microsecond)
				}
			}
		}
		r.hold.Store(nil)
		close(hold)
		wg.Wait()
		for i, rg := range op.ranges {
			if ctx.Err() == nil || errs[i] == nil {
				r.syncResult(fmt.Sprintf("joined SyncRange %d of %d", i+1, len(op.ranges)), rg[0], rg[1], &snap, errs[i])
			}
		}
	case opBackground:
		// The flusher's pass: a 4 MiB chunk, cyclic, SyncNone.
		e.WritePages(ctx, &WritebackControl{NrToWrite: chunkBytes / mxPS, RangeCyclic: true})
		e.stats.bgPasses.Add(1)
	case opInvalidate:
		if err := e.Invalidate(ctx, op.start, op.end); err == nil {
			for p := op.start; p < op.end; p++ {
				r.cur[p] = 0 // discarded: the device keeps what it had
			}
		}
	}
	r.waitIdle()
}

// closeEngine closes r.e, again and again while it times out; it
// returns the first answer that is not a timeout.
func (r *mxRun) closeEngine() error {
	for range 50 {
		err := r.e.Close()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		r.closeFails++
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("Close still timing out after 50 tries")
}

// finish ends a run: Close with the fault still armed; after a Close
// that failed, a new engine on the same cache, with no faults, from the
// durable image; faults off, a final Sync and Close; a power cut; the
// checks.
func (r *mxRun) finish() {
	if r.kind == mxCloseTimeout {
		r.fy.SetRules([]faultring.Rule{{Kind: faultring.Delay, Nth: uint64(r.nth), Delay: 300 * time.Millisecond}})
		r.armed.Store(true)
	}
	snap := r.cur
	r.inClose.Store(true)
	err := r.closeEngine()
	r.inClose.Store(false)
	switch st := r.fy.Stats(); {
	case r.kind == mxCloseTimeout && st.Delayed > 0,
		r.kind == mxEIO && st.EIO > 0,
		r.kind == mxPartialEIO && st.PartialEIO+st.EIO > 0, // a one-block write cannot be split: it fails whole
		r.kind == mxShort && st.Short > 0,
		r.kind == mxFlushErr && st.FlushErr > 0:
		r.fired.Store(true)
	}
	r.armed.Store(false)
	if err == nil {
		r.syncResult("Close", 0, 0, &snap, nil)
	} else {
		for _, p := range namedPages(err) {
			if p >= mxPages {
				r.violate("Close failed naming page %d", p)
			}
		}
		// The next engine takes the cache over, from what survived.
		r.open(r.pc.Image(), false)
		snap = r.cur
		serr := r.e.Sync(context.Background())
		r.syncResult("Sync by the engine after the failed Close", 0, 0, &snap, serr)
		if serr != nil {
			r.violate("with no faults, Sync after a failed Close: %v", serr)
		}
		if cerr := r.closeEngine(); cerr != nil {
			r.violate("with no faults, Close after a failed Close: %v", cerr)
		}
	}
	for p := range r.cur {
		if r.cur[p] != 0 && r.required[p] < r.cur[p] {
			r.violate("page %d: version %d written, the last Close returned nil but promised only %d", p, r.cur[p], r.required[p])
		}
	}
	// The cut: a random subset of unflushed writes survives (there should
	// be none after a good Close).
	r.pc.Cut(r.seed + uint64(r.nth))
	img := r.pc.Image()
	for p := uint64(0); p < mxPages; p++ {
		page := img[p*mxPS : (p+1)*mxPS]
		v, cerr := verify.Check(page, p, mxNonce)
		switch {
		case r.required[p] == 0 && (cerr == nil || errors.Is(cerr, verify.ErrZero)):
		case r.required[p] == 0:
			r.violate("page %d after the cut: neither zero nor a valid page: %v", p, cerr)
		case cerr != nil || v < r.required[p]:
			r.violate("page %d after the cut: need version %d, found %d (%v)", p, r.required[p], v, cerr)
		}
	}
	if err := r.c.Close(); err != nil {
		r.violate("cache.Close after the last Close: %v", err)
	}
	if n := fdsTo(r.path); n != 0 {
		r.violate("%d descriptors still open on the target after the last Close", n)
	}
}

// fdsTo counts this process's descriptors open on path.
func fdsTo(path string) int {
	ents, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, d := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", d.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}

// runMatrixOnce runs the script with the kind's fault at opportunity
// nth and reports whether the fault was reached (nth ≤ the
// opportunities the run met), whether it fired, and the violations.
func runMatrixOnce(t testing.TB, kind mxKind, nth int, seed uint64, script []mxOp, path string, brk breakMode) *mxRun {
	c, err := pages.New(pages.Config{PageSize: mxPS, Capacity: mxPages, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, mxPages*mxPS); err != nil {
		t.Fatal(err)
	}
	r := &mxRun{t: t, kind: kind, nth: nth, seed: seed, path: path, c: c, buf: make([]byte, mxPS)}
	r.open(nil, true)
	r.e.testBreak = brk
	if kind != mxCloseTimeout {
		r.armed.Store(true)
	}
	for _, op := range script {
		r.do(op)
	}
	r.finish()
	return r
}

type mxSummary struct {
	kind                  mxKind
	runs, fired, syncsOK  int
	syncsFail, closeFails int
	violations            []string
}

// runMatrixKind runs kind at N = 1, 2, … until a run does not reach it.
func runMatrixKind(t testing.TB, kind mxKind, seed uint64, script []mxOp, path string, brk breakMode) mxSummary {
	s := mxSummary{kind: kind}
	for nth := 1; ; nth++ {
		r := runMatrixOnce(t, kind, nth, seed, script, path, brk)
		s.runs++
		if r.fired.Load() {
			s.fired++
		}
		s.syncsOK += r.syncsOK
		s.syncsFail += r.syncsFail
		s.closeFails += r.closeFails
		for _, v := range r.violations {
			s.violations = append(s.violations, fmt.Sprintf("%v N=%d: %s", kind, nth, v))
		}
		if int64(nth) > r.counts.of(kind) || nth > 5000 {
			return s
		}
	}
}

// TestFaultMatrix runs every fault kind at every opportunity of the
// script and checks the promises (see the top of this file).
func TestFaultMatrix(t *testing.T) {
	defer goleak.VerifyNone(t)
	fdsBefore := openFDs(t)
	seeds := []uint64{1}
	ops := 40
	if *stressLong {
		seeds, ops = []uint64{1, 2, 3, 4}, 150
	}
	t.Run("kinds", func(t *testing.T) {
		for _, seed := range seeds {
			script := mxScript(seed, ops)
			for k := mxKind(0); k < mxKinds; k++ {
				t.Run(fmt.Sprintf("%v/seed%d", k, seed), func(t *testing.T) {
					t.Parallel()
					path := loopdev.ShmFile(t, mxPages*mxPS)
					start := time.Now()
					s := runMatrixKind(t, k, seed, script, path, breakNone)
					t.Logf("%v: %d runs (N = 1..%d), the fault fired in %d; %d syncs returned nil and were checked, %d failed; %d Close timeouts; %d violations; %v",
						k, s.runs, s.runs, s.fired, s.syncsOK, s.syncsFail, s.closeFails, len(s.violations), time.Since(start).Round(time.Millisecond))
					for i, v := range s.violations {
						if i == 10 {
							t.Errorf("… and %d more", len(s.violations)-10)
							break
						}
						t.Error(v)
					}
					if s.fired == 0 {
						t.Errorf("%v: the fault never fired: the matrix tests nothing", k)
					}
				})
			}
		}
	})
	if after := openFDs(t); after != fdsBefore {
		t.Errorf("descriptors: %d before the matrix, %d after", fdsBefore, after)
	}
	t.Logf("write attempts issued on the native ring's owner thread: %d, elsewhere: %d", mxPaths.owner.Load(), mxPaths.other.Load())
	if mxPaths.owner.Load() == 0 || mxPaths.other.Load() != 0 {
		t.Errorf("the engine's writes did not all go through the owner-thread path: %d on it, %d elsewhere", mxPaths.owner.Load(), mxPaths.other.Load())
	}
}

// TestFaultMatrixCatchesDefects puts defects back on purpose and shows
// the matrix reports them.
func TestFaultMatrixCatchesDefects(t *testing.T) {
	script := mxScript(1, 40)
	for _, tc := range []struct {
		name string
		brk  breakMode
		kind mxKind
	}{
		{"round's first error only, EIO", breakRoundResult, mxEIO},
		{"flush before the writes", breakFlushFirst, mxShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := loopdev.ShmFile(t, mxPages*mxPS)
			if tc.brk == breakRoundResult {
				// Without the fault the broken engine passes: what the
				// matrix sees below is the defect meeting the fault.
				if r := runMatrixOnce(t, tc.kind, 1<<30, 1, script, path, tc.brk); len(r.violations) != 0 {
					t.Fatalf("%s with no fault: %d violations (the first: %s)", tc.name, len(r.violations), r.violations[0])
				}
			}
			s := runMatrixKind(t, tc.kind, 1, script, path, tc.brk)
			if len(s.violations) == 0 {
				t.Fatalf("%s: %d runs and no violation: the matrix cannot see this defect", tc.name, s.runs)
			}
			t.Logf("%s: %d runs, %d with the fault, %d violations; the first: %s", tc.name, s.runs, s.fired, len(s.violations), firstLine(s.violations[0]))
		})
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestFaultStress is the concurrent mix under random faults: writers
// dirty versioned pages, passes and the background flusher write them
// back, Syncs over random ranges and Invalidates run at once, while
// writes, flushes and io_uring_enter calls fail at random (seeded). Every
// Sync that returned nil is checked against the durable image at once;
// at the end (faults off, a final Sync and Close) the power is cut and
// every promise checked again. make stress runs it longer.
func TestFaultStress(t *testing.T) {
	defer goleak.VerifyNone(t)
	dur := 2 * time.Second
	if *stressLong {
		dur = 60 * time.Second
	}
	const writers = 4
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %v", seed, dur)
	path := loopdev.ShmFile(t, mxPages*mxPS)
	c, err := pages.New(pages.Config{PageSize: mxPS, Capacity: mxPages, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	pc := powercut.New(mxPages*mxPS, nil)
	fy, err := faultring.New(faultring.Config{BlockSize: mxPS, Align: mxPS, Rules: []faultring.Rule{
		{Kind: faultring.EIO, Fraction: 0.02, Seed: seed},
		{Kind: faultring.PartialEIO, Fraction: 0.01, Seed: seed},
		{Kind: faultring.Short, Fraction: 0.03, Seed: seed},
		{Kind: faultring.FlushErr, Fraction: 0.05, Seed: seed},
		{Kind: faultring.Delay, Fraction: 0.01, Delay: 2 * time.Millisecond, Seed: seed},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var faultsOn atomic.Bool
	faultsOn.Store(true)
	var enterMu sync.Mutex
	enterRng := rand.New(rand.NewPCG(seed, 1))
	var enterFaults atomic.Int64
	e, err := Open(c, Config{
		Path: path, Mapper: mapper.Linear(0, mxPages), QueueDepth: 8, MaxIOBytes: 16 * mxPS, FlushAlways: true,
		FillGaps: 4, DirtyBackgroundBytes: 32 * mxPS, DirtyBytes: 128 * mxPS, WritebackInterval: 10 * time.Millisecond, DirtyExpire: 20 * time.Millisecond,
		OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
			rc.EnterFault = func(uint32) syscall.Errno {
				if !faultsOn.Load() {
					return 0
				}
				enterMu.Lock()
				x := enterRng.IntN(100)
				enterMu.Unlock()
				switch {
				case x < 2:
					enterFaults.Add(1)
					return syscall.EAGAIN
				case x < 3:
					enterFaults.Add(1)
					return syscall.EBUSY
				}
				return 0
			}
			rc.Interposers = []ring.Interposer{fy, pc}
			return ring.Open(tg, "native", rc)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		cur        [mxPages]atomic.Uint64 // the last version whose WriteAt returned
		locks      [mxPages]sync.Mutex
		next       atomic.Uint64
		gate       sync.RWMutex // Invalidate excludes Syncs' snapshot-and-call
		violations atomic.Int64
		syncsOK    atomic.Int64
		syncsFail  atomic.Int64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		mu         sync.Mutex
		required   [mxPages]uint64
	)
	violate := func(format string, args ...any) {
		if violations.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(10+w)))
			buf := make([]byte, mxPS)
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := r.Uint64N(mxPages)
				n := 1 + r.Uint64N(8)
				for q := p; q < min(mxPages, p+n); q++ {
					gate.RLock()
					locks[q].Lock()
					v := next.Add(1)
					verify.Encode(buf, q, v, mxNonce)
					if _, err := c.WriteAt(buf, int64(q)*mxPS); err == nil {
						cur[q].Store(v)
					} else if !errors.Is(err, context.Canceled) {
						violate("WriteAt page %d: %v", q, err)
					}
					locks[q].Unlock()
					gate.RUnlock()
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // passes
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(r.IntN(3)) * time.Millisecond):
			}
			a := r.Uint64N(mxPages)
			e.WritePages(context.Background(), &WritebackControl{NrToWrite: r.Int64N(32), RangeStart: a, RangeEnd: min(mxPages, a+r.Uint64N(128)+1)})
		}
	}()
	for s := range 2 {
		wg.Add(1)
		go func() { // syncs
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(3+s)))
			page := make([]byte, mxPS)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(r.IntN(5)) * time.Millisecond):
				}
				a := r.Uint64N(mxPages)
				b := min(mxPages, a+1+r.Uint64N(mxPages))
				gate.RLock()
				var snap [mxPages]uint64
				for p := a; p < b; p++ {
					snap[p] = cur[p].Load()
				}
				err := e.SyncRange(context.Background(), a, b)
				gate.RUnlock()
				if err != nil {
					syncsFail.Add(1)
					for _, p := range namedPages(err) {
						if p < a || p >= b {
							violate("SyncRange [%d, %d) failed naming page %d: %v", a, b, p, err)
						}
					}
					continue
				}
				syncsOK.Add(1)
				for p := a; p < b; p++ {
					if snap[p] == 0 {
						continue
					}
					mu.Lock()
					required[p] = max(required[p], snap[p])
					mu.Unlock()
					pc.ReadDurable(page, int64(p)*mxPS)
					if v, cerr := verify.Check(page, p, mxNonce); cerr != nil || v < snap[p] {
						violate("SyncRange [%d, %d) returned nil but page %d holds %d in the durable image, need %d (%v)", a, b, p, v, snap[p], cerr)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // invalidates
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 5))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(20+r.IntN(20)) * time.Millisecond):
			}
			a := r.Uint64N(mxPages)
			b := min(mxPages, a+1+r.Uint64N(4))
			gate.Lock()
			if err := e.Invalidate(context.Background(), a, b); err == nil {
				for p := a; p < b; p++ {
					cur[p].Store(0)
				}
			}
			gate.Unlock()
		}
	}()
	time.Sleep(dur)
	close(stop)
	wg.Wait()
	faultsOn.Store(false)
	fy.SetEnabled(false)
	if err := e.Sync(context.Background()); err != nil {
		t.Fatalf("Sync with faults off: %v", err)
	}
	for p := range required {
		required[p] = max(required[p], cur[p].Load())
	}
	st := e.Stats()
	if err := e.Close(); err != nil {
		t.Fatalf("Close with faults off: %v", err)
	}
	pc.Cut(seed)
	img := pc.Image()
	for p := uint64(0); p < mxPages; p++ {
		v, err := verify.Check(img[p*mxPS:(p+1)*mxPS], p, mxNonce)
		if required[p] != 0 && (err != nil || v < required[p]) {
			violate("page %d after the cut: need %d, found %d (%v)", p, required[p], v, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("cache.Close: %v", err)
	}
	fs := fy.Stats()
	t.Logf("%d page writes; %d syncs returned nil (each checked), %d failed; injected: %d EIO, %d partial, %d short, %d flush errors, %d delays, %d enter EAGAIN/EBUSY; engine: %d writes, %d write errors, %d retries, %d flush errors, %d held; %d violations",
		next.Load(), syncsOK.Load(), syncsFail.Load(), fs.EIO, fs.PartialEIO, fs.Short, fs.FlushErr, fs.Delayed, enterFaults.Load(),
		st.Writes, st.WriteErrors, st.Retries, st.FlushErrors, st.PagesInError, violations.Load())
	if syncsOK.Load() == 0 {
		t.Error("no Sync returned nil: the stress checked nothing")
	}
}
