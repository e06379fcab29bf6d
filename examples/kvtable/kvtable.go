// Package kvtable is a small fixed-slot key-value table on a block
// device or file, built on the writeback engine: a worked example of
// embedding it.
//
// The table is nslots slots of SlotSize bytes, 16 to a 4 KiB page. A key
// hashes to a slot; collisions probe the following slots. Put writes the
// slot into the page cache (the engine reads a page in first when it is
// not cached, since a slot is part of a page); Get reads through the
// cache; Sync makes every Put before it durable. The cache can be much
// smaller than the table: clean pages are evicted to make room, dirty
// ones are written back first.
//
// Slot layout: byte 0 state (0 empty, 1 used), byte 1 key length,
// bytes 2–3 value length (little endian), bytes 4–7 CRC32C of the slot
// with these four bytes zero, then the key, then the value.
package kvtable

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"sync"

	"github.com/wbengine/wbengine/engine"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
)

const (
	// SlotSize is the size of one slot.
	SlotSize = 256
	// MaxKey and MaxValue are the largest key and value a slot holds.
	MaxKey   = 64
	MaxValue = SlotSize - 8 - MaxKey
	pageSize = 4096
)

var (
	// ErrFull: every slot is used.
	ErrFull = errors.New("kvtable: table full")
	// ErrTooBig: a key or value larger than MaxKey or MaxValue.
	ErrTooBig = errors.New("kvtable: key or value too big")
	// ErrCorrupt: a slot failed its checksum.
	ErrCorrupt = errors.New("kvtable: corrupt slot")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Table is a key-value table on a device. Its methods are safe for
// concurrent use.
type Table struct {
	mu     sync.RWMutex // Put holds it to probe and write; Get to probe
	nslots uint64
	cache  *pages.Cache
	eng    *engine.Engine
}

// Open opens the table on path (which must hold at least nslots ×
// SlotSize bytes; a new table is a zero-filled target), caching at most
// cachePages pages of it.
func Open(path string, nslots, cachePages int) (*Table, error) {
	if nslots <= 0 || cachePages <= 0 {
		return nil, fmt.Errorf("kvtable: nslots %d and cachePages %d must be positive", nslots, cachePages)
	}
	npages := (uint64(nslots)*SlotSize + pageSize - 1) / pageSize
	c, err := pages.New(pages.Config{PageSize: pageSize, Capacity: cachePages})
	if err != nil {
		return nil, err
	}
	e, err := engine.Open(c, engine.Config{Path: path, Mapper: mapper.Linear(0, npages)})
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Table{nslots: uint64(nslots), cache: c, eng: e}, nil
}

func (t *Table) home(key []byte) uint64 {
	h := fnv.New64a()
	h.Write(key)
	return h.Sum64() % t.nslots
}

// slot reads slot i.
func (t *Table) slot(i uint64, buf *[SlotSize]byte) error {
	if _, err := t.cache.ReadAt(buf[:], int64(i)*SlotSize); err != nil {
		return err
	}
	if buf[0] == 0 {
		return nil
	}
	sum := binary.LittleEndian.Uint32(buf[4:])
	binary.LittleEndian.PutUint32(buf[4:], 0)
	if crc32.Checksum(buf[:], castagnoli) != sum {
		return fmt.Errorf("%w: slot %d", ErrCorrupt, i)
	}
	binary.LittleEndian.PutUint32(buf[4:], sum)
	return nil
}

func keyOf(buf *[SlotSize]byte) []byte { return buf[8 : 8+int(buf[1])] }

// find probes for key: it returns the slot holding it, or the first
// empty slot on its probe path.
func (t *Table) find(key []byte) (i uint64, found bool, buf [SlotSize]byte, err error) {
	i = t.home(key)
	for n := uint64(0); n < t.nslots; n++ {
		if err = t.slot(i, &buf); err != nil {
			return
		}
		if buf[0] == 0 {
			return i, false, buf, nil
		}
		if bytes.Equal(keyOf(&buf), key) {
			return i, true, buf, nil
		}
		i = (i + 1) % t.nslots
	}
	return 0, false, buf, ErrFull
}

// Put sets key to value.
func (t *Table) Put(key, value []byte) error {
	if len(key) == 0 || len(key) > MaxKey || len(value) > MaxValue {
		return fmt.Errorf("%w: key %d bytes (1..%d), value %d bytes (≤ %d)", ErrTooBig, len(key), MaxKey, len(value), MaxValue)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	i, _, _, err := t.find(key)
	if err != nil {
		return err
	}
	var buf [SlotSize]byte
	buf[0], buf[1] = 1, byte(len(key))
	binary.LittleEndian.PutUint16(buf[2:], uint16(len(value)))
	copy(buf[8:], key)
	copy(buf[8+len(key):], value)
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(buf[:], castagnoli))
	_, err = t.cache.WriteAt(buf[:], int64(i)*SlotSize)
	return err
}

// Get returns key's value, and whether the key is there.
func (t *Table) Get(key []byte) ([]byte, bool, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, found, buf, err := t.find(key)
	if err != nil || !found {
		if errors.Is(err, ErrFull) {
			err = nil // probed every slot: not there
		}
		return nil, false, err
	}
	n := int(binary.LittleEndian.Uint16(buf[2:]))
	off := 8 + int(buf[1])
	return append([]byte(nil), buf[off:off+n]...), true, nil
}

// Sync makes every Put before it durable.
func (t *Table) Sync(ctx context.Context) error { return t.eng.Sync(ctx) }

// Stats are the engine's counters.
func (t *Table) Stats() engine.Stats { return t.eng.Stats() }

// Close syncs and closes the table.
func (t *Table) Close() error {
	err := t.eng.Close()
	return errors.Join(err, t.cache.Close())
}
