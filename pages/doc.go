// Package pages is the page cache the writeback engine works on: the
// kernel's address_space for an application's own data.
//
// A Cache holds up to Capacity pages of PageSize bytes. Page memory lives
// in one arena mmap'd off the Go heap and aligned for O_DIRECT, page slot
// i at offset i × PageSize, so pages grabbed in index order sit next to
// each other in memory and a write of them needs few iovecs. Each Page
// has one atomic flags word (Locked, Dirty, Writeback, Uptodate, Error,
// and three housekeeping bits; see Flags) and a pin count.
//
// # The life of a page
//
// Grab and Lookup return a pinned page; Put gives the pin back. Data is
// valid only while the caller holds a pin, and a slot is reused only
// when nobody does, so a stale *Page never touches someone else's data.
// The index holds a reference of its own on every cached page: eviction
// takes the slot by taking that reference (only when it is the last);
// Remove drops it, and the Put that then takes the count to zero frees
// the slot, once.
// A writer changes a pinned page and calls SetDirty (or uses WriteAt,
// which does all of it). The flags word goes clean → dirty by
// compare-and-swap; the one winner of that transition takes a pin of its
// own for the page (the dirty pin) and pushes the page onto the intake
// list. The writeback engine detaches that list, writes the pages, and
// gives the dirty pin back when it retires each page, so a dirty or
// in-flight page can never be evicted or reused.
//
// # Concurrency
//
//   - Lookup, Grab, Put, SetDirty, WriteAt, ReadAt and PrepareWrite may
//     be called from any number of goroutines at once. SetDirty takes no
//     lock and never sleeps; dirtying an already dirty page is one atomic
//     load.
//   - The page lock (Lock, TryLock, Unlock) serialises changes of a
//     page's contents and state: WriteAt holds it while it copies;
//     the engine holds it from ClearDirtyForIO to TestSetWriteback.
//   - The writeback protocol — DetachDirtyEach, ClearDirtyForIO,
//     TryStartWriteback, TestSetWriteback, EndWritebackPages and the
//     rest — belongs to the writeback engine, which runs one pass per
//     cache at a time. It lives in protocol.go, under a heading that
//     states its contract; see intake.go for who owns a page's intake
//     link when. EndWritebackPages may be called from any goroutine (the
//     ring's completion handler) and never blocks for long. Remove, in
//     cache.go, is the engine's too (Invalidate calls it).
//   - Sleeping (Lock, WaitWriteback) uses hashed wait buckets and the
//     page's Waiters bit: no page owns a mutex or channel.
//
// The index → page map is split into 64 shards, each behind its own
// RWMutex on its own cache line, so lookups from many goroutines rarely
// meet.
//
// The cache never imports the engine. Where it needs the device (read a
// page in, make room, pace a writer) it calls the Ops the engine installs
// with SetOps.
//
// docs/design.md in the repository puts the packages together: the life
// of a page, the concurrency contract, the error model.
package pages
