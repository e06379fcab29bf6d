package pages

import (
	"errors"
	"testing"
	"unsafe"
)

func newTestCache(t testing.TB, ps, capacity int) *Cache {
	t.Helper()
	c, err := New(Config{PageSize: ps, Capacity: capacity, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: did not panic", what)
		}
	}()
	fn()
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"4k", Config{PageSize: 4096, Capacity: 8}, true},
		{"512", Config{PageSize: 512, Capacity: 1}, true},
		{"1MiB", Config{PageSize: 1 << 20, Capacity: 2}, true},
		{"too-small", Config{PageSize: 256, Capacity: 8}, false},
		{"too-big", Config{PageSize: 2 << 20, Capacity: 8}, false},
		{"not-pow2", Config{PageSize: 3000, Capacity: 8}, false},
		{"zero-page", Config{PageSize: 0, Capacity: 8}, false},
		{"zero-cap", Config{PageSize: 4096, Capacity: 0}, false},
		{"neg-cap", Config{PageSize: 4096, Capacity: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if tc.ok {
				if err != nil {
					t.Fatalf("New(%+v) = %v", tc.cfg, err)
				}
				if got := len(c.pages[0].Data()); got != tc.cfg.PageSize {
					t.Errorf("len(Data) = %d, want %d", got, tc.cfg.PageSize)
				}
				if err := c.Close(); err != nil {
					t.Error(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New(%+v) = %v, want ErrConfig", tc.cfg, err)
			}
		})
	}
}

func TestArenaAligned(t *testing.T) {
	for _, heap := range []bool{false, true} {
		c, err := New(Config{PageSize: 512, Capacity: 64, HeapArena: heap})
		if err != nil {
			t.Fatal(err)
		}
		for i := range c.pages {
			d := c.pages[i].Data()
			if a := uintptr(unsafe.Pointer(&d[0])) % 512; a != 0 {
				t.Fatalf("heap=%v: page slot %d at misaligned address (mod 512 = %d)", heap, i, a)
			}
			if i > 0 {
				prev := c.pages[i-1].Data()
				if uintptr(unsafe.Pointer(&prev[0]))+512 != uintptr(unsafe.Pointer(&d[0])) {
					t.Fatalf("heap=%v: slots %d and %d not adjacent", heap, i-1, i)
				}
			}
		}
		c.Close()
	}
}

func TestPageSizeStruct(t *testing.T) {
	// The doc comment on Page promises 64 bytes of metadata per page.
	if got := unsafe.Sizeof(Page{}); got != 64 {
		t.Errorf("sizeof(Page) = %d, the doc says 64", got)
	}
}

// detachDirty takes the intake list as the engine does (DetachDirtyEach)
// and appends its pages to buf.
func detachDirty(c *Cache, buf []*Page) []*Page {
	c.DetachDirtyEach(func(p *Page) { buf = append(buf, p) })
	return buf
}
