package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSplitMix64KnownAnswers checks SplitMix64 against values worked out
// by hand (and with an independent big-integer implementation).
//
// SplitMix64(0), step by step:
//
//	z = 0 + 0x9E3779B97F4A7C15           = 0x9e3779b97f4a7c15
//	z ^ z>>30                            = 0x9e3779bb07979af0
//	  * 0xBF58476D1CE4E5B9 (mod 2^64)    = 0x6f68261b57e7a770
//	z ^ z>>27                            = 0x6f682616bae3641a
//	  * 0x94D049BB133111EB (mod 2^64)    = 0xe220a838bf5c9dde
//	z ^ z>>31                            = 0xe220a8397b1dcdaf
//
// The first three also are the first three outputs of the reference
// SplitMix64 generator seeded with 0 (its state advances by the golden
// gamma before each output).
func TestSplitMix64KnownAnswers(t *testing.T) {
	for _, tc := range []struct{ in, want uint64 }{
		{0, 0xe220a8397b1dcdaf},
		{0x9e3779b97f4a7c15, 0x6e789e6aa1b965f4},
		{0x3c6ef372fe94f82a, 0x06c45d188009454f},
		{1, 0x910a2dec89025cc1},
		{^uint64(0), 0xe4d971771b652c20},
	} {
		if got := SplitMix64(tc.in); got != tc.want {
			t.Errorf("SplitMix64(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

func TestHotPageKnownAnswers(t *testing.T) {
	for _, tc := range []struct{ seed, v, n, want uint64 }{
		// a = SplitMix64(0+1)>>43 = 1188165; 262144·a³/2^63 = 47673.6…
		{0, 1, 262144, 47673},
		{1, 1, 262144, 54165},
		{42, 7, 1000, 1},
		{7, 123456, 8192, 190},
		// n = 2^63 makes the page a³ itself: a = 1852437.
		{0, 0, 1 << 63, 1852437 * 1852437 * 1852437},
	} {
		if got := HotPage(tc.seed, tc.v, tc.n); got != tc.want {
			t.Errorf("HotPage(%d, %d, %d) = %d, want %d", tc.seed, tc.v, tc.n, got, tc.want)
		}
	}
}

// TestHotPageInRange checks pages stay below n for n up to 2^64-1 and
// that the 128-bit formula equals floor(n·a³/2^63).
func TestHotPageInRange(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 1000, 1 << 18, 1<<40 + 17, 1<<64 - 1} {
		for v := uint64(1); v < 2000; v++ {
			p := HotPage(99, v, n)
			if p >= n {
				t.Fatalf("HotPage(99, %d, %d) = %d: not below n", v, n, p)
			}
			a := SplitMix64(99+v) >> 43
			hi, lo := bits.Mul64(n, a*a*a)
			q, _ := bits.Div64(hi, lo, 1<<63)
			if q != p {
				t.Fatalf("HotPage(99, %d, %d) = %d, want %d", v, n, p, q)
			}
		}
	}
}

// TestEncodeKnownAnswer checks a whole 64-byte page against one built
// independently (header by hand, payload and CRC32C from a bitwise
// reference implementation).
func TestEncodeKnownAnswer(t *testing.T) {
	want, _ := hex.DecodeString("5742454e475047310300000000000000020000000000000018755f7b" +
		"efbeadde1953eaf63b0deab249848d9c4901b470a0d99119c87001aa7251612385bec56a")
	page := make([]byte, 64)
	Encode(page, 3, 2, 0xdeadbeef)
	if !bytes.Equal(page, want) {
		t.Fatalf("Encode(64 bytes, index 3, version 2, nonce 0xdeadbeef) =\n%x\nwant\n%x", page, want)
	}
	if got := binary.LittleEndian.Uint32(page[24:]); got != 0x7b5f7518 {
		t.Errorf("CRC32C = %#x, want 0x7b5f7518", got)
	}
	v, err := Check(page, 3, 0xdeadbeef)
	if err != nil || v != 2 {
		t.Fatalf("Check = %d, %v; want 2, nil", v, err)
	}
}

func TestCheckRejects(t *testing.T) {
	const ps, idx, nonce = 4096, 77, 12345
	good := make([]byte, ps)
	Encode(good, idx, 9, nonce)
	for _, tc := range []struct {
		name   string
		mutate func(p []byte)
		index  uint64
		nonce  uint32
		want   error
	}{
		{"zero", func(p []byte) { clear(p) }, idx, nonce, ErrZero},
		{"magic", func(p []byte) { p[0] = 'X' }, idx, nonce, ErrMagic},
		{"index", nil, idx + 1, nonce, ErrIndex},
		{"nonce", nil, idx, nonce + 1, ErrNonce},
		{"version0", func(p []byte) { binary.LittleEndian.PutUint64(p[16:], 0) }, idx, nonce, ErrVersion},
		{"crc", func(p []byte) { p[ps-1] ^= 1 }, idx, nonce, ErrChecksum},
		{"payload", func(p []byte) {
			// A payload that is valid for another version, with a CRC
			// that matches it: only the payload check can tell.
			binary.LittleEndian.PutUint64(p[16:], 10)
			binary.LittleEndian.PutUint32(p[24:], Checksum(p))
		}, idx, nonce, ErrPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := bytes.Clone(good)
			if tc.mutate != nil {
				tc.mutate(p)
			}
			_, err := Check(p, tc.index, tc.nonce)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check: %v, want %v", err, tc.want)
			}
			var pe *PageError
			if !errors.As(err, &pe) || pe.Index != tc.index {
				t.Fatalf("error %v is not a *PageError for page %d", err, tc.index)
			}
		})
	}
}

func TestNeed(t *testing.T) {
	const seed, n = 5, 100
	need := Need(seed, 1000, n)
	for p, v := range need {
		if v == 0 {
			continue
		}
		if HotPage(seed, v, n) != uint64(p) {
			t.Fatalf("need[%d] = %d, but version %d goes to page %d", p, v, v, HotPage(seed, v, n))
		}
		for w := v + 1; w <= 1000; w++ {
			if HotPage(seed, w, n) == uint64(p) {
				t.Fatalf("need[%d] = %d, but version %d also goes there", p, v, w)
			}
		}
	}
}

func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	h := JournalHeader{Pattern: "hot", Seed: 7, Nonce: 4000000000, Pages: 262144, PageSize: 4096}
	j, err := CreateJournal(path, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{0, 10, 5, 42} {
		if err := j.Synced(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "wbbench-journal v1 pattern=hot seed=7 nonce=4000000000 pages=262144 page_size=4096\nsynced 0\nsynced 10\nsynced 42\n"
	if string(b) != want {
		t.Fatalf("journal:\n%s\nwant:\n%s", b, want)
	}
	// A torn last line is ignored.
	got, last, ok, err := ReadJournal(strings.NewReader(want + "synced 99"))
	if err != nil || !ok || last != 42 || got != h {
		t.Fatalf("ReadJournal = %+v, %d, %v, %v; want %+v, 42, true, nil", got, last, ok, err, h)
	}
	_, _, ok, err = ReadJournal(strings.NewReader(h.String() + "\n"))
	if err != nil || ok {
		t.Fatalf("header only: ok %v, err %v; want false, nil", ok, err)
	}
	for _, bad := range []string{
		"", "wbbench-journal v1 pattern=hot", "nonsense\n",
		"wbbench-journal v1 pattern=hot seed=x nonce=1 pages=1 page_size=4096\n",
		h.String() + "\nsynced -1\n",
		h.String() + "\nsync 3\n",
	} {
		if _, _, _, err := ReadJournal(strings.NewReader(bad)); !errors.Is(err, ErrJournal) {
			t.Errorf("ReadJournal(%q): %v, want ErrJournal", bad, err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	page := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Encode(page, uint64(i), 1, 1)
	}
}

func TestReadHeader(t *testing.T) {
	page := make([]byte, 4096)
	if _, ok := ReadHeader(page); ok {
		t.Fatal("ReadHeader of a zero page: ok")
	}
	Encode(page, 12, 34, 0xfeedface)
	h, ok := ReadHeader(page)
	if !ok || h.Index != 12 || h.Version != 34 || h.Nonce != 0xfeedface || h.CRC != binary.LittleEndian.Uint32(page[24:]) {
		t.Fatalf("ReadHeader = %+v, %v", h, ok)
	}
	// A damaged page still shows its header, and Check with its nonce
	// still rejects it.
	page[100] ^= 0xff
	if h2, ok := ReadHeader(page); !ok || h2 != h {
		t.Fatalf("ReadHeader of a damaged page = %+v, %v; want %+v", h2, ok, h)
	}
	if _, err := Check(page, 12, h.Nonce); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Check of a damaged page: %v, want ErrChecksum", err)
	}
	if _, ok := ReadHeader(page[:16]); ok {
		t.Fatal("ReadHeader of 16 bytes: ok")
	}
}
