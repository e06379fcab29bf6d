// Package engine writes back a page cache's dirty pages to a block
// device or file: the kernel's mpage_writepages in userspace, over
// package pages (the cache), mapper (page → block) and ring (io_uring).
//
// # Model
//
// Writers dirty pages in a pages.Cache from any goroutine without a lock
// (SetDirty, or WriteAt). Each clean → dirty transition puts the page on
// the cache's lock-free intake list. A writeback pass (WritePages, with a
// WritebackControl) takes the whole intake list into the engine's
// index-ordered dirty set, walks the set over its range in index order —
// lock the page; skip it if it is no longer dirty or cached; if a write
// of it is in flight, skip it (SyncNone) or wait for that write
// (SyncAll); clear Dirty; map it to a block; add it to the open run or
// seal the run first; set Writeback; unlock (for the common page, an
// unlocked dirty one, that whole sequence is one compare-and-swap) — and
// submits the sealed runs as vectored writes in batches, one
// io_uring_enter per batch, never more than QueueDepth in flight; the
// ring holds as many again waiting and feeds them to the device as
// writes complete, so the device does not wait for the pass. The pass
// runs through ring.Run: on the native ring on the ring's own thread,
// which puts its writes into the submission queue, submits and reaps in
// one system call and ends writeback inline; its caller hands it the
// work once. A run is pages contiguous by index and by block; it is
// sealed at a discontiguity, at MaxIOBytes (at most 1024 pages) and at
// a mapper boundary; a run over more than one registered buffer is a
// plain write rather than a fixed one. Pages adjacent in
// memory share an iovec. With FillGaps, a short gap of clean cached
// pages between two runs is written too.
//
// When a write completes, the engine first makes any failed page dirty
// again (through the same clean → dirty transition), then ends writeback
// on every page and marks the write's generation complete. Every write
// carries a generation number, handed out in order; waiting for a page's
// write means waiting until every generation up to its own is complete,
// so nothing waits on a per-page lock or channel.
//
// Sync (SyncRange for part of the cache) is the data-integrity path: a
// SyncAll pass writes exactly the pages dirty in the range when it
// started (writers that keep dirtying cannot make it run forever),
// waiting for writes already in flight and writing those pages again;
// pages whose writes failed are written again, up to MaxRetries times in
// a row; then the device is flushed. Sync returns nil only when every
// page dirty at its start is on stable storage, and it decides that from
// the pages themselves, not from the errors it met on the way: each page
// carries the epoch (a count of the pass's drains) of the oldest content
// it still owes the device — while dirty, while in a write, while
// written and not yet covered by a good flush — and a failed write or
// flush puts the older epoch back. After its flush a Sync looks at the
// pages of its own range (in the dirty set, in writes in flight, on the
// list of writes not yet flushed) and fails, naming them and why, if any
// still owes content from before it was called. Syncs that share a
// group-commit round each get the answer for their own range.
//
// Close holds the pass lock for its final sync, so no pass can slip in
// after it; if the device does not answer in time it keeps what the
// device still needs (the ring, the target, the claim on the cache) and
// a later Close goes on; if the final sync fails after the device
// answered, the pages it could not make durable go back, dirty, to the
// cache's intake list for the next engine.
//
// # Errors lose nothing
//
// The kernel forgets a page whose write failed (it leaves it clean). The
// engine does not: a failed page is dirty again and retried; after
// MaxRetries consecutive failures it is held in error, stays dirty, and
// every Sync covering it fails with an error naming it (errors.Is(err,
// ErrIO)) until a write succeeds or the application drops it with
// Invalidate. A failed device flush makes every page written since the
// last good flush dirty again. Errors a retry fixed are counted in Stats
// and passed to Config.OnError.
//
// # Concurrency
//
// Every exported method may be called from any goroutine. One pass runs
// per cache at a time: a SyncNone WritePages that finds one running
// returns at once, a SyncAll one (and Sync, and Invalidate) waits for
// it. The pass holder owns the dirty set and the runs it builds; a run's
// record passes to the ring at submission and back to the engine when
// its completion is handled. The completion handler runs on the ring's
// goroutine, never blocks and never submits. On the native ring the
// pass runs on that same thread, so it never blocks on what only the
// thread can release: where it waits — for a page lock, a write in
// flight, a free record — it reaps completions while it waits.
//
// docs/design.md in the repository puts the packages together: the life
// of a page, the concurrency contract, the error model.
package engine
