package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/internal/uringtrace"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

func heapCache(t testing.TB, ps, n int) *pages.Cache {
	t.Helper()
	c, err := pages.New(pages.Config{PageSize: ps, Capacity: n, HeapArena: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeOpen returns a Config.OpenRing that builds a fake ring and hands
// it to *out.
func fakeOpen(out **fakeRing, ps int) func(*ring.Target, ring.Config) (ring.Ring, error) {
	return func(t *ring.Target, rc ring.Config) (ring.Ring, error) {
		*out = newFakeRing(t.Size, ps, rc)
		return *out, nil
	}
}

// TestOpenBadInput: each bad value is refused with an error that names
// it, and nothing is written to the target.
func TestOpenBadInput(t *testing.T) {
	const ps = 4096
	file := loopdev.TempFile(t, 64*ps)
	immutable := loopdev.TempFile(t, 64*ps)
	roOK := false
	if out, err := exec.Command("chattr", "+i", immutable).CombinedOutput(); err == nil {
		roOK = true
		t.Cleanup(func() { exec.Command("chattr", "-i", immutable).Run() })
	} else {
		t.Logf("skipping the read-only target case: chattr +i: %v %s", err, out)
	}
	cases := []struct {
		name  string
		cache *pages.Cache
		cfg   Config
		want  error
		names string // the error must mention this
	}{
		{"nil cache", nil, Config{Path: file}, ErrConfig, "nil cache"},
		{"no path", heapCache(t, ps, 8), Config{}, ErrConfig, "Path"},
		{"negative qd", heapCache(t, ps, 8), Config{Path: file, QueueDepth: -1}, ErrConfig, "QueueDepth -1"},
		{"huge qd", heapCache(t, ps, 8), Config{Path: file, QueueDepth: 100000}, ErrConfig, "QueueDepth 100000"},
		{"negative maxio", heapCache(t, ps, 8), Config{Path: file, MaxIOBytes: -4096}, ErrConfig, "MaxIOBytes -4096"},
		{"maxio below page", heapCache(t, ps, 8), Config{Path: file, MaxIOBytes: 100}, ErrConfig, "MaxIOBytes 100"},
		{"negative retries", heapCache(t, ps, 8), Config{Path: file, MaxRetries: -2}, ErrConfig, "MaxRetries -2"},
		{"negative close timeout", heapCache(t, ps, 8), Config{Path: file, CloseTimeout: -time.Second}, ErrConfig, "CloseTimeout -1s"},
		{"mapper past the end", heapCache(t, ps, 8), Config{Path: file, Mapper: mapper.Linear(10, 60)}, ErrConfig, "block 69"},
		{"missing", heapCache(t, ps, 8), Config{Path: file + ".nope"}, os.ErrNotExist, ".nope"},
		{"directory", heapCache(t, ps, 8), Config{Path: t.TempDir()}, ring.ErrTarget, "directory"},
		{"char device", heapCache(t, ps, 8), Config{Path: "/dev/null"}, ring.ErrTarget, "/dev/null"},
		{"unknown ring", heapCache(t, ps, 8), Config{Path: file, Ring: "quantum"}, ring.ErrBadConfig, "quantum"},
	}
	if roOK {
		cases = append(cases, struct {
			name  string
			cache *pages.Cache
			cfg   Config
			want  error
			names string
		}{"read-only target", heapCache(t, ps, 8), Config{Path: immutable}, os.ErrPermission, immutable})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Open(tc.cache, tc.cfg)
			if err == nil {
				e.Close()
				t.Fatalf("Open(%+v) succeeded", tc.cfg)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q does not match %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Errorf("error %q does not name %q", err, tc.names)
			}
			if tc.cache != nil && tc.cache.Ops() != nil {
				t.Error("a failed Open left its hooks in the cache")
			}
		})
	}
	data, _ := os.ReadFile(file)
	if !bytes.Equal(data, make([]byte, len(data))) {
		t.Fatal("a refused Open wrote to the target")
	}

	t.Run("page size not a multiple of the logical block size", func(t *testing.T) {
		d := loopdev.ForTest(t, 1<<20, 4096)
		c := heapCache(t, 2048, 8)
		_, err := Open(c, Config{Path: d.Path})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "2048") || !strings.Contains(err.Error(), "4096") {
			t.Fatalf("Open with 2 KiB pages on a 4 KiB-sector device = %v", err)
		}
	})
	t.Run("second engine on one cache", func(t *testing.T) {
		c := heapCache(t, ps, 8)
		var fr *fakeRing
		e, err := Open(c, Config{Path: file, OpenRing: fakeOpen(&fr, ps)})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if _, err := Open(c, Config{Path: file, OpenRing: fakeOpen(&fr, ps)}); !errors.Is(err, ErrConfig) {
			t.Fatalf("second Open on one cache = %v, want ErrConfig", err)
		}
	})
}

func TestDefaults(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 8)
	var fr *fakeRing
	e, err := Open(c, Config{Path: loopdev.TempFile(t, 64*ps), OpenRing: fakeOpen(&fr, ps)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cfg := e.Config()
	if cfg.QueueDepth != 32 || cfg.MaxIOBytes != 1<<20 || cfg.MaxRetries != 3 || cfg.CloseTimeout != 30*time.Second || cfg.Ring != "auto" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestDefaultQueueDepth: on a block device the default queue depth is
// its nr_requests, clamped to 32..128.
func TestDefaultQueueDepth(t *testing.T) {
	d := loopdev.ForTest(t, 1<<20, 0)
	b, err := os.ReadFile("/sys/block/" + d.Name() + "/queue/nr_requests")
	if err != nil {
		t.Skipf("no nr_requests for %s: %v", d.Path, err)
	}
	var nr int
	fmt.Sscan(string(b), &nr)
	c := heapCache(t, 4096, 8)
	e, err := Open(c, Config{Path: d.Path})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, want := e.Config().QueueDepth, min(max(nr, 32), 128); got != want {
		t.Fatalf("default QueueDepth on %s (nr_requests %d) = %d, want %d", d.Path, nr, got, want)
	}
}

func TestCloseIdempotent(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 8)
	var fr *fakeRing
	path := loopdev.TempFile(t, 64*ps)
	e, err := Open(c, Config{Path: path, OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt(bytes.Repeat([]byte{7}, 3*ps), 0)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fr.img[:3*ps], bytes.Repeat([]byte{7}, 3*ps)) {
		t.Fatal("Close did not write the dirty pages")
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"Sync":       e.Sync(ctx),
		"WritePages": e.WritePages(ctx, &WritebackControl{}),
		"Invalidate": e.Invalidate(ctx, 0, 0),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if c.Ops() != nil {
		t.Error("Close left the engine's hooks in the cache")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("closing the cache after the engine: %v", err)
	}
}

// TestCloseTimeout: a device that stops completing makes Close give up
// after CloseTimeout with an error.
func TestCloseTimeout(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 8)
	var fr *fakeRing
	e, err := Open(c, Config{Path: loopdev.TempFile(t, 64*ps), OpenRing: fakeOpen(&fr, ps), CloseTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fr.setHold(true)
	c.WriteAt(make([]byte, ps), 0)
	if err := e.WritePages(context.Background(), &WritebackControl{}); err != nil {
		t.Fatal(err)
	}
	err = e.Close()
	if err == nil || !strings.Contains(err.Error(), "100ms") {
		t.Fatalf("Close with a stuck device = %v, want a timeout error", err)
	}
	fr.setHold(false) // let the fake drain so its goroutine ends
	fr.Close()
}

// TestContextCancel: a pass cancelled while it waits submits what it
// queued and leaves the rest dirty; nothing is left half-done.
func TestContextCancel(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 64)
	var fr *fakeRing
	e, err := Open(c, Config{Path: loopdev.TempFile(t, 64*ps), QueueDepth: 2, OpenRing: fakeOpen(&fr, ps), FlushAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fr.setHold(true)
	for i := 0; i < 10; i++ {
		c.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, ps), int64(2*i*ps)) // 10 separate pages
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.WritePages(ctx, &WritebackControl{SyncMode: SyncAll}) }()
	// Both records are in flight; the pass waits for one to free.
	deadline := time.Now().Add(10 * time.Second)
	for e.stats.inFlight.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("pass never filled the queue")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled WritePages = %v", err)
	}
	if got := c.NrWriteback(); got != 2 {
		t.Fatalf("pages under writeback after cancel = %d, want the 2 submitted", got)
	}
	if got := c.NrDirty(); got != 8 {
		t.Fatalf("dirty pages after cancel = %d, want 8", got)
	}
	fr.setHold(false)
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.NrWriteback() != 0 || c.NrDirty() != 0 {
		t.Fatalf("after Sync: writeback %d dirty %d", c.NrWriteback(), c.NrDirty())
	}
	for i := 0; i < 10; i++ {
		if fr.img[2*i*ps] != byte(i+1) {
			t.Fatalf("page %d not on the device", 2*i)
		}
	}
}

// TestRegisterFallback: where registering the arena fails (ENOMEM under
// RLIMIT_MEMLOCK), the engine says so once and writes with plain
// WRITEV.
func TestRegisterFallback(t *testing.T) {
	const ps = 4096
	c := heapCache(t, ps, 16)
	var logs bytes.Buffer
	var fr *fakeRing
	e, err := Open(c, Config{
		Path:   loopdev.TempFile(t, 16*ps),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
			fr = newFakeRing(tg.Size, ps, rc)
			fr.regErr = fmt.Errorf("%w: io_uring_register: cannot allocate memory (RLIMIT_MEMLOCK)", ring.ErrNotSupported)
			return fr, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c.WriteAt(make([]byte, 4*ps), 0)
	e.Sync(context.Background())
	e.Sync(context.Background())
	fr.mu.Lock()
	for _, s := range fr.subs {
		if s.fixed {
			t.Error("a write used registered buffers after registration failed")
		}
	}
	fr.mu.Unlock()
	if n := strings.Count(logs.String(), "registered buffers unavailable"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "RLIMIT_MEMLOCK") {
		t.Fatalf("the log does not say why:\n%s", logs.String())
	}
}

// TestInFlightCappedAtNrRequests: a QueueDepth above the block device's
// nr_requests keeps the ring's in-kernel writes at nr_requests (beyond
// it io_uring would hand writes to its worker threads to wait for the
// block layer) and says so once; at or below it, QueueDepth is the cap.
// The writes still all land.
func TestInFlightCappedAtNrRequests(t *testing.T) {
	const ps = 4096
	d := loopdev.ForTest(t, 256*ps, 0)
	tg, err := ring.OpenTarget(d.Path, ring.TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	nr := tg.NrRequests
	tg.Close()
	if nr <= 0 {
		t.Skipf("skipping: %s reports no nr_requests", d.Path)
	}
	for _, qd := range []int{nr / 2, nr, 2 * nr} {
		t.Run(fmt.Sprintf("qd=%d", qd), func(t *testing.T) {
			c := heapCache(t, ps, 256)
			var logs bytes.Buffer
			var got ring.Config
			e, err := Open(c, Config{
				Path:       d.Path,
				QueueDepth: qd,
				Mapper:     mapper.Linear(0, 256),
				Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
				OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
					got = rc
					return ring.Open(tg, "auto", rc)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			want := min(qd, nr)
			if got.InFlight != want || e.RingCaps().InFlight != want {
				t.Errorf("QueueDepth %d, nr_requests %d: ring InFlight %d (caps %d), want %d", qd, nr, got.InFlight, e.RingCaps().InFlight, want)
			}
			notice := strings.Contains(logs.String(), fmt.Sprintf("above the device's nr_requests %d", nr))
			if notice != (qd > nr) {
				t.Errorf("QueueDepth %d, nr_requests %d: notice logged %v; logs: %q", qd, nr, notice, logs.String())
			}
			// Every other page dirty: isolated writes, more than nr of them.
			for i := 0; i < 256; i += 2 {
				if _, err := c.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, ps), int64(i)*ps); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			img, err := os.ReadFile(d.Path)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 256; i += 2 {
				if pg := img[i*ps : (i+1)*ps]; !bytes.Equal(pg, bytes.Repeat([]byte{byte(i + 1)}, ps)) {
					t.Fatalf("page %d on the device holds %d…, want %d", i, pg[0], byte(i+1))
				}
			}
		})
	}
}

// TestWritesFitMaxSegments: the default MaxIOBytes keeps every write
// within the device's max_segments however the cache's pages lie in
// memory, so io_uring issues each write inline and hands none to its
// worker threads (counted from the kernel's io_uring_queue_async_work
// tracepoint). The pages are taken from the cache in a shuffled order,
// so neighbours on the device are not neighbours in memory, as in a
// buffer pool after its pages have been recycled. The control, 1 MiB
// writes of 256 such pages, must punt (else this kernel splits
// without punting and the test cannot tell) and log the notice.
func TestWritesFitMaxSegments(t *testing.T) {
	const ps, n = 4096, 4096
	d := loopdev.ForTest(t, n*ps, 0)
	tg, err := ring.OpenTarget(d.Path, ring.TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	segs, sectorsKB := tg.MaxSegments, tg.MaxSectorsKB
	tg.Close()
	if segs <= 0 || segs >= 256 || sectorsKB < 1024 || os.Getpagesize() != ps {
		t.Skipf("skipping: %s has max_segments %d, max_sectors_kb %d, memory pages of %d bytes; the test wants fewer than 256 segments, 1 MiB requests and 4 KiB pages", d.Path, segs, sectorsKB, os.Getpagesize())
	}
	run := func(t *testing.T, maxIO int) (uringtrace.Punts, Config, string) {
		c, err := pages.New(pages.Config{PageSize: ps, Capacity: n})
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		e, err := Open(c, Config{Path: d.Path, Mapper: mapper.Linear(0, n), MaxIOBytes: maxIO, Ring: "native",
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if errors.Is(err, ring.ErrRefused) || errors.Is(err, ring.ErrNotSupported) {
			t.Skipf("skipping: no native ring here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		order := rand.New(rand.NewPCG(1, 2)).Perm(n)
		for _, i := range order {
			p, err := c.Grab(uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			binary.LittleEndian.PutUint64(p.Data(), uint64(i)+1)
			c.SetDirty(p)
			p.Unlock()
			c.Put(p)
		}
		tr, err := uringtrace.Start()
		if err != nil {
			t.Skipf("skipping: cannot count io_uring's punts: %v", err)
		}
		serr := e.Sync(context.Background())
		punts, lost, terr := tr.Stop()
		if serr != nil {
			t.Fatal(serr)
		}
		if terr != nil || lost {
			t.Fatalf("reading the trace: %v (lost events: %v)", terr, lost)
		}
		cfg := e.Config()
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		img, err := os.ReadFile(d.Path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if got := binary.LittleEndian.Uint64(img[i*ps:]); got != uint64(i)+1 {
				t.Fatalf("page %d on the device holds %d, want %d", i, got, i+1)
			}
		}
		return punts, cfg, logs.String()
	}
	punts, cfg, logs := run(t, 0)
	if want := min(1<<20, segs*ps); cfg.MaxIOBytes != want {
		t.Errorf("default MaxIOBytes %d with max_segments %d, want %d", cfg.MaxIOBytes, segs, want)
	}
	if punts.Writes() != 0 || strings.Contains(logs, "max_segments") {
		t.Errorf("default MaxIOBytes %d: %d writes handed to io-wq workers (%v), notice logged %v; want none", cfg.MaxIOBytes, punts.Writes(), punts, strings.Contains(logs, "max_segments"))
	}
	punts, cfg, logs = run(t, 1<<20)
	if !strings.Contains(logs, fmt.Sprintf("max_segments %d", segs)) {
		t.Errorf("MaxIOBytes %d above max_segments %d × %d: no notice; logs: %q", cfg.MaxIOBytes, segs, ps, logs)
	}
	if punts.Writes() == 0 {
		t.Skipf("skipping the control's check: 1 MiB writes of scattered pages were not punted (this kernel splits them inline), so punt counts cannot show the default's effect here")
	}
	t.Logf("control, 1 MiB writes: %d of %d writes handed to io-wq workers", punts.Writes(), n*ps/(1<<20))
}

// TestSegmentBytes: the write size max_segments allows when each memory
// page of a cache page may be a segment of its own.
func TestSegmentBytes(t *testing.T) {
	mp := os.Getpagesize()
	for _, c := range []struct{ segs, ps, want int }{
		{0, 4096, 0},                // unknown: no bound
		{128, mp, 128 * mp},         // one segment per page
		{128, mp / 8, 128 * mp / 8}, // small pages: still one each at worst
		{128, 4 * mp, 32 * 4 * mp},  // four memory pages per cache page
		{127, 4 * mp, 31 * 4 * mp},  // rounded down to whole cache pages
		{128, 256 * mp, 256 * mp},   // a page beyond max_segments: one page
		{1, mp, mp},                 // the least: one page
		{168, mp, 168 * mp},         // AHCI's 168
	} {
		if got := segmentBytes(&ring.Target{MaxSegments: c.segs}, c.ps); got != c.want {
			t.Errorf("max_segments %d, page %d: %d bytes, want %d", c.segs, c.ps, got, c.want)
		}
	}
}
