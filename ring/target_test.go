package ring

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

func TestOpenTargetFile(t *testing.T) {
	path := loopdevtest.TempFile(t, 1<<20)
	tg, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *tg)
	if tg.Kind != KindFile || tg.Size != 1<<20 || tg.Path != path || tg.Dev != "" {
		t.Errorf("target %+v", *tg)
	}
	if lbs := tg.LogicalBlockSize; lbs < 1 || lbs > 64<<10 || lbs&(lbs-1) != 0 {
		t.Errorf("LogicalBlockSize %d", lbs)
	}
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_DIOALIGN, &sx); err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
		if want := int(max(sx.Dio_offset_align, sx.Dio_mem_align)); tg.LogicalBlockSize != want {
			t.Errorf("LogicalBlockSize %d, STATX_DIOALIGN says %d", tg.LogicalBlockSize, want)
		}
	}
	if !tg.NeedsFlush() {
		t.Error("a file needs fdatasync")
	}
	if tg.Fd() < 0 {
		t.Error("Fd < 0 on an open target")
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if tg.Fd() != -1 {
		t.Errorf("Fd after Close = %d", tg.Fd())
	}
	ro, err := OpenTarget(path, TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ro.Close()
}

func TestOpenTargetRejects(t *testing.T) {
	dir := t.TempDir()
	odd := loopdevtest.TempFile(t, 1<<20+100)
	empty := loopdevtest.TempFile(t, 1)
	if err := os.Truncate(empty, 0); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, what string
	}{
		{dir, "a directory"},
		{"/dev/null", "a character device"},
		{fifo, "a FIFO"},
		{odd, "not a multiple"},
		{empty, "empty"},
	} {
		tg, err := OpenTarget(c.path, TargetOptions{})
		if err == nil {
			tg.Close()
			t.Errorf("OpenTarget(%s) succeeded", c.path)
			continue
		}
		if !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.what) {
			t.Errorf("OpenTarget(%s) = %v, want ErrTarget naming the path and %q", c.path, err, c.what)
		}
	}
	_, err := OpenTarget(filepath.Join(dir, "nothing"), TargetOptions{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

// A loop device's limits are read from its sysfs queue directory.
func TestOpenTargetLoop(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		t.Run(strconv.Itoa(sector), func(t *testing.T) {
			d := loopdevtest.ForTest(t, 4<<20, sector)
			tg, err := OpenTarget(d.Path, TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			t.Logf("%+v", *tg)
			q := "/sys/block/" + d.Name() + "/queue/"
			read := func(name string) string {
				b, err := os.ReadFile(q + name)
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(b))
			}
			atoi := func(name string) int {
				n, err := strconv.Atoi(read(name))
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			if tg.Kind != KindBlock || tg.Size != 4<<20 || tg.Dev != d.Name() {
				t.Errorf("Kind, Size, Dev = %v, %d, %q", tg.Kind, tg.Size, tg.Dev)
			}
			if tg.LogicalBlockSize != sector || tg.LogicalBlockSize != atoi("logical_block_size") {
				t.Errorf("LogicalBlockSize %d, want %d", tg.LogicalBlockSize, sector)
			}
			if tg.MaxSectorsKB != atoi("max_sectors_kb") || tg.NrRequests != atoi("nr_requests") || tg.MaxSegments != atoi("max_segments") || tg.WriteCache != read("write_cache") ||
				tg.FUA != (atoi("fua") == 1) || tg.StableWrites != (atoi("stable_writes") == 1) {
				t.Errorf("limits %+v differ from %s", *tg, q)
			}
			if tg.NeedsFlush() != (read("write_cache") != "write through") {
				t.Errorf("NeedsFlush %v with write_cache %q", tg.NeedsFlush(), read("write_cache"))
			}
		})
	}
}

// Writers open a block device O_EXCL: a second writer gets EBUSY; a
// read-only opener does not take the device exclusively.
func TestOpenTargetExclusive(t *testing.T) {
	d := loopdevtest.ForTest(t, 1<<20, 4096)
	tg, err := OpenTarget(d.Path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	_, err = OpenTarget(d.Path, TargetOptions{})
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), d.Path) {
		t.Errorf("second exclusive open: %v, want EBUSY naming %s", err, d.Path)
	}
	ro, err := OpenTarget(d.Path, TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a device held exclusively: %v", err)
	}
	ro.Close()
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenTarget(d.Path, TargetOptions{})
	if err != nil {
		t.Fatalf("exclusive open after Close: %v", err)
	}
	again.Close()
}

// A partition has no queue directory of its own: its disk's is used.
func TestQueueDirPartition(t *testing.T) {
	root := t.TempDir()
	disk := filepath.Join(root, "devices", "pci0000:00", "virtio1", "block", "vdz")
	part := filepath.Join(disk, "vdz1")
	for _, d := range []string{filepath.Join(disk, "queue"), part, filepath.Join(root, "dev", "block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(part, "partition"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, val := range map[string]string{"logical_block_size": "4096", "max_sectors_kb": "1280", "max_segments": "168", "write_cache": "write through", "fua": "1"} {
		if err := os.WriteFile(filepath.Join(disk, "queue", name), []byte(val+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(disk, filepath.Join(root, "dev", "block", "252:0")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(part, filepath.Join(root, "dev", "block", "252:1")); err != nil {
		t.Fatal(err)
	}
	old := sysfsRoot
	sysfsRoot = root
	defer func() { sysfsRoot = old }()
	for _, minor := range []uint32{0, 1} {
		dev, queue, err := queueDir(unix.Mkdev(252, minor))
		if err != nil {
			t.Fatal(err)
		}
		if dev != "vdz" || queue != filepath.Join(disk, "queue") {
			t.Errorf("252:%d: dev %q queue %q, want vdz and the disk's queue", minor, dev, queue)
		}
		tg := &Target{Kind: KindBlock}
		if err := tg.readQueue(queue); err != nil {
			t.Fatal(err)
		}
		if tg.LogicalBlockSize != 4096 || tg.MaxSectorsKB != 1280 || tg.MaxSegments != 168 || tg.NrRequests != 0 || tg.WriteCache != "write through" || !tg.FUA || tg.StableWrites || tg.NeedsFlush() {
			t.Errorf("limits %+v (no stable_writes file: false; no nr_requests: 0)", *tg)
		}
	}
	if _, _, err := queueDir(unix.Mkdev(252, 7)); !errors.Is(err, ErrTarget) {
		t.Errorf("no sysfs entry: %v, want ErrTarget", err)
	}
}

func TestCheckRequest(t *testing.T) {
	mem := tkMmap(t, 3*4096)
	tg := &Target{Path: "/dev/test", Kind: KindBlock, Size: 1 << 20, LogicalBlockSize: 512}
	iov := func(from, to int) []unix.Iovec { return []unix.Iovec{tkIov(mem[from:to])} }
	for _, c := range []struct {
		name string
		req  Request
		want error
	}{
		{"aligned", Request{Op: OpWrite, Off: 512, Iov: iov(0, 4096)}, nil},
		{"two iovecs", Request{Op: OpRead, Off: 0, Iov: append(iov(512, 1024), iov(4096, 8192)...)}, nil},
		{"up to the end", Request{Op: OpWrite, Off: 1<<20 - 4096, Iov: iov(0, 4096)}, nil},
		{"flush", Request{Op: OpFlush, Off: 3}, nil},
		{"nop", Request{Op: OpNop}, nil},
		{"offset", Request{Op: OpWrite, Off: 100, Iov: iov(0, 512)}, ErrMisaligned},
		{"length", Request{Op: OpWrite, Off: 0, Iov: append(iov(0, 512), iov(4096, 4096+100)...)}, ErrMisaligned},
		{"address", Request{Op: OpRead, Off: 0, Iov: iov(8, 520)}, ErrMisaligned},
		{"past the end", Request{Op: OpWrite, Off: 1<<20 - 512, Iov: iov(0, 1024)}, ErrOutOfRange},
		{"negative", Request{Op: OpWrite, Off: -512, Iov: iov(0, 512)}, ErrOutOfRange},
		{"bad op", Request{Op: 9}, ErrBadConfig},
	} {
		err := tg.CheckRequest(&c.req)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), "/dev/test") {
			t.Errorf("%s: %v does not name the target", c.name, err)
		}
		if errors.Is(err, ErrMisaligned) && !strings.Contains(err.Error(), "512") {
			t.Errorf("%s: %v does not name the alignment", c.name, err)
		}
	}
}
