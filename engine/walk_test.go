package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	loopdev "github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// walkEnv is one datadriven test's engine over a fake ring.
type walkEnv struct {
	t        *testing.T
	cache    *pages.Cache
	eng      *Engine
	fr       *fakeRing
	ps       int
	versions map[uint64]uint64
	mapper   mapper.Mapper
	errs     []error // OnError
	syncDone chan error
}

func (w *walkEnv) close() {
	if w.eng != nil {
		w.fr.setHold(false)
		w.eng.Close()
		w.eng = nil
	}
}

// TestWalk runs the datadriven scripts in testdata/walk*: writeback
// passes over a fake ring, printing the writes each submits.
func TestWalk(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		w := &walkEnv{t: t}
		defer w.close()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return w.run(t, d)
		})
	})
}

func parseRanges(t *testing.T, args []datadriven.CmdArg) []uint64 {
	var out []uint64
	for _, a := range args {
		if len(a.Vals) > 0 {
			continue
		}
		lo, hi, ok := strings.Cut(a.Key, "-")
		l, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			t.Fatalf("bad page range %q", a.Key)
		}
		h := l
		if ok {
			if h, err = strconv.ParseUint(hi, 10, 64); err != nil {
				t.Fatalf("bad page range %q", a.Key)
			}
		}
		for i := l; i <= h; i++ {
			out = append(out, i)
		}
	}
	return out
}

// walkCmds holds one function per datadriven command. Arguments are
// read with ScanArgs (required) or MaybeScanArgs (optional, the default
// left in place); bare page ranges ("0-7 10") go through parseRanges.
var walkCmds map[string]func(w *walkEnv, t *testing.T, d *datadriven.TestData) string

func init() {
	walkCmds = map[string]func(*walkEnv, *testing.T, *datadriven.TestData) string{
		"init":       (*walkEnv).cmdInit,
		"dirty":      (*walkEnv).cmdDirty,
		"direct":     (*walkEnv).cmdDirty,
		"writepages": (*walkEnv).cmdWritePages,
		"sync":       (*walkEnv).cmdSync,
		"sync-async": (*walkEnv).cmdSyncAsync,
		"wait":       (*walkEnv).cmdWait,
		"hold":       func(w *walkEnv, _ *testing.T, _ *datadriven.TestData) string { w.fr.setHold(true); return "" },
		"release":    func(w *walkEnv, _ *testing.T, _ *datadriven.TestData) string { w.fr.setHold(false); return "" },
		"complete":   (*walkEnv).cmdComplete,
		"fail":       (*walkEnv).cmdFail,
		"heal":       (*walkEnv).cmdHeal,
		"flushfail":  (*walkEnv).cmdFlushFail,
		"short":      (*walkEnv).cmdShort,
		"invalidate": (*walkEnv).cmdInvalidate,
		"state":      func(w *walkEnv, _ *testing.T, _ *datadriven.TestData) string { return w.state() },
		"errors":     (*walkEnv).cmdErrors,
		"check":      (*walkEnv).cmdCheck,
	}
}

func (w *walkEnv) run(t *testing.T, d *datadriven.TestData) string {
	cmd, ok := walkCmds[d.Cmd]
	if !ok {
		d.Fatalf(t, "unknown command %s", d.Cmd)
	}
	return cmd(w, t, d)
}

// cmdInit opens a cache and an engine over a fake ring: pages, capacity,
// bufpages, mapper (nil, linear, extents listed in the input, alloc),
// qd, maxio (in pages), retries, fillgaps (Config.FillGaps); flags fixed
// (registered buffers) and direct (no in-flight checksum check).
func (w *walkEnv) cmdInit(t *testing.T, d *datadriven.TestData) string {
	w.close()
	w.ps = 4096
	w.versions = map[uint64]uint64{}
	npages, bufpages := 64, 0
	d.MaybeScanArgs(t, "pages", &npages)
	capacity := npages
	d.MaybeScanArgs(t, "capacity", &capacity)
	d.MaybeScanArgs(t, "bufpages", &bufpages)
	c, err := pages.New(pages.Config{
		PageSize:   w.ps,
		Capacity:   capacity,
		BufferSize: bufpages * w.ps,
		HeapArena:  true,
	})
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	w.cache = c
	w.mapper = w.parseMapper(t, d, uint64(npages))
	qd, maxio, retries, fill := 4, 8, 3, 0
	d.MaybeScanArgs(t, "fillgaps", &fill)
	d.MaybeScanArgs(t, "qd", &qd)
	d.MaybeScanArgs(t, "maxio", &maxio)
	d.MaybeScanArgs(t, "retries", &retries)
	path := loopdev.TempFile(t, int64(npages*w.ps))
	cfg := Config{
		Path:       path,
		QueueDepth: qd,
		MaxIOBytes: maxio * w.ps,
		MaxRetries: retries,
		FillGaps:   fill,
		Mapper:     w.mapper,
		OnError:    func(err error) { w.errs = append(w.errs, err) },
		OpenRing: func(tg *ring.Target, rc ring.Config) (ring.Ring, error) {
			w.fr = newFakeRing(tg.Size, w.ps, rc)
			w.fr.fixedOK = d.HasArg("fixed")
			return w.fr, nil
		},
		FlushAlways: true,
	}
	e, err := Open(c, cfg)
	if err != nil {
		return "open: " + err.Error()
	}
	w.eng = e
	w.eng.noStableCheck = d.HasArg("direct")
	return ""
}

// parseMapper builds init's mapper; for "extents" the input has one
// extent a line: index block len [boundary].
func (w *walkEnv) parseMapper(t *testing.T, d *datadriven.TestData, npages uint64) mapper.Mapper {
	m := "linear"
	d.MaybeScanArgs(t, "mapper", &m)
	switch m {
	case "nil":
		return nil
	case "linear":
		return mapper.Linear(0, npages)
	case "alloc":
		return mapper.NewAllocMap(0, npages)
	case "extents":
		var exts []mapper.Extent
		for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
			if line == "" {
				continue
			}
			var e mapper.Extent
			f := strings.Fields(line)
			e.Index, _ = strconv.ParseUint(f[0], 10, 64)
			e.Block, _ = strconv.ParseUint(f[1], 10, 64)
			e.Len, _ = strconv.ParseUint(f[2], 10, 64)
			e.Boundary = len(f) > 3 && f[3] == "boundary"
			exts = append(exts, e)
		}
		em, err := mapper.NewExtentMap(exts)
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		return em
	}
	d.Fatalf(t, "unknown mapper %s", m)
	return nil
}

// cmdDirty writes new versions of the pages listed. dirty: WriteAt of
// whole pages (waits for writeback: stable pages). direct: write Data and
// SetDirty without waiting, as an mmap writer would (the test's init says
// "direct" to turn off the in-flight checksum check).
func (w *walkEnv) cmdDirty(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	for _, idx := range parseRanges(t, d.CmdArgs) {
		w.versions[idx]++
		buf := w.content(idx, w.versions[idx])
		if d.Cmd == "dirty" {
			if _, err := w.cache.WriteAt(buf, int64(idx)*int64(w.ps)); err != nil {
				fmt.Fprintf(&out, "page %d: %v\n", idx, err)
			}
			continue
		}
		p := w.cache.Lookup(idx)
		if p == nil {
			d.Fatalf(t, "direct: page %d not cached", idx)
		}
		copy(p.Data(), buf)
		w.cache.SetDirty(p)
		w.cache.Put(p)
	}
	return out.String()
}

// cmdWritePages runs one pass: nr, start, end, mode (none, all), cyclic.
func (w *walkEnv) cmdWritePages(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	wbc := &WritebackControl{RangeCyclic: d.HasArg("cyclic")}
	d.MaybeScanArgs(t, "nr", &wbc.NrToWrite)
	d.MaybeScanArgs(t, "start", &wbc.RangeStart)
	d.MaybeScanArgs(t, "end", &wbc.RangeEnd)
	mode := "none"
	d.MaybeScanArgs(t, "mode", &mode)
	if mode == "all" {
		wbc.SyncMode = SyncAll
	}
	err := w.eng.WritePages(context.Background(), wbc)
	w.printLog(&out)
	fmt.Fprintf(&out, "written=%d skipped=%d", wbc.PagesWritten, wbc.PagesSkipped)
	if wbc.RangeCyclic {
		fmt.Fprintf(&out, " next=%d", w.eng.cyclicIndex)
	}
	out.WriteString("\n")
	if err != nil {
		fmt.Fprintf(&out, "error: %v\n", err)
	}
	return out.String()
}

// scanRange reads the optional start and end arguments.
func scanRange(t *testing.T, d *datadriven.TestData) (start, end uint64) {
	d.MaybeScanArgs(t, "start", &start)
	d.MaybeScanArgs(t, "end", &end)
	return start, end
}

func (w *walkEnv) cmdSync(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	start, end := scanRange(t, d)
	err := w.eng.SyncRange(context.Background(), start, end)
	w.printLog(&out)
	if err != nil {
		fmt.Fprintf(&out, "error: %s\n", strings.ReplaceAll(err.Error(), w.eng.cfg.Path, "TARGET"))
	} else {
		out.WriteString("ok\n")
	}
	return out.String()
}

// cmdSyncAsync starts a Sync in the background and returns once it waits
// for a write (or has finished): "complete" then releases it.
func (w *walkEnv) cmdSyncAsync(t *testing.T, d *datadriven.TestData) string {
	w.syncDone = make(chan error, 1)
	go func() { w.syncDone <- w.eng.Sync(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for w.eng.nWaiters.Load() == 0 && len(w.syncDone) == 0 {
		if time.Now().After(deadline) {
			d.Fatalf(t, "sync never waited")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if len(w.syncDone) == 0 {
		return "sync waiting\n"
	}
	return "sync finished without waiting\n"
}

// cmdWait waits for the Sync sync-async started.
func (w *walkEnv) cmdWait(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	err := <-w.syncDone
	w.printLog(&out)
	if err != nil {
		fmt.Fprintf(&out, "error: %v\n", err)
	} else {
		out.WriteString("ok\n")
	}
	return out.String()
}

func (w *walkEnv) cmdComplete(t *testing.T, d *datadriven.TestData) string {
	return fmt.Sprintf("completed %d\n", w.fr.completeAll())
}

// cmdFail makes writes of a block fail: block, count (-1: always), errno
// (EIO, ENOSPC).
func (w *walkEnv) cmdFail(t *testing.T, d *datadriven.TestData) string {
	var b uint64
	count, name := 1, "EIO"
	d.MaybeScanArgs(t, "block", &b)
	d.MaybeScanArgs(t, "count", &count)
	d.MaybeScanArgs(t, "errno", &name)
	errno := syscall.EIO
	if name == "ENOSPC" {
		errno = syscall.ENOSPC
	}
	w.fr.mu.Lock()
	w.fr.failBlocks[b] = fault{errno: errno, count: count}
	w.fr.mu.Unlock()
	return ""
}

func (w *walkEnv) cmdHeal(t *testing.T, d *datadriven.TestData) string {
	w.fr.mu.Lock()
	clear(w.fr.failBlocks)
	w.fr.mu.Unlock()
	return ""
}

// cmdFlushFail makes the next count flushes fail with EIO.
func (w *walkEnv) cmdFlushFail(t *testing.T, d *datadriven.TestData) string {
	count := 1
	d.MaybeScanArgs(t, "count", &count)
	w.fr.mu.Lock()
	w.fr.flushErr = syscall.EIO
	w.fr.flushFails = count
	w.fr.mu.Unlock()
	return ""
}

// cmdShort makes the next write transfer only its first pages pages.
func (w *walkEnv) cmdShort(t *testing.T, d *datadriven.TestData) string {
	n := 1
	d.MaybeScanArgs(t, "pages", &n)
	w.fr.mu.Lock()
	w.fr.shortNext = n * w.ps
	w.fr.mu.Unlock()
	return ""
}

func (w *walkEnv) cmdInvalidate(t *testing.T, d *datadriven.TestData) string {
	start, end := scanRange(t, d)
	if err := w.eng.Invalidate(context.Background(), start, end); err != nil {
		return "error: " + err.Error() + "\n"
	}
	for idx := range w.versions {
		if idx >= start && (end == 0 || idx < end) {
			delete(w.versions, idx)
		}
	}
	return ""
}

// cmdErrors prints what OnError was given since the last errors.
func (w *walkEnv) cmdErrors(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	for _, err := range w.errs {
		fmt.Fprintf(&out, "%s\n", strings.ReplaceAll(err.Error(), w.eng.cfg.Path, "TARGET"))
	}
	w.errs = nil
	return out.String()
}

// cmdCheck: every cached page that is clean and not in flight must match
// the device image, and hold the latest version written.
func (w *walkEnv) cmdCheck(t *testing.T, d *datadriven.TestData) string {
	w.settle()
	var bad []string
	w.cache.Range(0, 0, func(p *pages.Page) bool {
		defer w.cache.Put(p)
		f := p.Flags()
		if f.IsDirty() || f.IsWriteback() {
			return true
		}
		idx := p.Index()
		block := idx
		if w.mapper != nil {
			ext, err := w.mapper.Map(idx)
			if err != nil {
				bad = append(bad, fmt.Sprintf("page %d: clean but unmapped: %v", idx, err))
				return true
			}
			block = ext.BlockOf(idx)
		}
		img := w.fr.img[block*uint64(w.ps) : (block+1)*uint64(w.ps)]
		if !bytes.Equal(img, p.Data()) {
			bad = append(bad, fmt.Sprintf("page %d: device block %d differs from the cache", idx, block))
		}
		if !bytes.Equal(p.Data(), w.content(idx, w.versions[idx])) {
			bad = append(bad, fmt.Sprintf("page %d: cache holds an old version", idx))
		}
		return true
	})
	slices.Sort(bad)
	if len(bad) == 0 {
		return "ok\n"
	}
	return strings.Join(bad, "\n") + "\n"
}

func (w *walkEnv) content(idx, v uint64) []byte {
	buf := bytes.Repeat([]byte{byte(v)}, w.ps)
	binary.LittleEndian.PutUint64(buf, idx)
	binary.LittleEndian.PutUint64(buf[8:], v)
	return buf
}

func (w *walkEnv) printLog(out *strings.Builder) {
	for _, l := range w.fr.takeLog() {
		out.WriteString(l)
		out.WriteString("\n")
	}
}

// settle waits, unless the fake ring holds completions, until no write
// is in flight, so the state printed does not depend on timing.
func (w *walkEnv) settle() {
	w.fr.mu.Lock()
	hold := w.fr.hold
	w.fr.mu.Unlock()
	if hold {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.eng.stats.inFlight.Load() != 0 {
		if time.Now().After(deadline) {
			w.t.Fatalf("writes still in flight after 10s")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (w *walkEnv) state() string {
	w.settle()
	var dirty, wb, inerr []uint64
	w.cache.Range(0, 0, func(p *pages.Page) bool {
		f := p.Flags()
		if f.IsDirty() {
			dirty = append(dirty, p.Index())
		}
		if f.IsWriteback() {
			wb = append(wb, p.Index())
		}
		if f.IsError() {
			inerr = append(inerr, p.Index())
		}
		w.cache.Put(p)
		return true
	})
	s := w.eng.Stats()
	return fmt.Sprintf("dirty: %s\nwriteback: %s\nerror: %s\nwritten=%d writes=%d errors=%d retries=%d flushes=%d flusherrors=%d\n",
		ranges(dirty), ranges(wb), ranges(inerr), s.PagesWritten, s.Writes, s.WriteErrors, s.Retries, s.Flushes, s.FlushErrors)
}

// ranges prints sorted indexes as "0-3 7 9-10".
func ranges(s []uint64) string {
	if len(s) == 0 {
		return "none"
	}
	slices.Sort(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if i == j {
			fmt.Fprint(&b, s[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		}
		i = j + 1
	}
	return b.String()
}
