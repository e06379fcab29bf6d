package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wbengine/wbengine/internal/verify"
	"github.com/wbengine/wbengine/ring"
)

// CheckReport is what Check found.
type CheckReport struct {
	Device   string               `json:"device"`
	Journal  verify.JournalHeader `json:"journal"`
	Synced   bool                 `json:"synced"` // the journal has a "synced" line
	Last     uint64               `json:"last_synced"`
	Pages    uint64               `json:"pages_checked"`
	Valid    uint64               `json:"valid"`    // pages holding a valid page of the run
	Zero     uint64               `json:"zero"`     // pages all zero where that is allowed
	Bad      uint64               `json:"bad"`      // pages that fail
	Problems []string             `json:"problems"` // the first few failures
	Seconds  float64              `json:"seconds"`
}

const maxProblems = 20

// OK reports whether every checked page passed.
func (r *CheckReport) OK() bool { return r.Bad == 0 }

// Check reads the device a wbbench -verify -journal run wrote and checks
// it against the journal (DESIGN.md, "Verify format"). A block device is
// first opened O_EXCL, retrying on EBUSY for up to wait (the killed
// writer's in-flight I/O drains first), and held so while it is read.
//
// hot: for each page p, need(p) is the newest version ≤ the journal's
// last synced version V that goes to p; the page must be a valid page of
// the run (magic, index p, nonce, CRC, payload) with a version ≥ need(p);
// where need(p) is 0 it may also be all zero. Other patterns: once the
// journal says "synced 1", every page of the pattern must hold version 1.
func Check(ctx context.Context, device, journal string, wait time.Duration) (*CheckReport, error) {
	jf, err := os.Open(journal)
	if err != nil {
		return nil, usagef("-journal %s: %v", journal, err)
	}
	h, last, synced, err := verify.ReadJournal(jf)
	jf.Close()
	if err != nil {
		return nil, usagef("-journal %s: %v", journal, err)
	}
	p, err := ParsePattern(h.Pattern)
	if err != nil {
		return nil, usagef("-journal %s: %v", journal, err)
	}
	rep := &CheckReport{Device: device, Journal: h, Synced: synced, Last: last, Problems: []string{}}
	t0 := time.Now()

	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return nil, usagef("-device %s: %v", device, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		fd, err := openExclusive(ctx, device, wait)
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
	}
	t, err := ring.OpenTarget(device, ring.TargetOptions{ReadOnly: true})
	if err != nil {
		return nil, usagef("-device %s: %v", device, err)
	}
	defer t.Close()
	ps := h.PageSize
	if uint64(t.Size) < h.Pages*uint64(ps) {
		return nil, usagef("-device %s holds %d bytes; the journal's run wrote %d pages of %d bytes", device, t.Size, h.Pages, ps)
	}
	if ps%t.LogicalBlockSize != 0 {
		return nil, usagef("-device %s: the journal's page size %d is not a multiple of its logical block size %d", device, ps, t.LogicalBlockSize)
	}

	// want[p]: 0 = not checked, else the least version page p must hold;
	// zeroOK[p]: an all-zero page passes.
	var need []uint64
	var inPattern []bool
	if p == Hot {
		if synced {
			need = verify.Need(h.Seed, last, h.Pages)
		} else {
			need = make([]uint64, h.Pages)
		}
	} else {
		l, err := NewLayout(p, h.Seed, h.Pages)
		if err != nil {
			return nil, err
		}
		inPattern = make([]bool, h.Pages)
		l.Each(func(_ int, i uint64) { inPattern[i] = true })
	}

	const chunk = 1 << 20
	bufPages := max(1, chunk/ps)
	buf, err := newAlignedBuf(bufPages * ps)
	if err != nil {
		return nil, err
	}
	defer buf.free()
	bad := func(format string, args ...any) {
		rep.Bad++
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	for first := uint64(0); first < h.Pages; first += uint64(bufPages) {
		if ctx.Err() != nil {
			return nil, ctxErr(ctx)
		}
		n := min(uint64(bufPages), h.Pages-first)
		b := buf.b[:n*uint64(ps)]
		if err := preadFull(t.Fd(), b, int64(first)*int64(ps)); err != nil {
			return nil, fmt.Errorf("check: read %s: %w", device, err)
		}
		for k := uint64(0); k < n; k++ {
			idx := first + k
			page := b[k*uint64(ps) : (k+1)*uint64(ps)]
			if p != Hot {
				if !inPattern[idx] {
					continue
				}
				rep.Pages++
				if !synced {
					continue // nothing was promised yet
				}
				v, err := verify.Check(page, idx, h.Nonce)
				switch {
				case err != nil:
					bad("%v", err)
				case v != 1:
					bad("page %d: version %d, want 1", idx, v)
				default:
					rep.Valid++
				}
				continue
			}
			rep.Pages++
			v, err := verify.Check(page, idx, h.Nonce)
			switch {
			case errors.Is(err, verify.ErrZero) && need[idx] == 0:
				rep.Zero++
			case err != nil:
				if need[idx] > 0 {
					bad("%v; version %d was synced", err, need[idx])
				} else {
					bad("%v", err)
				}
			case v < need[idx]:
				bad("page %d: version %d, older than version %d, which was synced", idx, v, need[idx])
			default:
				rep.Valid++
			}
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	return rep, nil
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
