// Package verify is the on-device format wbbench -verify writes and
// wbbench check reads (docs/design.md, "The verify format"): self-describing
// pages, the pseudo-random choices that say which page a version of the
// hot pattern goes to, and the journal that records which versions a
// successful Sync made durable.
//
// A page of PageSize bytes (a multiple of 8, at least 32):
//
//	bytes  0–7   ASCII "WBENGPG1"
//	       8–15  page index (little-endian uint64)
//	      16–23  version (little-endian uint64, ≥ 1)
//	      24–27  CRC32C (Castagnoli, little-endian) of the whole page
//	             computed with bytes 24–27 zero
//	      28–31  the run's nonce (little-endian uint32)
//	      32–end payload: 8-byte little-endian words, word k =
//	             SplitMix64(h + k), h = SplitMix64(SplitMix64(nonce + index) + version)
//
// Everything here is pure computation except the journal, which writes
// and fsyncs a file. Encode, Check and the hash functions may be called
// from any goroutine; a Journal is safe for concurrent use.
package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// Magic opens every page of the format.
const Magic = "WBENGPG1"

// HeaderSize is the size of a page's header; the payload follows it.
const HeaderSize = 32

// Header field offsets.
const (
	offIndex   = 8
	offVersion = 16
	offCRC     = 24
	offNonce   = 28
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SplitMix64 is the SplitMix64 output function (Steele, Lea and Flood),
// in uint64 arithmetic:
//
//	z = x + 0x9E3779B97F4A7C15
//	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
//	z = (z ^ z>>27) * 0x94D049BB133111EB
//	return z ^ z>>31
func SplitMix64(x uint64) uint64 {
	z := x + 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

// HotPage is the page, of n, that version v of the hot pattern with the
// given seed goes to: a = SplitMix64(seed+v) >> 43 (21 bits), page =
// floor(n · a³ / 2^63), computed exactly in 128 bits. Low pages are hot:
// a fraction x of the versions lands in the first x³ of the pages.
func HotPage(seed, v, n uint64) uint64 {
	a := SplitMix64(seed+v) >> 43
	hi, lo := bits.Mul64(n, a*a*a)
	return hi<<1 | lo>>63
}

// seedOf is h, the seed of a page's payload words.
func seedOf(nonce uint32, index, version uint64) uint64 {
	return SplitMix64(SplitMix64(uint64(nonce)+index) + version)
}

// Encode fills page with version version of page index for the run with
// the given nonce. len(page) must be a multiple of 8 and at least
// HeaderSize; version must be at least 1.
func Encode(page []byte, index, version uint64, nonce uint32) {
	if len(page) < HeaderSize || len(page)%8 != 0 {
		panic(fmt.Sprintf("verify: page of %d bytes: need a multiple of 8 of at least %d", len(page), HeaderSize))
	}
	if version == 0 {
		panic("verify: version 0 (versions start at 1)")
	}
	le := binary.LittleEndian
	copy(page, Magic)
	le.PutUint64(page[offIndex:], index)
	le.PutUint64(page[offVersion:], version)
	le.PutUint32(page[offCRC:], 0)
	le.PutUint32(page[offNonce:], nonce)
	h := seedOf(nonce, index, version)
	for k, off := uint64(0), HeaderSize; off < len(page); k, off = k+1, off+8 {
		le.PutUint64(page[off:], SplitMix64(h+k))
	}
	le.PutUint32(page[offCRC:], crc32.Checksum(page, castagnoli))
}

// Checksum is the CRC32C of page with bytes 24–27 taken as zero.
func Checksum(page []byte) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, page[:offCRC])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, page[offCRC+4:])
}

// Reasons a page is not valid; a *PageError wraps one.
var (
	ErrZero     = errors.New("verify: page is all zero")
	ErrMagic    = errors.New("verify: bad magic")
	ErrIndex    = errors.New("verify: wrong page index")
	ErrNonce    = errors.New("verify: wrong nonce (written by another run)")
	ErrVersion  = errors.New("verify: version 0")
	ErrChecksum = errors.New("verify: CRC32C mismatch")
	ErrPayload  = errors.New("verify: payload does not match its header")
)

// PageError says why page Index is not a valid page.
type PageError struct {
	Index  uint64
	Reason error  // one of the Err values above
	Detail string // what was found, for the message
}

func (e *PageError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("page %d: %v", e.Index, e.Reason)
	}
	return fmt.Sprintf("page %d: %v (%s)", e.Index, e.Reason, e.Detail)
}

func (e *PageError) Unwrap() error { return e.Reason }

// Check validates page as page index of the run with the given nonce and
// returns its version. A page that is all zero fails with ErrZero (the
// caller decides whether that is allowed). The magic, index, nonce and
// CRC32C are checked, and the payload is regenerated and compared, so a
// page that passes is exactly what Encode wrote for that version.
func Check(page []byte, index uint64, nonce uint32) (uint64, error) {
	if len(page) < HeaderSize || len(page)%8 != 0 {
		return 0, &PageError{Index: index, Reason: ErrMagic, Detail: fmt.Sprintf("page of %d bytes", len(page))}
	}
	le := binary.LittleEndian
	if string(page[:len(Magic)]) != Magic {
		if IsZero(page) {
			return 0, &PageError{Index: index, Reason: ErrZero}
		}
		return 0, &PageError{Index: index, Reason: ErrMagic, Detail: fmt.Sprintf("found %q", page[:len(Magic)])}
	}
	if got := le.Uint64(page[offIndex:]); got != index {
		return 0, &PageError{Index: index, Reason: ErrIndex, Detail: fmt.Sprintf("header says page %d", got)}
	}
	if got := le.Uint32(page[offNonce:]); got != nonce {
		return 0, &PageError{Index: index, Reason: ErrNonce, Detail: fmt.Sprintf("nonce %d, want %d", got, nonce)}
	}
	version := le.Uint64(page[offVersion:])
	if version == 0 {
		return 0, &PageError{Index: index, Reason: ErrVersion}
	}
	if got, want := le.Uint32(page[offCRC:]), Checksum(page); got != want {
		return 0, &PageError{Index: index, Reason: ErrChecksum, Detail: fmt.Sprintf("stored %#08x, computed %#08x", got, want)}
	}
	h := seedOf(nonce, index, version)
	for k, off := uint64(0), HeaderSize; off < len(page); k, off = k+1, off+8 {
		if le.Uint64(page[off:]) != SplitMix64(h+k) {
			return 0, &PageError{Index: index, Reason: ErrPayload, Detail: fmt.Sprintf("version %d, first difference at byte %d", version, off)}
		}
	}
	return version, nil
}

// IsZero reports whether every byte of b is zero.
func IsZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Need returns, for each of n pages, the newest version ≤ last of the
// hot pattern with the given seed that goes to it (0 where none does):
// after a journal line "synced last", page p must hold a version of at
// least need[p].
func Need(seed, last, n uint64) []uint64 {
	need := make([]uint64, n)
	for v := uint64(1); v <= last; v++ {
		need[HotPage(seed, v, n)] = v
	}
	return need
}

// Header is a page's header as stored, not validated.
type Header struct {
	Index   uint64
	Version uint64
	CRC     uint32
	Nonce   uint32
}

// ReadHeader returns the header of page if it starts with Magic (ok
// false otherwise). Nothing else is checked: it is for describing what a
// page that fails Check holds, and for learning a run's nonce from a
// page (which Check must then accept).
func ReadHeader(page []byte) (h Header, ok bool) {
	if len(page) < HeaderSize || string(page[:len(Magic)]) != Magic {
		return h, false
	}
	le := binary.LittleEndian
	return Header{
		Index:   le.Uint64(page[offIndex:]),
		Version: le.Uint64(page[offVersion:]),
		CRC:     le.Uint32(page[offCRC:]),
		Nonce:   le.Uint32(page[offNonce:]),
	}, true
}
