package uringtrace

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Lines as the 6.18 kernel prints them (record-tgid on), one from
// another process, one of another event, and the header.
const sample = `# tracer: nop
#
# entries-in-buffer/entries-written: 4/4   #P:2
#
#                                      _-----=> irqs-off/BH-disabled
           <...>-4242    (   4240) [001] ..... 101.000001: io_uring_queue_async_work: ring 00000000a1, request 00000000b2, user_data 0x7, opcode WRITEV, flags 0x200040, normal queue, work 00000000c3
     iou-wrk-424-4243    (   4240) [000] ..... 101.000002: io_uring_queue_async_work: ring 00000000a1, request 00000000b4, user_data 0x8, opcode FSYNC, flags 0x40, normal queue, work 00000000c5
             fio-999     (    999) [000] ..... 101.000003: io_uring_queue_async_work: ring 00000000d1, request 00000000d2, user_data 0x1, opcode WRITEV, flags 0x0, normal queue, work 00000000d3
        zz.test-4241     (   4240) [001] ..... 101.000004: io_uring_queue_async_work: ring 00000000a1, request 00000000b6, user_data 0x9, opcode WRITEV_FIXED, flags 0x200040, hashed queue, work 00000000c7
`

func TestParse(t *testing.T) {
	p, lost, err := parse(bufio.NewScanner(strings.NewReader(sample)), 4240)
	if err != nil {
		t.Fatal(err)
	}
	if lost || p["WRITEV"] != 1 || p["FSYNC"] != 1 || p["WRITEV_FIXED"] != 1 || len(p) != 3 || p.Writes() != 2 {
		t.Errorf("parse = %v, lost %v; want WRITEV 1, FSYNC 1, WRITEV_FIXED 1 of tgid 4240 (writes 2), not lost", p, lost)
	}
	over := strings.Replace(sample, "4/4", "4/9", 1)
	if _, lost, _ := parse(bufio.NewScanner(strings.NewReader(over)), 4240); !lost {
		t.Error("entries-written above entries-in-buffer: lost false, want true")
	}
}

// TestStartStop: on a machine with the tracepoint (root), a trace starts,
// stops with no punts of its own, leaves no instance behind, and a stale
// instance of a process that is gone is removed by the next Start.
func TestStartStop(t *testing.T) {
	tr, err := Start()
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	p, lost, err := tr.Stop()
	if err != nil || lost || p.Writes() != 0 {
		t.Fatalf("Stop = %v, lost %v, %v; want no writes, nothing lost", p, lost, err)
	}
	if _, err := os.Stat(tr.dir); !os.IsNotExist(err) {
		t.Fatalf("instance %s left after Stop: %v", tr.dir, err)
	}
	if _, _, err := tr.Stop(); err == nil {
		t.Error("a second Stop reported no error")
	}
	// A process id that is not running: above the kernel's pid_max.
	stale := filepath.Join(tracefs, "instances", instancePrefix+"99999999-1")
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	tr, err = Start()
	if err != nil {
		os.Remove(stale)
		t.Fatal(err)
	}
	tr.Stop()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		os.Remove(stale)
		t.Fatalf("stale instance %s not removed by Start: %v", stale, err)
	}
}
