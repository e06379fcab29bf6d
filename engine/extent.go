package engine

import "github.com/wbengine/wbengine/mapper"

// extentCursor walks the mapper's extents for increasing page indices:
// it keeps the extent it found last and asks the mapper again only for
// a page outside it. The writeback pass (mapPage), read-in (readPages)
// and Discard each walk the mapper through one. A cursor is not safe for
// concurrent use: the pass's lives in the Engine under the pass lock,
// the others on their caller's stack.
type extentCursor struct {
	m   mapper.Mapper
	ext mapper.Extent // the mapped extent found last, when ok
	ok  bool
}

// lookup returns the mapped extent holding page idx. Where idx is not
// mapped it returns the mapper's error (mapper.ErrHole with the hole's
// extent, if the mapper knows it) and forgets the extent it held.
func (c *extentCursor) lookup(idx uint64) (mapper.Extent, error) {
	if c.hit(idx) {
		return c.ext, nil
	}
	return c.miss(idx)
}

// hit reports whether the extent held covers page idx. It inlines where
// lookup does not: the pass (mapPage) tests it itself for every page.
func (c *extentCursor) hit(idx uint64) bool { return c.ok && c.ext.Contains(idx) }

func (c *extentCursor) miss(idx uint64) (mapper.Extent, error) {
	ext, err := c.m.Map(idx)
	if err != nil {
		c.ok = false
		return ext, err
	}
	c.ext, c.ok = ext, true
	return ext, nil
}

// locate returns the device block of page idx and whether a write must
// end after it (a mapper boundary). Without a mapper, page i is block i.
func (c *extentCursor) locate(idx uint64) (block uint64, boundary bool, err error) {
	if c.m == nil {
		return idx, false, nil
	}
	ext, err := c.lookup(idx)
	if err != nil {
		return 0, false, err
	}
	return ext.BlockOf(idx), ext.Boundary && idx == ext.End()-1, nil
}

// set makes ext (an extent just allocated) the one the cursor holds.
func (c *extentCursor) set(ext mapper.Extent) { c.ext, c.ok = ext, true }

// reset forgets the extent held: the next lookup asks the mapper.
func (c *extentCursor) reset() { c.ok = false }
