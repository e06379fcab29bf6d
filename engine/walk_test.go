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

func argInt(d *datadriven.TestData, key string, def int64) int64 {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			n, err := strconv.ParseInt(a.Vals[0], 10, 64)
			if err != nil {
				d.Fatalf(nil, "%s=%s: %v", key, a.Vals[0], err)
			}
			return n
		}
	}
	return def
}

func argStr(d *datadriven.TestData, key, def string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			return a.Vals[0]
		}
	}
	return def
}

func (w *walkEnv) run(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	switch d.Cmd {
	case "init":
		w.close()
		w.ps = 4096
		npages := int(argInt(d, "pages", 64))
		w.versions = map[uint64]uint64{}
		c, err := pages.New(pages.Config{
			PageSize:   w.ps,
			Capacity:   int(argInt(d, "capacity", int64(npages))),
			BufferSize: int(argInt(d, "bufpages", 0)) * w.ps,
			HeapArena:  true,
		})
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		w.cache = c
		switch m := argStr(d, "mapper", "linear"); m {
		case "nil":
			w.mapper = nil
		case "linear":
			w.mapper = mapper.Linear(0, uint64(npages))
		case "extents", "alloc":
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
			if m == "alloc" {
				w.mapper = mapper.NewAllocMap(0, uint64(npages))
			} else {
				em, err := mapper.NewExtentMap(exts)
				if err != nil {
					d.Fatalf(t, "%v", err)
				}
				w.mapper = em
			}
		default:
			d.Fatalf(t, "unknown mapper %s", m)
		}
		path := loopdev.TempFile(t, int64(npages*w.ps))
		cfg := Config{
			Path:       path,
			QueueDepth: int(argInt(d, "qd", 4)),
			MaxIOBytes: int(argInt(d, "maxio", 8)) * w.ps,
			MaxRetries: int(argInt(d, "retries", 3)),
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

	case "dirty", "direct":
		// dirty: WriteAt of whole pages (waits for writeback: stable
		// pages). direct: write Data and SetDirty without waiting, as an
		// mmap writer would (the test's init says "direct" to turn off
		// the in-flight checksum check).
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

	case "writepages":
		wbc := &WritebackControl{
			NrToWrite:   argInt(d, "nr", 0),
			RangeStart:  uint64(argInt(d, "start", 0)),
			RangeEnd:    uint64(argInt(d, "end", 0)),
			RangeCyclic: d.HasArg("cyclic"),
		}
		if argStr(d, "mode", "none") == "all" {
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

	case "sync":
		err := w.eng.SyncRange(context.Background(), uint64(argInt(d, "start", 0)), uint64(argInt(d, "end", 0)))
		w.printLog(&out)
		if err != nil {
			fmt.Fprintf(&out, "error: %s\n", strings.ReplaceAll(err.Error(), w.eng.cfg.Path, "TARGET"))
		} else {
			out.WriteString("ok\n")
		}
		return out.String()

	case "sync-async":
		// Start a Sync in the background and return once it waits for a
		// write (or has finished): "complete" then releases it.
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
	case "wait":
		err := <-w.syncDone
		w.printLog(&out)
		if err != nil {
			fmt.Fprintf(&out, "error: %v\n", err)
		} else {
			out.WriteString("ok\n")
		}
		return out.String()

	case "hold":
		w.fr.setHold(true)
		return ""
	case "release":
		w.fr.setHold(false)
		return ""
	case "complete":
		n := w.fr.completeAll()
		return fmt.Sprintf("completed %d\n", n)

	case "fail":
		b := uint64(argInt(d, "block", 0))
		count := int(argInt(d, "count", 1))
		errno := syscall.EIO
		if argStr(d, "errno", "EIO") == "ENOSPC" {
			errno = syscall.ENOSPC
		}
		w.fr.mu.Lock()
		w.fr.failBlocks[b] = fault{errno: errno, count: count}
		w.fr.mu.Unlock()
		return ""
	case "heal":
		w.fr.mu.Lock()
		clear(w.fr.failBlocks)
		w.fr.mu.Unlock()
		return ""
	case "flushfail":
		w.fr.mu.Lock()
		w.fr.flushErr = syscall.EIO
		w.fr.flushFails = int(argInt(d, "count", 1))
		w.fr.mu.Unlock()
		return ""
	case "short":
		w.fr.mu.Lock()
		w.fr.shortNext = int(argInt(d, "pages", 1)) * w.ps
		w.fr.mu.Unlock()
		return ""

	case "invalidate":
		if err := w.eng.Invalidate(context.Background(), uint64(argInt(d, "start", 0)), uint64(argInt(d, "end", 0))); err != nil {
			return "error: " + err.Error() + "\n"
		}
		for _, idx := range slices.Collect(mapsKeys(w.versions)) {
			if idx >= uint64(argInt(d, "start", 0)) && (argInt(d, "end", 0) == 0 || idx < uint64(argInt(d, "end", 0))) {
				delete(w.versions, idx)
			}
		}
		return ""

	case "state":
		return w.state()

	case "errors":
		for _, err := range w.errs {
			fmt.Fprintf(&out, "%s\n", strings.ReplaceAll(err.Error(), w.eng.cfg.Path, "TARGET"))
		}
		w.errs = nil
		return out.String()

	case "check":
		w.settle()
		// Every cached page that is clean and not in flight must match
		// the device image, and hold the latest version written.
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
	d.Fatalf(t, "unknown command %s", d.Cmd)
	return ""
}

func mapsKeys(m map[uint64]uint64) func(func(uint64) bool) {
	return func(yield func(uint64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
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
