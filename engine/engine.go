package engine

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wbengine/wbengine/internal/mem"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// Engine writes back one cache's dirty pages to one target.
type Engine struct {
	cache  *pages.Cache
	target *ring.Target
	ring   ring.Ring
	cfg    Config
	mapper mapper.Mapper
	alloc  mapper.Allocator // cfg.Mapper's, if it allocates
	claim  engineClaim      // what holds the cache (pages.Cache.Claim)

	ps        int
	maxPages  int    // pages in one write: MaxIOBytes / page size
	nblocks   uint64 // the target's size in page-sized blocks
	fixed     bool   // the arena is registered: writes use *_FIXED
	needFlush bool   // Sync flushes the device

	// pass is the pass lock (the kernel's I_SYNC): one writeback pass —
	// and one Invalidate — per cache at a time. Holding it means owning
	// everything in passState.
	pass chan struct{}
	passState

	// recs are the in-flight records, allocated at Open: twice
	// QueueDepth (QueueDepth in the kernel, the rest in the ring's
	// backlog; fewer where the backend has no backlog). freeRecs holds the indexes of the free ones: the pass takes
	// one to open a run, the completion handler gives it back. A record
	// belongs to the pass from the moment it is taken until it is handed
	// to the ring by Submit, then to the ring until its completion, then
	// to the handler until it is back in freeRecs.
	recs     []record
	freeRecs chan int32
	// recGen[i] is the generation of record i while it is outstanding
	// (opened by a pass, not yet completed), else 0. The pass sets it
	// when it opens a run; the handler clears it at completion.
	recGen []atomic.Uint64

	// reads are the read records, and freeReads the free ones; a
	// reader owns the records it took until their completions arrive.
	reads     []readRecord
	freeReads chan int32

	// complMu protects the completion side: what the handler changes and
	// the pass or Sync read — the completed generation, per-slot failure
	// causes, the pages held in error, the pages written since the last
	// flush and those a failed flush gave back. The handler takes it once
	// per batch of completions.
	complMu  sync.Mutex
	slots    []slotState // by page slot
	inError  map[uint64]syscall.Errno
	nInError atomic.Int64 // len(inError), for readers without complMu
	// mapErrs says why the mapping of a page in the dirty set failed
	// (slotState.cause failMap), until it is written or dropped.
	mapErrs map[uint64]error
	// unflushed are the pages whose writes completed since the last
	// flush was taken, each with the stamp of the oldest content those
	// writes carried and the pin its first write moved here.
	unflushed []unflushedPage
	// spareUnflushed is the list a finished flush gave back, reused as
	// the next unflushed list.
	spareUnflushed []unflushedPage
	// flushFailed are the pages of failed flushes: the next drain makes
	// them dirty again (see drain).
	flushFailed []unflushedPage
	// lowered are pages already dirty whose stamp a failed write put
	// back (older): the next drain lowers their chunk's bound in the
	// dirty set (which only the pass may touch).
	lowered  []*pages.Page
	put      []*pages.Page // the handler's: pins to give back once writeback ended
	onErrors []error       // for Config.OnError, delivered outside the handler

	generations // completed and waited-for generations (waitgen.go)

	flushSem  chan struct{}      // one device flush at a time (capacity 1)
	flushDone chan syscall.Errno // the flush's completion

	// stuck counts the pages in the dirty set whose mapping failed (a
	// hole, no space): no writeback cleans them, so the dirty limits do
	// not count them (see nrDirtyWB).
	stuck atomic.Int64

	stats counters

	bgState   // background writeback and throttling (background.go)
	syncState // group commit (sync.go)

	closeMu sync.Mutex // serialises Close; protects closing
	closing closeState
	closed  atomic.Bool
	// closedCh is closed with closed.
	closedCh chan struct{}

	// noStableCheck turns off the invariants check that a page's
	// contents do not change while it is in flight, for tests that write
	// Data directly under writeback (which is legal).
	noStableCheck bool
	// testBreak puts a defect back on purpose, so crash and fault tests
	// can show they catch it (see breakMode).
	testBreak breakMode
	// testBeforeJoin, if set, runs in SyncRange after its closed check
	// and before it joins a round (tests widen that window with it).
	testBeforeJoin func()
	// testBeforePass, if set, runs in WritePages after its closed check
	// and before it takes the pass lock.
	testBeforePass func()
	// testBeforeRound, if set, runs in the group-commit runner when it
	// wakes for a round, before it takes the round's members (tests hold
	// it there so several syncs join one round).
	testBeforeRound func()
	// testInFlush, if set, runs in flush after it took the list of pages
	// the flush covers and before it submits the flush.
	testInFlush func()
	// testInClose, if set, runs in Close at the point where a writeback
	// pass could still slip in before Close holds the pass lock for good.
	testInClose func()
}

// breakMode names a defect tests put back on purpose.
type breakMode uint8

const (
	breakNone breakMode = iota
	// breakFlushFirst flushes before the writes a Sync should cover and
	// trusts that flush.
	breakFlushFirst
	// breakRoundResult gives each member of a group-commit round the
	// round's first error, kept if it names a page of the member's range
	// (the engine's result before issue 11), instead of the state of
	// its own pages.
	breakRoundResult
)

// passState is owned by the holder of the pass lock.
type passState struct {
	set      *dirtySet
	drainFn  func(*pages.Page) // drainPage
	drainNow int64             // UnixNano of the drain under way, once it found a page
	// epoch counts drains. A page entering the dirty set with no older
	// content pending is stamped with it (slotState.dirtySince), and a
	// Sync remembers the epoch of its first drain: whatever was dirty
	// when it was called carries a stamp no newer.
	epoch uint64
	// cyclicIndex is where the next RangeCyclic pass starts (the
	// kernel's mapping->writeback_index).
	cyclicIndex uint64
	nextGen     uint64
	cur         int32         // the open run's record, or -1
	spare       int32         // a free record set aside for the next run, or -1
	started     int           // pages moved to writeback by the fast path, not yet accounted
	queue       []int32       // sealed runs not yet submitted
	req         ring.Request  // scratch for Queue.Add
	fillBuf     []*pages.Page // fillGap's scratch
	q           ring.Queue    // the ring's queue while a pass runs (ring.Run)
	passFn      func(ring.Queue)
	passArgs    passArgs
	ext         extentCursor // the pass's walk through the mapper
}

// slotState is the engine's per-page state, indexed by page slot.
type slotState struct {
	gen uint64 // generation of the page's write in flight; set under the page lock with Writeback, by the pass
	// dirtiedAt is when the pass first took the page into the dirty set
	// (UnixNano), for expiry; pass-owned.
	dirtiedAt int64
	// dirtySince stamps the page's dirty content: the epoch of the
	// oldest change in it that is not yet on stable storage (0: none,
	// or the page is clean). The pass stamps a page entering the dirty
	// set (if it carries no older stamp) and moves the stamp to wbSince
	// when it takes the page for writing; a failed write or flush puts
	// the older stamp back before it makes the page dirty again, so a
	// page never looks newer than the content it still owes the device.
	dirtySince atomic.Uint64
	// wbSince is the stamp of the content of the page's write in flight
	// (set by the pass with Writeback; read by the handler).
	wbSince uint64
	// unflushedAt is 1 + the page's position on the unflushed list, or 0
	// (complMu).
	unflushedAt int32
	// cause and errno say why the page's last write, flush or mapping
	// failed (complMu); a successful write clears them.
	cause failKind
	errno syscall.Errno
	// stuck says the page is counted in Engine.stuck (pass-owned).
	stuck bool
	// failures counts consecutive failed writes; the handler changes it
	// (under complMu), the pass reads it: a page that failed is written
	// on its own next time, so one bad block does not hold its
	// neighbours in error.
	failures atomic.Uint32
}

// failKind is why a page is still dirty (slotState.cause).
type failKind uint8

const (
	failNone  failKind = iota
	failIO             // its write failed (held in error if in Engine.inError)
	failFlush          // a flush that should have covered its write failed
	failMap            // mapping it failed (Engine.mapErrs)
)

// unflushedPage is a page whose write completed and that no successful
// flush has covered yet: since is the stamp of the oldest content such
// writes carried.
type unflushedPage struct {
	p     *pages.Page
	since uint64
}

// record is one write: a run of pages contiguous by index and block.
type record struct {
	run
	gen  uint64
	buf  int      // registered buffer index, -1 when not fixed, bufUnset before the first page
	sums []uint32 // invariants: page checksums when queued
}

// bufUnset is record.buf of a run with no page yet (appendPage).
const bufUnset = -2

const flushTag = 1 << 63

// engineClaim is what holds the cache for an engine (pages.Cache.Claim);
// its String says which engine and, while it closes, why it still holds
// the cache.
type engineClaim struct {
	e    *Engine
	path string
}

func (c *engineClaim) String() string {
	e := c.e
	if !e.closed.Load() {
		return fmt.Sprintf("an engine on %s", c.path)
	}
	return fmt.Sprintf("an engine on %s that is still closing (%d writes in flight, %d pages under writeback: its Close timed out; call Close again)",
		c.path, e.stats.inFlight.Load(), e.cache.NrWriteback())
}

// Open opens the target cfg.Path for writing back c's dirty pages and
// installs the engine's hooks (pages.Ops) in c. One engine per cache:
// Open claims the cache first and fails with ErrConfig while another
// engine holds it (also one whose Close timed out and is still waiting
// for the device). Where the mapper says how many pages it maps
// (mapper.IndexBounded), or without a mapper, the cache refuses pages
// past that with pages.ErrRange when they are written.
func Open(c *pages.Cache, cfg Config) (*Engine, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil cache", ErrConfig)
	}
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: no Path (a block device or file to write to)", ErrConfig)
	}
	e := &Engine{cache: c, cfg: cfg}
	e.claim = engineClaim{e: e, path: cfg.Path}
	if err := c.Claim(&e.claim); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := e.open(); err != nil {
		c.Unclaim(&e.claim)
		return nil, err
	}
	return e, nil
}

// open is Open once the cache is claimed.
func (e *Engine) open() error {
	c := e.cache
	t, err := ring.OpenTarget(e.cfg.Path, ring.TargetOptions{})
	if err != nil {
		return fmt.Errorf("engine: open: %w", err)
	}
	cfg, err := e.cfg.resolve(t, c.PageSize())
	if err != nil {
		t.Close()
		return err
	}
	ps := c.PageSize()
	e.target = t
	e.cfg = cfg
	e.mapper = cfg.Mapper
	e.ps = ps
	e.maxPages = cfg.MaxIOBytes / ps
	e.nblocks = uint64(t.Size) / uint64(ps)
	e.needFlush = t.NeedsFlush() || cfg.FlushAlways
	e.pass = make(chan struct{}, 1)
	e.closedCh = make(chan struct{})
	e.recs = make([]record, backlogSlots(cfg.QueueDepth))
	e.freeRecs = make(chan int32, backlogSlots(cfg.QueueDepth))
	e.slots = make([]slotState, c.Capacity())
	e.inError = make(map[uint64]syscall.Errno)
	e.mapErrs = make(map[uint64]error)
	e.unflushed = make([]unflushedPage, 0, c.Capacity())
	e.put = make([]*pages.Page, 0, e.maxPages)
	e.spareUnflushed = make([]unflushedPage, 0, c.Capacity())
	e.waitCh = make(chan struct{})
	e.flushSem = make(chan struct{}, 1)
	e.flushDone = make(chan syscall.Errno, 1)
	e.alloc, _ = cfg.Mapper.(mapper.Allocator)
	e.ext = extentCursor{m: cfg.Mapper}
	e.waitCond.L = &e.waitMu
	e.set = newDirtySet(c)
	e.drainFn = e.drainPage
	e.cur = -1
	e.spare = -1
	e.queue = make([]int32, 0, len(e.recs))
	e.passFn = e.runPassOnRing
	// Touch the per-page state now: the kernel backs fresh memory at its
	// first write, and a first pass would pay for tens of MB of page
	// faults the later ones do not.
	mem.Prefault(e.slots)
	mem.Prefault(e.unflushed[:cap(e.unflushed)])
	mem.Prefault(e.spareUnflushed[:cap(e.spareUnflushed)])
	e.set.prefault()
	e.fillBuf = make([]*pages.Page, 0, cfg.FillGaps)
	e.recGen = make([]atomic.Uint64, len(e.recs))
	e.initReads()
	for i := range e.recs {
		r := &e.recs[i]
		r.initRun(e.maxPages)
		r.sums = make([]uint32, 0, e.maxPages)
	}
	// The ring takes twice QueueDepth writes but keeps at most
	// QueueDepth in the kernel: the rest is a backlog it feeds the device
	// from the moment a write completes, without waiting for the pass to
	// wake up and hand over the next batch. Its slots also have room for
	// every read record and the device flush beyond what a pass can
	// hold (its records and the ring's batch of free slots), so a reader
	// never waits for the pass's writes to free a slot; on the native
	// ring its read also goes ahead of the writes queued behind the
	// InFlight cap.
	//
	// In the kernel, a block device queues at most nr_requests requests
	// (per hardware queue); io_uring hands a write the block layer has no
	// room for to its worker threads, which wait there. So the ring keeps
	// at most nr_requests in the kernel, and a QueueDepth beyond that is
	// backlog. (Issue 12: QueueDepth 256 over a loop device's
	// nr_requests 128 let 256 into the kernel, and isolated pages cost
	// about twice the CPU at 0.7–0.8 × the pages/s.)
	inFlight := cfg.QueueDepth
	if nr := t.NrRequests; nr > 0 && inFlight > nr {
		inFlight = nr
		cfg.Logger.Info(fmt.Sprintf("QueueDepth %d is above the device's nr_requests %d: at most %d writes go to the kernel at once, the rest wait in the ring", cfg.QueueDepth, nr, nr), "target", cfg.Path)
	}
	if sb := segmentBytes(t, ps); sb > 0 && cfg.MaxIOBytes > sb {
		cfg.Logger.Info(fmt.Sprintf("MaxIOBytes %d is above %d, what the device's max_segments %d covers when each %d-byte memory page is a segment of its own: a larger write whose pages are not physically contiguous is split by the block layer, and io_uring hands it to a worker thread", cfg.MaxIOBytes, sb, t.MaxSegments, os.Getpagesize()), "target", cfg.Path)
	}
	depth := min(len(e.recs)+ring.RunSlotBatch+len(e.reads)+1, ring.MaxDepth)
	rcfg := ring.Config{Depth: depth, InFlight: inFlight, Handler: e.endIO, Logf: func(format string, args ...any) {
		cfg.Logger.Info(fmt.Sprintf(format, args...), "target", cfg.Path)
	}}
	if cfg.OpenRing != nil {
		e.ring, err = cfg.OpenRing(t, rcfg)
	} else {
		e.ring, err = ring.Open(t, cfg.Ring, rcfg)
	}
	if err != nil {
		t.Close()
		return fmt.Errorf("engine: open %s: %w", cfg.Path, err)
	}
	// A backend without a backlog accepts fewer: use as many records as
	// it takes.
	for i := range min(len(e.recs), max(e.ring.Caps().Depth, 1)) {
		e.freeRecs <- int32(i)
	}
	if !cfg.NoRegisterBuffers {
		caps := e.ring.Caps()
		if caps.WritevFixed || caps.WriteFixed {
			if err := e.ring.RegisterBuffers(c.Buffers()); err != nil {
				cfg.Logger.Info("registered buffers unavailable; using plain writes", "target", cfg.Path, "err", err)
			} else {
				e.fixed = true
			}
		}
	}
	e.resolveThresholds()
	e.bgKick = make(chan struct{}, 1)
	e.bgStop = make(chan struct{})
	e.syncKick = make(chan struct{}, 1)
	e.bgWG.Add(1)
	go e.syncRunner()
	if e.backgroundOn() {
		e.bgWG.Add(1)
		go e.flusher()
	}
	switch b, ok := cfg.Mapper.(mapper.IndexBounded); {
	case cfg.Mapper == nil:
		c.SetLimit(e.nblocks, "the target "+cfg.Path)
	case ok && b.IndexLimit() > 0:
		c.SetLimit(b.IndexLimit(), "the mapper's range on "+cfg.Path)
	}
	c.SetOps(cacheOps{e})
	return nil
}

// backlogSlots is how many writes the engine keeps with the ring at
// queue depth qd: qd in flight and as many again waiting in the ring.
func backlogSlots(qd int) int { return min(2*qd, ring.MaxDepth) }

// Target describes the device or file the engine writes to.
func (e *Engine) Target() *ring.Target { return e.target }

// Config is the engine's configuration with the defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// RingCaps is what the ring backend can do.
func (e *Engine) RingCaps() ring.Caps { return e.ring.Caps() }

// closeState is Close's progress, so a Close that timed out can be
// called again and go on where it stopped (closeMu).
type closeState struct {
	started  bool
	bgDone   chan struct{} // closed once the background goroutines exited
	passHeld bool          // Close holds the pass lock for good
	synced   bool          // the final sync ran to an answer from the device
	syncErr  error
	ringDone chan error // ring.Close's result
	finished bool
}

// Close stops the engine: new calls fail with ErrClosed, the background
// flusher and group commit stop, and with the pass lock held for good
// (no pass can slip in after it) a final sync writes every dirty page,
// waits for every write and flushes the device. Then the ring and the
// target are closed, the engine's hooks removed and the cache released
// for another engine. Close returns nil only if every page dirty when it
// was called, and every page written by a pass that ran before it took
// the pass lock, is on stable storage.
//
// If the final sync fails after the device answered (a page over a
// hole, a write held in error, a failed flush), Close still releases
// everything: the pages it could not make durable go back dirty on the
// cache's intake list, with their pins, so a new engine on the cache
// writes them. If the device does not answer within CloseTimeout, Close
// returns an error and keeps what the device still needs — the ring, the
// target, the cache (Open on it fails with ErrConfig saying why) and the
// pages in flight; a later Close goes on from there and returns the
// truth once the device answers. After a Close that finished, Close
// returns nil.
func (e *Engine) Close() error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	cs := &e.closing
	if cs.finished {
		return nil
	}
	if !cs.started {
		cs.started = true
		e.closed.Store(true)
		close(e.closedCh)
		close(e.bgStop)
		cs.bgDone = make(chan struct{})
		go func() { e.bgWG.Wait(); close(cs.bgDone) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.CloseTimeout)
	defer cancel()
	timedOut := func(what string) error {
		return fmt.Errorf("engine: close %s: %s within %v (%w); the engine keeps the target and the cache, and a later Close goes on", e.cfg.Path, what, e.cfg.CloseTimeout, ctx.Err())
	}
	if e.testInClose != nil {
		e.testInClose()
	}
	select {
	case <-cs.bgDone:
	case <-ctx.Done():
		return timedOut("background writeback and group commit did not stop")
	}
	if !cs.passHeld {
		select {
		case e.pass <- struct{}{}:
			cs.passHeld = true
		case <-ctx.Done():
			return timedOut("a writeback pass did not finish")
		}
	}
	if !cs.synced {
		b := &syncBatch{members: []syncMember{{}}}
		e.syncRound(ctx, b, true)
		if ctx.Err() != nil {
			return timedOut("the device did not complete the final writes and flush")
		}
		cs.synced, cs.syncErr = true, b.members[0].err
	}
	if cs.ringDone == nil {
		cs.ringDone = make(chan error, 1)
		go func() { cs.ringDone <- e.ring.Close() }()
	}
	var ringErr error
	select {
	case ringErr = <-cs.ringDone:
	case <-ctx.Done():
		return timedOut("the device did not complete in-flight I/O")
	}
	e.releaseCache()
	cs.finished = true
	tErr := e.target.Close()
	return errors.Join(cs.syncErr, ringErr, tErr)
}

// releaseCache hands the cache back, with the pass lock held and nothing
// in flight: every page still dirty in the engine's hands goes back on
// the cache's intake list with its dirty pin; a page written but not
// covered by a good flush is made dirty again (the pin that kept it goes
// back); pages held in error lose their mark (holding them was this
// engine's policy); then the hooks, the index limit and the claim go.
func (e *Engine) releaseCache() {
	e.drain()
	for {
		p := e.set.next(0, 0)
		if p == nil {
			break
		}
		e.set.remove(p.Index())
		e.forget(p)
		p.ClearError()
		e.cache.ReturnDirty(p)
	}
	e.complMu.Lock()
	left := append(e.unflushed, e.flushFailed...)
	e.unflushed, e.flushFailed = nil, nil
	clear(e.inError)
	e.nInError.Store(0)
	e.complMu.Unlock()
	for _, u := range left {
		u.p.ClearError()
		e.cache.SetDirty(u.p) // refuses a dropped page
		e.cache.Put(u.p)
	}
	e.cache.SetOps(nil)
	e.cache.SetLimit(0, "")
	e.cache.Unclaim(&e.claim)
}

// acquirePass takes the pass lock; wait says whether to wait for it.
func (e *Engine) acquirePass(ctx context.Context, wait bool) (bool, error) {
	select {
	case e.pass <- struct{}{}:
		return true, nil
	default:
	}
	if !wait {
		return false, nil
	}
	select {
	case e.pass <- struct{}{}:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-e.closedCh:
		// Close keeps the pass lock from now on: a pass that got past
		// its "closed?" check just before must not wait for it.
		return false, ErrClosed
	}
}

func (e *Engine) releasePass() { <-e.pass }

// writebackForReclaim makes room in a full cache (pages.Ops): it writes
// back and flushes so clean, evictable pages appear.
func (e *Engine) writebackForReclaim(ctx context.Context) error {
	return e.Sync(ctx)
}

// counters are the engine's statistics, updated atomically.
type counters struct {
	pagesWritten   atomic.Int64
	pagesFilled    atomic.Int64
	bytesWritten   atomic.Int64
	writes         atomic.Int64
	pagesIO        atomic.Int64
	inFlight       atomic.Int64
	writeErrors    atomic.Int64
	retries        atomic.Int64
	readMisses     atomic.Int64
	pagesSkipped   atomic.Int64
	passes         atomic.Int64
	syncs          atomic.Int64
	syncsJoined    atomic.Int64
	syncRounds     atomic.Int64
	bgPasses       atomic.Int64
	expiredWritten atomic.Int64
	throttled      atomic.Int64 // nanoseconds
	throttleWaits  atomic.Int64
	flushes        atomic.Int64
	flushErrors    atomic.Int64
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	PagesWritten  int64         `json:"pages_written"`   // pages whose write completed successfully
	PagesFilled   int64         `json:"pages_filled"`    // clean pages written in gaps between dirty runs (Config.FillGaps)
	BytesWritten  int64         `json:"bytes_written"`   // their bytes
	Writes        int64         `json:"writes"`          // writes completed (WriteErrors of them failed in part or whole)
	PagesPerWrite float64       `json:"pages_per_write"` // pages carried per completed write
	InFlight      int64         `json:"in_flight"`       // writes submitted and not completed
	Cached        int64         `json:"cached"`          // pages in the cache
	Dirty         int64         `json:"dirty"`           // dirty pages in the cache
	Writeback     int64         `json:"writeback"`       // pages under writeback
	WriteErrors   int64         `json:"write_errors"`    // writes that failed in part or whole
	Retries       int64         `json:"retries"`         // pages made dirty again after a failed write
	PagesInError  int64         `json:"pages_in_error"`  // pages held in error now
	PagesSkipped  int64         `json:"pages_skipped"`   // pages SyncNone passes skipped (under writeback)
	Passes        int64         `json:"passes"`          // writeback passes run
	Syncs         int64         `json:"syncs"`           // Sync/SyncRange calls
	SyncRounds    int64         `json:"sync_rounds"`     // group-commit rounds run for them
	SyncsJoined   int64         `json:"syncs_joined"`    // calls that joined a round another call started
	Flushes       int64         `json:"flushes"`         // device flushes that succeeded
	FlushErrors   int64         `json:"flush_errors"`    // device flushes that failed
	ReadMisses    int64         `json:"read_misses"`     // pages read in from the device
	Evictions     int64         `json:"evictions"`       // clean pages evicted to make room
	Reclaims      int64         `json:"reclaims"`        // writebacks the cache asked for to make room
	BgPasses      int64         `json:"bg_passes"`       // background writeback passes (over the threshold)
	Expired       int64         `json:"expired"`         // pages written because they were dirty too long
	Throttled     time.Duration `json:"throttled_ns"`    // time writers slept in BalanceDirty
	ThrottleWaits int64         `json:"throttle_waits"`  // sleeps in BalanceDirty
	Backend       string        `json:"backend"`         // the ring backend
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	s := Stats{
		PagesWritten:  e.stats.pagesWritten.Load(),
		PagesFilled:   e.stats.pagesFilled.Load(),
		BytesWritten:  e.stats.bytesWritten.Load(),
		Writes:        e.stats.writes.Load(),
		InFlight:      e.stats.inFlight.Load(),
		Cached:        e.cache.NrCached(),
		Dirty:         e.cache.NrDirty(),
		Writeback:     e.cache.NrWriteback(),
		WriteErrors:   e.stats.writeErrors.Load(),
		Retries:       e.stats.retries.Load(),
		PagesSkipped:  e.stats.pagesSkipped.Load(),
		Passes:        e.stats.passes.Load(),
		Syncs:         e.stats.syncs.Load(),
		SyncRounds:    e.stats.syncRounds.Load(),
		SyncsJoined:   e.stats.syncsJoined.Load(),
		Flushes:       e.stats.flushes.Load(),
		FlushErrors:   e.stats.flushErrors.Load(),
		ReadMisses:    e.stats.readMisses.Load(),
		Evictions:     e.cache.Evictions(),
		Reclaims:      e.cache.Reclaims(),
		BgPasses:      e.stats.bgPasses.Load(),
		Expired:       e.stats.expiredWritten.Load(),
		Throttled:     time.Duration(e.stats.throttled.Load()),
		ThrottleWaits: e.stats.throttleWaits.Load(),
		Backend:       e.ring.Caps().Backend,
	}
	if s.Writes > 0 {
		s.PagesPerWrite = float64(e.stats.pagesIO.Load()) / float64(s.Writes)
	}
	e.complMu.Lock()
	s.PagesInError = int64(len(e.inError))
	e.complMu.Unlock()
	return s
}

// Publish makes the engine's Stats visible through expvar under name
// (served at /debug/vars by net/http's default mux). Publishing a name
// twice panics, as expvar does.
func (e *Engine) Publish(name string) {
	expvar.Publish(name, expvar.Func(func() any { return e.Stats() }))
}

// deliverErrors hands collected errors to Config.OnError, outside the
// completion path.
func (e *Engine) deliverErrors() {
	if e.cfg.OnError == nil {
		return
	}
	e.complMu.Lock()
	errs := e.onErrors
	e.onErrors = nil
	e.complMu.Unlock()
	for _, err := range errs {
		e.cfg.OnError(err)
	}
}

// cacheOps are the hooks the engine installs in its cache (pages.Ops),
// kept off the Engine's own method set.
type cacheOps struct{ e *Engine }

var _ pages.Ops = cacheOps{}

func (o cacheOps) ReadPages(ctx context.Context, ps []*pages.Page) error {
	return o.e.readPages(ctx, ps)
}
func (o cacheOps) WritebackForReclaim(ctx context.Context) error { return o.e.writebackForReclaim(ctx) }
func (o cacheOps) BalanceDirty(ctx context.Context, n int) error { return o.e.balanceDirty(ctx, n) }
