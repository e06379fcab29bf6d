package ring

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPowerCutModel walks the volatile-cache rules: a completed write is
// durable only once a flush submitted after it succeeded; a failed flush
// covers nothing; at the cut each unflushed write survives or not, by
// the seed, in an order drawn from it; the same seed gives the same image.
func TestPowerCutModel(t *testing.T) {
	const blocks = 64
	tg := tkFileTarget(t, blocks*ftBlock)
	type outcome struct {
		img        []byte
		lost, kept int
	}
	run := func(seed uint64) outcome {
		sink := newTKSink()
		pc, err := NewPowerCut(func(c Config) (Ring, error) { return Open(tg, "pwritev", c) },
			Config{Depth: 8, Handler: sink.handle}, blocks*ftBlock, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		write := func(block int, fill byte, tag uint64) {
			t.Helper()
			mem := tkMmap(t, ftBlock)
			for i := range mem {
				mem[i] = fill
			}
			if err := pc.Submit([]Request{{Op: OpWrite, Off: int64(block * ftBlock), Iov: []unix.Iovec{tkIov(mem)}, Tag: tag}}); err != nil {
				t.Fatal(err)
			}
			sink.take(t, 1)
		}
		flush := func(tag uint64) Completion {
			t.Helper()
			if err := pc.Submit([]Request{{Op: OpFlush, Tag: tag}}); err != nil {
				t.Fatal(err)
			}
			return sink.take(t, 1)[0]
		}
		write(0, 1, 1)
		if c := flush(2); c.Err != 0 {
			t.Fatalf("flush: %v", c.Err)
		}
		// Block 0 holds 1 durably; block 1..40 get unflushed writes, and
		// block 0 an unflushed overwrite with 2.
		write(0, 2, 3)
		for b := 1; b <= 40; b++ {
			write(b, byte(b+10), uint64(100+b))
		}
		pc.Cut(seed)
		st := pc.Stats()
		if err := pc.Submit([]Request{{Op: OpFlush, Tag: 9}}); err == nil {
			t.Fatal("Submit after the cut succeeded")
		}
		img := pc.Image()
		if img[0] != 1 && img[0] != 2 {
			t.Fatalf("block 0 holds %d, want 1 (durable) or 2 (unflushed, kept)", img[0])
		}
		for b := 1; b <= 40; b++ {
			if v := img[b*ftBlock]; v != 0 && v != byte(b+10) {
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
