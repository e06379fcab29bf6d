// Package powercut models a device with a volatile write cache, for
// crash tests in process (bbolt's dm-flakey "drop writes" and pebble's
// error-injecting file system play this role for them). A Model is a
// ring.Interposer: given to a ring in ring.Config.Interposers it sees
// every attempt at every write and flush on every backend — also the
// native ring's owner-thread path — and keeps, in memory, the image a
// power cut would leave behind: the durable image. It updates it by the
// rule a volatile write cache follows:
//
//   - A write that completed is not durable yet: the model copies its
//     data aside when its result passes through.
//   - A flush covers the writes that completed before it was issued:
//     it takes the writes completed so far; when it completes
//     successfully, their data is applied to the durable image in the
//     order they completed. A failed flush covers nothing: its writes
//     wait for the next flush.
//   - Cut keeps a random subset of the writes that completed but that no
//     successful flush covered, and loses the rest: a volatile cache
//     writes back whatever it holds, in any order, until the power goes.
//     The survivors are applied in a random order (so of two unflushed
//     writes to one block either may win). Then the image is frozen and
//     every attempt, in flight or later, fails with EIO.
//
// Writes and reads still go to the target (so the engine's own
// behaviour is the real one); only the durable image says what
// survives. The model assumes the target was zero-filled (or equal to
// the initial image given) when it was made.
package powercut

import (
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"

	"github.com/wbengine/wbengine/ring"
)

// Model is the volatile-cache model; it is safe for concurrent use.
type Model struct {
	mu        sync.Mutex
	durable   []byte
	slots     []pcSlot        // by ring slot: the attempt being made
	completed []write         // completed writes no issued flush covers yet
	flushes   map[int][]write // by ring slot: what each flush in flight covers
	cut       bool
	stats     Stats
}

// Stats counts what passed through a Model.
type Stats struct {
	Writes      int // write attempts completed before the cut
	Flushes     int // flushes that made writes durable
	Durable     int // writes applied to the durable image by flushes
	Lost        int // completed writes not durable at the cut, lost
	Survived    int // completed writes not covered by a flush that the cut kept anyway
	FailedAfter int // attempts failed because of the cut
}

type pcSlot struct {
	off int64
	iov [][]byte // views of the attempt's memory, for copying at completion
}

type write struct {
	off  int64
	data []byte
}

var _ ring.Interposer = (*Model)(nil)

// New makes a model of a device of size bytes whose content now is
// initial (nil: zeros).
func New(size int64, initial []byte) *Model {
	m := &Model{durable: make([]byte, size), flushes: make(map[int][]write)}
	copy(m.durable, initial)
	return m
}

// Attach implements ring.Interposer.
func (m *Model) Attach(depth int) {
	m.mu.Lock()
	m.slots = make([]pcSlot, depth)
	m.mu.Unlock()
}

// Issue implements ring.Interposer.
func (m *Model) Issue(a *ring.Attempt) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cut {
		m.stats.FailedAfter++
		a.Complete, a.Result = true, -int32(syscall.EIO)
		return
	}
	switch a.Req.Op {
	case ring.OpWrite:
		s := &m.slots[a.Slot]
		s.off = a.Off
		s.iov = s.iov[:0]
		for _, v := range a.Iov {
			s.iov = append(s.iov, ring.Bytes(v))
		}
	case ring.OpFlush:
		m.flushes[a.Slot] = m.completed
		m.completed = nil
	}
}

// Done implements ring.Interposer.
func (m *Model) Done(a *ring.Attempt) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cut {
		// The device lost power: whatever the target did, the caller
		// sees a failure, and nothing becomes durable.
		delete(m.flushes, a.Slot)
		m.stats.FailedAfter++
		a.Result = -int32(syscall.EIO)
		return
	}
	switch a.Req.Op {
	case ring.OpWrite:
		s := &m.slots[a.Slot]
		if a.Result > 0 {
			m.completed = append(m.completed, write{off: s.off, data: gather(s.iov, int64(a.Result))})
			m.stats.Writes++
		}
		clear(s.iov)
	case ring.OpFlush:
		covered := m.flushes[a.Slot]
		delete(m.flushes, a.Slot)
		if a.Result < 0 {
			// Not covered after all: the next flush must cover them.
			m.completed = append(covered, m.completed...)
			return
		}
		for _, w := range covered {
			copy(m.durable[w.off:], w.data)
		}
		m.stats.Flushes++
		m.stats.Durable += len(covered)
	}
}

// gather copies the first n bytes of the views.
func gather(iov [][]byte, n int64) []byte {
	out := make([]byte, 0, n)
	for _, v := range iov {
		if int64(len(out)) >= n {
			break
		}
		out = append(out, v[:min(int64(len(v)), n-int64(len(out)))]...)
	}
	return out
}

// Cut cuts the power. Of the completed writes no successful flush
// covered (also those whose flush is still in flight), each survives
// with probability 1/2, drawn from seed; the survivors are applied to
// the durable image in an order drawn from seed too. From then on only
// the durable image counts. A second Cut does nothing.
func (m *Model) Cut(seed uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cut {
		return
	}
	m.cut = true
	unflushed := m.completed
	// Flushes in flight in slot order, so the outcome depends on seed only.
	for _, slot := range slices.Sorted(maps.Keys(m.flushes)) {
		unflushed = append(unflushed, m.flushes[slot]...)
	}
	m.completed = nil
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	rng.Shuffle(len(unflushed), func(i, j int) { unflushed[i], unflushed[j] = unflushed[j], unflushed[i] })
	for _, w := range unflushed {
		if rng.IntN(2) == 0 {
			m.stats.Lost++
			continue
		}
		copy(m.durable[w.off:], w.data)
		m.stats.Survived++
	}
}

// Image returns a copy of the durable image: what the device would
// hold after a power cut now that kept none of the unflushed writes (or
// what it held at the cut, once Cut was called).
func (m *Model) Image() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.durable...)
}

// ReadDurable copies the durable image at byte offset off into b.
func (m *Model) ReadDurable(b []byte, off int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(b, m.durable[off:])
}

// Stats reports what passed through.
func (m *Model) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}
