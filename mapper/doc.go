// Package mapper plays the kernel's get_block role for the writeback
// engine: it maps a page index to the device blocks that hold it.
//
// Blocks are page-sized: block b starts at byte b*PageSize of the target.
// A Mapper answers with whole extents (a run of pages at a run of
// consecutive blocks), so a batcher can merge a run of dirty pages with
// one call instead of one per page. Where nothing is mapped it returns
// ErrHole together with the extent of the hole, so callers can skip it.
// An extent's Boundary flag is the kernel's BH_Boundary: a write must end
// at the end of that extent, even if the next extent continues it on the
// device, because mapping the next one needs metadata I/O.
//
// What the package owns:
//   - Extent, the Mapper interface and the optional Allocator (get_block
//     with create=1) and Bounded (the highest block, for Open-time checks)
//     interfaces;
//   - Linear, the identity-plus-offset map wbbench uses;
//   - NewExtentMap, a validated, immutable list of extents;
//   - NewAllocMap, a small allocating mapper for tests and examples.
//
// Concurrency: the mappers Linear and NewExtentMap return are immutable
// and safe for concurrent use. An AllocMap is safe for concurrent use; its
// Map and Allocate may be called from any goroutine.
//
// The package imports only the standard library.
package mapper
