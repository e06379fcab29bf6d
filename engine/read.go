package engine

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/wbengine/wbengine/internal/invariants"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// readTag marks a read record's tag (the low bits are its index).
const readTag = 1 << 62

// readRecord is one vectored read: a run of pages contiguous by index
// and block. A reader takes it from freeReads, submits it, and waits on
// done; the completion handler fills res and signals done.
type readRecord struct {
	run
	res  ring.Completion
	done chan struct{} // capacity 1
}

func (e *Engine) initReads() {
	e.reads = make([]readRecord, e.cfg.QueueDepth)
	e.freeReads = make(chan int32, e.cfg.QueueDepth)
	for i := range e.reads {
		r := &e.reads[i]
		r.initRun(e.maxPages)
		r.done = make(chan struct{}, 1)
		e.freeReads <- int32(i)
	}
}

// readPages reads locked, pinned pages that are not Uptodate in from the
// target through the ring (pages.Ops): pages contiguous by index and by
// block become one vectored read, merged as writes are (pages adjacent
// in memory share an iovec); pages over a hole read as zeros. Each page
// read in is marked Uptodate.
func (e *Engine) readPages(ctx context.Context, ps []*pages.Page) error {
	if e.closed.Load() {
		return ErrClosed
	}
	e.stats.readMisses.Add(int64(len(ps)))
	var (
		taken  []int32
		cur    = int32(-1)
		first  error
		cursor = extentCursor{m: e.mapper}
	)
	submit := func() {
		if err := e.submitReads(taken); err != nil && first == nil {
			first = err
		}
		taken = taken[:0]
		cur = -1
	}
	for _, p := range ps {
		idx := p.Index()
		block, _, err := cursor.locate(idx)
		if errors.Is(err, mapper.ErrHole) {
			clear(p.Data())
			p.SetUptodate()
			continue
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("engine: read %s: map page %d: %w", e.cfg.Path, idx, err)
			}
			continue
		}
		if block >= e.nblocks {
			if first == nil {
				first = fmt.Errorf("%w: read %s: page %d at block %d", ErrOutOfRange, e.cfg.Path, idx, block)
			}
			continue
		}
		if cur >= 0 && !e.reads[cur].extends(idx, block, p, e.ps) {
			cur = -1
		}
		if cur < 0 {
			if len(taken) == e.cfg.QueueDepth {
				submit()
			}
			var ri int32
			select {
			case ri = <-e.freeReads:
			default:
				// Submit (and so give back) what we hold before waiting,
				// so readers never hold records while they wait for more.
				submit()
				select {
				case ri = <-e.freeReads:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			taken = append(taken, ri)
			cur = ri
			e.reads[ri].start(block, e.ps)
		}
		e.reads[cur].add(p)
	}
	submit()
	return first
}

// submitReads hands the read records taken to the ring in one batch,
// waits for each, marks the pages of the good ones Uptodate and gives
// the records back. It returns the first failure (a refused batch, or a
// read's error naming its pages).
func (e *Engine) submitReads(taken []int32) error {
	if len(taken) == 0 {
		return nil
	}
	var first error
	reqs := make([]ring.Request, len(taken))
	for i, ri := range taken {
		r := &e.reads[ri]
		reqs[i] = ring.Request{Op: ring.OpRead, Off: r.off, Iov: r.iov, Tag: readTag | uint64(ri)}
		if invariants.Enabled {
			if err := e.target.CheckRequest(&reqs[i]); err != nil {
				invariants.Failf("engine: a read ReadPages built is malformed: %v", err)
			}
		}
	}
	if err := e.ring.Submit(reqs); err != nil {
		for _, ri := range taken {
			e.reads[ri].res = ring.Completion{Err: syscall.EIO}
			e.reads[ri].done <- struct{}{}
		}
		first = fmt.Errorf("engine: read %s: %w", e.cfg.Path, err)
	}
	for _, ri := range taken {
		r := &e.reads[ri]
		<-r.done
		if r.res.Err == 0 {
			for _, p := range r.pages {
				p.SetUptodate()
			}
		} else if first == nil {
			idxs := make([]uint64, 0, min(len(r.pages), maxNamedPages))
			for _, p := range r.pages[:min(len(r.pages), maxNamedPages)] {
				idxs = append(idxs, p.Index())
			}
			first = &PageError{Op: "read", Path: e.cfg.Path, Pages: idxs, Count: len(r.pages), Errno: r.res.Err, Err: r.res.Err, Class: ErrIO}
		}
		clear(r.pages)
		e.freeReads <- ri
	}
	return first
}

// endRead is the handler's part of a read: hand the result to the
// waiting reader.
func (e *Engine) endRead(c *ring.Completion) {
	r := &e.reads[c.Tag&^readTag]
	r.res = *c
	r.done <- struct{}{} // never blocks: one completion per submission
}
