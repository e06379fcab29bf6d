package main

import (
	"errors"
	"flag"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wbengine/wbengine/bench"
)

func TestParseFlags(t *testing.T) {
	o, err := newFlags(false).parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.PageSize != 4096 || o.Pattern != bench.Seq || o.Ring != "auto" || o.Runs != 0 || o.Seed != 1 ||
		!slices.Equal(o.Baselines, []string{"kernel", "pwrite", "fio"}) || o.SyncEvery != 500*time.Millisecond {
		t.Fatalf("defaults: %+v", o)
	}
	o, err = newFlags(false).parse(strings.Fields(
		"-device /dev/x -size 512M -page-size 8KiB -qd 64 -max-io 256KiB -pattern hot -ring pwritev -baseline pwrite,kernel " +
			"-runs 3 -duration 2s -writers 7 -sync-every 100ms -seed 9 -force -inject eio=0.01,seed=3"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Device != "/dev/x" || o.Size != 512_000_000 || o.PageSize != 8192 || o.QueueDepth != 64 || o.MaxIOBytes != 256<<10 ||
		o.Pattern != bench.Hot || o.Ring != "pwritev" || !slices.Equal(o.Baselines, []string{"pwrite", "kernel"}) ||
		o.Runs != 3 || o.Duration != 2*time.Second || o.Writers != 7 || o.SyncEvery != 100*time.Millisecond ||
		o.Seed != 9 || !o.Force || len(o.Faults) != 1 || o.Inject != "eio=0.01,seed=3" {
		t.Fatalf("parsed: %+v", o)
	}
	o, err = newFlags(false).parse([]string{"-size", "1GiB", "-baseline", "none", "-verify"})
	if err != nil || o.Size != 1<<30 || o.Baselines != nil || !o.Verify {
		t.Fatalf("-size 1GiB -baseline none -verify: %+v, %v", o, err)
	}
	o, err = newFlags(false).parse([]string{"-journal", "/tmp/j"})
	if err != nil || !o.Verify || o.Baselines != nil || o.Journal != "/tmp/j" {
		t.Fatalf("-journal: baselines off and verify on: %+v, %v", o, err)
	}
	if _, err := newFlags(false).parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

// TestBadFlags: each bad value is one error naming it.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args, want string
	}{
		{"-qd 0", "-qd 0"},
		{"-qd lots", `-qd "lots"`},
		{"-qd 5000", "-qd 5000"},
		{"-size huge", `-size "huge"`},
		{"-page-size 4k3", `-page-size "4k3"`},
		{"-max-io -1", `-max-io "-1"`},
		{"-pattern zigzag", `"zigzag"`},
		{"-ring fast", `-ring "fast"`},
		{"-baseline kernel,dd", `"dd"`},
		{"-baseline pwrite,pwrite", "pwrite given twice"},
		{"-runs 0", "-runs 0"},
		{"-fill-gaps -1", "-fill-gaps -1"},
		{"-fill-gaps 2000", "-fill-gaps 2000"},
		{"-iops-limit -5", "-iops-limit -5"},
		{"-cached -pattern hot", "-cached: only with seq, runs or single"},
		{"-scatter -pattern hot", "-scatter: only with seq, runs or single"},
		{"-writers 0 -pattern hot", "-writers 0"},
		{"-duration -1s -pattern hot", "-duration -1s"},
		{"-sync-every 0s -pattern hot", "-sync-every 0s"},
		{"-duration 1s", "-duration 1s: only -pattern hot runs for a duration; -pattern seq dirties a fixed set of pages and times one flush (add -pattern hot, or drop -duration)"},
		{"-writers 2 -pattern runs", "-writers 2: only -pattern hot has writer goroutines; -pattern runs dirties"},
		{"-sync-every 1s", "-sync-every 1s: only -pattern hot syncs at an interval"},
		{"-max-io 3", "-max-io 3: smaller than one page (4.0 KiB): a write carries whole pages; give at least -max-io 4KiB"},
		{"-max-io 5000", "-max-io 5000: not a whole number of 4.0 KiB pages; use -max-io 4KiB or 8KiB"},
		{"-max-io 6KiB -page-size 8KiB", "-max-io 6KiB: smaller than one page (8.0 KiB)"},
		{"-size 0", "-size 0 (0 B): less than one page (4.0 KiB); give at least -size 4KiB, or omit -size for the whole device (1 GiB for a target wbbench makes)"},
		{"-size 1", "-size 1 (1 B): less than one page (4.0 KiB); give at least -size 4KiB, or omit -size"},
		{"-runs x", `-runs "x": not a whole number (wbbench -h lists the flags)`},
		{"-duration 5 -pattern hot", `-duration "5": not a duration (e.g. 500ms, 10s, 1m) (wbbench -h lists the flags)`},
		{"-json=maybe", `-json "maybe": not true or false`},
		{"-seed", "-seed needs a value (wbbench -h lists the flags)"},
		{"-inject eio=2", `"eio=2"`},
		{"-verify -baseline pwrite", "-baseline pwrite with -verify"},
		{"-journal /tmp/j -baseline kernel", "-baseline kernel with -journal"},
		{"-nosuch", "unknown flag -nosuch (wbbench -h lists the flags)"},
		{"extra", `"extra"`},
	} {
		_, err := newFlags(false).parse(strings.Fields(tc.args))
		var ue *bench.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v; want one line mentioning %s", tc.args, err, tc.want)
		}
	}
	f := newFlags(true)
	if _, err := f.parse([]string{"-pattern", "hot"}); err == nil {
		t.Error("sweep -pattern hot was accepted")
	}
	if _, err := newFlags(true).parse([]string{"-nosuch"}); err == nil || !strings.Contains(err.Error(), "unknown flag -nosuch (wbbench sweep -h lists the flags)") {
		t.Errorf("sweep -nosuch: %v", err)
	}
	f = newFlags(true)
	if _, err := f.parse(strings.Fields("-max-io 64KiB,5000")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.sweepLists(4096); err == nil || !strings.Contains(err.Error(), "-max-io 5000: not a whole number of 4.0 KiB pages") {
		t.Errorf("sweep -max-io 64KiB,5000: %v", err)
	}
}

func TestParseList(t *testing.T) {
	num := func(s string) (int64, error) { return parseSize("-x", s, 1) }
	for _, tc := range []struct {
		in   string
		want []int64
	}{
		{"1,2,4,...,128", []int64{1, 2, 4, 8, 16, 32, 64, 128}},
		{"1,2,4,...,100", []int64{1, 2, 4, 8, 16, 32, 64, 100}},
		{"8,16,24,...,48", []int64{8, 16, 24, 32, 40, 48}},
		{"3", []int64{3}},
		{"64KiB,1MiB", []int64{64 << 10, 1 << 20}},
	} {
		got, err := parseList("-x", tc.in, num)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "4,2", "1,...,8", "1,2,...", "1,2,...,...,8", "x"} {
		if _, err := parseList("-x", bad, num); err == nil {
			t.Errorf("parseList(%q) accepted", bad)
		}
	}
}

// TestHelpDefaults: -h states the defaults that are not the flag's zero
// value: runs, and the queue depth the device decides.
func TestHelpDefaults(t *testing.T) {
	code, out, _ := wb(t, "-h")
	if code != 0 || !strings.Contains(out, "(default 5; -pattern hot: 3 periods") {
		t.Fatalf("-h: status %d, does not state the default -runs:\n%s", code, out)
	}
	code, out, _ = wb(t, "sweep", "-h")
	if code != 0 || !strings.Contains(out, "min–max (default 3)") {
		t.Fatalf("sweep -h: status %d, does not state the default -runs:\n%s", code, out)
	}
	if o, err := newFlags(true).parse(nil); err != nil || o.Runs != bench.DefaultSweepRuns {
		t.Fatalf("sweep's default runs: %d, %v", o.Runs, err)
	}
}

// TestVersion: -version (and "version") prints the version and the Go
// release on one line and exits 0, whatever else is on the command line.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"version"}, {"sweep", "-version"}, {"-version", "-pattern", "hot"}} {
		code, out, errOut := wb(t, args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "wbbench ") || !strings.HasSuffix(out, " "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
			t.Fatalf("%v: status %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}
