package sqlitevfs_test

import (
	"fmt"
	"log"
	"os"

	"github.com/wbengine/wbengine/examples/sqlitevfs"
)

// Open a SQLite database on a raw device through the VFS. A real
// program names a block device it owns (say /dev/nvme0n1p3, opened
// O_EXCL); the example uses a 64 MiB file.
func Example() {
	dev := exampleDevice()
	defer os.Remove(dev)

	// Once: lay out the device (this destroys what is on it).
	regions := sqlitevfs.DatabaseRegions("app.db", 32<<20, 8<<20, 16<<20) // database, journal, WAL
	if err := sqlitevfs.Format(dev, regions, sqlitevfs.FormatOptions{}); err != nil {
		log.Fatal(err)
	}

	v, err := sqlitevfs.Open(dev, sqlitevfs.Options{}) // one cache, one engine, the directory
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	db, err := v.OpenDB("app.db", sqlitevfs.DBOptions{JournalMode: "wal"}) // synchronous=FULL
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if err := db.Exec(`CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES ('hello', 'world')`); err != nil {
		log.Fatal(err)
	}
	s, _, err := db.Prepare(`SELECT v FROM kv WHERE k = 'hello'`)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	for s.Step() {
		fmt.Println(s.ColumnText(0))
	}
	// Output: world
}

// exampleDevice makes a zero-filled 64 MiB file on a disk file system
// (O_DIRECT; tmpfs takes it too on recent kernels).
func exampleDevice() string {
	f, err := os.CreateTemp("", "sqlitevfs-example-*.img")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		log.Fatal(err)
	}
	return f.Name()
}
