package powercut

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/ring"
)

const block = 4096

// collect is a Handler that hands completions to take.
type collect struct {
	mu sync.Mutex
	cs []ring.Completion
}

func (c *collect) handle(cs []ring.Completion) {
	c.mu.Lock()
	c.cs = append(c.cs, cs...)
	c.mu.Unlock()
}

func (c *collect) take(t *testing.T) ring.Completion {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		if len(c.cs) > 0 {
			x := c.cs[0]
			c.cs = c.cs[1:]
			c.mu.Unlock()
			return x
		}
		c.mu.Unlock()
		time.Sleep(100 * time.Microsecond)
	}
	t.Fatal("no completion in 5s")
	return ring.Completion{}
}

// TestModel walks the volatile-cache rules, over the pwritev pool and
// the native ring's Run path: a completed write is durable only once a
// flush issued after it succeeded; at the cut each unflushed write
// survives or not, by the seed, in an order drawn from it; the same seed
// gives the same image; after the cut everything fails.
func TestModel(t *testing.T) {
	for _, backend := range []string{"pwritev", "native"} {
		t.Run(backend, func(t *testing.T) { testModel(t, backend) })
	}
}

func testModel(t *testing.T, backend string) {
	const blocks = 64
	path := loopdevtest.TempFile(t, blocks*block)
	type outcome struct {
		img        []byte
		lost, kept int
	}
	run := func(seed uint64) outcome {
		tg, err := ring.OpenTarget(path, ring.TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		var c collect
		m := New(blocks*block, nil)
		r, err := ring.Open(tg, backend, ring.Config{Depth: 8, Handler: c.handle, Interposers: []ring.Interposer{m}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		mem, err := unix.Mmap(-1, 0, 48*block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mem)
		write := func(b int, fill byte, tag uint64) {
			t.Helper()
			page := mem[b*block : (b+1)*block]
			for i := range page {
				page[i] = fill
			}
			req := ring.Request{Op: ring.OpWrite, Off: int64(b * block), Iov: []ring.Iovec{ring.IovecOf(page)}, Tag: tag}
			if err := r.Run(context.Background(), func(q ring.Queue) { q.Add(&req); q.Flush() }); err != nil {
				t.Fatal(err)
			}
			if got := c.take(t); got.Err != 0 {
				t.Fatalf("write: %+v", got)
			}
		}
		flush := func(tag uint64) ring.Completion {
			t.Helper()
			if err := r.Submit([]ring.Request{{Op: ring.OpFlush, Tag: tag}}); err != nil {
				t.Fatal(err)
			}
			return c.take(t)
		}
		write(0, 1, 1)
		if got := flush(2); got.Err != 0 {
			t.Fatalf("flush: %v", got.Err)
		}
		// Block 0 holds 1 durably; it gets an unflushed overwrite with 2,
		// and blocks 1..40 unflushed writes.
		write(0, 2, 3)
		for b := 1; b <= 40; b++ {
			write(b, byte(b+10), uint64(100+b))
		}
		if img := m.Image(); img[0] != 1 || img[block] != 0 {
			t.Fatalf("before the cut, the durable image has block 0 = %d, block 1 = %d: want 1 and 0", img[0], img[block])
		}
		m.Cut(seed)
		st := m.Stats()
		if got := flush(9); got.Err != unix.EIO {
			t.Fatalf("flush after the cut: %+v, want EIO", got)
		}
		img := m.Image()
		if img[0] != 1 && img[0] != 2 {
			t.Fatalf("block 0 holds %d, want 1 (durable) or 2 (unflushed, kept)", img[0])
		}
		for b := 1; b <= 40; b++ {
			if v := img[b*block]; v != 0 && v != byte(b+10) {
				t.Fatalf("block %d holds %d, want 0 or %d", b, v, b+10)
			}
		}
		if st.Lost+st.Survived != 41 {
			t.Fatalf("lost %d + kept %d, want 41 unflushed writes", st.Lost, st.Survived)
		}
		return outcome{img, st.Lost, st.Survived}
	}
	a, b := run(7), run(7)
	if !bytes.Equal(a.img, b.img) {
		t.Fatal("the same seed gave two different images")
	}
	if a.lost == 0 || a.kept == 0 {
		t.Fatalf("seed 7: %d lost, %d kept: want some of each", a.lost, a.kept)
	}
	c := run(8)
	if bytes.Equal(a.img, c.img) {
		t.Fatal("seeds 7 and 8 gave the same image")
	}
	t.Logf("seed 7: %d unflushed writes lost, %d kept; seed 8: %d lost, %d kept", a.lost, a.kept, c.lost, c.kept)
}
