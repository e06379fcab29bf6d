package sqlitevfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

const (
	defaultPageSize   = 4096
	defaultCachePages = 16384 // 64 MiB of 4 KiB pages
)

// Options are Open's options. The zero value is usable.
type Options struct {
	// Name the VFS is registered under, for "?vfs=" in a URI (default
	// "wbengine-N", N counting the VFSes this process opened).
	Name string
	// Cache configures the page cache (default: 4 KiB pages, 16384 of
	// them: 64 MiB). PageSize must be the one the device was formatted
	// with.
	Cache pages.Config
	// Engine is passed to engine.Open; Path and Mapper are set by Open.
	// Tests set OpenRing (a power-cut model) and FlushAlways.
	Engine engine.Config

	// broken breaks the VFS's syncs on purpose (tests only).
	broken breakMode
}

// breakMode is a deliberately wrong sync, for tests that must show the
// crash checks can fail.
type breakMode int

const (
	breakNone breakMode = iota
	// breakNoFlush: xSync writes the file's pages (and the directory)
	// and waits for the writes, but never flushes the device
	// (WritePages with SyncAll instead of SyncRange).
	breakNoFlush
	// breakSkipJournal: xSync on a rollback journal or a WAL does
	// nothing; the database's own syncs are kept.
	breakSkipJournal
	// breakLazyDelete: xDelete honours syncDir=false and leaves the
	// deletion in memory until the next directory write.
	breakLazyDelete
)

var breakNames = map[string]breakMode{"": breakNone, "none": breakNone, "noflush": breakNoFlush, "skipjournal": breakSkipJournal, "lazydelete": breakLazyDelete}

func (b breakMode) String() string {
	for n, m := range breakNames {
		if m == b && n != "" {
			return n
		}
	}
	return fmt.Sprintf("break(%d)", int(b))
}

var vfsCount atomic.Int64

// VFS is one device (or file) with a directory of SQLite files on it,
// cached by one pages.Cache and written back by one engine.Engine.
// Register-free: Open registers it with SQLite under Name, Close
// unregisters it.
type VFS struct {
	name   string
	path   string
	cache  *pages.Cache
	eng    *engine.Engine
	ps     int64
	broken breakMode

	// dirMu serialises directory updates and protects dir: the durable
	// view of every file (its exists flag and size as last written, or
	// being written, to the device) and the sequence number.
	dirMu   sync.Mutex
	dir     directory
	dirPage []byte

	// files by name; the map and each entry's region are fixed at Open.
	files map[string]*entry

	closed atomic.Bool
}

// entry is one file of the directory.
type entry struct {
	name         string
	rec          int    // its record in VFS.dir.files
	start, pages uint64 // its region

	// mu protects exists and size (the file as SQLite sees it now,
	// ahead of the durable view while writes are not synced); writers,
	// Truncate and Delete hold it exclusively, readers shared, across
	// their cache I/O.
	mu     sync.RWMutex
	exists bool
	size   int64

	locks lockState
}

// Open opens the device or file at path, formatted by Format, and
// registers a VFS for SQLite over it. The target is opened for writing
// by the engine (O_EXCL on a block device, an exclusive flock on a
// file): one process, one VFS per device.
func Open(path string, opt Options) (*VFS, error) {
	pc := opt.Cache
	if pc.PageSize == 0 {
		pc.PageSize = defaultPageSize
	}
	if pc.Capacity == 0 {
		pc.Capacity = defaultCachePages
	}
	c, e, npages, err := openEngine(path, pc, opt.Engine)
	if err != nil {
		return nil, fmt.Errorf("sqlitevfs: open %s: %w", path, err)
	}
	v := &VFS{
		name:   opt.Name,
		path:   path,
		cache:  c,
		eng:    e,
		ps:     int64(pc.PageSize),
		broken: opt.broken,
		files:  map[string]*entry{},
	}
	if v.name == "" {
		v.name = fmt.Sprintf("wbengine-%d", vfsCount.Add(1))
	}
	buf := make([]byte, dirPages*pc.PageSize)
	if _, err := c.ReadAt(buf, 0); err != nil {
		v.shut()
		return nil, fmt.Errorf("sqlitevfs: open %s: read the directory: %w", path, err)
	}
	d, err := newest(buf[:pc.PageSize], buf[pc.PageSize:])
	if err != nil {
		v.shut()
		return nil, fmt.Errorf("sqlitevfs: open %s: %w", path, err)
	}
	if d.devPages > npages {
		v.shut()
		return nil, fmt.Errorf("sqlitevfs: open %s: formatted for %d pages, the device has %d", path, d.devPages, npages)
	}
	v.dir = *d
	v.dirPage = make([]byte, pc.PageSize)
	for i, r := range d.files {
		v.files[r.name] = &entry{name: r.name, rec: i, start: r.start, pages: r.pages, exists: r.exists, size: r.size}
	}
	if vfs.Find(v.name) != nil {
		v.shut()
		return nil, fmt.Errorf("sqlitevfs: open %s: a VFS named %q is already registered", path, v.name)
	}
	vfs.Register(v.name, sqlVFS{v})
	return v, nil
}

// Name is the name the VFS is registered under.
func (v *VFS) Name() string { return v.name }

// Stats are the engine's counters.
func (v *VFS) Stats() engine.Stats { return v.eng.Stats() }

// Engine is the engine under the VFS.
func (v *VFS) Engine() *engine.Engine { return v.eng }

// FileInfo describes one file of the directory.
type FileInfo struct {
	Name         string
	Start, Pages uint64 // the region, in pages
	Exists       bool
	Size         int64 // bytes
}

// Files lists the directory as SQLite sees it now (sizes not yet synced
// included).
func (v *VFS) Files() []FileInfo {
	var fs []FileInfo
	for _, e := range v.files {
		e.mu.RLock()
		fs = append(fs, FileInfo{Name: e.name, Start: e.start, Pages: e.pages, Exists: e.exists, Size: e.size})
		e.mu.RUnlock()
	}
	slices.SortFunc(fs, func(a, b FileInfo) int { return int(a.Start) - int(b.Start) })
	return fs
}

// Close unregisters the VFS and closes the engine (which syncs what is
// dirty) and the cache. Close the SQLite connections first.
func (v *VFS) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	vfs.Unregister(v.name)
	return v.shut()
}

func (v *VFS) shut() error {
	err := v.eng.Close()
	if cerr := v.cache.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncPages makes the pages [start, end) durable (SyncRange); broken
// on purpose, it only writes them.
func (v *VFS) syncPages(start, end uint64) error {
	ctx := context.Background()
	if v.broken == breakNoFlush {
		return v.eng.WritePages(ctx, &engine.WritebackControl{SyncMode: engine.SyncAll, RangeStart: start, RangeEnd: end})
	}
	return v.eng.SyncRange(ctx, start, end)
}

// setDurable changes a file's durable state with change (which gets
// the record as it stands) and writes the directory if that changed it.
// The caller made sure the device holds what the new state claims (for
// a larger size: the file's pages, synced). With write false the change
// waits in memory for the next directory write.
func (v *VFS) setDurable(e *entry, write bool, change func(r *dirRecord)) error {
	v.dirMu.Lock()
	defer v.dirMu.Unlock()
	r := &v.dir.files[e.rec]
	old := *r
	change(r)
	if *r == old {
		return nil
	}
	if !write {
		return nil // carried by the next directory write
	}
	if err := v.writeDirLocked(); err != nil {
		*r = old
		return err
	}
	return nil
}

// writeDirLocked writes the directory's next copy and syncs it. On
// failure the sequence number is not used up, so the next attempt
// rewrites the same copy and the other one, the last good one, is never
// overwritten while this one may be torn.
func (v *VFS) writeDirLocked() error {
	v.dir.seq++
	if err := v.dir.encode(v.dirPage); err != nil {
		v.dir.seq--
		return err
	}
	idx := v.dir.seq % 2
	if _, err := v.cache.WriteAt(v.dirPage, int64(idx)*v.ps); err != nil {
		v.dir.seq--
		return fmt.Errorf("sqlitevfs: write the directory: %w", err)
	}
	if err := v.syncPages(idx, idx+1); err != nil {
		v.dir.seq--
		return fmt.Errorf("sqlitevfs: sync the directory: %w", err)
	}
	return nil
}

// sqlVFS is the vfs.VFS that SQLite calls.
type sqlVFS struct{ v *VFS }

var _ vfs.VFS = sqlVFS{}

func (s sqlVFS) Open(name string, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	const inMemory = vfs.OPEN_DELETEONCLOSE | vfs.OPEN_TEMP_DB | vfs.OPEN_TRANSIENT_DB | vfs.OPEN_TEMP_JOURNAL | vfs.OPEN_SUBJOURNAL
	if name == "" || flags&inMemory != 0 {
		return &memFile{}, flags, nil
	}
	v := s.v
	if v.closed.Load() {
		return nil, flags, sqlite3.CANTOPEN
	}
	e := v.files[name]
	if e == nil {
		return nil, flags, vfs.SystemError(fmt.Errorf("sqlitevfs: %s has no region named %q (format the device with one)", v.path, name), sqlite3.CANTOPEN)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.exists && flags&vfs.OPEN_EXCLUSIVE != 0:
		return nil, flags, sqlite3.CANTOPEN
	case !e.exists && flags&vfs.OPEN_CREATE == 0:
		return nil, flags, sqlite3.CANTOPEN
	case !e.exists:
		e.exists, e.size = true, 0 // durable at the file's first sync
	}
	// Gap filling rewrites clean pages, which a torn write at power loss
	// can damage: no power-safe overwrite then.
	return &file{v: v, e: e, flags: flags, psow: v.eng.Config().FillGaps == 0}, flags, nil
}

func (s sqlVFS) Delete(name string, syncDir bool) error {
	v := s.v
	e := v.files[name]
	if e == nil {
		return sqlite3.IOERR_DELETE_NOENT
	}
	e.mu.Lock()
	if !e.exists {
		e.mu.Unlock()
		return sqlite3.IOERR_DELETE_NOENT
	}
	e.exists, e.size = false, 0
	err := v.eng.Invalidate(context.Background(), e.start, e.start+e.pages)
	e.mu.Unlock()
	if err != nil {
		return vfs.SystemError(err, sqlite3.IOERR_DELETE)
	}
	// The cache lives in this process: a deletion left in memory is lost
	// by a crash of the process, and a journal that comes back makes the
	// next open roll back a committed transaction. So the deletion is
	// durable before Delete returns, whatever syncDir says.
	write := !(v.broken == breakLazyDelete && !syncDir)
	if err := v.setDurable(e, write, func(r *dirRecord) { r.exists, r.size = false, 0 }); err != nil {
		return vfs.SystemError(err, sqlite3.IOERR_DELETE)
	}
	return nil
}

func (s sqlVFS) Access(name string, flags vfs.AccessFlag) (bool, error) {
	e := s.v.files[name]
	if e == nil {
		return false, nil
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.exists, nil
}

func (s sqlVFS) FullPathname(name string) (string, error) { return name, nil }

// file is an open file of the directory.
type file struct {
	v     *VFS
	e     *entry
	flags vfs.OpenFlag
	lock  vfs.LockLevel
	psow  bool
}

var (
	_ vfs.FileLockState          = &file{}
	_ vfs.FilePowersafeOverwrite = &file{}
)

func (f *file) base() int64        { return int64(f.e.start) * f.v.ps }
func (f *file) regionBytes() int64 { return int64(f.e.pages) * f.v.ps }

func (f *file) Close() error {
	return f.Unlock(vfs.LOCK_NONE)
}

// ReadAt reads through the cache; past the file's size it returns
// io.EOF (SQLite zero-fills the rest).
func (f *file) ReadAt(b []byte, off int64) (int, error) {
	e := f.e
	e.mu.RLock()
	defer e.mu.RUnlock()
	if off >= e.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), e.size-off))
	m, err := f.v.cache.ReadAt(b[:n], f.base()+off)
	if err != nil {
		return m, err
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes into the cache. A write past the file's region fails
// with SQLITE_FULL and writes nothing.
func (f *file) WriteAt(b []byte, off int64) (int, error) {
	if f.flags&vfs.OPEN_READONLY != 0 {
		return 0, sqlite3.READONLY
	}
	e := f.e
	e.mu.Lock()
	defer e.mu.Unlock()
	end := off + int64(len(b))
	if off < 0 || end > f.regionBytes() {
		return 0, vfs.SystemError(fmt.Errorf("sqlitevfs: %s: write of %d bytes at %d: past its region of %d bytes", e.name, len(b), off, f.regionBytes()), sqlite3.FULL)
	}
	if end > e.size {
		if err := f.extend(off, end); err != nil {
			return 0, err
		}
	}
	n, err := f.v.cache.WriteAt(b, f.base()+off)
	if off+int64(n) > e.size {
		e.size = off + int64(n)
	}
	return n, err
}

var zeroPage [1 << 16]byte

// extend prepares the file to grow from its size to end, the bytes
// [off, end) about to be written by the caller (off = end when there is
// no such write). Bytes past a file's size are never trusted — a
// truncation, or a crash, may have left anything there — so every byte
// of [size, end) the caller will not write is zeroed: the rest of the
// page the size falls in, and every page wholly past the size that the
// write does not cover whole (written whole as zeros, so the cache never
// reads stale data in from the device for it). The caller holds e.mu.
func (f *file) extend(off, end int64) error {
	e, ps, base := f.e, f.v.ps, f.base()
	size := e.size
	if size%ps != 0 && off > size {
		zs, ze := size, min(off, (size/ps+1)*ps)
		if _, err := f.v.cache.WriteAt(zeroPage[:ze-zs], base+zs); err != nil {
			return err
		}
	}
	for p := (size + ps - 1) / ps; p*ps < end; p++ {
		ps0 := p * ps
		if off <= ps0 && end >= ps0+ps {
			continue // the write covers it whole
		}
		if _, err := f.v.cache.WriteAt(zeroPage[:ps], base+ps0); err != nil {
			return err
		}
	}
	return nil
}

// Truncate sets the file's size. Shrinking drops the whole pages past
// the new size from the cache (the database's are also discarded on the
// device) and is durable before Truncate returns: a journal truncated to
// commit a transaction must not come back after a crash.
func (f *file) Truncate(size int64) error {
	if f.flags&vfs.OPEN_READONLY != 0 {
		return sqlite3.READONLY
	}
	e, ps := f.e, f.v.ps
	e.mu.Lock()
	if size < 0 || size > f.regionBytes() {
		e.mu.Unlock()
		return vfs.SystemError(fmt.Errorf("sqlitevfs: %s: truncate to %d bytes: past its region of %d bytes", e.name, size, f.regionBytes()), sqlite3.FULL)
	}
	if size >= e.size {
		var err error
		if size > e.size {
			if err = f.extend(size, size); err == nil {
				e.size = size
			}
		}
		e.mu.Unlock()
		return err
	}
	e.size = size
	first := e.start + uint64((size+ps-1)/ps)
	ctx := context.Background()
	err := f.v.eng.Invalidate(ctx, first, e.start+e.pages)
	e.mu.Unlock()
	if err != nil {
		return vfs.SystemError(err, sqlite3.IOERR_TRUNCATE)
	}
	// The durable size may only shrink here: what the device holds past
	// the durable size was never synced, and may stay unsynced.
	if err := f.v.setDurable(e, true, func(r *dirRecord) { r.size = min(r.size, size) }); err != nil {
		return vfs.SystemError(err, sqlite3.IOERR_TRUNCATE)
	}
	if f.flags&vfs.OPEN_MAIN_DB != 0 {
		// Give the database's freed blocks back to the device, now that
		// no durable size covers them.
		if err := f.v.eng.Discard(ctx, first, e.start+e.pages); err != nil && !errors.Is(err, ring.ErrNotSupported) {
			return vfs.SystemError(err, sqlite3.IOERR_TRUNCATE)
		}
	}
	return nil
}

// Sync makes the file durable: its pages (SyncRange over its region),
// then, if its size changed since the last sync, the directory. In that
// order, so no durable size ever covers pages that are not durable.
func (f *file) Sync(flags vfs.SyncFlag) error {
	if f.v.broken == breakSkipJournal && f.flags&(vfs.OPEN_MAIN_JOURNAL|vfs.OPEN_WAL) != 0 {
		return nil
	}
	e := f.e
	e.mu.RLock()
	exists, size := e.exists, e.size
	e.mu.RUnlock()
	if err := f.v.syncPages(e.start, e.start+e.pages); err != nil {
		return vfs.SystemError(err, sqlite3.IOERR_FSYNC)
	}
	if err := f.v.setDurable(e, true, func(r *dirRecord) { r.exists, r.size = exists, size }); err != nil {
		return vfs.SystemError(err, sqlite3.IOERR_FSYNC)
	}
	return nil
}

func (f *file) Size() (int64, error) {
	f.e.mu.RLock()
	defer f.e.mu.RUnlock()
	return f.e.size, nil
}

// SectorSize is the page size: the engine writes whole pages.
func (f *file) SectorSize() int { return int(f.v.ps) }

// DeviceCharacteristics claims what the VFS and the engine guarantee
// (see the package documentation):
//   - SAFE_APPEND: a file's durable size grows only after the pages under
//     it are durable, so a crash never shows an appended range the
//     device does not hold.
//   - POWERSAFE_OVERWRITE (unless turned off with the psow=0 URI
//     parameter, or the engine fills gaps: engine.Config.FillGaps): the
//     engine writes only pages that were dirtied, each with its current
//     content, and never rewrites a clean page; within
//     a page it relies on the device writing a sector all or nothing,
//     as SQLite's own unix VFS does.
//   - SUBPAGE_READ: reads of less than a page go through the cache.
func (f *file) DeviceCharacteristics() vfs.DeviceCharacteristic {
	dc := vfs.IOCAP_SAFE_APPEND | vfs.IOCAP_SUBPAGE_READ
	if f.psow {
		dc |= vfs.IOCAP_POWERSAFE_OVERWRITE
	}
	return dc
}

func (f *file) PowersafeOverwrite() bool     { return f.psow }
func (f *file) SetPowersafeOverwrite(b bool) { f.psow = b }
