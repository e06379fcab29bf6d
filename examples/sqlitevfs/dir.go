package sqlitevfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The directory: which file lives in which page range of the device,
// and how big each file is. It fills one page and is kept twice, at
// pages 0 and 1; update n goes to page n%2, so a torn write of one copy
// leaves the other, one update older, intact. On open the valid copy
// with the higher sequence number wins.
//
// Page layout (little endian):
//
//	 0  8  magic "WBSQLDIR"
//	 8  4  format version (1)
//	12  4  page size
//	16  8  sequence number (≥ 1)
//	24  8  device size in pages, at format time
//	32  4  number of files
//	36  4  CRC32C of the page with these four bytes zero
//	40  …  one record per file:
//	       0  8  first page of its region
//	       8  8  region length in pages
//	      16  8  size in bytes
//	      24  1  flags (1: the file exists)
//	      25  1  name length n (1..maxName)
//	      26  n  name
//
// Bytes after the last record are zero.
const (
	dirMagic   = "WBSQLDIR"
	dirVersion = 1
	dirHeader  = 40
	recHeader  = 26
	maxName    = 200
	// dirPages is how many pages the directory takes at the start of the
	// device (its two copies); regions start after them.
	dirPages = 2

	flagExists = 1
)

// ErrNotFormatted: the device holds no valid directory (neither copy
// has the magic and a good checksum).
var ErrNotFormatted = errors.New("sqlitevfs: no valid directory on the device (format it first)")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// dirRecord is one file's record as stored.
type dirRecord struct {
	name   string
	start  uint64 // first page of the region
	pages  uint64 // region length
	size   int64
	exists bool
}

// directory is the decoded content of one copy.
type directory struct {
	seq      uint64
	pageSize int
	devPages uint64
	files    []dirRecord
}

// encode writes d into page (len = page size), zero-filling the rest.
func (d *directory) encode(page []byte) error {
	clear(page)
	copy(page, dirMagic)
	le := binary.LittleEndian
	le.PutUint32(page[8:], dirVersion)
	le.PutUint32(page[12:], uint32(d.pageSize))
	le.PutUint64(page[16:], d.seq)
	le.PutUint64(page[24:], d.devPages)
	le.PutUint32(page[32:], uint32(len(d.files)))
	off := dirHeader
	for _, f := range d.files {
		if len(f.name) == 0 || len(f.name) > maxName {
			return fmt.Errorf("sqlitevfs: file name %q: must be 1..%d bytes", f.name, maxName)
		}
		if off+recHeader+len(f.name) > len(page) {
			return fmt.Errorf("sqlitevfs: %d files do not fit in a directory page of %d bytes", len(d.files), len(page))
		}
		le.PutUint64(page[off:], f.start)
		le.PutUint64(page[off+8:], f.pages)
		le.PutUint64(page[off+16:], uint64(f.size))
		if f.exists {
			page[off+24] = flagExists
		}
		page[off+25] = byte(len(f.name))
		copy(page[off+recHeader:], f.name)
		off += recHeader + len(f.name)
	}
	le.PutUint32(page[36:], crc32.Checksum(page, castagnoli))
	return nil
}

// decodeDir decodes one directory copy; it fails on anything but a
// complete, consistent copy.
func decodeDir(page []byte) (*directory, error) {
	if len(page) < dirHeader || !bytes.Equal(page[:8], []byte(dirMagic)) {
		return nil, errors.New("no directory magic")
	}
	le := binary.LittleEndian
	sum := le.Uint32(page[36:])
	var zero [4]byte
	h := crc32.Update(0, castagnoli, page[:36])
	h = crc32.Update(h, castagnoli, zero[:])
	h = crc32.Update(h, castagnoli, page[40:])
	if h != sum {
		return nil, fmt.Errorf("checksum %#08x, stored %#08x", h, sum)
	}
	if v := le.Uint32(page[8:]); v != dirVersion {
		return nil, fmt.Errorf("format version %d, want %d", v, dirVersion)
	}
	d := &directory{
		pageSize: int(le.Uint32(page[12:])),
		seq:      le.Uint64(page[16:]),
		devPages: le.Uint64(page[24:]),
	}
	if d.pageSize != len(page) {
		return nil, fmt.Errorf("page size %d, the device is opened with %d", d.pageSize, len(page))
	}
	n := int(le.Uint32(page[32:]))
	off := dirHeader
	next := uint64(dirPages)
	for i := 0; i < n; i++ {
		if off+recHeader > len(page) {
			return nil, fmt.Errorf("record %d past the end of the page", i)
		}
		f := dirRecord{
			start:  le.Uint64(page[off:]),
			pages:  le.Uint64(page[off+8:]),
			size:   int64(le.Uint64(page[off+16:])),
			exists: page[off+24]&flagExists != 0,
		}
		nl := int(page[off+25])
		if nl == 0 || off+recHeader+nl > len(page) {
			return nil, fmt.Errorf("record %d: bad name length %d", i, nl)
		}
		f.name = string(page[off+recHeader : off+recHeader+nl])
		off += recHeader + nl
		switch {
		case f.start < next || f.pages == 0 || f.start+f.pages > d.devPages:
			return nil, fmt.Errorf("file %q: region [%d, %d) overlaps another or leaves the device (%d pages)", f.name, f.start, f.start+f.pages, d.devPages)
		case f.size < 0 || f.size > int64(f.pages)*int64(d.pageSize):
			return nil, fmt.Errorf("file %q: size %d outside its region of %d pages", f.name, f.size, f.pages)
		case !f.exists && f.size != 0:
			return nil, fmt.Errorf("file %q: deleted with size %d", f.name, f.size)
		}
		next = f.start + f.pages
		d.files = append(d.files, f)
	}
	return d, nil
}

// newest picks the valid copy with the higher sequence number, or
// returns why neither is valid.
func newest(a, b []byte) (*directory, error) {
	da, ea := decodeDir(a)
	db, eb := decodeDir(b)
	switch {
	case ea == nil && eb == nil:
		if db.seq > da.seq {
			return db, nil
		}
		return da, nil
	case ea == nil:
		return da, nil
	case eb == nil:
		return db, nil
	}
	return nil, fmt.Errorf("%w: copy 0: %v; copy 1: %v", ErrNotFormatted, ea, eb)
}
