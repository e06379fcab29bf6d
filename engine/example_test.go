package engine_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

// exampleTarget makes a 1 MiB file to write to. A real program would
// name a block device (which it owns: the engine overwrites it).
func exampleTarget() string {
	f, err := os.CreateTemp("", "wbengine-example-*.img")
	if err != nil {
		log.Fatal(err)
	}
	f.Truncate(1 << 20)
	f.Close()
	return f.Name()
}

// Open an engine on a cache and a target, dirty some pages, and make
// them durable.
func ExampleOpen() {
	path := exampleTarget()
	defer os.Remove(path)

	cache, err := pages.New(pages.Config{PageSize: 4096, Capacity: 256})
	if err != nil {
		log.Fatal(err)
	}
	e, err := engine.Open(cache, engine.Config{
		Path:   path,
		Mapper: mapper.Linear(0, 256), // page i at block i
	})
	if err != nil {
		log.Fatal(err)
	}
	// Any goroutine may write; WriteAt marks the pages dirty.
	if _, err := cache.WriteAt(make([]byte, 3*4096), 10*4096); err != nil {
		log.Fatal(err)
	}
	if err := e.Sync(context.Background()); err != nil {
		log.Fatal(err)
	}
	st := e.Stats()
	fmt.Printf("%d pages in %d write\n", st.PagesWritten, st.Writes)
	if err := e.Close(); err != nil {
		log.Fatal(err)
	}
	// Output: 3 pages in 1 write
}

// Sync is the data-integrity call: it returns nil only when every page
// dirty at the call is on stable storage, and names the pages it could
// not write.
func ExampleEngine_Sync() {
	path := exampleTarget()
	defer os.Remove(path)

	cache, _ := pages.New(pages.Config{PageSize: 4096, Capacity: 64})
	e, err := engine.Open(cache, engine.Config{Path: path})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	// Write pages directly, as a buffer pool does: pin, change, dirty.
	for i := uint64(0); i < 4; i++ {
		p, err := cache.Grab(i)
		if err != nil {
			log.Fatal(err)
		}
		copy(p.Data(), fmt.Sprintf("record %d", i))
		cache.SetDirty(p)
		p.Unlock()
		cache.Put(p)
	}
	// A data-integrity sync of part of the cache.
	if err := e.SyncRange(context.Background(), 0, 2); err != nil {
		log.Fatal(err)
	}
	fmt.Println("dirty after SyncRange(0, 2):", cache.NrDirty())
	if err := e.Sync(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("dirty after Sync:", cache.NrDirty())
	// Output:
	// dirty after SyncRange(0, 2): 2
	// dirty after Sync: 0
}
