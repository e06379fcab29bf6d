package sqlitevfs

import (
	"testing"

	"github.com/ncruces/go-sqlite3"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/pages"
)

// testOptions: a small cache, on the heap under -race (the race
// detector does not see the mmap'd arena).
func testOptions() Options {
	return Options{Cache: pages.Config{PageSize: 4096, Capacity: 4096, HeapArena: raceEnabled}}
}

func formatTest(t testing.TB, path string, db, journal, wal int64) {
	t.Helper()
	if err := Format(path, DatabaseRegions("test.db", db, journal, wal), FormatOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t testing.TB, c *sqlite3.Conn, sql string) {
	t.Helper()
	if err := c.Exec(sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryInt(t testing.TB, c *sqlite3.Conn, sql string) int64 {
	t.Helper()
	s, _, err := c.Prepare(sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer s.Close()
	if !s.Step() {
		t.Fatalf("%s: no row: %v", sql, s.Err())
	}
	return s.ColumnInt64(0)
}

func TestRoundTrip(t *testing.T) {
	for _, jm := range []string{"delete", "wal"} {
		t.Run(jm, func(t *testing.T) {
			path := loopdevtest.ShmFile(t, 32<<20)
			formatTest(t, path, 16<<20, 4<<20, 8<<20)
			v, err := Open(path, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.OpenDB("test.db", DBOptions{JournalMode: jm})
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, c, `CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`)
			for i := 0; i < 20; i++ {
				mustExec(t, c, `INSERT INTO t(v) VALUES (randomblob(3000))`)
			}
			mustExec(t, c, `BEGIN; INSERT INTO t(v) SELECT randomblob(100) FROM t; COMMIT`)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("files: %+v; stats %+v", v.Files(), v.Stats())
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			v, err = Open(path, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			c, err = v.OpenDB("test.db", DBOptions{JournalMode: jm})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if n := queryInt(t, c, `SELECT count(*) FROM t`); n != 40 {
				t.Errorf("%d rows, want 40", n)
			}
			s, _, _ := c.Prepare(`PRAGMA integrity_check`)
			s.Step()
			if got := s.ColumnText(0); got != "ok" {
				t.Errorf("integrity_check: %s", got)
			}
			s.Close()
		})
	}
}
