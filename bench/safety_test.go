package bench

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

func TestSignatures(t *testing.T) {
	const span = 1 << 20
	put := func(b []byte, off int, s string) { copy(b[off:], s) }
	for _, tc := range []struct {
		name string
		make func(head, tail []byte)
		want string // in the description; "" = no signature
	}{
		{"zero", func(h, _ []byte) {}, ""},
		{"ext4", func(h, _ []byte) { binary.LittleEndian.PutUint16(h[1080:], 0xEF53) }, "ext2/3/4"},
		{"xfs", func(h, _ []byte) { put(h, 0, "XFSB") }, "XFS"},
		{"btrfs", func(h, _ []byte) { put(h, 65600, "_BHRfS_M") }, "Btrfs"},
		{"swap", func(h, _ []byte) { put(h, 4086, "SWAPSPACE2") }, "swap"},
		{"swap-old", func(h, _ []byte) { put(h, 4086, "SWAP-SPACE") }, "swap"},
		{"swap-64k", func(h, _ []byte) { put(h, 65526, "SWAPSPACE2") }, "swap"},
		{"lvm-sector1", func(h, _ []byte) { put(h, 512, "LABELONE") }, "LVM"},
		{"luks", func(h, _ []byte) { put(h, 0, "LUKS\xba\xbe") }, "LUKS"},
		{"mbr", func(h, _ []byte) { h[510], h[511] = 0x55, 0xAA; h[446+4] = 0x83 }, "MBR"},
		{"mbr-no-partition", func(h, _ []byte) { h[510], h[511] = 0x55, 0xAA }, ""},
		{"gpt-512", func(h, _ []byte) { put(h, 512, "EFI PART") }, "GPT"},
		{"gpt-4096", func(h, _ []byte) { put(h, 4096, "EFI PART") }, "GPT"},
		{"gpt-backup", func(_, tl []byte) { put(tl, len(tl)-512, "EFI PART") }, "backup GPT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head, tail := make([]byte, span), make([]byte, span)
			tc.make(head, tail)
			got := signature(head, tail)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("signature = %q, want one mentioning %q", got, tc.want)
			}
		})
	}
	// A short target: no panic, nothing found out of range.
	if got := signature(make([]byte, 600), make([]byte, 600)); got != "" {
		t.Fatalf("short zero target: %q", got)
	}
}

// TestOwnPagesHaveNoSignature: what wbbench writes (outside -verify)
// must not look like a file system to the next wbbench run, at any page
// size.
func TestOwnPagesHaveNoSignature(t *testing.T) {
	for ps := 512; ps <= 1<<20; ps *= 2 {
		b := &Bench{opts: Options{PageSize: ps}, tmpl: pageTemplate(ps)}
		dev := make([]byte, 2<<20)
		for i := 0; i+ps <= len(dev); i += ps {
			b.fill(dev[i:i+ps], uint64(i/ps), 12345)
		}
		if sig := signature(dev[:1<<20], dev[1<<20:]); sig != "" {
			t.Fatalf("page size %d: wbbench's own pages carry %s", ps, sig)
		}
	}
}

func TestCheckTargetFile(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.img")
	if err := os.WriteFile(clean, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckTarget(clean, 4<<20); err != nil {
		t.Fatalf("clean file refused: %v", err)
	}
	ext4 := filepath.Join(dir, "ext4.img")
	img := make([]byte, 4<<20)
	binary.LittleEndian.PutUint16(img[1080:], 0xEF53)
	if err := os.WriteFile(ext4, img, 0o600); err != nil {
		t.Fatal(err)
	}
	err := CheckTarget(ext4, 4<<20)
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "0xEF53") || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("ext4 image: %v; want a refusal naming the magic and -force", err)
	}
}

// TestMountedAt reads a made-up mountinfo: a device is found mounted by
// its major:minor or by its source path, and so is a partition of it.
func TestMountedAt(t *testing.T) {
	root := t.TempDir()
	old := procRoot
	procRoot = root
	t.Cleanup(func() { procRoot = old })
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mi := `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 259:3 / /mnt/my\040data rw,relatime - xfs /dev/nvme0n1p2 rw
41 27 0:50 / /srv rw - btrfs /dev/sdc rw
`
	if err := os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(mi), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := []blockDev{{majmin: "259:0", name: "nvme0n1"}, {majmin: "259:3", name: "nvme0n1p2"}}
	if where, dev := mountedAt(disk, "/dev/nvme0n1"); where != "/mnt/my data" || dev != "/dev/nvme0n1p2" {
		t.Fatalf("partition mounted: got %q %q", where, dev)
	}
	sdc := []blockDev{{majmin: "8:32", name: "sdc"}}
	if where, _ := mountedAt(sdc, "/dev/sdc"); where != "/srv" {
		t.Fatalf("btrfs by source: got %q", where)
	}
	free := []blockDev{{majmin: "7:9", name: "loop9"}}
	if where, _ := mountedAt(free, "/dev/loop9"); where != "" {
		t.Fatalf("unmounted device reported mounted on %q", where)
	}
}

// TestCheckTargetLoop needs root: a loop device held O_EXCL is refused,
// so is its backing file, and a free one passes.
func TestCheckTargetLoop(t *testing.T) {
	d := loopdevtest.ForTest(t, 8<<20, 0)
	if err := CheckTarget(d.Path, 8<<20); err != nil {
		t.Fatalf("fresh loop device refused: %v", err)
	}
	fd, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckTarget(d.Path, 8<<20)
	unix.Close(fd)
	if !strings.Contains(errString(err), "held open exclusively") {
		t.Fatalf("loop device held O_EXCL: %v; want a refusal", err)
	}
	if err := CheckTarget(d.File, 8<<20); !strings.Contains(errString(err), "backing file of loop device "+d.Path) {
		t.Fatalf("backing file: %v; want a refusal naming %s", err, d.Path)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// nodevNode makes a block device node for major:minor on a tmpfs
// mounted nodev in a temp dir (root only): the node can be stat'ed but
// not opened, as a disk a container may not open. Both go when the test
// ends.
func nodevNode(t *testing.T, major, minor uint32) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a tmpfs and making a device node need root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NODEV, "size=64k"); err != nil {
		t.Skipf("skipping: mount tmpfs nodev: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	node := filepath.Join(dir, "disk")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatal(err)
	}
	if fd, err := unix.Open(node, unix.O_RDONLY, 0); err == nil {
		unix.Close(fd)
		t.Fatalf("%s on a nodev mount opened", node)
	}
	return node
}

// TestChecksBeforeOpen: the mount, swap and holder checks need no open
// of the device and run before anything opens it, so a device that
// cannot be opened is refused for what it is (mounted, claimed), not
// with the open's error. /proc and /sys are made up here.
func TestChecksBeforeOpen(t *testing.T) {
	node := nodevNode(t, 7, 250)
	root := t.TempDir()
	oldProc, oldSys := procRoot, sysRoot
	procRoot, sysRoot = filepath.Join(root, "proc"), filepath.Join(root, "sys")
	t.Cleanup(func() { procRoot, sysRoot = oldProc, oldSys })
	dev := filepath.Join(sysRoot, "devices", "virtual", "block", "loop250")
	for _, d := range []string{filepath.Join(procRoot, "self"), filepath.Join(sysRoot, "dev", "block"), filepath.Join(dev, "holders")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dev, "size"), []byte("131072\n"), 0o644)
	if err := os.Symlink(dev, filepath.Join(sysRoot, "dev", "block", "7:250")); err != nil {
		t.Fatal(err)
	}
	mi := "27 1 254:0 / / rw - ext4 /dev/vda rw\n40 27 7:250 / /mnt/data rw,relatime - ext4 /dev/loop250 rw\n"
	os.WriteFile(filepath.Join(procRoot, "self", "mountinfo"), []byte(mi), 0o644)
	_, err := PrepareTarget(TargetOptions{Device: node, PageSize: 4096})
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "/dev/loop250 is mounted on /mnt/data") {
		t.Fatalf("a mounted device that cannot be opened: %v; want it refused as mounted", err)
	}
	os.WriteFile(filepath.Join(procRoot, "self", "mountinfo"), []byte(mi[:strings.Index(mi, "\n")+1]), 0o644)
	os.WriteFile(filepath.Join(dev, "holders", "dm-3"), nil, 0o644)
	_, err = PrepareTarget(TargetOptions{Device: node, PageSize: 4096})
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "loop250 is in use by dm-3") {
		t.Fatalf("a claimed device that cannot be opened: %v; want it refused as in use by dm-3", err)
	}
}

// TestEmptyTarget: an empty file or block device is refused with what to
// do, before it is opened.
func TestEmptyTarget(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.dat")
	os.WriteFile(empty, nil, 0o644)
	_, err := PrepareTarget(TargetOptions{Device: empty, PageSize: 4096})
	if !IsUsage(err) || !strings.Contains(err.Error(), "the file is empty (0 bytes); give it a size first (truncate -s 1G "+empty+"), or omit -device") {
		t.Fatalf("an empty file: %v", err)
	}
}
