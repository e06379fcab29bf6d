package sqlitevfs

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ncruces/go-sqlite3"
)

// DBOptions are OpenDB's options. The zero value is DELETE journal mode
// with synchronous=FULL.
type DBOptions struct {
	// JournalMode is "delete" (default) or "wal".
	JournalMode string
	// Synchronous is "full" (default) or "normal". With "normal" a crash
	// (of the process as much as of the machine: the cache lives in the
	// process) may lose the last commits: in WAL mode every commit since
	// the last checkpoint's sync, in DELETE mode those whose database
	// writes had not all reached the device. The database stays
	// consistent either way.
	Synchronous string
	// CacheSize, if not zero, is SQLite's own PRAGMA cache_size (pages,
	// or KiB when negative).
	CacheSize int
	// Exclusive sets locking_mode=EXCLUSIVE in DELETE mode too (WAL
	// always has it). SQLite then keeps the connection's locks and the
	// rollback journal between transactions: it commits by zeroing the
	// journal's header and syncing it instead of deleting the journal
	// (in effect journal_mode=PERSIST).
	Exclusive bool
}

// URI is the SQLite URI that opens name through the VFS.
func (v *VFS) URI(name string) string {
	return "file:" + (&url.URL{Path: name}).EscapedPath() + "?vfs=" + url.QueryEscape(v.name)
}

// OpenDB opens (creating it if needed) the database name through the
// VFS and sets it up: locking_mode=EXCLUSIVE for WAL (one connection per
// database: the VFS offers no shared memory, and without it SQLite runs
// WAL only in exclusive mode) and, with Exclusive, for DELETE;
// page_size 4096 for a new database; the journal mode — checked: SQLite
// answers with the mode it took, and without exclusive locking a request
// for WAL silently stays "delete" — and synchronous.
func (v *VFS) OpenDB(name string, o DBOptions) (*sqlite3.Conn, error) {
	jm := strings.ToLower(o.JournalMode)
	if jm == "" {
		jm = "delete"
	}
	sy := strings.ToLower(o.Synchronous)
	if sy == "" {
		sy = "full"
	}
	if jm != "delete" && jm != "wal" {
		return nil, fmt.Errorf("sqlitevfs: journal mode %q: want delete or wal", o.JournalMode)
	}
	if sy != "full" && sy != "normal" {
		return nil, fmt.Errorf("sqlitevfs: synchronous %q: want full or normal", o.Synchronous)
	}
	c, err := sqlite3.OpenFlags(v.URI(name), sqlite3.OPEN_READWRITE|sqlite3.OPEN_CREATE|sqlite3.OPEN_URI)
	if err != nil {
		return nil, fmt.Errorf("sqlitevfs: open %s: %w", name, err)
	}
	err = func() error {
		if jm == "wal" || o.Exclusive {
			if got, err := pragma(c, "locking_mode=EXCLUSIVE"); err != nil || got != "exclusive" {
				return errors.Join(fmt.Errorf("locking_mode=EXCLUSIVE returned %q", got), err)
			}
		}
		if _, err := pragma(c, "page_size=4096"); err != nil {
			return err
		}
		if got, err := pragma(c, "journal_mode="+jm); err != nil || got != jm {
			return errors.Join(fmt.Errorf("journal_mode=%s returned %q", jm, got), err)
		}
		if _, err := pragma(c, "synchronous="+sy); err != nil {
			return err
		}
		if o.CacheSize != 0 {
			if _, err := pragma(c, fmt.Sprintf("cache_size=%d", o.CacheSize)); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("sqlitevfs: open %s: %w", name, err)
	}
	return c, nil
}

// pragma runs PRAGMA p and returns the first column of its first row
// ("" when it returns none).
func pragma(c *sqlite3.Conn, p string) (string, error) {
	s, _, err := c.Prepare("PRAGMA " + p)
	if err != nil {
		return "", err
	}
	defer s.Close()
	var out string
	if s.Step() {
		out = s.ColumnText(0)
	}
	for s.Step() {
	}
	return out, s.Err()
}
