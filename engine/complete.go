package engine

import (
	"hash/crc32"
	"syscall"

	"github.com/wbengine/wbengine/internal/invariants"
	"github.com/wbengine/wbengine/ring"
)

// endIO is the ring's completion handler. It runs on the ring's
// reaping goroutine (one call at a time), never blocks and never
// submits: it ends writeback, makes failed pages dirty again, advances
// the generations and frees the records.
func (e *Engine) endIO(cs []ring.Completion) {
	wrote := false
	var flushRes syscall.Errno
	flushed := false
	e.complMu.Lock()
	for i := range cs {
		c := &cs[i]
		if c.Tag == flushTag {
			flushRes, flushed = c.Err, true
			continue
		}
		if c.Tag&readTag != 0 {
			e.endRead(c)
			continue
		}
		r := &e.recs[c.Tag]
		e.endWrite(r, c)
		e.recGen[c.Tag].Store(0) // after writeback ended: the generation is complete
		wrote = true
	}
	advanced := wrote && e.advanceCompleted()
	e.complMu.Unlock()
	writes := 0
	for i := range cs {
		if cs[i].Tag&(flushTag|readTag) == 0 {
			e.freeRecs <- int32(cs[i].Tag) // never blocks: room for every record
			writes++
		}
	}
	e.stats.inFlight.Add(-int64(writes))
	if flushed {
		e.flushDone <- flushRes // never blocks: one flush at a time
	}
	if advanced && e.nWaiters.Load() > 0 {
		e.wakeWaiters()
	}
}

// endWrite retires one completed write, with complMu held: for every
// page, first record any error and make a failed page dirty again (the
// one clean → dirty path, which gives it a new dirty pin and puts it on
// the intake list) with the stamp of the content it still owes the
// device, then end writeback. A successful page's pin moves to the
// unflushed list, with its write's stamp, until a flush covers it (or
// is dropped now where the target needs no flush, or the page is on the
// list already from an earlier write: one entry and one pin per page,
// keeping the older stamp, so the list never holds more than the
// cache); a failed page's pin is dropped.
func (e *Engine) endWrite(r *record, c *ring.Completion) {
	okPages := len(r.pages)
	if c.Err != 0 {
		okPages = int(c.N / int64(e.ps))
	}
	var failed []uint64
	for i, p := range r.pages {
		st := &e.slots[p.Slot()]
		if i < okPages {
			if invariants.Enabled && !e.noStableCheck && i < len(r.sums) {
				if sum := crc32.Checksum(p.Data(), crcTable); sum != r.sums[i] {
					invariants.Failf("engine: page %d changed while its write was in flight", p.Index())
				}
			}
			if st.failures.Load() != 0 {
				st.failures.Store(0)
			}
			st.cause, st.errno = failNone, 0
			if p.Flags().IsError() {
				p.ClearError()
				if _, ok := e.inError[p.Index()]; ok {
					delete(e.inError, p.Index())
					e.nInError.Add(-1)
				}
			}
			// Listed before writeback ends: from then on a pass may take
			// the page again and overwrite wbSince.
			switch {
			case st.wbSince == 0:
				e.put = append(e.put, p) // a gap page (FillGaps): owed nothing
			case !e.needFlush:
				e.put = append(e.put, p) // durable now
			case st.unflushedAt == 0:
				e.unflushed = append(e.unflushed, unflushedPage{p: p, since: st.wbSince})
				st.unflushedAt = int32(len(e.unflushed)) // the write's pin moves to the list
			default:
				u := &e.unflushed[st.unflushedAt-1]
				u.since = min(u.since, st.wbSince)
				e.put = append(e.put, p) // listed already, with a pin
			}
			continue
		}
		held := int(st.failures.Add(1)) >= e.cfg.MaxRetries
		if held {
			p.SetError()
			if _, ok := e.inError[p.Index()]; !ok {
				e.nInError.Add(1)
			}
			e.inError[p.Index()] = c.Err
		}
		st.cause, st.errno = failIO, c.Err
		failed = append(failed, p.Index())
		// The stamp goes back before the page is dirty again, so a pass
		// that takes it sees it (the page is under writeback until
		// EndWritebackPages below: no pass takes it before).
		since := st.wbSince
		if since == 0 {
			// A gap page (FillGaps): a failed write may have torn the
			// copy the device had, so it is owed again, to every Sync.
			since = 1
		}
		casMin(&st.dirtySince, since)
		if !e.cache.SetDirty(p) {
			e.lowered = append(e.lowered, p) // dirtied meanwhile: maybe in the set
		}
		e.put = append(e.put, p)
	}
	e.cache.EndWritebackPages(r.pages)
	for _, p := range e.put {
		e.cache.Put(p) // the write's pin
	}
	clear(e.put)
	e.put = e.put[:0]
	e.stats.writes.Add(1)
	e.stats.pagesIO.Add(int64(len(r.pages)))
	if okPages > 0 {
		e.stats.pagesWritten.Add(int64(okPages))
		e.stats.bytesWritten.Add(int64(okPages * e.ps))
	}
	if len(failed) == 0 {
		return
	}
	e.stats.writeErrors.Add(1)
	e.stats.retries.Add(int64(len(failed)))
	if e.cfg.OnError != nil && len(e.onErrors) < 1024 {
		pe := &PageError{Op: "write", Path: e.cfg.Path, Count: len(failed), Errno: c.Err, Err: c.Err, Class: ErrIO}
		pe.Pages = failed[:min(len(failed), maxNamedPages)]
		e.onErrors = append(e.onErrors, pe)
	}
}
