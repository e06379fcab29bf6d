// Package sqlitevfs is a SQLite VFS (for github.com/ncruces/go-sqlite3,
// pure Go) over the writeback engine: SQLite databases on a raw block
// device or a file, cached by one pages.Cache and written back by one
// engine.Engine, with no file system and no kernel page cache.
//
// # Layout
//
// Format lays the device out once: a directory, kept twice (pages 0 and
// 1), then one region of pages per file, in the order given — typically
// a database, its rollback journal and its WAL (DatabaseRegions). Each
// directory copy carries a magic, a sequence number and a CRC32C;
// updates go to the two copies alternately, so a torn directory write
// loses only that update, and on open the valid copy with the higher
// sequence number wins. A file's region is fixed at format time: a
// write or truncation past it fails with SQLITE_FULL and never touches
// another file's pages. Nameless temporary files and files opened
// delete-on-close (temp databases, statement journals, sorter spills)
// live in memory.
//
// # Durability
//
// xRead and xWrite go through the cache (pages.Cache ReadAt and
// WriteAt); reads past a file's size return io.EOF. xSync is SyncRange
// over the file's region — its pages written and the device flushed —
// and then, if the file's size or existence changed since it was last
// recorded, a directory update, itself synced. In that order: the size
// on the device only ever covers pages that are on the device, so a
// crash never shows a file longer than what it holds.
//
// For this VFS a crash of the process is a power cut: the cache lives
// in the process, and what the kernel's page cache would keep after a
// SIGKILL this VFS loses unless it was synced. So a deletion (xDelete)
// or a truncation (xTruncate) is on the device before it returns,
// whatever syncDir says: under synchronous=FULL SQLite passes
// syncDir=false when it deletes the rollback journal to commit, and a
// journal that came back after a crash would roll back a committed
// transaction. A truncation drops the freed pages from the cache (the
// database's are also discarded on the device) and may only lower the
// recorded size.
//
// Bytes past a file's size are never trusted: growing a file zeroes
// whatever part of the new range the write does not cover (the rest of
// a partial last page left by a truncation — WAL frames are 4,120 bytes
// — or by a crash, and whole pages past the old size, written as zeros
// so that nothing stale is read in from the device).
//
// With synchronous=FULL every transaction whose COMMIT returned survives
// a crash. With synchronous=NORMAL the database stays consistent, but a
// crash — of the process as much as of the machine — may lose the last
// commits: in WAL mode every commit since the last checkpoint (SQLite
// syncs the WAL only to checkpoint it). In DELETE mode SQLite still
// syncs the journal and the database at every commit, and this VFS makes
// the journal's deletion durable, so the crash tests have not seen a
// commit lost there; but SQLite does not promise that, and neither does
// this package.
//
// # Device characteristics
//
// DeviceCharacteristics claims only what the VFS and the engine
// guarantee today:
//   - SAFE_APPEND: the recorded size grows only after the pages under it
//     are durable (see above), so SQLite need not sync a rollback journal
//     twice to protect its record count.
//   - POWERSAFE_OVERWRITE (psow=0 in the URI turns it off): the engine
//     writes only pages that were dirtied, each with its current content,
//     and never rewrites a clean page; within a page it relies on the
//     device writing a sector all or nothing, as SQLite's own unix VFS
//     does. Gap filling (writing clean pages between dirty ones to make
//     longer runs), if the engine gains it, breaks this and must not be
//     turned on under this VFS.
//   - SUBPAGE_READ: reads of less than a page are served by the cache.
//
// Not claimed: ATOMIC* (the engine does not promise that a write of one
// page, let alone several, is all or nothing), SEQUENTIAL (writeback
// runs in page order, and reclaim may write any dirty page early),
// BATCH_ATOMIC. SectorSize is the cache's page size.
//
// # One process, one connection
//
// One process per device: the engine opens a block device O_EXCL and
// takes an exclusive flock on a file (ring.ErrTargetBusy otherwise).
// Locks (xLock) are kept in process. The VFS offers no shared memory,
// and without it SQLite runs WAL only under locking_mode=EXCLUSIVE: one
// connection per database. OpenDB sets that up and checks that SQLite
// took the journal mode asked for (without exclusive locking a request
// for WAL silently stays "delete"). In DELETE mode OpenDB keeps normal
// locking unless asked (DBOptions.Exclusive); under exclusive locking
// SQLite commits by zeroing the journal's header instead of deleting the
// journal.
package sqlitevfs
