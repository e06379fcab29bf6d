package sqlitevfs

import (
	"context"
	"syscall"
	"testing"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

// BenchmarkSmallSync is what a SQLite commit costs this VFS at the
// bottom: one page written into the cache and made durable (SyncRange
// over a 16-page region, as xSync does), against the same page written
// with pwrite(O_DIRECT) and fdatasync on the same kind of device (a
// loop device with 4096-byte sectors over /dev/shm). Run it with
// -benchtime and look at ns/op; the note of issue 15 has figures.
func BenchmarkSmallSync(b *testing.B) {
	d := loopdevtest.ForTest(b, 64<<20, 4096)
	b.Run("engine-SyncRange", func(b *testing.B) {
		c, err := pages.New(pages.Config{PageSize: 4096, Capacity: 1024})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		e, err := engine.Open(c, engine.Config{Path: d.Path, Mapper: mapper.Linear(0, 16384)})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		buf := make([]byte, 4096)
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			buf[0] = byte(i)
			if _, err := c.WriteAt(buf, int64(i%16)*4096); err != nil {
				b.Fatal(err)
			}
			if err := e.SyncRange(ctx, 0, 16); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		s := e.Stats()
		b.ReportMetric(float64(s.Flushes)/float64(b.N), "flushes/op")
	})
	b.Run("pwrite-fdatasync", func(b *testing.B) {
		fd, err := syscall.Open(d.Path, syscall.O_RDWR|syscall.O_DIRECT|syscall.O_EXCL, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer syscall.Close(fd)
		c, err := pages.New(pages.Config{PageSize: 4096, Capacity: 1}) // aligned memory
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		p, err := c.Grab(0)
		if err != nil {
			b.Fatal(err)
		}
		buf := p.Data()
		for i := 0; b.Loop(); i++ {
			buf[0] = byte(i)
			if _, err := syscall.Pwrite(fd, buf, int64(i%16)*4096); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Fdatasync(fd); err != nil {
				b.Fatal(err)
			}
		}
		p.Unlock()
		c.Put(p)
	})
}
