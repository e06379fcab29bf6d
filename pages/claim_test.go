package pages

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

type owner string

func (o owner) String() string { return string(o) }

// TestClaim: of many goroutines claiming a cache at once exactly one
// wins; the others are told who holds it; after Unclaim another may.
func TestClaim(t *testing.T) {
	c := newTestCache(t, 4096, 4)
	owners := make([]owner, 16)
	wins := make([]bool, len(owners))
	var wg sync.WaitGroup
	for i := range owners {
		owners[i] = owner("engine " + string(rune('a'+i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Claim(&owners[i])
			wins[i] = err == nil
			if err != nil && (!errors.Is(err, ErrClaimed) || !strings.Contains(err.Error(), "engine ")) {
				t.Errorf("Claim = %v, want ErrClaimed naming the holder", err)
			}
		}()
	}
	wg.Wait()
	winner := -1
	for i, w := range wins {
		if w {
			if winner >= 0 {
				t.Fatalf("%s and %s both claimed the cache", owners[winner], owners[i])
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("nobody claimed the cache")
	}
	other := owner("late")
	c.Unclaim(&other) // not the holder: no effect
	if err := c.Claim(&other); !errors.Is(err, ErrClaimed) {
		t.Fatalf("Claim after a stranger's Unclaim = %v, want ErrClaimed", err)
	}
	c.Unclaim(&owners[winner])
	if err := c.Claim(&other); err != nil {
		t.Fatalf("Claim after the holder's Unclaim: %v", err)
	}
}

// TestLimit: with a limit, Grab (so WriteAt and ReadAt) refuses pages at
// or past it, naming the page, the limit and where it comes from.
func TestLimit(t *testing.T) {
	c := newTestCache(t, 4096, 4)
	c.SetLimit(10, "the mapper's range on /dev/x")
	if _, err := c.WriteAt(make([]byte, 4096), 10*4096); !errors.Is(err, ErrRange) ||
		!strings.Contains(err.Error(), "page 10") || !strings.Contains(err.Error(), "mapper's range on /dev/x") || !strings.Contains(err.Error(), "(10 pages)") {
		t.Fatalf("WriteAt at page 10 with limit 10 = %v, want ErrRange naming page, limit and source", err)
	}
	p, err := c.Grab(9)
	if err != nil {
		t.Fatalf("Grab(9) under limit 10: %v", err)
	}
	p.Unlock()
	c.Put(p)
	c.SetLimit(0, "")
	if p, err = c.Grab(1000); err != nil {
		t.Fatalf("Grab(1000) with no limit: %v", err)
	}
	p.Unlock()
	c.Put(p)
}

// TestReturnDirty: a dirty page taken off the intake list and handed
// back is on the list again, with its dirty pin, once.
func TestReturnDirty(t *testing.T) {
	c := newTestCache(t, 4096, 4)
	p, err := c.Grab(2)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDirty(p)
	p.Unlock()
	c.Put(p)
	got := detachDirty(c, nil)
	if len(got) != 1 || got[0] != p {
		t.Fatalf("DetachDirty = %v", got)
	}
	c.ReturnDirty(p)
	if again := detachDirty(c, nil); len(again) != 1 || again[0] != p {
		t.Fatalf("after ReturnDirty, DetachDirty = %v, want the page once", again)
	}
	if n := p.Pins(); n != 1 {
		t.Fatalf("pins %d, want 1 (the dirty pin)", n)
	}
	if c.Close() == nil {
		t.Fatal("cache closed with a dirty page pinned")
	}
}
