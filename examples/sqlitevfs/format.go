package sqlitevfs

import (
	"errors"
	"fmt"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// Region is one file's share of the device, fixed at format time.
type Region struct {
	Name string // the name SQLite opens it by: "bank.db", "bank.db-journal", "bank.db-wal"
	Size int64  // bytes; rounded up to whole pages. The file can never grow past it.
}

// DatabaseRegions is the regions of one database: the database file
// and, where the size is not zero, its rollback journal and its WAL. A
// WAL database needs a journal region too: SQLite switches a database
// into WAL mode (and VACUUMs it) through the rollback journal.
func DatabaseRegions(name string, db, journal, wal int64) []Region {
	rs := []Region{{Name: name, Size: db}}
	if journal > 0 {
		rs = append(rs, Region{Name: name + "-journal", Size: journal})
	}
	if wal > 0 {
		rs = append(rs, Region{Name: name + "-wal", Size: wal})
	}
	return rs
}

// FormatOptions are Format's options.
type FormatOptions struct {
	// PageSize of the cache and the directory (default 4096; a power of
	// two, at least the device's logical block size). Open must use the
	// same.
	PageSize int
	// Force formats a device that already holds a valid directory
	// (destroying its files).
	Force bool
	// Engine is passed to engine.Open (Path and Mapper are set by
	// Format). Tests use it for OpenRing.
	Engine engine.Config
}

// ErrFormatted: Format found a valid directory and was not forced.
var ErrFormatted = errors.New("sqlitevfs: the device already holds a directory")

// Format writes an empty directory with the given regions to the block
// device or file at path: regions are laid out in order after the
// directory's two pages, every file is absent (size zero). Nothing else
// of the device is written: a file's bytes are never read past its size,
// so stale data in a region does no harm. Writing to a device destroys
// what is on it.
func Format(path string, regions []Region, opt FormatOptions) error {
	ps := opt.PageSize
	if ps == 0 {
		ps = defaultPageSize
	}
	if len(regions) == 0 {
		return fmt.Errorf("sqlitevfs: format %s: no regions", path)
	}
	c, e, npages, err := openEngine(path, pages.Config{PageSize: ps, Capacity: 64}, opt.Engine)
	if err != nil {
		return fmt.Errorf("sqlitevfs: format %s: %w", path, err)
	}
	defer c.Close()
	buf := make([]byte, dirPages*ps)
	if _, err := c.ReadAt(buf, 0); err != nil {
		e.Close()
		return fmt.Errorf("sqlitevfs: format %s: read the old directory: %w", path, err)
	}
	if old, err := newest(buf[:ps], buf[ps:]); err == nil && !opt.Force {
		e.Close()
		return fmt.Errorf("%w: %s has %d files (sequence %d); format with Force to destroy them", ErrFormatted, path, len(old.files), old.seq)
	}
	d := &directory{pageSize: ps, devPages: npages}
	next := uint64(dirPages)
	seen := map[string]bool{}
	for _, r := range regions {
		if seen[r.Name] {
			e.Close()
			return fmt.Errorf("sqlitevfs: format %s: region %q named twice", path, r.Name)
		}
		seen[r.Name] = true
		if r.Size <= 0 {
			e.Close()
			return fmt.Errorf("sqlitevfs: format %s: region %q: size %d must be positive", path, r.Name, r.Size)
		}
		n := (uint64(r.Size) + uint64(ps) - 1) / uint64(ps)
		d.files = append(d.files, dirRecord{name: r.Name, start: next, pages: n})
		next += n
	}
	if next > npages {
		e.Close()
		return fmt.Errorf("sqlitevfs: format %s: the regions need %d pages of %d bytes (with the directory's %d), the device has %d", path, next, ps, dirPages, npages)
	}
	// Both copies valid, the same files: sequence 1 at page 1, 2 at
	// page 0. The next update (3) goes to page 1.
	for seq := uint64(1); seq <= 2; seq++ {
		d.seq = seq
		page := buf[int(seq%2)*ps:][:ps]
		if err := d.encode(page); err != nil {
			e.Close()
			return fmt.Errorf("sqlitevfs: format %s: %w", path, err)
		}
	}
	if _, err := c.WriteAt(buf, 0); err != nil {
		e.Close()
		return fmt.Errorf("sqlitevfs: format %s: %w", path, err)
	}
	if err := e.Close(); err != nil { // Close syncs
		return fmt.Errorf("sqlitevfs: format %s: %w", path, err)
	}
	return nil
}

// openEngine opens a cache and an engine over the whole target at path
// (page i at block i) and returns the target's size in pages.
func openEngine(path string, pc pages.Config, ec engine.Config) (*pages.Cache, *engine.Engine, uint64, error) {
	// The target's size, for the mapper, before the engine opens it
	// (read-only: no lock, no O_EXCL).
	t, err := ring.OpenTarget(path, ring.TargetOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, 0, err
	}
	size := t.Size
	t.Close()
	npages := uint64(size) / uint64(pc.PageSize)
	if npages < dirPages+1 {
		return nil, nil, 0, fmt.Errorf("%s holds %d bytes: too small for a directory and a file", path, size)
	}
	c, err := pages.New(pc)
	if err != nil {
		return nil, nil, 0, err
	}
	ec.Path = path
	ec.Mapper = mapper.Linear(0, npages)
	e, err := engine.Open(c, ec)
	if err != nil {
		c.Close()
		return nil, nil, 0, err
	}
	return c, e, npages, nil
}
