package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/wbengine/wbengine/bench"
)

// benchMain is wbbench without a subcommand: one flush (or hot)
// benchmark, reported as text or JSON.
func benchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags(false)
	o, err := f.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout, f)
		return exitOK
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, bench.BuildVersion())
		return exitOK
	}
	if err != nil {
		errorf(stderr, "%v", err)
		return exitUsage
	}
	o.CommandLine = commandLine(args)
	prof, err := openProfiles(f.cpuProfile, f.trace)
	if err != nil {
		errorf(stderr, "%v", err)
		return exitUsage
	}
	defer prof.close()
	u := newUI(stdout, stderr, f.json)
	o.Logf = u.notice
	o.Monitor = u.mon
	b, err := bench.Open(o)
	if err != nil {
		prof.remove()
		return u.openFailed(err)
	}
	u.startProgress()
	var rep *bench.Report
	if err = prof.start(); err == nil {
		rep, err = b.Run(ctx)
		if perr := prof.stop(); err == nil && perr != nil {
			err = perr
		}
	}
	u.stopProgress()
	tgt := *b.Target()
	closeErr := b.Close()
	if ctx.Err() != nil {
		return u.interrupted(&tgt, closeErr)
	}
	if err != nil {
		errorf(stderr, "%v", err)
		return exitFailed
	}
	if err := u.output(rep); err != nil {
		errorf(stderr, "%v", err)
		return exitFailed
	}
	if closeErr != nil {
		errorf(stderr, "cleaning up: %v", closeErr)
		return exitFailed
	}
	if len(rep.Errors) > 0 {
		errorf(stderr, "%d error(s) during the run; the first: %s", len(rep.Errors), rep.Errors[0])
		return exitFailed
	}
	return exitOK
}

// sweepMain is wbbench sweep.
func sweepMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags(true)
	o, err := f.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout, f)
		return exitOK
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, bench.BuildVersion())
		return exitOK
	}
	o.CommandLine = commandLine(append([]string{"sweep"}, args...))
	var qds, maxIOs []int
	if err == nil {
		qds, maxIOs, err = f.sweepLists(o.PageSize)
	}
	if err != nil {
		errorf(stderr, "%v", err)
		return exitUsage
	}
	if f.plot != "" {
		if err := checkPlotPath(f.plot); err != nil {
			errorf(stderr, "%v", err)
			return exitUsage
		}
	}
	prof, err := openProfiles(f.cpuProfile, f.trace)
	if err != nil {
		errorf(stderr, "%v", err)
		return exitUsage
	}
	defer prof.close()
	o.QueueDepth = qds[0]
	if len(maxIOs) > 0 {
		o.MaxIOBytes = maxIOs[0]
	}
	u := newUI(stdout, stderr, f.json)
	o.Logf = u.notice
	o.Monitor = u.mon
	b, err := bench.Open(o)
	if err != nil {
		prof.remove()
		return u.openFailed(err)
	}
	u.startProgress()
	var rep *bench.SweepReport
	if err = prof.start(); err == nil {
		rep, err = b.Sweep(ctx, qds, maxIOs)
		if perr := prof.stop(); err == nil && perr != nil {
			err = perr
		}
	}
	u.stopProgress()
	tgt := *b.Target()
	closeErr := b.Close()
	if ctx.Err() != nil {
		return u.interrupted(&tgt, closeErr)
	}
	if err != nil {
		errorf(stderr, "%v", err)
		if bench.IsUsage(err) {
			return exitUsage
		}
		return exitFailed
	}
	if err := u.output(rep); err != nil {
		errorf(stderr, "%v", err)
		return exitFailed
	}
	if f.plot != "" {
		files, err := rep.Plot(f.plot)
		if err != nil {
			errorf(stderr, "%v", err)
			return exitFailed
		}
		if !f.json {
			fmt.Fprintf(stdout, "\nplot: %s\n", strings.Join(files, ", "))
		}
	}
	if closeErr != nil {
		errorf(stderr, "cleaning up: %v", closeErr)
		return exitFailed
	}
	if len(rep.Errors) > 0 {
		errorf(stderr, "%d error(s) during the sweep; the first: %s", len(rep.Errors), rep.Errors[0])
		return exitFailed
	}
	return exitOK
}

// checkPlotPath checks, before the sweep runs, that -plot can be
// written: a known extension, and a directory that exists and takes a
// new file (the PNG beside it too).
func checkPlotPath(path string) error {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg", ".png", ".pdf":
	default:
		return usage2("-plot %s: want a file ending in .svg, .png or .pdf (an SVG or PDF gets a PNG beside it)", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return usage2("-plot %s: the directory %s does not exist; create it (mkdir -p %s) or plot elsewhere", path, dir, dir)
	case err != nil:
		return usage2("-plot %s: %v", path, err)
	case !fi.IsDir():
		return usage2("-plot %s: %s is not a directory", path, dir)
	}
	tmp, err := os.CreateTemp(dir, ".wbbench-plot-*")
	if err != nil {
		return usage2("-plot %s: cannot write in %s: %v", path, dir, err)
	}
	tmp.Close()
	os.Remove(tmp.Name())
	return nil
}

// sweepLists parses sweep's -qd and -max-io lists.
func (f *cliFlags) sweepLists(ps int) (qds, maxIOs []int, err error) {
	qd, err := parseList("-qd", f.qd, func(s string) (int64, error) {
		n, err := parseInt("-qd", s, 1, 4096)
		return int64(n), err
	})
	if err != nil {
		return nil, nil, err
	}
	for _, q := range qd {
		qds = append(qds, int(q))
	}
	if f.maxIO == "" {
		return qds, nil, nil
	}
	m, err := parseList("-max-io", f.maxIO, func(s string) (int64, error) {
		return parseMaxIO(s, int64(ps))
	})
	if err != nil {
		return nil, nil, err
	}
	for _, v := range m {
		maxIOs = append(maxIOs, int(v))
	}
	return qds, maxIOs, nil
}

// ui is wbbench's output: results on stdout, notices and errors on
// stderr, and on a terminal (and not with -json) a progress line on
// stdout, redrawn in place once the work has taken about 2 s.
type ui struct {
	stdout, stderr io.Writer
	json           bool
	mon            *bench.Monitor

	mu    sync.Mutex // serialises writes to the terminal; protects drawn
	tty   *os.File   // stdout when it is a terminal and progress is wanted
	drawn bool       // a progress line is on the screen
	stop  chan struct{}
	done  chan struct{}
}

// progressAfter is how long work runs before the progress line appears.
const progressAfter = 2 * time.Second

func newUI(stdout, stderr io.Writer, jsonOut bool) *ui {
	u := &ui{stdout: stdout, stderr: stderr, json: jsonOut, mon: &bench.Monitor{}}
	if f, ok := stdout.(*os.File); ok && !jsonOut && term.IsTerminal(int(f.Fd())) {
		u.tty = f
	}
	return u
}

func (u *ui) notice(format string, args ...any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.clearLocked()
	fmt.Fprintf(u.stderr, "wbbench: "+format+"\n", args...)
}

func (u *ui) clearLocked() {
	if u.drawn {
		fmt.Fprint(u.tty, "\r\x1b[K")
		u.drawn = false
	}
}

func (u *ui) startProgress() {
	if u.tty == nil {
		return
	}
	u.stop, u.done = make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(u.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-u.stop:
				return
			case <-tick.C:
			}
			if time.Since(start) < progressAfter {
				continue
			}
			line := fmt.Sprintf("[%s] %s", time.Since(start).Round(time.Second), u.mon.Line())
			if w, _, err := term.GetSize(int(u.tty.Fd())); err == nil && w > 1 && len([]rune(line)) >= w {
				line = string([]rune(line)[:w-1])
			}
			u.mu.Lock()
			fmt.Fprint(u.tty, "\r\x1b[K"+line)
			u.drawn = true
			u.mu.Unlock()
		}
	}()
}

func (u *ui) stopProgress() {
	if u.stop == nil {
		return
	}
	close(u.stop)
	<-u.done
	u.stop = nil
	u.mu.Lock()
	u.clearLocked()
	u.mu.Unlock()
}

// openFailed reports a failed bench.Open: a usage error or a refused
// target exits 2 (nothing was written).
func (u *ui) openFailed(err error) int {
	errorf(u.stderr, "%v", err)
	if bench.IsUsage(err) {
		return exitUsage
	}
	return exitFailed
}

func (u *ui) interrupted(t *bench.Target, closeErr error) int {
	msg := "interrupted"
	if t.Made != "" {
		msg += "; removed " + t.Path + " (" + t.Made + ")"
	}
	if closeErr != nil {
		msg += "; cleaning up failed: " + closeErr.Error()
	}
	errorf(u.stderr, "%s", msg)
	return exitInterrupted
}

// textReport is a report that can write itself for people.
type textReport interface{ WriteText(io.Writer) error }

func (u *ui) output(rep textReport) error {
	if u.json {
		enc := json.NewEncoder(u.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(u.stdout)
}
