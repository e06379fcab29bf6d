package loopdev

import (
	"os"
	"testing"
)

func TestCreateRemove(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("skipping TestCreateRemove: %v", err)
	}
	d, err := Create("", 16<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	path, file := d.Path, d.File
	sz, err := os.ReadFile("/sys/block/" + d.Name() + "/queue/logical_block_size")
	if err != nil {
		d.Remove()
		t.Fatal(err)
	}
	if got, want := string(sz), "4096\n"; got != want {
		t.Errorf("logical_block_size = %q, want %q", got, want)
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("backing file %s still there after Remove: %v", file, err)
	}
	if b, err := os.ReadFile("/sys/block/" + path[len("/dev/"):] + "/loop/backing_file"); err == nil {
		t.Errorf("%s still attached to %s", path, b)
	}
}
