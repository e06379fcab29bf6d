package verify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// JournalHeader is the journal's first line:
//
//	wbbench-journal v1 pattern=P seed=S nonce=X pages=N page_size=B
//
// with the numbers in decimal.
type JournalHeader struct {
	Pattern  string `json:"pattern"`
	Seed     uint64 `json:"seed"`
	Nonce    uint32 `json:"nonce"`
	Pages    uint64 `json:"pages"`
	PageSize int    `json:"page_size"`
}

const journalMagic = "wbbench-journal v1"

// ErrJournal: a journal that cannot be parsed.
var ErrJournal = errors.New("verify: bad journal")

func (h JournalHeader) String() string {
	return fmt.Sprintf("%s pattern=%s seed=%d nonce=%d pages=%d page_size=%d",
		journalMagic, h.Pattern, h.Seed, h.Nonce, h.Pages, h.PageSize)
}

// ParseJournalHeader parses a journal's first line (without its newline).
func ParseJournalHeader(line string) (JournalHeader, error) {
	var h JournalHeader
	rest, ok := strings.CutPrefix(line, journalMagic+" ")
	if !ok {
		return h, fmt.Errorf("%w: first line %q does not start with %q", ErrJournal, line, journalMagic)
	}
	seen := map[string]bool{}
	for _, field := range strings.Fields(rest) {
		key, val, ok := strings.Cut(field, "=")
		if !ok || seen[key] {
			return h, fmt.Errorf("%w: header field %q", ErrJournal, field)
		}
		seen[key] = true
		var err error
		switch key {
		case "pattern":
			h.Pattern = val
		case "seed":
			h.Seed, err = strconv.ParseUint(val, 10, 64)
		case "nonce":
			var n uint64
			n, err = strconv.ParseUint(val, 10, 32)
			h.Nonce = uint32(n)
		case "pages":
			h.Pages, err = strconv.ParseUint(val, 10, 64)
		case "page_size":
			h.PageSize, err = strconv.Atoi(val)
		default:
			return h, fmt.Errorf("%w: unknown header field %q", ErrJournal, field)
		}
		if err != nil {
			return h, fmt.Errorf("%w: header field %q: not a decimal number", ErrJournal, field)
		}
	}
	for _, k := range []string{"pattern", "seed", "nonce", "pages", "page_size"} {
		if !seen[k] {
			return h, fmt.Errorf("%w: header lacks %s=", ErrJournal, k)
		}
	}
	if h.Pattern == "" || h.PageSize < HeaderSize || h.PageSize%8 != 0 {
		return h, fmt.Errorf("%w: header %q: empty pattern or bad page_size", ErrJournal, line)
	}
	return h, nil
}

// Journal records, after each Sync that returned nil, the highest
// version V such that every version ≤ V had been written into the cache
// (or superseded) before that Sync began. Each record is written and
// fsynced before Synced returns, so a journal read after a crash never
// claims more than was durable.
type Journal struct {
	mu   sync.Mutex // serialises writes; protects f and last
	f    *os.File
	last uint64
}

// CreateJournal creates (or truncates) the journal at path and writes
// and fsyncs its first line (and the directory entry).
func CreateJournal(path string, h JournalHeader) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("verify: journal: %w", err)
	}
	if _, err := io.WriteString(f, h.String()+"\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("verify: journal %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("verify: journal %s: fsync: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // best effort: make the new name durable too
		d.Close()
	}
	return &Journal{f: f}, nil
}

// Synced appends "synced V" and fsyncs it. A V lower than one already
// recorded is not written (the journal never goes back).
func (j *Journal) Synced(v uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("verify: journal closed")
	}
	if v < j.last {
		return nil
	}
	if _, err := fmt.Fprintf(j.f, "synced %d\n", v); err != nil {
		return fmt.Errorf("verify: journal %s: %w", j.f.Name(), err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("verify: journal %s: fsync: %w", j.f.Name(), err)
	}
	j.last = v
	return nil
}

// Last is the highest version recorded so far.
func (j *Journal) Last() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

// Close closes the journal file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// ReadJournal reads a journal: its header, and the highest V of its
// "synced V" lines (ok false when there is none). A last line without
// its newline (a write cut short by a crash) is ignored.
func ReadJournal(r io.Reader) (h JournalHeader, last uint64, ok bool, err error) {
	br := bufio.NewReader(r)
	lineNo := 0
	for {
		line, rerr := br.ReadString('\n')
		if rerr != nil && rerr != io.EOF {
			return h, 0, false, fmt.Errorf("verify: journal: %w", rerr)
		}
		if !strings.HasSuffix(line, "\n") {
			// EOF: a torn last line (or nothing) is ignored.
			if lineNo == 0 {
				return h, 0, false, fmt.Errorf("%w: no complete first line", ErrJournal)
			}
			return h, last, ok, nil
		}
		line = strings.TrimSuffix(line, "\n")
		lineNo++
		if lineNo == 1 {
			if h, err = ParseJournalHeader(line); err != nil {
				return h, 0, false, err
			}
			continue
		}
		s, found := strings.CutPrefix(line, "synced ")
		v, perr := strconv.ParseUint(s, 10, 64)
		if !found || perr != nil {
			return h, 0, false, fmt.Errorf("%w: line %d: %q", ErrJournal, lineNo, line)
		}
		last, ok = max(last, v), true
	}
}
