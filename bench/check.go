package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/verify"
	"github.com/wbengine/wbengine/pages"
	"github.com/wbengine/wbengine/ring"
)

// CheckOptions say what Check reads and what it holds the pages to:
// either a journal (Journal), or a seq, runs or single layout given by
// Pattern, Seed, Size and PageSize, not both.
type CheckOptions struct {
	Device string
	// Journal is the journal of a wbbench -verify -journal run: it names
	// the pattern, seed, nonce, pages and page size, and what was synced.
	Journal string

	// Without a journal: every page of the layout of Pattern (seq, runs
	// or single) from Seed over Size bytes (0: the whole device) in
	// pages of PageSize bytes (0: 4096) must hold version 1 of the run
	// with nonce Nonce if HasNonce, else the nonce of the first valid
	// page of the layout.
	Pattern  Pattern
	Seed     uint64
	Size     int64
	PageSize int
	Nonce    uint32
	HasNonce bool

	// Wait is how long to retry while a block device is busy (a killed
	// writer's in-flight I/O draining).
	Wait time.Duration
}

// CheckReport is what Check found.
type CheckReport struct {
	SchemaVersion int    `json:"schema_version"`
	Device        string `json:"device"`
	// Journal is the journal's header; nil when checking a pattern
	// without one (Run says what was checked either way).
	Journal *verify.JournalHeader `json:"journal,omitempty"`
	Run     CheckRun              `json:"run"`
	Synced  bool                  `json:"synced"`      // the journal has a "synced" line
	Last    uint64                `json:"last_synced"` // the highest synced version (0 without a journal)
	Pages   uint64                `json:"pages_checked"`
	// Required is the pages that had to hold a valid page (need > 0 in
	// the verify format's terms); the others may also be all zero.
	Required uint64 `json:"required"`
	Valid    uint64 `json:"valid"` // pages holding a valid page of the run
	Zero     uint64 `json:"zero"`  // pages all zero where that is allowed
	Bad      uint64 `json:"bad"`   // pages that fail
	// BadThisRun are the bad pages that hold this run's page, damaged,
	// misplaced or too old, or nothing (all zero where the run had to
	// have written); BadOther those that hold another run's page or
	// another program's data where this run had to have written.
	BadThisRun uint64 `json:"bad_this_run"`
	BadOther   uint64 `json:"bad_other"`
	// BadByReason counts the bad pages by CheckFailure.Reason.
	BadByReason map[string]uint64 `json:"bad_by_reason"`
	// Foreign are pages where this run had to write nothing (need 0, or
	// no "synced" line yet) that hold another run's page or another
	// program's data: not a failure of this run (a -verify run zeroes
	// its range first, so something wrote there after it started, or
	// the run was made by a wbbench that did not zero). ForeignByReason
	// counts them by reason, ForeignPages lists them all.
	Foreign         uint64            `json:"foreign"`
	ForeignByReason map[string]uint64 `json:"foreign_by_reason"`
	ForeignPages    []CheckFailure    `json:"foreign_pages"`
	// Problems has one line per failure, all of them, and Failures the
	// same as records, in page order.
	Problems []string       `json:"problems"`
	Failures []CheckFailure `json:"failures"`
	Seconds  float64        `json:"seconds"`
}

// CheckRun is the run a check holds the device to.
type CheckRun struct {
	Source      string `json:"source"`                 // "journal" or "pattern"
	JournalFile string `json:"journal_file,omitempty"` // with source "journal"
	Pattern     string `json:"pattern"`
	Seed        uint64 `json:"seed"`
	Nonce       uint32 `json:"nonce"`
	// NonceFrom says where the nonce came from: "journal", "-nonce",
	// "page N" (the first valid page of the pattern), or "" when no page
	// of the pattern was valid (then Nonce means nothing).
	NonceFrom string `json:"nonce_from"`
	Pages     uint64 `json:"pages"` // pages on the target the run used
	PageSize  int    `json:"page_size"`
}

// CheckFailure is one page that failed: what it had to hold and what it
// holds.
type CheckFailure struct {
	Page     uint64 `json:"page"`
	Expected string `json:"expected"`
	Found    string `json:"found"`
	// Need is the least version the page had to hold (0: none; it could
	// also be all zero). Version is the version its header names, 0 when
	// it has no header of the format.
	Need    uint64 `json:"need"`
	Version uint64 `json:"version"`
	// Reason is one of zero, magic, index, nonce, version0, checksum,
	// payload (the page is not valid), old (valid, older than Need) or
	// version (valid, not the one version the pattern writes).
	Reason string `json:"reason"`
	// Class says whose the page's content is: "this_run" (this run's
	// page — damaged, misplaced, too old — or all zero where the run had
	// to have written) or "other" (another run's page, by its nonce, or
	// data not in the verify format: another program's, or wbbench's
	// from a run without -verify).
	Class string `json:"class"`
	// Required: the run had to have written this page (need > 0, or a
	// layout page once synced).
	Required bool `json:"required"`
}

// Classes of CheckFailure.
const (
	ClassThisRun = "this_run"
	ClassOther   = "other"
)

func (f CheckFailure) String() string {
	return fmt.Sprintf("page %d: expected %s, found %s", f.Page, f.Expected, f.Found)
}

// OK reports whether every checked page passed.
func (r *CheckReport) OK() bool { return r.Bad == 0 }

// Check reads a device (or file) that a wbbench -verify run wrote and
// checks it (docs/design.md, "The verify format"). A block device is first opened
// O_EXCL, retrying on EBUSY for up to o.Wait (the killed writer's
// in-flight I/O drains first), and held so while it is read.
//
// With a journal — hot: for each page p, need(p) is the newest version
// ≤ the journal's last synced version V that goes to p; the page must be
// a valid page of the run (magic, index p, nonce, CRC, payload) with a
// version ≥ need(p); where need(p) is 0 it may also be all zero. Other
// patterns: once the journal says "synced 1", every page of the pattern
// must hold version 1; before that, each may be zero or version 1.
//
// Without a journal (o.Pattern: seq, runs or single): every page of the
// layout must hold version 1, with o.Nonce or else the nonce of the
// first valid page of the layout; pages outside it are not read.
//
// Bad options, a journal that cannot be read or a device that is not
// there come back as *UsageError; a page that fails is not an error but
// a failure in the report.
func Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	rep := &CheckReport{SchemaVersion: SchemaVersion, Device: o.Device, Problems: []string{}, Failures: []CheckFailure{},
		BadByReason: map[string]uint64{}, ForeignByReason: map[string]uint64{}, ForeignPages: []CheckFailure{}}
	var p Pattern
	switch {
	case o.Journal != "" && o.Pattern != "":
		return nil, usagef("-journal and -pattern: give one (the journal names the pattern)")
	case o.Journal != "":
		jf, err := os.Open(o.Journal)
		if err != nil {
			return nil, usagef("-journal %s: %v", o.Journal, err)
		}
		h, last, synced, err := verify.ReadJournal(jf)
		jf.Close()
		if err != nil {
			return nil, usagef("-journal %s: %v", o.Journal, err)
		}
		if p, err = ParsePattern(h.Pattern); err != nil {
			return nil, usagef("-journal %s: %v", o.Journal, err)
		}
		rep.Journal = &h
		rep.Synced, rep.Last = synced, last
		rep.Run = CheckRun{Source: "journal", JournalFile: o.Journal, Pattern: h.Pattern, Seed: h.Seed,
			Nonce: h.Nonce, NonceFrom: "journal", Pages: h.Pages, PageSize: h.PageSize}
	case o.Pattern == "":
		return nil, usagef("-journal or -pattern is required (what to check the device against)")
	default:
		var err error
		if p, err = ParsePattern(string(o.Pattern)); err != nil {
			return nil, usagef("-pattern: %v", err)
		}
		if p == Hot {
			return nil, usagef("-pattern hot: which versions a hot run made durable is known only from its journal (use -journal)")
		}
		ps := o.PageSize
		if ps == 0 {
			ps = 4096
		}
		if ps < pages.MinPageSize || ps > pages.MaxPageSize || ps&(ps-1) != 0 {
			return nil, usagef("-page-size %d: must be a power of two from %d to %d", ps, pages.MinPageSize, pages.MaxPageSize)
		}
		if o.Size < 0 {
			return nil, usagef("-size %d: must not be negative", o.Size)
		}
		if o.Size > 0 && o.Size < int64(ps) {
			return nil, usagef("-size %d: less than one %d-byte page", o.Size, ps)
		}
		rep.Run = CheckRun{Source: "pattern", Pattern: string(p), Seed: o.Seed, PageSize: ps}
		if o.HasNonce {
			rep.Run.Nonce, rep.Run.NonceFrom = o.Nonce, "-nonce"
		}
	}
	if o.Wait < 0 {
		return nil, usagef("-wait %v: must not be negative", o.Wait)
	}
	t0 := time.Now()

	var st unix.Stat_t
	if err := unix.Stat(o.Device, &st); err != nil {
		return nil, usagef("-device %s: %v", o.Device, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		fd, err := openExclusive(ctx, o.Device, o.Wait)
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
	}
	t, err := ring.OpenTarget(o.Device, ring.TargetOptions{ReadOnly: true})
	if err != nil {
		return nil, usagef("-device %s: %v", o.Device, err)
	}
	defer t.Close()
	ps := rep.Run.PageSize
	if ps%t.LogicalBlockSize != 0 {
		return nil, usagef("-device %s has %d-byte logical blocks; the page size %d is not a multiple of that", o.Device, t.LogicalBlockSize, ps)
	}
	if rep.Run.Source == "pattern" {
		size := o.Size
		if size == 0 {
			size = t.Size
		}
		if size > t.Size {
			return nil, usagef("-size %d is past the end of %s, which holds %d bytes", size, o.Device, t.Size)
		}
		rep.Run.Pages = uint64(size) / uint64(ps)
		if rep.Run.Pages == 0 {
			return nil, usagef("%s holds %d bytes, less than one %d-byte page", o.Device, t.Size, ps)
		}
	}
	n := rep.Run.Pages
	if uint64(t.Size)/uint64(ps) < n {
		return nil, usagef("-device %s holds %d bytes; the journal's run wrote %d pages of %d bytes", o.Device, t.Size, n, ps)
	}

	// What each page must hold: a version of at least need[p] (hot), or
	// exactly version 1 for the pages of a layout (inPattern); zeroOK
	// says a page of the layout may still be all zero (a journal with no
	// "synced" line yet).
	var need []uint64
	var inPattern []bool
	zeroOK := false
	if p == Hot {
		if rep.Synced {
			need = verify.Need(rep.Run.Seed, rep.Last, n)
		} else {
			need = make([]uint64, n)
		}
	} else {
		l, err := NewLayout(p, rep.Run.Seed, n)
		if err != nil {
			return nil, err
		}
		if l.Pages == 0 {
			return nil, usagef("the %s pattern from seed %d has no page among %d", p, rep.Run.Seed, n)
		}
		inPattern = make([]bool, n)
		l.Each(func(_ int, i uint64) { inPattern[i] = true })
		zeroOK = rep.Run.Source == "journal" && !rep.Synced
	}
	c := pageChecker{rep: rep, nonceKnown: rep.Run.NonceFrom != ""}

	const chunk = 1 << 20
	bufPages := max(1, chunk/ps)
	buf, err := newAlignedBuf(bufPages * ps)
	if err != nil {
		return nil, err
	}
	defer buf.free()
	for first := uint64(0); first < n; first += uint64(bufPages) {
		if ctx.Err() != nil {
			return nil, ctxErr(ctx)
		}
		k := min(uint64(bufPages), n-first)
		b := buf.b[:k*uint64(ps)]
		if err := preadFull(t.Fd(), b, int64(first)*int64(ps)); err != nil {
			return nil, fmt.Errorf("check: read %s: %w", o.Device, err)
		}
		for j := uint64(0); j < k; j++ {
			idx := first + j
			page := b[j*uint64(ps) : (j+1)*uint64(ps)]
			if p == Hot {
				c.check(page, idx, need[idx], false, need[idx] == 0)
			} else if inPattern[idx] {
				c.check(page, idx, 1, true, zeroOK)
			}
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	roundFloats(rep)
	return rep, nil
}

// pageChecker checks pages one by one into a report, learning the
// run's nonce from the first valid page where it is not known.
type pageChecker struct {
	rep        *CheckReport
	nonceKnown bool
}

// check checks page as page idx: it must be a valid page of the run with
// version need (exact) or at least need; zeroOK lets it be all zero.
func (c *pageChecker) check(page []byte, idx, need uint64, exact, zeroOK bool) {
	r := c.rep
	r.Pages++
	if !zeroOK {
		r.Required++
	}
	nonce := r.Run.Nonce
	if !c.nonceKnown {
		// The nonce of this page's header, if the page is valid with it.
		if h, ok := verify.ReadHeader(page); ok {
			nonce = h.Nonce
			if _, err := verify.Check(page, idx, nonce); err == nil {
				r.Run.Nonce, r.Run.NonceFrom = nonce, fmt.Sprintf("page %d", idx)
				c.nonceKnown = true
			}
		}
	}
	expected := func() string {
		switch {
		case exact && zeroOK:
			return fmt.Sprintf("all zero or version %d", need)
		case exact:
			return fmt.Sprintf("version %d", need)
		case need == 0:
			return "all zero or a valid page of the run"
		}
		return fmt.Sprintf("version ≥ %d (synced)", need)
	}
	v, err := verify.Check(page, idx, nonce)
	f := CheckFailure{Page: idx, Need: need, Required: !zeroOK}
	switch {
	case errors.Is(err, verify.ErrZero) && zeroOK:
		r.Zero++
		return
	case err != nil:
		f.Found, f.Reason, f.Version = describe(page, err)
		f.Class = c.classOf(page, f.Reason)
	case exact && v != need:
		f.Found, f.Version, f.Reason, f.Class = fmt.Sprintf("version %d", v), v, "version", ClassThisRun
	case v < need:
		f.Found, f.Version, f.Reason, f.Class = fmt.Sprintf("version %d", v), v, "old", ClassThisRun
	default:
		r.Valid++
		return
	}
	f.Expected = expected()
	if zeroOK && f.Class == ClassOther {
		// Nothing of this run had to be here, and what is here is not
		// this run's: not a failure of the run.
		r.Foreign++
		r.ForeignByReason[f.Reason]++
		r.ForeignPages = append(r.ForeignPages, f)
		return
	}
	c.fail(f)
}

// classOf says whose the content of a page that failed with reason is:
// another run's page (its nonce is not the run's) or data not in the
// verify format are ClassOther; this run's damaged, misplaced or
// unwritten pages ClassThisRun.
func (c *pageChecker) classOf(page []byte, reason string) string {
	switch reason {
	case "magic", "nonce":
		return ClassOther
	case "index", "checksum", "payload", "version0":
		if h, ok := verify.ReadHeader(page); ok && c.nonceKnown && h.Nonce != c.rep.Run.Nonce {
			return ClassOther
		}
	}
	return ClassThisRun
}

func (c *pageChecker) fail(f CheckFailure) {
	r := c.rep
	r.Bad++
	r.BadByReason[f.Reason]++
	if f.Class == ClassOther {
		r.BadOther++
	} else {
		r.BadThisRun++
	}
	r.Failures = append(r.Failures, f)
	r.Problems = append(r.Problems, f.String())
}

// describe says what a page that failed verify.Check holds: a phrase,
// the reason code of CheckFailure, and the version its header names.
func describe(page []byte, err error) (found, reason string, version uint64) {
	h, _ := verify.ReadHeader(page)
	var pe *verify.PageError
	detail := ""
	if errors.As(err, &pe) {
		detail = pe.Detail
	}
	switch {
	case errors.Is(err, verify.ErrZero):
		return "all zero", "zero", 0
	case errors.Is(err, verify.ErrMagic):
		start := page[:min(len(page), len(verify.Magic))]
		switch string(start) {
		case fillMagic:
			return fmt.Sprintf("a page of a wbbench run without -verify (it starts %q)", start), "magic", 0
		case fioMagic:
			return fmt.Sprintf("a page fio wrote in a wbbench run (it starts %q)", start), "magic", 0
		}
		return fmt.Sprintf("no page of the format (it starts %q)", start), "magic", 0
	case errors.Is(err, verify.ErrIndex):
		return fmt.Sprintf("version %d of page %d (misplaced)", h.Version, h.Index), "index", h.Version
	case errors.Is(err, verify.ErrNonce):
		return fmt.Sprintf("version %d of another run (nonce %d)", h.Version, h.Nonce), "nonce", h.Version
	case errors.Is(err, verify.ErrVersion):
		return "a header with version 0", "version0", 0
	case errors.Is(err, verify.ErrChecksum):
		return fmt.Sprintf("version %d, damaged: CRC32C mismatch (%s)", h.Version, detail), "checksum", h.Version
	case errors.Is(err, verify.ErrPayload):
		return fmt.Sprintf("version %d, damaged: its payload does not match its header (%s)", h.Version, detail), "payload", h.Version
	}
	return err.Error(), "invalid", h.Version
}

// openExclusive opens a block device O_EXCL, retrying on EBUSY until
// wait has passed.
func openExclusive(ctx context.Context, device string, wait time.Duration) (int, error) {
	deadline := time.Now().Add(wait)
	for {
		fd, err := unix.Open(device, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EINTR) {
			return -1, fmt.Errorf("check: open %s: %w", device, err)
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("check: %s stays busy (mounted or held open exclusively) after %v: %w", device, wait, err)
		}
		select {
		case <-ctx.Done():
			return -1, ctxErr(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// preadFull reads len(b) bytes at off.
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		var n int
		err := retry(func() (err error) {
			n, err = unix.Pread(fd, b, off)
			return err
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("unexpected end at byte %d", off)
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}
