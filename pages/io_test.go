package pages

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fakeOps fills pages with a byte and counts calls.
type fakeOps struct {
	fill              byte
	reads, balance    atomic.Int64
	readPages         atomic.Int64
	dirtied           atomic.Int64
	reclaims          atomic.Int64
	reclaim           func()
	readErr, balanceE error
}

func (o *fakeOps) ReadPages(ctx context.Context, ps []*Page) error {
	o.reads.Add(1)
	o.readPages.Add(int64(len(ps)))
	if o.readErr != nil {
		return o.readErr
	}
	for _, p := range ps {
		if !p.Flags().IsLocked() {
			panic("ReadPages of an unlocked page")
		}
		for i := range p.Data() {
			p.Data()[i] = o.fill
		}
		p.SetUptodate()
	}
	return nil
}

func (o *fakeOps) WritebackForReclaim(ctx context.Context) error {
	o.reclaims.Add(1)
	if o.reclaim != nil {
		o.reclaim()
	}
	return nil
}

func (o *fakeOps) BalanceDirty(ctx context.Context, n int) error {
	o.balance.Add(1)
	o.dirtied.Add(int64(n))
	return o.balanceE
}

func TestWriteAtAcrossPages(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 16)
	// Whole pages first, so later partial writes find them Uptodate.
	base := bytes.Repeat([]byte{0xAA}, 4*ps)
	if n, err := c.WriteAt(base, 0); n != len(base) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	msg := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes over pages 0–2
	if n, err := c.WriteAt(msg, 300); n != len(msg) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	want := append([]byte(nil), base...)
	copy(want[300:], msg)
	got := make([]byte, len(want))
	if n, err := c.ReadAt(got, 0); n != len(got) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("ReadAt after WriteAt across pages differs")
	}
	if got := len(detachDirty(c, nil)); got != 4 {
		t.Fatalf("dirty pages detached = %d, want 4", got)
	}
	// A partial write into an absent page needs a read-in, and there are
	// no Ops.
	n, err := c.WriteAt([]byte("x"), 10*ps+1)
	if n != 0 || !errors.Is(err, ErrNotUptodate) {
		t.Fatalf("partial write into an absent page without Ops = %d, %v; want ErrNotUptodate", n, err)
	}
	if _, err := c.WriteAt([]byte("x"), -1); !errors.Is(err, ErrOffset) {
		t.Fatalf("negative offset: %v", err)
	}
}

func TestWriteAtReadsIn(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 4)
	ops := &fakeOps{fill: 'z'}
	c.SetOps(ops)
	if _, err := c.WriteAt([]byte("abc"), ps+10); err != nil {
		t.Fatal(err)
	}
	if ops.reads.Load() != 1 || ops.balance.Load() != 1 {
		t.Fatalf("reads %d balance %d, want 1 and 1", ops.reads.Load(), ops.balance.Load())
	}
	got := make([]byte, ps)
	c.ReadAt(got, ps)
	want := bytes.Repeat([]byte{'z'}, ps)
	copy(want[10:], "abc")
	if !bytes.Equal(got, want) {
		t.Fatalf("page after partial write over read-in data differs")
	}
	// A whole-page write needs no read.
	c.WriteAt(make([]byte, ps), 2*ps)
	if ops.reads.Load() != 1 {
		t.Fatalf("whole-page write read the page in")
	}
	ops.readErr = errors.New("device on fire")
	if _, err := c.WriteAt([]byte("q"), 3*ps+1); err == nil || !errors.Is(err, ops.readErr) {
		t.Fatalf("read-in error not returned: %v", err)
	}
}

// TestStablePages: WriteAt waits for a page's writeback to end before
// changing it.
func TestStablePages(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 4)
	c.WriteAt(bytes.Repeat([]byte{1}, ps), 0)
	p := c.Lookup(0)
	p.Lock()
	p.ClearDirtyForIO()
	p.TestSetWriteback()
	p.Unlock()
	for _, q := range detachDirty(c, nil) {
		c.Put(q) // retire: the write holds p's pin from here on
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.WriteAt(bytes.Repeat([]byte{2}, ps), 0)
		done <- err
	}()
	// Wait until the writer sleeps on the page (it sets Waiters), not
	// for a time.
	for p.Flags()&PageWaiters == 0 {
		select {
		case err := <-done:
			t.Fatalf("WriteAt returned (%v) while the page was under writeback", err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	if p.Data()[0] != 1 {
		t.Fatal("page changed while under writeback")
	}
	c.EndWritebackPages([]*Page{p})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.Data()[0] != 2 {
		t.Fatal("write after writeback ended did not land")
	}
	c.Put(p)
}

// TestReadAtBatches: consecutive pages that are not cached are read in
// with one ReadPages call.
func TestReadAtBatches(t *testing.T) {
	const ps = 512
	c := newTestCache(t, ps, 64)
	ops := &fakeOps{fill: 'r'}
	c.SetOps(ops)
	c.WriteAt(bytes.Repeat([]byte{'w'}, ps), 5*ps) // page 5 cached
	buf := make([]byte, 10*ps)
	if n, err := c.ReadAt(buf, 0); n != len(buf) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if ops.reads.Load() != 1 || ops.readPages.Load() != 9 {
		t.Fatalf("ReadPages calls %d pages %d, want 1 call for 9 pages", ops.reads.Load(), ops.readPages.Load())
	}
	want := bytes.Repeat([]byte{'r'}, 10*ps)
	copy(want[5*ps:], bytes.Repeat([]byte{'w'}, ps))
	if !bytes.Equal(buf, want) {
		t.Fatal("ReadAt content differs")
	}
	if got := ops.dirtied.Load(); got != 1 {
		t.Fatalf("BalanceDirty told of %d dirtied pages, want 1", got)
	}
}
