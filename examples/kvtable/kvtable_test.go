package kvtable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

func TestPutGetReopen(t *testing.T) {
	const nslots = 4096 // 256 pages
	path := loopdevtest.TempFile(t, nslots*SlotSize)
	// A cache of 32 pages for a table of 256: eviction and read-in work.
	tb, err := Open(path, nslots, 32)
	if err != nil {
		t.Fatal(err)
	}
	val := func(i, gen int) []byte { return []byte(fmt.Sprintf("value %d of key %d", gen, i)) }
	const n = 3000
	for i := 0; i < n; i++ {
		if err := tb.Put([]byte(fmt.Sprintf("key-%d", i)), val(i, 1)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	for i := 0; i < n; i += 3 { // overwrite some
		if err := tb.Put([]byte(fmt.Sprintf("key-%d", i)), val(i, 2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := tb.Stats()
	t.Logf("evictions %d, read misses %d, pages written %d in %d writes", st.Evictions, st.ReadMisses, st.PagesWritten, st.Writes)
	if st.Evictions == 0 {
		t.Error("a 32-page cache over a 256-page table never evicted")
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}

	tb, err = Open(path, nslots, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := 0; i < n; i++ {
		want := val(i, 1)
		if i%3 == 0 {
			want = val(i, 2)
		}
		got, ok, err := tb.Get([]byte(fmt.Sprintf("key-%d", i)))
		if err != nil || !ok || !bytes.Equal(got, want) {
			t.Fatalf("after reopen, key-%d = %q, %v, %v; want %q", i, got, ok, err, want)
		}
	}
	if _, ok, err := tb.Get([]byte("absent")); ok || err != nil {
		t.Fatalf("absent key: %v %v", ok, err)
	}
	if err := tb.Put(bytes.Repeat([]byte{'k'}, MaxKey+1), nil); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversized key: %v", err)
	}
}

func TestFull(t *testing.T) {
	path := loopdevtest.TempFile(t, 16*SlotSize)
	tb, err := Open(path, 16, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := 0; i < 16; i++ {
		if err := tb.Put([]byte{byte(i + 1)}, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.Put([]byte("one more"), []byte("v")); !errors.Is(err, ErrFull) {
		t.Fatalf("put into a full table: %v", err)
	}
}
