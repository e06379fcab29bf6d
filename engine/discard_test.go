package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"os"
	"sync/atomic"
	"testing"
	"time"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/ring"
)

// TestDiscard: Discard drops the pages (dirty ones included, never
// written) and tells the target: a file gets a hole (reads zero), a
// loop device a BLKDISCARD.
func TestDiscard(t *testing.T) {
	const ps = 4096
	for _, kind := range []string{"file", "loop"} {
		t.Run(kind, func(t *testing.T) {
			var path string
			if kind == "file" {
				path = loopdev.ShmFile(t, 64*ps)
			} else {
				path = testTarget(t, 64*ps)
			}
			c := heapCache(t, ps, 64)
			e, err := Open(c, Config{Path: path, Mapper: mapper.Linear(0, 64)})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			c.WriteAt(bytes.Repeat([]byte{7}, 16*ps), 0)
			if err := e.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.WriteAt(bytes.Repeat([]byte{8}, 4*ps), 4*ps) // dirty, never written
			err = e.Discard(context.Background(), 2, 10)
			if errors.Is(err, ring.ErrNotSupported) {
				t.Skipf("%s cannot discard here: %v", kind, err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.NrDirty() != 0 || c.NrCached() != 8 {
				t.Fatalf("after Discard(2, 10): %d dirty, %d cached; want 0 and 8", c.NrDirty(), c.NrCached())
			}
			if err := e.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			img, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 16; i++ {
				want := byte(7)
				if i >= 2 && i < 10 {
					want = 0 // discarded: reads as zeros on both a tmpfs file and a loop device over one
				}
				if img[i*ps] != want || img[i*ps+ps-1] != want {
					t.Fatalf("page %d reads %d after Discard, want %d", i, img[i*ps], want)
				}
			}
		})
	}
}

// TestPublish: Stats through expvar, as JSON.
func TestPublish(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 16)
	var fr *fakeRing
	e, err := Open(c, Config{Path: loopdev.ShmFile(t, 16*ps), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c.WriteAt(make([]byte, 3*ps), 0)
	e.Sync(context.Background())
	e.Publish("wbengine-test")
	var st Stats
	if err := json.Unmarshal([]byte(expvar.Get("wbengine-test").String()), &st); err != nil {
		t.Fatal(err)
	}
	if st.PagesWritten != 3 || st.Syncs != 1 || st.Backend != "fake" {
		t.Fatalf("published stats %+v", st)
	}
}

// hookMapper calls hook (once) on its first Map after armed is set.
type hookMapper struct {
	mapper.Mapper
	armed atomic.Bool
	hook  func()
}

func (m *hookMapper) Map(i uint64) (mapper.Extent, error) {
	if m.armed.CompareAndSwap(true, false) {
		m.hook()
	}
	return m.Mapper.Map(i)
}

// TestDiscardRacingWriter: a page written back while Discard is between
// dropping the pages and discarding their blocks must not be erased by
// the discard (which would leave the cache clean over zeros on the
// device). Discard holds the pass lock across both steps; the writer's
// pass waits for it.
func TestDiscardRacingWriter(t *testing.T) {
	const ps = 4096
	path := loopdev.ShmFile(t, 64*ps)
	c := heapCache(t, ps, 64)
	m := &hookMapper{Mapper: mapper.Linear(0, 64)}
	e, err := Open(c, Config{Path: path, Mapper: m, Ring: "pwritev"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	c.WriteAt(bytes.Repeat([]byte{7}, 4*ps), 0)
	if err := e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	writer := make(chan error, 1)
	m.hook = func() {
		// Discard has dropped the pages and is mapping the range to
		// discard it: now another goroutine rewrites page 2.
		go func() {
			if _, err := c.WriteAt(bytes.Repeat([]byte{9}, ps), 2*ps); err != nil {
				writer <- err
				return
			}
			writer <- e.WritePages(ctx, &WritebackControl{SyncMode: SyncAll})
		}()
		select { // give it time to write back, if nothing stops it
		case err := <-writer:
			writer <- err
		case <-time.After(200 * time.Millisecond):
		}
	}
	m.armed.Store(true)
	err = e.Discard(ctx, 0, 4)
	if errors.Is(err, ring.ErrNotSupported) {
		t.Skipf("cannot discard here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(path)
	if img[2*ps] != 9 {
		t.Fatalf("page 2 is clean in the cache after a Sync, but the device holds %d, not 9: the discard erased it", img[2*ps])
	}
}
