package engine

import (
	"context"
	"fmt"
	"syscall"

	"github.com/wbengine/wbengine/ring"
)

// The device flush: it makes durable what the writes it covers left in
// the device's volatile cache, and on failure gives their pages back.

// flush flushes the device's write cache, covering every write that
// completed before it. On failure, the pages those writes carried — and
// those of writes reaped since the list was taken, which completed before
// the flush was submitted or may have — are made dirty again by the next
// drain.
func (e *Engine) flush(ctx context.Context) error {
	if !e.needFlush {
		return nil
	}
	select {
	case e.flushSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.complMu.Lock()
	list := e.unflushed
	e.unflushed = e.spareUnflushed[:0]
	e.spareUnflushed = nil
	for _, u := range list {
		e.slots[u.p.Slot()].unflushedAt = 0
	}
	e.complMu.Unlock()
	if e.testInFlush != nil {
		e.testInFlush()
	}
	req := [1]ring.Request{{Op: ring.OpFlush, Tag: flushTag}}
	if err := e.ring.Submit(req[:]); err != nil {
		e.endFlush(list, syscall.EIO)
		<-e.flushSem
		return fmt.Errorf("%w: flush %s: %w", ErrFlush, e.cfg.Path, err)
	}
	select {
	case errno := <-e.flushDone:
		err := e.endFlush(list, errno)
		<-e.flushSem
		return err
	case <-ctx.Done():
		// The flush is in flight; finish its bookkeeping when it
		// completes, and keep other flushes out until then.
		go func() {
			e.endFlush(list, <-e.flushDone)
			<-e.flushSem
		}()
		return ctx.Err()
	}
}

// endFlush gives back the pins of the pages a flush covered; when it
// failed, it hands them — and every page that joined the unflushed list
// since the flush took its own — to the next drain to be made dirty
// again (it cannot do that itself: it runs without the pass lock, and a
// page being taken for writing must not lose its stamp). Pages
// invalidated meanwhile are left alone there: the application discarded
// them.
func (e *Engine) endFlush(list []unflushedPage, errno syscall.Errno) error {
	if errno == 0 {
		for _, u := range list {
			e.cache.Put(u.p)
		}
		e.stats.flushes.Add(1)
		clear(list)
		e.complMu.Lock()
		if e.spareUnflushed == nil {
			e.spareUnflushed = list[:0]
		}
		e.complMu.Unlock()
		return nil
	}
	e.stats.flushErrors.Add(1)
	err := &PageError{Op: "flush", Path: e.cfg.Path, Errno: errno, Err: errno, Class: ErrFlush}
	e.complMu.Lock()
	window := e.unflushed
	e.unflushed = make([]unflushedPage, 0, cap(window))
	for _, u := range window {
		e.slots[u.p.Slot()].unflushedAt = 0
	}
	e.flushFailed = append(append(e.flushFailed, list...), window...)
	for _, u := range e.flushFailed[len(e.flushFailed)-len(list)-len(window):] {
		e.slots[u.p.Slot()].errno = errno
		if err.Count++; len(err.Pages) < maxNamedPages {
			err.Pages = append(err.Pages, u.p.Index())
		}
	}
	if e.cfg.OnError != nil {
		e.onErrors = append(e.onErrors, err)
	}
	e.complMu.Unlock()
	return err
}
