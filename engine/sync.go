package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

// Sync makes every page dirty when it is called durable: SyncRange over
// the whole cache.
func (e *Engine) Sync(ctx context.Context) error { return e.SyncRange(ctx, 0, 0) }

// SyncRange makes every page in [start, end) (page indexes; end 0 = to
// the end) that is dirty when it is called durable (the kernel's
// fsync/msync path): a SyncAll pass over the range; then, with the pass
// lock released, a wait for every write submitted so far (also other
// passes'); then a device flush. Pages whose writes failed and are not
// yet held in error are written again, in up to MaxRetries more rounds.
//
// SyncRange decides its result from the state of its own pages, not
// from the errors it saw on the way: every page is stamped with the
// epoch of the oldest content it still owes the device, and SyncRange
// returns nil only if, after its flush, no page in its range owes
// content from before it was called — none still dirty with it, none in
// a write not yet completed or not covered by a good flush. Otherwise
// it fails with an error naming those pages and why, one PageError per
// cause: held in error (errors.Is(err, ErrIO)) until they are written
// or invalidated, a failed write, a failed flush (ErrFlush), a page that
// could not be mapped (ErrHole, ErrOutOfRange, the mapper's error). A
// failed flush makes every page written since the last good flush dirty
// again, and fails the Syncs of its round with ErrFlush.
//
// Concurrent syncs share work (group commit): a SyncRange that arrives
// while another one runs joins the next round, which starts when the
// running one ends and covers the ranges of all who joined; so N
// concurrent syncs cost about two passes and two flushes, not N. Each
// still gets the result of its own range. A cancelled ctx makes
// SyncRange return early; the round it joined still runs for the
// others.
func (e *Engine) SyncRange(ctx context.Context, start, end uint64) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if end != 0 && end < start {
		return fmt.Errorf("%w: SyncRange [%d, %d): end before start", ErrConfig, start, end)
	}
	e.stats.syncs.Add(1)
	if e.testBeforeJoin != nil {
		e.testBeforeJoin()
	}
	e.syncMu.Lock()
	if e.syncClosed {
		e.syncMu.Unlock()
		return ErrClosed
	}
	b := e.nextSync
	if b == nil {
		b = &syncBatch{done: make(chan struct{})}
		e.nextSync = b
	} else {
		e.stats.syncsJoined.Add(1)
	}
	me := len(b.members)
	b.members = append(b.members, syncMember{start: start, end: end})
	e.syncMu.Unlock()
	select {
	case e.syncKick <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.deliverErrors()
	err := b.members[me].err
	if err != nil {
		e.cfg.Logger.Warn("sync: pages not durable", "target", e.cfg.Path, "range", fmt.Sprintf("[%d, %d)", start, end), "err", err)
	}
	return err
}

// syncBatch is one round of group commit.
type syncBatch struct {
	members []syncMember // the syncs that joined, each with its range and result
	done    chan struct{}
}

// syncMember is one Sync's part of a round.
type syncMember struct {
	start, end uint64
	err        error
}

// union is the smallest range covering every member's.
func (b *syncBatch) union() (start, end uint64) {
	start, end = math.MaxUint64, 1
	for _, m := range b.members {
		start = min(start, m.start)
		if end != 0 && (m.end == 0 || m.end > end) {
			end = m.end
		}
	}
	return start, end
}

// syncState is the group-commit machinery.
type syncState struct {
	syncMu     sync.Mutex // protects nextSync and syncClosed
	nextSync   *syncBatch // the round Syncs join now; nil when none waits
	syncClosed bool       // the runner has stopped: no round will run
	syncKick   chan struct{}
	// roundBusy is set while the runner works on a round (tests wait
	// for it to be idle).
	roundBusy atomic.Bool
}

// syncRunner runs group-commit rounds one after another until Close.
func (e *Engine) syncRunner() {
	defer e.bgWG.Done()
	for {
		select {
		case <-e.bgStop:
			// A Sync that slipped in (it checked closed before Close set
			// it) fails rather than wait for a round that will not come;
			// Close's own final sync covers its pages.
			e.syncMu.Lock()
			e.syncClosed = true
			b := e.nextSync
			e.nextSync = nil
			e.syncMu.Unlock()
			if b != nil {
				for i := range b.members {
					b.members[i].err = ErrClosed
				}
				close(b.done)
			}
			return
		case <-e.syncKick:
		}
		if e.testBeforeRound != nil {
			e.testBeforeRound()
		}
		e.syncMu.Lock()
		b := e.nextSync
		e.nextSync = nil
		if b != nil {
			e.roundBusy.Store(true)
		}
		e.syncMu.Unlock()
		if b == nil {
			continue
		}
		e.syncRound(context.Background(), b, false)
		e.stats.syncRounds.Add(1)
		close(b.done)
		e.roundBusy.Store(false)
	}
}

// syncRound does the work of a group-commit round and sets each
// member's result. With held, the caller holds the pass lock (Close's
// final sync) and keeps it throughout.
//
// A round repeats its pass, wait, flush and check while the check finds
// pages that may yet be made durable — a write that failed but is not
// held in error, a write another pass started that had not completed, a
// write completed after the flush was submitted — at most MaxRetries
// times more.
func (e *Engine) syncRound(ctx context.Context, b *syncBatch, held bool) {
	start, end := b.union()
	fail := func(err error) {
		for i := range b.members {
			b.members[i].err = err
		}
	}
	lock := func() bool {
		if held {
			return true
		}
		if _, err := e.acquirePass(ctx, true); err != nil {
			fail(err)
			return false
		}
		return true
	}
	unlock := func() {
		if !held {
			e.releasePass()
		}
	}
	if e.testBreak == breakFlushFirst {
		e.brokenRound(ctx, b, lock, unlock)
		return
	}
	var since uint64
	for attempt := 0; ; attempt++ {
		if !lock() {
			return
		}
		if attempt == 0 {
			since = e.epoch + 1 // the pass's drain stamps with this
		}
		failedBefore := e.stats.writeErrors.Load()
		wbc := WritebackControl{SyncMode: SyncAll, RangeStart: start, RangeEnd: end}
		passErr := e.runPass(ctx, &wbc, passOpts{})
		last := e.nextGen
		unlock()
		if ctx.Err() != nil {
			fail(ctx.Err())
			return
		}
		if err := e.waitGen(ctx, last); err != nil {
			fail(err)
			return
		}
		if e.testBreak == breakRoundResult {
			// The defect put back: no retry, no look at the pages; every
			// member gets the round's first error (a write failure is
			// not one) if it names a page of its range.
			first := errors.Join(passErr, e.flush(ctx))
			for i := range b.members {
				b.members[i].err = inRange(first, b.members[i].start, b.members[i].end)
			}
			return
		}
		if e.stats.writeErrors.Load() != failedBefore && attempt < e.cfg.MaxRetries {
			// Writes failed: pages of the range that may yet be written
			// are written again before the flush, not after.
			if !lock() {
				return
			}
			retry := e.checkLocked(since, b.members, false)
			unlock()
			if retry {
				continue
			}
		}
		flushErr := e.flush(ctx)
		if ctx.Err() != nil {
			fail(ctx.Err())
			return
		}
		if !lock() {
			return
		}
		retry := e.checkLocked(since, b.members, true)
		unlock()
		if flushErr == nil && retry && attempt < e.cfg.MaxRetries {
			continue
		}
		for i := range b.members {
			if flushErr != nil && !errors.Is(b.members[i].err, ErrFlush) {
				// The flush of this round failed, though none of this
				// member's pages was in it: a device that fails a flush
				// may have lost what it held. Say so without naming
				// other members' pages.
				dev := &PageError{Op: "flush", Path: e.cfg.Path, Err: flushErr, Class: ErrFlush}
				var pe *PageError
				if errors.As(flushErr, &pe) {
					dev.Errno, dev.Err = pe.Errno, pe.Err
				}
				b.members[i].err = errors.Join(b.members[i].err, dev)
			}
		}
		return
	}
}

// brokenRound is the round of breakFlushFirst: flush, then write, and
// trust the flush (a crash test must catch it).
func (e *Engine) brokenRound(ctx context.Context, b *syncBatch, lock func() bool, unlock func()) {
	flushErr := e.flush(ctx)
	if !lock() {
		return
	}
	start, end := b.union()
	wbc := WritebackControl{SyncMode: SyncAll, RangeStart: start, RangeEnd: end}
	e.runPass(ctx, &wbc, passOpts{})
	last := e.nextGen
	unlock()
	e.waitGen(ctx, last)
	for i := range b.members {
		b.members[i].err = flushErr
	}
}

// inRange keeps err if it names a page in [start, end) or no page.
func inRange(err error, start, end uint64) error {
	var pe *PageError
	if err == nil || !errors.As(err, &pe) || len(pe.Pages) == 0 {
		return err
	}
	for _, p := range pe.Pages {
		if p >= start && (end == 0 || p < end) {
			return err
		}
	}
	return nil
}

// checkLocked finds, for each member's range, the pages that owe the
// device content stamped since or earlier — still dirty with it, or,
// when durable is set, in a write not completed or not covered by a good
// flush — and sets each member's err from them; it reports whether some
// of those pages may yet be made durable by another round. The caller holds the
// pass lock; checkLocked drains (so pages given back by failed writes
// and flushes are seen) and holds complMu while it looks, so no page
// moves between the places it looks.
func (e *Engine) checkLocked(since uint64, members []syncMember, durable bool) (retry bool) {
	e.drain()
	e.complMu.Lock()
	defer e.complMu.Unlock()
	for i, m := range members {
		var c collector
		e.set.scanOld(m.start, m.end, since, func(p *pages.Page) {
			st := &e.slots[p.Slot()]
			if s := st.dirtySince.Load(); s == 0 || s > since {
				return
			}
			switch {
			case st.cause == failIO && e.inError[p.Index()] != 0:
				c.add(&c.held, p, st.errno, nil)
			case st.cause == failIO:
				c.add(&c.io, p, st.errno, nil)
				retry = true
			case st.cause == failFlush:
				c.add(&c.flush, p, st.errno, nil)
			case st.cause == failMap:
				c.addMap(p, e.mapErrs[p.Index()])
			default:
				c.add(&c.pending, p, 0, errUnwritten)
				retry = true
			}
		})
		if durable {
			in := func(p *pages.Page) bool {
				idx := p.Index()
				return idx >= m.start && (m.end == 0 || idx < m.end) && !p.Flags().IsDropped()
			}
			for ri := range e.recs {
				if e.recGen[ri].Load() == 0 {
					continue
				}
				for _, p := range e.recs[ri].pages {
					if s := e.slots[p.Slot()].wbSince; s != 0 && s <= since && in(p) {
						c.add(&c.pending, p, 0, errInFlight)
						retry = true
					}
				}
			}
			for _, u := range e.unflushed {
				if u.since <= since && in(u.p) {
					c.add(&c.pending, u.p, 0, errUnflushed)
					retry = true
				}
			}
		}
		members[i].err = c.err(e.cfg.Path)
	}
	return retry
}

// Why a page is not durable when no write or mapping failed.
var (
	errUnwritten = errors.New("not written (the pass did not reach it)")
	errInFlight  = errors.New("its write has not completed")
	errUnflushed = errors.New("its write completed after the flush was submitted")
)

// collector groups the pages a check found by cause.
type collector struct {
	held, io, flush, pending *PageError
	maps                     []*PageError
}

func (c *collector) add(pe **PageError, p *pages.Page, errno syscall.Errno, err error) {
	if *pe == nil {
		*pe = &PageError{Errno: errno, Err: err, Class: ErrIO}
		if err == nil {
			(*pe).Err = errno
		}
	}
	(*pe).Count++
	if len((*pe).Pages) < maxNamedPages {
		(*pe).Pages = append((*pe).Pages, p.Index())
	}
}

func (c *collector) addMap(p *pages.Page, err error) {
	if err == nil {
		err = mapper.ErrHole
	}
	for _, pe := range c.maps {
		if pe.Err == err || pe.Err.Error() == err.Error() {
			c.add(&pe, p, 0, err)
			return
		}
	}
	pe := &PageError{Op: "map", Err: err}
	c.maps = append(c.maps, pe)
	c.add(&pe, p, 0, err)
	pe.Class = nil
}

// err joins what was collected, one PageError per cause, or nil.
func (c *collector) err(path string) error {
	var errs []error
	set := func(pe *PageError, op string, class error, held bool) {
		if pe == nil {
			return
		}
		pe.Op, pe.Path, pe.Class, pe.Held = op, path, class, held
		slices.Sort(pe.Pages)
		errs = append(errs, pe)
	}
	set(c.held, "write", ErrIO, true)
	set(c.io, "write", ErrIO, false)
	set(c.flush, "flush", ErrFlush, false)
	for _, pe := range c.maps {
		pe.Path = path
		slices.Sort(pe.Pages)
		errs = append(errs, pe)
	}
	set(c.pending, "sync", ErrIO, false)
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}
