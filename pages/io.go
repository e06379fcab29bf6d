package pages

import (
	"context"
	"fmt"
)

// WriteAt copies b into the cache at byte offset off (io.WriterAt). It
// works one page at a time: grab it (locked), wait for any write of it
// in flight to end (stable pages: a page never changes under I/O through
// WriteAt), copy, mark it dirty, unlock. A partial write into a page
// that is not Uptodate first reads the page in through the installed
// Ops; with none installed it fails with ErrNotUptodate. After the pages
// are released, WriteAt calls the Ops' BalanceDirty, which may pace the
// writer. On error it returns the bytes written before it.
func (c *Cache) WriteAt(b []byte, off int64) (int, error) {
	return c.WriteAtContext(context.Background(), b, off)
}

// WriteAtContext is WriteAt with a context for reading pages in and for
// dirty throttling.
func (c *Cache) WriteAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) < off {
		return 0, fmt.Errorf("%w: write of %d bytes at %d", ErrOffset, len(b), off)
	}
	ps := int64(c.pageSize)
	done := 0
	for done < len(b) {
		pos := off + int64(done)
		idx, in := uint64(pos>>c.pageShift), int(pos&(ps-1))
		n := min(c.pageSize-in, len(b)-done)
		p, err := c.Grab(idx)
		if err != nil {
			return done, err
		}
		if n < c.pageSize && !p.Flags().IsUptodate() {
			if err := c.readIn(ctx, p, "partial write"); err != nil {
				p.Unlock()
				c.Put(p)
				return done, err
			}
		}
		p.WaitWriteback()
		copy(p.data[in:in+n], b[done:done+n])
		c.SetDirty(p)
		p.Unlock()
		c.Put(p)
		done += n
	}
	if ops := c.Ops(); ops != nil {
		if err := ops.BalanceDirty(ctx); err != nil {
			return done, err
		}
	}
	return done, nil
}

// ReadAt copies from the cache at byte offset off into b (io.ReaderAt),
// holding each page's lock while it copies, and reading pages that are not cached or not Uptodate in through the
// installed Ops (without Ops such a page fails with ErrNotUptodate).
func (c *Cache) ReadAt(b []byte, off int64) (int, error) {
	return c.ReadAtContext(context.Background(), b, off)
}

// ReadAtContext is ReadAt with a context for reading pages in.
func (c *Cache) ReadAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) < off {
		return 0, fmt.Errorf("%w: read of %d bytes at %d", ErrOffset, len(b), off)
	}
	ps := int64(c.pageSize)
	done := 0
	for done < len(b) {
		pos := off + int64(done)
		idx, in := uint64(pos>>c.pageShift), int(pos&(ps-1))
		n := min(c.pageSize-in, len(b)-done)
		p, err := c.Grab(idx)
		if err != nil {
			return done, err
		}
		if !p.Flags().IsUptodate() {
			if err := c.readIn(ctx, p, "read"); err != nil {
				p.Unlock()
				c.Put(p)
				return done, err
			}
		}
		copy(b[done:done+n], p.data[in:in+n])
		p.Unlock()
		c.Put(p)
		done += n
	}
	return done, nil
}

func (c *Cache) readIn(ctx context.Context, p *Page, why string) error {
	ops := c.Ops()
	if ops == nil {
		return fmt.Errorf("%w: %s of page %d needs it read in from the device, and no Ops are installed (open an engine on the cache)", ErrNotUptodate, why, p.index)
	}
	if err := ops.ReadPage(ctx, p); err != nil {
		return fmt.Errorf("pages: read in page %d: %w", p.index, err)
	}
	return nil
}

// PrepareWrite waits until p is not under writeback. Callers that write
// into Data directly call it first when the device needs stable pages
// (Target.StableWrites: RAID, integrity); elsewhere a page changed in
// flight is simply written again by the next sync. The caller holds a
// pin, and should hold the page lock so no new write starts meanwhile.
func (c *Cache) PrepareWrite(p *Page) {
	p.WaitWriteback()
}
