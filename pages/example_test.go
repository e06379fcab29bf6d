package pages_test

import (
	"fmt"
	"log"

	"github.com/wbengine/wbengine/pages"
)

// WriteAt copies into the cache page by page and marks the pages dirty;
// ReadAt reads back what is cached.
func ExampleCache_WriteAt() {
	c, err := pages.New(pages.Config{PageSize: 512, Capacity: 16})
	if err != nil {
		log.Fatal(err)
	}
	// Whole pages need no read-in; a partial write into a page that is
	// not cached would (through an engine's Ops).
	buf := make([]byte, 2*512)
	copy(buf[500:], "spans two pages")
	if _, err := c.WriteAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	out := make([]byte, 15)
	c.ReadAt(out, 500)
	fmt.Printf("%q; %d dirty pages\n", out, c.NrDirty())
	// Output: "spans two pages"; 2 dirty pages
}
