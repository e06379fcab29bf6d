package pages

import (
	"context"
	"errors"
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

// WriteAtContext is WriteAt with a context for reading pages in, making
// room and dirty throttling.
func (c *Cache) WriteAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) < off {
		return 0, fmt.Errorf("%w: write of %d bytes at %d", ErrOffset, len(b), off)
	}
	ps := int64(c.pageSize)
	done, dirtied := 0, 0
	var err error
	for done < len(b) {
		pos := off + int64(done)
		idx, in := uint64(pos>>c.pageShift), int(pos&(ps-1))
		n := min(c.pageSize-in, len(b)-done)
		var p *Page
		if p, err = c.GrabContext(ctx, idx); err != nil {
			break
		}
		if n < c.pageSize && !p.Flags().IsUptodate() {
			if err = c.readIn(ctx, []*Page{p}, "partial write"); err != nil {
				p.Unlock()
				c.Put(p)
				break
			}
		}
		p.WaitWriteback()
		copy(p.data[in:in+n], b[done:done+n])
		if c.SetDirty(p) {
			dirtied++
		}
		p.Unlock()
		c.Put(p)
		done += n
	}
	if ops := c.Ops(); ops != nil && dirtied > 0 {
		if berr := ops.BalanceDirty(ctx, dirtied); berr != nil && err == nil {
			err = berr
		}
	}
	return done, err
}

// maxReadBatch is the most pages ReadAt locks and reads in at once.
const maxReadBatch = 256

// ReadAt copies from the cache at byte offset off into b (io.ReaderAt),
// holding each page's lock while it copies. Pages that are not cached or
// not Uptodate are read in through the installed Ops, consecutive ones
// together so the engine can merge them into few reads (without Ops such
// a page fails with ErrNotUptodate).
func (c *Cache) ReadAt(b []byte, off int64) (int, error) {
	return c.ReadAtContext(context.Background(), b, off)
}

// ReadAtContext is ReadAt with a context for reading pages in and making
// room.
func (c *Cache) ReadAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) < off {
		return 0, fmt.Errorf("%w: read of %d bytes at %d", ErrOffset, len(b), off)
	}
	var batch, need [maxReadBatch]*Page
	done := 0
	for done < len(b) {
		// Lock the next pages in ascending index order (so two readers
		// cannot deadlock). Only the first grab of a batch may ask for
		// writeback to make room: the others would wait for it while
		// holding page locks it may need.
		first := uint64((off + int64(done)) >> c.pageShift)
		last := uint64((off + int64(len(b)) - 1) >> c.pageShift)
		nb, nn := 0, 0
		for idx := first; idx <= last && nb < maxReadBatch; idx++ {
			p, err := c.grab(ctx, idx, nb == 0)
			if err != nil {
				if nb > 0 && errors.Is(err, ErrCacheFull) {
					break // read what we have, then make room
				}
				return done, err
			}
			batch[nb] = p
			nb++
			if !p.Flags().IsUptodate() {
				need[nn] = p
				nn++
			}
		}
		var err error
		if nn > 0 {
			err = c.readIn(ctx, need[:nn], "read")
		}
		for _, p := range batch[:nb] {
			if err == nil {
				pos := off + int64(done)
				in := int(pos & int64(c.pageSize-1))
				n := min(c.pageSize-in, len(b)-done)
				copy(b[done:done+n], p.data[in:in+n])
				done += n
			}
			p.Unlock()
			c.Put(p)
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (c *Cache) readIn(ctx context.Context, ps []*Page, why string) error {
	ops := c.Ops()
	if ops == nil {
		return fmt.Errorf("%w: %s of page %d needs it read in from the device, and no Ops are installed (open an engine on the cache)", ErrNotUptodate, why, ps[0].index)
	}
	if err := ops.ReadPages(ctx, ps); err != nil {
		return fmt.Errorf("pages: read in pages %d-%d: %w", ps[0].index, ps[len(ps)-1].index, err)
	}
	for _, p := range ps {
		if !p.Flags().IsUptodate() {
			return fmt.Errorf("%w: the engine did not read in page %d", ErrNotUptodate, p.index)
		}
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
