package sqlitevfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/ring"
)

func TestDirectoryCopies(t *testing.T) {
	const ps = 4096
	d := &directory{pageSize: ps, devPages: 100, seq: 7, files: []dirRecord{
		{name: "a.db", start: 2, pages: 10, size: 12345, exists: true},
		{name: "a.db-journal", start: 12, pages: 5},
	}}
	a, b := make([]byte, ps), make([]byte, ps)
	if err := d.encode(a); err != nil {
		t.Fatal(err)
	}
	d.seq = 8
	d.files[0].size = 20000
	if err := d.encode(b); err != nil {
		t.Fatal(err)
	}
	got, err := newest(a, b)
	if err != nil || got.seq != 8 || got.files[0].size != 20000 || got.files[1].name != "a.db-journal" {
		t.Fatalf("newest = %+v, %v; want sequence 8", got, err)
	}
	// A torn newer copy loses to the older one, whichever page it is on.
	torn := bytes.Clone(b)
	copy(torn[ps/2:], make([]byte, ps/2))
	torn[60] ^= 1
	for _, pair := range [][2][]byte{{a, torn}, {torn, a}} {
		got, err := newest(pair[0], pair[1])
		if err != nil || got.seq != 7 || got.files[0].size != 12345 {
			t.Errorf("with a torn copy: %+v, %v; want sequence 7", got, err)
		}
	}
	if _, err := newest(torn, make([]byte, ps)); !errors.Is(err, ErrNotFormatted) {
		t.Errorf("no valid copy: %v, want ErrNotFormatted", err)
	}
	// Consistency checks reject a copy whose checksum is right.
	for name, f := range map[string]func(d *directory){
		"overlap":      func(d *directory) { d.files[1].start = 5 },
		"past the end": func(d *directory) { d.files[1].pages = 1000 },
		"size":         func(d *directory) { d.files[0].size = 11 * ps },
		"deleted size": func(d *directory) { d.files[1].size = 1 },
	} {
		bad := *d
		bad.files = append([]dirRecord(nil), d.files...)
		f(&bad)
		if err := bad.encode(a); err != nil {
			t.Fatal(err)
		}
		if _, err := decodeDir(a); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestFormat(t *testing.T) {
	path := loopdevtest.ShmFile(t, 8<<20)
	if err := Format(path, DatabaseRegions("x.db", 16<<20, 0, 0), FormatOptions{}); err == nil || !strings.Contains(err.Error(), "need") {
		t.Errorf("regions larger than the device: %v", err)
	}
	if err := Format(path, []Region{{"a", 4096}, {"a", 4096}}, FormatOptions{}); err == nil {
		t.Error("a region named twice was accepted")
	}
	if err := Format(path, DatabaseRegions("x.db", 4<<20, 1<<20, 1<<20), FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Format(path, DatabaseRegions("y.db", 4<<20, 0, 0), FormatOptions{}); !errors.Is(err, ErrFormatted) {
		t.Errorf("second format without Force: %v, want ErrFormatted", err)
	}
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := []FileInfo{{"x.db", 2, 1024, false, 0}, {"x.db-journal", 1026, 256, false, 0}, {"x.db-wal", 1282, 256, false, 0}}
	if got := v.Files(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("Files() = %+v, want %+v", got, want)
	}
}

// One process, one writer per target: a second Open of a file the
// first holds fails, naming it.
func TestSecondOpenRefused(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
	formatTest(t, path, 2<<20, 0, 0)
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, testOptions())
	if !errors.Is(err, ring.ErrTargetBusy) || !strings.Contains(err.Error(), path) {
		t.Errorf("second Open: %v, want ring.ErrTargetBusy naming %s", err, path)
	}
	v.Close()
	v, err = Open(path, testOptions())
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	v.Close()
}

// rawDir reads the directory the device holds now, bypassing the VFS.
func rawDir(t *testing.T, path string) map[string]dirRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newest(b[:4096], b[4096:8192])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]dirRecord{}
	for _, f := range d.files {
		m[f.name] = f
	}
	return m
}

func openFile(t *testing.T, v *VFS, name string, flags vfs.OpenFlag) vfs.File {
	t.Helper()
	f, _, err := sqlVFS{v}.Open(name, flags|vfs.OPEN_READWRITE|vfs.OPEN_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A file's size reaches the device only after its pages did (Sync),
// and a deletion or a truncation is on the device when Delete or
// Truncate returns.
func TestDurableSizes(t *testing.T) {
	path := loopdevtest.TempFile(t, 4<<20) // a disk file: the test reads it back, bypassing the VFS
	formatTest(t, path, 1<<20, 1<<20, 0)
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	j := openFile(t, v, "test.db-journal", vfs.OPEN_MAIN_JOURNAL)
	data := bytes.Repeat([]byte("journal!"), 1500) // 12000 bytes: three pages, the last partial
	if _, err := j.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if r := rawDir(t, path)["test.db-journal"]; r.exists || r.size != 0 {
		t.Errorf("before Sync the device says %+v, want absent", r)
	}
	if err := j.Sync(vfs.SYNC_FULL); err != nil {
		t.Fatal(err)
	}
	r := rawDir(t, path)["test.db-journal"]
	if !r.exists || r.size != 12000 {
		t.Errorf("after Sync the device says %+v, want 12000 bytes", r)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Equal(raw[r.start*4096:][:12000], data) {
		t.Error("after Sync the device does not hold the journal's bytes")
	}
	if err := j.Truncate(5000); err != nil {
		t.Fatal(err)
	}
	if r := rawDir(t, path)["test.db-journal"]; r.size != 5000 {
		t.Errorf("after Truncate(5000) the device says %d bytes", r.size)
	}
	j.Close()
	if err := (sqlVFS{v}).Delete("test.db-journal", false); err != nil {
		t.Fatal(err)
	}
	if r := rawDir(t, path)["test.db-journal"]; r.exists || r.size != 0 {
		t.Errorf("after Delete(syncDir=false) the device says %+v, want absent", r)
	}
	if err := (sqlVFS{v}).Delete("test.db-journal", false); !errors.Is(err, sqlite3.IOERR_DELETE_NOENT) {
		t.Errorf("second Delete: %v, want IOERR_DELETE_NOENT", err)
	}
	if ok, _ := (sqlVFS{v}).Access("test.db-journal", vfs.ACCESS_EXISTS); ok {
		t.Error("Access says a deleted file exists")
	}
}

// Bytes past a file's size are never trusted: growing the file zeroes
// what the write does not cover, also what an earlier, longer version of
// the file left on the device and in the cache.
func TestGrowZeroes(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
	formatTest(t, path, 1<<20, 0, 0)
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	f := openFile(t, v, "test.db", vfs.OPEN_MAIN_DB)
	junk := bytes.Repeat([]byte{0xAB}, 5*4096)
	if _, err := f.WriteAt(junk, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(vfs.SYNC_FULL); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4100); err != nil { // inside page 1
		t.Fatal(err)
	}
	// Grow with a gap: write 10 bytes at 3*4096+100.
	if _, err := f.WriteAt([]byte("0123456789"), 3*4096+100); err != nil {
		t.Fatal(err)
	}
	check := func(when string, f vfs.File) {
		t.Helper()
		if n, _ := f.Size(); n != 3*4096+110 {
			t.Errorf("%s: size %d, want %d", when, n, 3*4096+110)
		}
		got := make([]byte, 4*4096)
		n, err := f.ReadAt(got, 0)
		if n != 3*4096+110 || err != io.EOF {
			t.Errorf("%s: ReadAt = %d, %v; want %d, io.EOF", when, n, err, 3*4096+110)
		}
		want := make([]byte, 3*4096+110)
		copy(want, junk[:4100])
		copy(want[3*4096+100:], "0123456789")
		if !bytes.Equal(got[:n], want) {
			i := 0
			for i < n && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: first wrong byte at %d: %#x, want %#x", when, i, got[i], want[i])
		}
		if n, err := f.ReadAt(got[:10], 5*4096); n != 0 || err != io.EOF {
			t.Errorf("%s: read past the end = %d, %v; want 0, io.EOF", when, n, err)
		}
	}
	check("before reopening", f)
	if err := f.Sync(vfs.SYNC_FULL); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v.Close()
	v, err = Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f = openFile(t, v, "test.db", vfs.OPEN_MAIN_DB)
	defer f.Close()
	check("after reopening", f)
}

// A file that outgrows its region gets SQLITE_FULL, and the database
// stays usable.
func TestRegionFull(t *testing.T) {
	for _, jm := range []string{"delete", "wal"} {
		t.Run(jm, func(t *testing.T) {
			path := loopdevtest.ShmFile(t, 4<<20)
			formatTest(t, path, 256<<10, 256<<10, 256<<10)
			v, err := Open(path, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			c, err := v.OpenDB("test.db", DBOptions{JournalMode: jm})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			mustExec(t, c, `CREATE TABLE t(v BLOB)`)
			var ferr error
			for i := 0; i < 200 && ferr == nil; i++ {
				ferr = c.Exec(`INSERT INTO t VALUES (randomblob(8000))`)
			}
			if !errors.Is(ferr, sqlite3.FULL) {
				t.Fatalf("filling a 256 KiB region: %v, want SQLITE_FULL", ferr)
			}
			t.Logf("%d rows, then: %v", queryInt(t, c, `SELECT count(*) FROM t`), ferr)
			if got, err := textRows(c, `PRAGMA integrity_check`); got != "ok" || err != nil {
				t.Errorf("integrity_check after SQLITE_FULL: %s %v", got, err)
			}
			if jm == "wal" {
				// The WAL is full too until a checkpoint resets it.
				mustExec(t, c, `PRAGMA wal_checkpoint(TRUNCATE)`)
			}
			mustExec(t, c, `DELETE FROM t WHERE rowid % 2 = 0`)
			mustExec(t, c, `INSERT INTO t VALUES (randomblob(100))`)
		})
	}
}

// Temporary files live in memory: nameless ones, temp tables, sorts.
func TestTempFiles(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
	formatTest(t, path, 2<<20, 512<<10, 0)
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f, _, err := sqlVFS{v}.Open("", vfs.OPEN_TEMP_JOURNAL|vfs.OPEN_READWRITE|vfs.OPEN_CREATE|vfs.OPEN_DELETEONCLOSE)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*memFile); !ok {
		t.Errorf("a nameless temporary file is %T, want *memFile", f)
	}
	f.Close()
	c, err := v.OpenDB("test.db", DBOptions{CacheSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustExec(t, c, `PRAGMA temp_store = FILE; CREATE TEMP TABLE x(v); INSERT INTO x SELECT randomblob(500) FROM generate_series(1, 2000)`)
	if n := queryInt(t, c, `SELECT count(*) FROM (SELECT v FROM x ORDER BY v)`); n != 2000 {
		t.Errorf("%d rows", n)
	}
	for _, fi := range v.Files() {
		if fi.Exists && fi.Name != "test.db" {
			t.Errorf("%s exists on the device", fi.Name)
		}
	}
}

func TestOpenNames(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
	formatTest(t, path, 2<<20, 256<<10, 256<<10)
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.OpenDB("other.db", DBOptions{}); !errors.Is(err, sqlite3.CANTOPEN) || !strings.Contains(err.Error(), `no region named "other.db"`) {
		t.Errorf("a name with no region: %v, want CANTOPEN naming it", err)
	}
	if _, _, err := (sqlVFS{v}).Open("test.db", vfs.OPEN_MAIN_DB|vfs.OPEN_READWRITE); !errors.Is(err, sqlite3.CANTOPEN) {
		t.Errorf("an absent file without OPEN_CREATE: %v, want CANTOPEN", err)
	}
	if _, err := v.OpenDB("test.db", DBOptions{JournalMode: "memory"}); err == nil {
		t.Error("journal mode memory accepted")
	}
	// The VFS answers SQLite's own journal_mode check: WAL takes.
	c, err := v.OpenDB("test.db", DBOptions{JournalMode: "wal"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := textRows(c, `PRAGMA journal_mode`); got != "wal" {
		t.Errorf("journal_mode %q", got)
	}
	c.Close()
	// psow=0 in the URI turns POWERSAFE_OVERWRITE off.
	f := openFile(t, v, "test.db", vfs.OPEN_MAIN_DB)
	if f.DeviceCharacteristics()&vfs.IOCAP_POWERSAFE_OVERWRITE == 0 || f.DeviceCharacteristics()&vfs.IOCAP_SAFE_APPEND == 0 {
		t.Errorf("characteristics %#x", f.DeviceCharacteristics())
	}
	f.(vfs.FilePowersafeOverwrite).SetPowersafeOverwrite(false)
	if f.DeviceCharacteristics()&vfs.IOCAP_POWERSAFE_OVERWRITE != 0 {
		t.Error("psow off still claims POWERSAFE_OVERWRITE")
	}
	f.Close()
}

// With gap filling on, the engine rewrites clean pages, so the VFS does
// not claim power-safe overwrite.
func TestFillGapsNoPowersafeOverwrite(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
	formatTest(t, path, 2<<20, 0, 0)
	opt := testOptions()
	opt.Engine.FillGaps = 4
	v, err := Open(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f := openFile(t, v, "test.db", vfs.OPEN_MAIN_DB|vfs.OPEN_CREATE)
	defer f.Close()
	if f.DeviceCharacteristics()&vfs.IOCAP_POWERSAFE_OVERWRITE != 0 {
		t.Error("with FillGaps the VFS claims POWERSAFE_OVERWRITE")
	}
}
