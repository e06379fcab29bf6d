package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wbengine/wbengine/bench"
	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
	"github.com/wbengine/wbengine/internal/verify"
)

// checkDoc is wbbench check's -json schema, written out independently
// of the bench types so a renamed field fails here.
type checkDoc struct {
	Device  string `json:"device"`
	Journal *struct {
		Pattern string `json:"pattern"`
		Seed    uint64 `json:"seed"`
		Nonce   uint32 `json:"nonce"`
		Pages   uint64 `json:"pages"`
	} `json:"journal"`
	Run struct {
		Source    string `json:"source"`
		Pattern   string `json:"pattern"`
		Seed      uint64 `json:"seed"`
		Nonce     uint32 `json:"nonce"`
		NonceFrom string `json:"nonce_from"`
		Pages     uint64 `json:"pages"`
		PageSize  int    `json:"page_size"`
	} `json:"run"`
	Synced      bool              `json:"synced"`
	Last        uint64            `json:"last_synced"`
	Pages       uint64            `json:"pages_checked"`
	Required    uint64            `json:"required"`
	Valid       uint64            `json:"valid"`
	Zero        uint64            `json:"zero"`
	Bad         uint64            `json:"bad"`
	BadThisRun  uint64            `json:"bad_this_run"`
	BadOther    uint64            `json:"bad_other"`
	BadByReason map[string]uint64 `json:"bad_by_reason"`
	Foreign     uint64            `json:"foreign"`
	ForeignBy   map[string]uint64 `json:"foreign_by_reason"`
	ForeignList []checkFailure    `json:"foreign_pages"`
	Problems    []string          `json:"problems"`
	Failures    []checkFailure    `json:"failures"`
	Seconds     float64           `json:"seconds"`
}

type checkFailure struct {
	Page     uint64 `json:"page"`
	Expected string `json:"expected"`
	Found    string `json:"found"`
	Need     uint64 `json:"need"`
	Version  uint64 `json:"version"`
	Reason   string `json:"reason"`
	Class    string `json:"class"`
	Required bool   `json:"required"`
}

// checkJSON runs wbbench check -json with args and decodes its report.
func checkJSON(t *testing.T, args ...string) (int, checkDoc) {
	t.Helper()
	code, out, errOut := wb(t, append([]string{"check", "-json"}, args...)...)
	if code != exitOK && code != exitFailed {
		t.Fatalf("check %v: status %d: %s", args, code, errOut)
	}
	var doc checkDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("check %v: stdout is not JSON: %v\n%s", args, err, out)
	}
	if doc.Problems == nil || doc.Failures == nil || len(doc.Failures) != int(doc.Bad) || len(doc.Problems) != int(doc.Bad) {
		t.Fatalf("check %v: %d bad, but %d failures and %d problems listed", args, doc.Bad, len(doc.Failures), len(doc.Problems))
	}
	return code, doc
}

// corrupt writes garbage into the middle of page p (of ps bytes) of the
// target and syncs it.
func corrupt(t *testing.T, path string, p uint64, ps int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("this is not what wbbench wrote!!"), int64(p)*int64(ps)+1000); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckPattern: for seq, runs and single, a -verify run without a
// journal checks clean with -pattern -seed -size; a page of the pattern
// with garbage in it is reported (exactly that page, with what was
// expected and found, exit status 1); garbage outside the pattern is
// not looked at.
func TestCheckPattern(t *testing.T) {
	const size, ps = 8 << 20, 4096
	for i, p := range []string{"seq", "runs", "single"} {
		t.Run(p, func(t *testing.T) {
			path, _ := e2eTarget(t, 16<<20)
			seed := fmt.Sprint(11 + i)
			code, out, errOut := wb(t, "-device", path, "-pattern", p, "-seed", seed, "-size", "8MiB", "-verify", "-json")
			if code != 0 {
				t.Fatalf("-verify run: status %d: %s", code, errOut)
			}
			var run struct {
				Config struct {
					Nonce uint32 `json:"nonce"`
				} `json:"config"`
				PatternPages uint64 `json:"pattern_pages"`
			}
			if err := json.Unmarshal([]byte(out), &run); err != nil {
				t.Fatal(err)
			}
			args := []string{"-device", path, "-pattern", p, "-seed", seed, "-size", "8MiB"}
			code, doc := checkJSON(t, args...)
			if code != 0 || doc.Bad != 0 || doc.Required != run.PatternPages || doc.Valid != run.PatternPages ||
				doc.Pages != run.PatternPages || doc.Zero != 0 || doc.Journal != nil {
				t.Fatalf("clean check: status %d, %+v; want %d pages required and valid", code, doc, run.PatternPages)
			}
			if doc.Run.Source != "pattern" || doc.Run.Pattern != p || doc.Run.Nonce != run.Config.Nonce || doc.Run.Pages != size/ps ||
				!strings.HasPrefix(doc.Run.NonceFrom, "page ") {
				t.Fatalf("run %+v; want the pattern, nonce %d taken from a page", doc.Run, run.Config.Nonce)
			}
			l, err := bench.NewLayout(bench.Pattern(p), 11+uint64(i), size/ps)
			if err != nil {
				t.Fatal(err)
			}
			in := make([]bool, size/ps)
			var pages []uint64
			l.Each(func(_ int, idx uint64) { in[idx], pages = true, append(pages, idx) })
			if p != "seq" {
				// Garbage where the pattern did not write is not checked.
				for idx := range in {
					if !in[idx] {
						corrupt(t, path, uint64(idx), ps)
						break
					}
				}
				if code, doc := checkJSON(t, args...); code != 0 || doc.Bad != 0 {
					t.Fatalf("garbage outside the pattern: status %d, %+v", code, doc)
				}
			}

			// One page of the pattern with garbage in it.
			bad := pages[len(pages)/2]
			corrupt(t, path, bad, ps)
			code, out, errOut = wb(t, append([]string{"check"}, args...)...)
			t.Logf("\n%s", out)
			want := fmt.Sprintf("bad      this run's pages, damaged, misplaced, too old or missing: 1\n  checksum  1\n    page %d: expected version 1, found version 1, damaged: CRC32C mismatch (stored ", bad)
			if code != exitFailed || !strings.Contains(out, want) || strings.Count(out, "\nbad ") != 1 ||
				!strings.HasSuffix(out, fmt.Sprintf("FAILED   1 of %s pages\n", comma(run.PatternPages))) || errOut != "" {
				t.Fatalf("after corrupting page %d: status %d, stderr %q, output:\n%s", bad, code, errOut, out)
			}
			code, doc = checkJSON(t, args...)
			if code != exitFailed || doc.Bad != 1 || doc.Valid != run.PatternPages-1 || doc.Required != run.PatternPages {
				t.Fatalf("after corrupting page %d: status %d, %+v", bad, code, doc)
			}
			if f := doc.Failures[0]; f.Page != bad || f.Expected != "version 1" || f.Reason != "checksum" || f.Version != 1 || f.Need != 1 ||
				f.Class != "this_run" || !f.Required || doc.BadThisRun != 1 || doc.BadOther != 0 || doc.BadByReason["checksum"] != 1 ||
				doc.Problems[0] != fmt.Sprintf("page %d: expected %s, found %s", f.Page, f.Expected, f.Found) {
				t.Fatalf("failure %+v, problem %q", f, doc.Problems[0])
			}

			// The nonce from -nonce: the right one passes the same; a
			// wrong one fails every page.
			code, doc = checkJSON(t, append(args, "-nonce", fmt.Sprint(run.Config.Nonce))...)
			if code != exitFailed || doc.Bad != 1 || doc.Run.NonceFrom != "-nonce" {
				t.Fatalf("-nonce %d: status %d, %+v", run.Config.Nonce, code, doc)
			}
			code, doc = checkJSON(t, append(args, "-nonce", fmt.Sprint(run.Config.Nonce+1))...)
			if code != exitFailed || doc.Bad != run.PatternPages || doc.Failures[0].Reason != "nonce" ||
				!strings.Contains(doc.Failures[0].Found, fmt.Sprintf("of another run (nonce %d)", run.Config.Nonce)) {
				t.Fatalf("a wrong -nonce: status %d, %d bad of %d, first %+v", code, doc.Bad, run.PatternPages, doc.Failures[0])
			}
		})
	}
}

// TestCheckListsFailures: check prints the failures grouped by whose
// data the page holds (this run's, or another run's or program's) and
// by reason, the first few pages of each reason; -v and -json list
// every page. The first page of the pattern being garbage makes the
// check take the nonce from the next valid page.
func TestCheckListsFailures(t *testing.T) {
	path := loopdevtest.ShmFile(t, 4<<20)
	if code, _, errOut := wb(t, "-device", path, "-pattern", "seq", "-verify"); code != 0 {
		t.Fatalf("-verify run: status %d: %s", code, errOut)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7 + 1)
	}
	f.WriteAt(garbage, 0) // page 0: no page of the format at all
	f.Close()
	r := rand.New(rand.NewPCG(3, 4))
	damaged := map[uint64]bool{0: true}
	for len(damaged) < 40 {
		p := 1 + r.Uint64N(1023)
		if !damaged[p] {
			damaged[p] = true
			corrupt(t, path, p, 4096)
		}
	}
	code, out, _ := wb(t, "check", "-device", path, "-pattern", "seq")
	for _, want := range []string{
		"bad      this run's pages, damaged, misplaced, too old or missing: 39\n  checksum  39\n    page ",
		"    … and 34 more\n",
		"bad      left by another run or another program, where this run had to have written: 1\n  magic     1\n    page 0: expected version 1, found no page of the format (it starts ",
		"(the first pages of each reason; -v lists every page, -json too)\n",
		"taken from page 1, the first valid page of the pattern",
	} {
		if code != exitFailed || !strings.Contains(out, want) {
			t.Fatalf("status %d, output lacks %q:\n%s", code, want, out)
		}
	}
	if n := strings.Count(out, "\n    page "); n != 6 {
		t.Fatalf("%d pages listed without -v, want 5 + 1:\n%s", n, out)
	}
	code, out, _ = wb(t, "check", "-device", path, "-pattern", "seq", "-v")
	if n := strings.Count(out, "\n    page "); code != exitFailed || n != 40 || strings.Contains(out, "more") {
		t.Fatalf("-v: status %d, %d pages listed, want all 40:\n%s", code, n, out)
	}
	code, doc := checkJSON(t, "-device", path, "-pattern", "seq")
	if code != exitFailed || doc.Bad != 40 || doc.Valid != 1024-40 || doc.Run.NonceFrom != "page 1" {
		t.Fatalf("status %d, %d bad, %d valid, nonce from %q", code, doc.Bad, doc.Valid, doc.Run.NonceFrom)
	}
	for i, f := range doc.Failures {
		if !damaged[f.Page] || (i > 0 && f.Page <= doc.Failures[i-1].Page) {
			t.Fatalf("failure %d is page %d: not one of the damaged pages, or out of order", i, f.Page)
		}
	}
	// A device with no valid page at all: the nonce is unknown, and
	// every page fails, all zero where the run had to have written.
	zero := loopdevtest.ShmFile(t, 1<<20)
	code, out, _ = wb(t, "check", "-device", zero, "-pattern", "seq")
	if code != exitFailed || !strings.Contains(out, "nonce    unknown: no page of the pattern is valid") ||
		!strings.Contains(out, "  zero      256\n") || strings.Count(out, ": expected version 1, found all zero\n") != 5 {
		t.Fatalf("a zero device: status %d, output:\n%s", code, out)
	}
}

// TestCheckBadInput: every misuse is one line on stderr, nothing on
// stdout, status 2.
func TestCheckBadInput(t *testing.T) {
	path := loopdevtest.ShmFile(t, 1<<20)
	journal := filepath.Join(t.TempDir(), "journal")
	if err := os.WriteFile(journal, []byte("wbbench-journal v1 pattern=seq seed=1 nonce=5 pages=256 page_size=4096\nsynced 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(t.TempDir(), "big-journal")
	if err := os.WriteFile(big, []byte("wbbench-journal v1 pattern=seq seed=1 nonce=5 pages=257 page_size=4096\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bogus := filepath.Join(t.TempDir(), "bogus-journal")
	if err := os.WriteFile(bogus, []byte("not a journal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "-device is required"},
		{[]string{"-device", path}, "-journal is required"},
		{[]string{"-device", path, "-journal", journal, "-pattern", "seq"}, "-journal and -pattern exclude each other"},
		{[]string{"-device", path, "-journal", journal, "-seed", "3"}, "-seed: only with -pattern"},
		{[]string{"-device", path, "-journal", journal, "-size", "1MiB"}, "-size: only with -pattern"},
		{[]string{"-device", path, "-journal", journal, "-nonce", "3"}, "-nonce: only with -pattern"},
		{[]string{"-device", path, "-journal", journal, "-page-size", "8KiB"}, "-page-size: only with -pattern"},
		{[]string{"-device", path, "-journal", big}, "the journal's run wrote 257 pages"},
		{[]string{"-device", path, "-journal", bogus}, "bad journal"},
		{[]string{"-device", path, "-journal", filepath.Join(t.TempDir(), "none")}, "no such file"},
		{[]string{"-device", path, "-pattern", "hot"}, "known only from its journal"},
		{[]string{"-device", path, "-pattern", "zigzag"}, `unknown pattern "zigzag"`},
		{[]string{"-device", path, "-pattern", "seq", "-size", "2MiB"}, "-size 2097152 is past the end"},
		{[]string{"-device", path, "-pattern", "seq", "-size", "lots"}, `-size "lots": not a size`},
		{[]string{"-device", path, "-pattern", "seq", "-size", "100"}, "less than one 4096-byte page"},
		{[]string{"-device", path, "-pattern", "seq", "-page-size", "3000"}, "-page-size 3000: must be a power of two"},
		{[]string{"-device", path, "-pattern", "seq", "-nonce", "4294967296"}, "-nonce 4294967296: nonces are 32-bit"},
		{[]string{"-device", path, "-pattern", "seq", "-nonce", "-1"}, "-nonce"},
		{[]string{"-device", path, "-pattern", "seq", "-wait", "-1s"}, "-wait -1s: must not be negative"},
		{[]string{"-device", path, "-pattern", "seq", "extra"}, `unexpected argument "extra"`},
		{[]string{"-device", filepath.Join(t.TempDir(), "missing"), "-pattern", "seq"}, "no such file"},
		{[]string{"-device", path, "-pattern", "seq", "-bogus"}, "unknown flag -bogus (wbbench check -h lists the flags)"},
	} {
		code, out, errOut := wb(t, append([]string{"check"}, tc.args...)...)
		oneLine(t, code, out, errOut, tc.want)
	}
	if code, out, _ := wb(t, "check", "-h"); code != 0 || !strings.Contains(out, "wbbench check -device D -pattern seq|runs|single") {
		t.Fatalf("check -h: status %d:\n%s", code, out)
	}
}

func comma(n uint64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestVerifyZeroesFirst: a hot -verify -journal run on a target a plain
// benchmark wrote before zeroes its range first (and says so), so the
// check of a clean run finds nothing to report about the pages it never
// wrote. Data of another run or program where the run wrote nothing is
// reported apart and is not a failure; where the run had to have
// written, it is.
func TestVerifyZeroesFirst(t *testing.T) {
	path, _ := e2eTarget(t, 128<<20)
	if code, _, errOut := wb(t, "-device", path, "-runs", "1", "-baseline", "none"); code != 0 {
		t.Fatalf("the earlier benchmark: status %d: %s", code, errOut)
	}
	journal := filepath.Join(t.TempDir(), "journal")
	code, out, errOut := wb(t, "-device", path, "-pattern", "hot", "-verify", "-journal", journal,
		"-duration", "200ms", "-sync-every", "50ms", "-writers", "1", "-runs", "1")
	if code != 0 {
		t.Fatalf("-verify run: status %d: %s", code, errOut)
	}
	if !strings.Contains(out, fmt.Sprintf("verify   zeroed bytes [0, %d) first: fallocate ", 128<<20)) || !strings.Contains(errOut, "-verify: zeroed bytes") {
		t.Fatalf("the run does not say it zeroed its range:\n%s%s", out, errOut)
	}
	code, doc := checkJSON(t, "-device", path, "-journal", journal)
	if code != 0 || doc.Bad != 0 || doc.Foreign != 0 || doc.Zero == 0 {
		t.Fatalf("check after a clean run: status %d, %d bad, %d foreign, %d zero; want nothing bad, and pages the run never wrote all zero", code, doc.Bad, doc.Foreign, doc.Zero)
	}
	t.Logf("%d pages required and valid, %d never written and zero", doc.Required, doc.Zero)

	// Another program's data where the run wrote nothing, and a
	// benchmark's page where the run had to have written.
	jb, _ := os.ReadFile(journal)
	lines := strings.Split(strings.TrimSpace(string(jb)), "\n")
	var last uint64
	fmt.Sscanf(lines[len(lines)-1], "synced %d", &last)
	need := verify.Need(doc.Run.Seed, last, doc.Run.Pages)
	unwritten, written := -1, -1
	for p := len(need) - 1; p >= 0 && (unwritten < 0 || written < 0); p-- {
		if need[p] == 0 && unwritten < 0 {
			unwritten = p
		} else if need[p] > 0 && written < 0 {
			written = p
		}
	}
	corrupt(t, path, uint64(unwritten), 4096)
	code, doc = checkJSON(t, "-device", path, "-journal", journal)
	if code != 0 || doc.Bad != 0 || doc.Foreign != 1 || doc.ForeignBy["magic"] != 1 || len(doc.ForeignList) != 1 ||
		doc.ForeignList[0].Page != uint64(unwritten) || doc.ForeignList[0].Class != "other" || doc.ForeignList[0].Required {
		t.Fatalf("another program's data on page %d (need 0): status %d, %+v", unwritten, code, doc)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 4096)
	copy(page, "WBBENCH0")
	f.WriteAt(page, int64(written)*4096)
	f.Sync()
	f.Close()
	code, out, _ = wb(t, "check", "-device", path, "-journal", journal)
	for _, want := range []string{
		"bad      left by another run or another program, where this run had to have written: 1\n  magic     1\n",
		"found a page of a wbbench run without -verify (it starts \"WBBENCH0\")\n",
		"foreign  left by another run or another program, where this run wrote nothing (not a failure): 1\n",
		"FAILED   1 of ",
	} {
		if code != exitFailed || !strings.Contains(out, want) {
			t.Fatalf("a benchmark page on page %d (need %d): status %d, output lacks %q:\n%s", written, need[written], code, want, out)
		}
	}
}
