package ring

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// nopBackends are the backends BenchmarkNop and BenchmarkNopRoundTrip
// measure. Backend test files add themselves in their init (the iceber
// one, under its build tag, appends "iceber").
var nopBackends = []string{"native"}

// nopBenchDepth is the ring depth of BenchmarkNop (the largest Open
// takes). The submitter runs far ahead of the ring with NOPs, so it is
// always waiting for free slots; a deep ring lets it be woken (in
// batches, when a quarter of the slots are free) while the owner still
// has thousands of requests queued, so neither side sleeps per batch
// and the number is the cost per request of the hand-off, the SQE, the
// kernel and the completion path. With a shallow ring every batch pays
// two thread wake-ups, tens of microseconds each on a VM whose idle
// vCPUs halt: that is what BenchmarkNopRoundTrip shows.
const nopBenchDepth = MaxDepth

// BenchmarkNop measures the ring's own cost per request: batches of
// NOPs submitted back to back from one goroutine, completions counted
// by the Handler. b.N counts requests, so ns/op is per request.
func BenchmarkNop(b *testing.B) {
	for _, backend := range nopBackends {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", backend, batch), func(b *testing.B) {
				benchNop(b, backend, batch, nopBenchDepth)
			})
		}
	}
}

// BenchmarkNopRoundTrip submits one batch and waits for all of its
// completions before the next (Depth = batch): hand-off, wake-up and
// completion latency per request, with no overlap.
func BenchmarkNopRoundTrip(b *testing.B) {
	for _, backend := range nopBackends {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", backend, batch), func(b *testing.B) {
				benchNop(b, backend, batch, batch)
			})
		}
	}
}

func benchNop(b *testing.B, backend string, batch, depth int) {
	tg := tkFileTarget(b, 1<<20)
	var done atomic.Int64
	kick := make(chan struct{}, 1)
	r, err := Open(tg, backend, Config{Depth: depth, Handler: func(cs []Completion) {
		done.Add(int64(len(cs)))
		select {
		case kick <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		b.Fatalf("Open(%s): %v", backend, err)
	}
	defer r.Close()
	reqs := make([]Request, batch)
	for i := range reqs {
		reqs[i] = Request{Op: OpNop, Tag: uint64(i)}
	}
	wait := func(n int64) {
		for done.Load() < n {
			<-kick
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		if err := r.Submit(reqs[:n]); err != nil {
			b.Fatal(err)
		}
		sent += n
		if depth == batch {
			wait(int64(sent))
		}
	}
	wait(int64(b.N))
	b.StopTimer()
}

// BenchmarkNopFloor is the floor the ring is measured against: a bare
// io_uring driven by one locked thread (fill batch NOP SQEs, one
// io_uring_enter that submits them and waits for their CQEs, reap), set
// up with the native ring's flags, with no hand-off, slots or Handler.
func BenchmarkNopFloor(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var flags uint32
			for _, f := range setupFlagNames {
				flags |= f.flag
			}
			sq := roundPow2(uint32(batch))
			u, call, err := newURing(sq, 2*sq, flags)
			if err != nil {
				b.Skipf("skipping: %s: %v", call, err)
			}
			defer u.close()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := 0; j < batch; j++ {
					u.nextSQE().userData = uint64(j)
				}
				if _, errno := u.enter(u.flush(), uint32(batch)); errno != 0 {
					b.Fatal(errno)
				}
				head, tail := u.cqPending()
				if tail-head != uint32(batch) {
					b.Fatalf("%d CQEs for %d NOPs", tail-head, batch)
				}
				u.cqAdvance(tail)
			}
		})
	}
}

// BenchmarkWrite writes 128 KiB at queue depth 32 to a loop device over
// /dev/shm (a real block device at memory speed, so the ring, not the
// medium, is measured), with every registered backend, and with the
// native ring's registered buffers (WRITE_FIXED). One op is one write;
// MB/s is reported. Root only (loop devices).
func BenchmarkWrite(b *testing.B) {
	for _, backend := range tkBackends() {
		b.Run(backend, func(b *testing.B) { benchWrite(b, backend, false) })
		if backend == "native" {
			b.Run("native/fixed", func(b *testing.B) { benchWrite(b, backend, true) })
		}
	}
}

func benchWrite(b *testing.B, backend string, fixed bool) {
	const (
		ioSize  = 128 << 10
		qd      = 32
		devSize = 256 << 20
	)
	d := loopdevtest.ForTest(b, devSize, 4096)
	tg, err := OpenTarget(d.Path, TargetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer tg.Close()
	mem := tkMmap(b, qd*ioSize)
	for i := range mem {
		mem[i] = byte(i)
	}
	free := make(chan uint64, qd) // tags of writes not in flight
	var failed atomic.Int64
	r, err := Open(tg, backend, Config{Depth: qd, Handler: func(cs []Completion) {
		for _, c := range cs {
			if c.Err != 0 || c.N != ioSize {
				failed.Add(1)
			}
			free <- c.Tag // never blocks: at most qd tags exist
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if fixed {
		if err := r.RegisterBuffers([][]byte{mem}); err != nil {
			b.Skipf("skipping: %v", err)
		}
	}
	iovs := make([][1]unix.Iovec, qd)
	batch := make([]Request, 0, qd)
	for tag := uint64(0); tag < qd; tag++ {
		free <- tag
	}
	var off int64
	add := func(tag uint64) {
		iovs[tag][0] = tkIov(mem[tag*ioSize : (tag+1)*ioSize])
		batch = append(batch, Request{Op: OpWrite, Fixed: fixed, Off: off, Iov: iovs[tag][:], Tag: tag})
		off = (off + ioSize) % devSize
	}
	b.SetBytes(ioSize)
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		add(<-free) // wait for one free write, then take what else is free
	more:
		for len(batch) < qd && sent+len(batch) < b.N {
			select {
			case tag := <-free:
				add(tag)
			default:
				break more
			}
		}
		if err := r.Submit(batch); err != nil {
			b.Fatal(err)
		}
		sent += len(batch)
		batch = batch[:0]
	}
	for i := 0; i < qd; i++ {
		<-free
	}
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d writes failed", n)
	}
}

// BenchmarkNopRun is the engine's path: one Run hands the owner the
// work, and the function adds b.N NOPs, flushing every batch and reaping
// a batch when the ring is full — no hand-off per batch.
func BenchmarkNopRun(b *testing.B) {
	for _, backend := range []string{"native", "pwritev"} {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", backend, batch), func(b *testing.B) {
				tg := tkFileTarget(b, 1<<20)
				var done int64
				r, err := Open(tg, backend, Config{Depth: nopBenchDepth, Handler: func(cs []Completion) { done += int64(len(cs)) }})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				req := Request{Op: OpNop}
				b.ReportAllocs()
				b.ResetTimer()
				r.Run(context.Background(), func(q Queue) {
					for i := 0; i < b.N; i++ {
						if q.InFlight() >= nopBenchDepth {
							q.Reap(batch)
						}
						q.Add(&req)
						if (i+1)%batch == 0 {
							q.Flush()
						}
					}
					for q.InFlight() > 0 {
						q.Wait()
					}
				})
			})
		}
	}
}
