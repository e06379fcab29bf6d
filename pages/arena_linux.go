package pages

// This file holds the cache's only raw memory code: the page arena.

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// arenaAlign is the alignment of the arena's start: enough for O_DIRECT
// on any logical block size the kernel supports (≤ 4096) and for pages
// of up to 4 KiB to start on a memory page.
const arenaAlign = 4096

// arena is the memory behind every page: Capacity × PageSize bytes,
// page slot i at offset i × PageSize.
type arena struct {
	mem    []byte // the aligned arena
	mapped []byte // what mmap returned (nil for a heap arena)
}

func newArena(size int, heap bool) (*arena, error) {
	if heap {
		// The race detector does not see memory it did not allocate, so
		// race tests put pages on the Go heap. The GC never moves heap
		// objects; the arena is referenced by the cache for its whole life.
		buf := make([]byte, size+arenaAlign)
		off := 0
		if r := int(uintptr(unsafe.Pointer(&buf[0])) % arenaAlign); r != 0 {
			off = arenaAlign - r
		}
		return &arena{mem: buf[off : off+size : off+size]}, nil
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("pages: mmap arena of %d bytes: %w", size, err)
	}
	// Large arenas benefit from huge pages (fewer TLB misses when the
	// kernel pins pages for I/O); failure is harmless.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	return &arena{mem: mem, mapped: mem}, nil
}

func (a *arena) free() error {
	if a.mapped == nil {
		a.mem = nil
		return nil
	}
	err := unix.Munmap(a.mapped)
	a.mapped, a.mem = nil, nil
	return err
}
