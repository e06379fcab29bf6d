package engine

import (
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// run is one vectored I/O as it is built: pages contiguous by index and
// by device block, from off on, their memory as iovecs (pages adjacent in
// memory share one). The writeback pass (record) and read-in
// (readRecord) build theirs with these same rules; each kind adds its
// own limits (a write's registered buffer, a mapper boundary, a failed
// page written alone). A run's slices are made at Open with the capacity
// the engine's MaxIOBytes allows and are never grown.
type run struct {
	off   int64 // device offset of the first page
	bytes int64
	pages []*pages.Page
	iov   []ring.Iovec
}

// initRun gives r its fixed capacity: maxPages pages, at most maxIovecs
// iovecs.
func (r *run) initRun(maxPages int) {
	r.pages = make([]*pages.Page, 0, maxPages)
	r.iov = make([]ring.Iovec, 0, min(maxPages, maxIovecs))
}

// start empties r and places it at block (pages of ps bytes).
func (r *run) start(block uint64, ps int) {
	r.off = int64(block) * int64(ps)
	r.bytes = 0
	r.pages = r.pages[:0]
	r.iov = r.iov[:0]
}

// extends reports whether page p, index idx at block, can be the next
// page of r: the next index and the next block, room for one more page,
// and an iovec free unless p's memory follows the last one.
func (r *run) extends(idx, block uint64, p *pages.Page, ps int) bool {
	n := len(r.pages)
	if n == 0 || n == cap(r.pages) {
		return false
	}
	return idx == r.pages[n-1].Index()+1 && block == r.lastBlock(ps)+1 &&
		(len(r.iov) < cap(r.iov) || ring.Adjacent(r.iov, p.Data()))
}

// lastBlock is the device block of r's last page.
func (r *run) lastBlock(ps int) uint64 {
	return uint64(r.off)/uint64(ps) + uint64(len(r.pages)) - 1
}

// add appends p to r; the caller checked extends (or r is empty).
func (r *run) add(p *pages.Page) {
	d := p.Data()
	r.iov, _ = ring.AppendMem(r.iov, d)
	r.pages = append(r.pages, p)
	r.bytes += int64(len(d))
}
