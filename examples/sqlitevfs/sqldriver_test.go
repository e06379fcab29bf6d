package sqlitevfs

import (
	"database/sql"
	"testing"

	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// database/sql works too: one connection (the VFS has no shared
// memory), the pragmas in the URI.
func TestDatabaseSQL(t *testing.T) {
	path := loopdevtest.ShmFile(t, 8<<20)
	formatTest(t, path, 4<<20, 1<<20, 2<<20)
	v, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	db, err := sql.Open("sqlite3", v.URI("test.db")+"&_pragma=locking_mode(exclusive)&_pragma=journal_mode(wal)&_pragma=synchronous(full)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
	if _, err := db.Exec(`CREATE TABLE t(v); INSERT INTO t VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT v FROM t`).Scan(&n); err != nil || n != 42 {
		t.Fatalf("got %d, %v", n, err)
	}
}
