package uringtrace

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"

	"github.com/wbengine/wbengine/internal/loopdev"
)

// ErrUnavailable: tracefs, its io_uring events or the right to use them
// (root) is missing.
var ErrUnavailable = errors.New("uringtrace: io_uring tracepoints unavailable")

// tracefs is where tracefs is mounted (a variable for tests).
var tracefs = "/sys/kernel/tracing"

const event = "events/io_uring/io_uring_queue_async_work"

var seq atomic.Int64

// Trace records io_uring_queue_async_work in a tracefs instance from
// Start to Stop.
type Trace struct {
	dir string
}

// Start makes a tracefs instance recording io_uring_queue_async_work
// with thread group ids.
func Start() (*Trace, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: needs root", ErrUnavailable)
	}
	if _, err := os.Stat(filepath.Join(tracefs, event)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	removeStale()
	dir := filepath.Join(tracefs, "instances", fmt.Sprintf("%s%d-%d", instancePrefix, os.Getpid(), seq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: make instance: %v", ErrUnavailable, err)
	}
	t := &Trace{dir: dir}
	for _, w := range []struct{ file, val string }{
		{"buffer_size_kb", "8192"},
		{"options/record-tgid", "1"},
		{filepath.Join(event, "enable"), "1"},
	} {
		if err := os.WriteFile(filepath.Join(dir, w.file), []byte(w.val), 0); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, w.file, err)
		}
	}
	return t, nil
}

// instancePrefix names this package's tracefs instances: the prefix, the
// pid of the process that made one, a dash and a sequence number.
const instancePrefix = "wbengine-"

// removeStale removes the instances of processes that are gone (a test
// killed between Start and Stop), so none is left behind for long.
func removeStale() {
	for _, d := range loopdev.Stale(filepath.Join(tracefs, "instances"), instancePrefix) {
		os.Remove(d) // tracefs removes an instance with rmdir
	}
}

// Punts is what a Trace saw of the calling process: requests handed to
// io-wq, by opcode name as the kernel prints it ("WRITEV", "FSYNC", …).
type Punts map[string]int

// Stop ends the recording, counts the calling process's punts and
// removes the instance. Lost is true when the buffer overran (the
// counts are then too low). A second Stop reports an error and does
// nothing else.
func (t *Trace) Stop() (p Punts, lost bool, err error) {
	defer os.Remove(t.dir)
	os.WriteFile(filepath.Join(t.dir, event, "enable"), []byte("0"), 0)
	f, err := os.Open(filepath.Join(t.dir, "trace"))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	p, lost, err = parse(bufio.NewScanner(f), os.Getpid())
	return p, lost, err
}

// A trace line with record-tgid:
//
//	zz.test-1234    (   1230) [001] ..... 12.345: io_uring_queue_async_work: ring …, opcode WRITEV, flags …
var (
	lineRE = regexp.MustCompile(`-\d+\s+\(\s*(\d+|-+)\)\s+\[\d+\].*io_uring_queue_async_work:.* opcode (\w+),`)
	lostRE = regexp.MustCompile(`^#.*entries-in-buffer/entries-written: (\d+)/(\d+)`)
)

func parse(sc *bufio.Scanner, pid int) (Punts, bool, error) {
	p := Punts{}
	lost := false
	want := strconv.Itoa(pid)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := lostRE.FindStringSubmatch(line); m != nil {
			lost = m[1] != m[2]
			continue
		}
		if m := lineRE.FindStringSubmatch(line); m != nil && m[1] == want {
			p[m[2]]++
		}
	}
	return p, lost, sc.Err()
}

// Writes is how many writes were punted (WRITEV, WRITE_FIXED,
// WRITEV_FIXED, WRITE).
func (p Punts) Writes() int {
	return p["WRITEV"] + p["WRITE_FIXED"] + p["WRITEV_FIXED"] + p["WRITE"]
}
