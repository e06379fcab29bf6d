package engine

import (
	"context"
	"sync"
	"sync/atomic"
)

// Generations: every write gets the next number when its run is opened;
// waiting for a write means waiting until every generation up to its own
// has completed.

// generations are the completed generation and its waiters.
type generations struct {
	// completed is "every write with generation ≤ completed has
	// completed" (completions arrive out of order; see advanceCompleted). Waiting for a generation needs no lock or channel per page:
	// a waiter registers in nWaiters, then rechecks completed, and sleeps
	// on waitCond (or, when it must also watch a context, on the current
	// waitCh); the handler, after it advances completed, wakes them only
	// when nWaiters > 0: it broadcasts waitCond and closes waitCh
	// (making a new one) if a channel waiter exists. The waiter's
	// increment and the handler's store are sequentially consistent
	// atomics, so one of them always sees the other.
	completed atomic.Uint64
	lastGen   atomic.Uint64 // the highest generation handed out
	nWaiters  atomic.Int32
	waitMu    sync.Mutex // protects waitCh, chWaiters; waitCond's lock
	waitCond  sync.Cond
	waitCh    chan struct{}
	chWaiters int
}

// advanceCompleted recomputes completed, with complMu held, and reports
// whether it moved. Every write with a generation below the smallest
// one still outstanding (opened by a pass and not yet completed) has
// completed, so completed is that generation minus one, or the last
// generation handed out when none is outstanding. The pass stores a
// record's generation before it publishes it in lastGen, and lastGen is
// read here before the records are scanned, so a generation handed out
// meanwhile is either seen outstanding or above the lastGen read: either
// way completed stays below it. Completions arriving out of order, or a
// write that takes far longer than the others, need no window of flags:
// the scan is over QueueDepth records.
func (e *Engine) advanceCompleted() bool {
	through := e.lastGen.Load()
	for i := range e.recGen {
		if g := e.recGen[i].Load(); g != 0 && g-1 < through {
			through = g - 1
		}
	}
	if through <= e.completed.Load() {
		return false
	}
	e.completed.Store(through)
	return true
}

// waitGen waits until every write with generation ≤ g has completed.
// Waiting costs no lock or channel per page (see Engine.completed):
// without a cancellable ctx it sleeps on waitCond and allocates nothing;
// with one it takes the current waitCh, which the handler closes.
func (e *generations) waitGen(ctx context.Context, g uint64) error {
	if e.completed.Load() >= g {
		return nil
	}
	done := ctx.Done()
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	e.nWaiters.Add(1)
	defer e.nWaiters.Add(-1)
	for e.completed.Load() < g {
		if done == nil {
			e.waitCond.Wait()
			continue
		}
		e.chWaiters++
		ch := e.waitCh
		e.waitMu.Unlock()
		select {
		case <-ch:
		case <-done:
		}
		e.waitMu.Lock()
		e.chWaiters--
		if err := ctx.Err(); err != nil && e.completed.Load() < g {
			return err
		}
	}
	return nil
}

// wakeWaiters wakes every waitGen sleeper; the handler calls it after
// it advanced completed, only when someone waits.
func (e *generations) wakeWaiters() {
	e.waitMu.Lock()
	if e.chWaiters > 0 {
		close(e.waitCh)
		e.waitCh = make(chan struct{})
	}
	e.waitCond.Broadcast()
	e.waitMu.Unlock()
}
