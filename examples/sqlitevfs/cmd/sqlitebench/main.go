// Command sqlitebench runs the same SQLite workloads on SQLite's own OS
// VFS over ext4 and on the wbengine VFS, each on a loop device of its
// own over a /dev/shm file of the same size (root; it makes, mounts,
// unmounts and removes them), and prints medians of alternated runs.
//
//	sqlitebench [-runs 5] [-commits 2000] [-bulk 256MiB] [-tx 16MiB] [-modes delete,wal] [-cpuprofile DIR]
//
// Workloads, each on a fresh database, with locking_mode=EXCLUSIVE, the
// same SQLite cache_size and page size 4096:
//   - commits: single-row transactions (INSERT of a 100-byte row) under
//     synchronous=FULL: commits/s and CPU per commit.
//   - bulk: -bulk bytes of 1 KiB rows in transactions of -tx bytes under
//     synchronous=FULL: MB/s of row data.
//
// CPU is this process's (getrusage: SQLite, the Go runtime, the engine
// and its io_uring workers) and, separately, the whole machine's busy
// time from /proc/stat over the run, which also counts the kernel's
// threads (the loop devices' workers, ext4's journal thread) and anything
// else running: on a shared machine it is noisy.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/wbengine/wbengine/examples/sqlitevfs"
	"github.com/wbengine/wbengine/internal/loopdev"
	"github.com/wbengine/wbengine/pages"
)

type config struct {
	runs       int
	commits    int
	bulk       int64
	tx         int64
	modes      []string
	devSize    int64
	cacheKiB   int // SQLite's cache_size, KiB
	wbCache    int // wbengine cache pages
	cpuprofile string
}

func main() {
	var cfg config
	var modes string
	flag.IntVar(&cfg.runs, "runs", 5, "alternated runs per system and workload")
	flag.IntVar(&cfg.commits, "commits", 2000, "single-row transactions per commits run")
	cfg.bulk, cfg.tx, cfg.devSize = 256<<20, 16<<20, 2<<30
	flag.Var((*size)(&cfg.bulk), "bulk", "bytes of row data per bulk run (256MiB)")
	flag.Var((*size)(&cfg.tx), "tx", "bytes of row data per bulk transaction (16MiB)")
	flag.StringVar(&modes, "modes", "delete,wal", "journal modes")
	flag.Var((*size)(&cfg.devSize), "dev-size", "size of each loop device (2GiB)")
	flag.IntVar(&cfg.cacheKiB, "sqlite-cache", 64<<10, "SQLite's cache_size in KiB, both systems")
	flag.IntVar(&cfg.wbCache, "wb-cache", 65536, "wbengine cache pages (4 KiB)")
	flag.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of each system's runs per workload into this directory")
	flag.Parse()
	cfg.modes = strings.Split(modes, ",")
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "sqlitebench:", err)
		os.Exit(1)
	}
}

// system is one side of the comparison.
type system interface {
	name() string
	// fresh returns a connection to a new, empty database.
	fresh(mode string, cfg config) (*sqlite3.Conn, error)
	// done closes the connection and whatever fresh opened.
	done(c *sqlite3.Conn) error
	stats() string
}

type result struct {
	wall     time.Duration
	cpu      time.Duration // this process
	sysBusy  time.Duration // the machine, /proc/stat
	ops      int64         // commits, or bytes of row data
	engStats string
}

func run(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (loop devices, mkfs.ext4, mount)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return errors.New("mkfs.ext4 not found (apt-get install e2fsprogs)")
	}
	ext, err := newExt4(cfg.devSize)
	if err != nil {
		return err
	}
	defer ext.close()
	wb, err := newWB(cfg)
	if err != nil {
		return err
	}
	defer wb.close()
	// An interrupt still unmounts and removes what was made.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "sqlitebench: interrupted; cleaning up")
		ext.close()
		wb.close()
		os.Exit(1)
	}()
	fmt.Printf("ext4: %s on %s (loop over %s); wbengine: %s (loop over %s); %d MiB each, 4096-byte sectors\n",
		ext.mnt, ext.dev.Path, ext.dev.File, wb.dev.Path, wb.dev.File, cfg.devSize>>20)
	fmt.Printf("SQLite cache_size %d KiB on both; wbengine cache %d MiB; ext4 has the kernel page cache; page size 4096; locking_mode=EXCLUSIVE; synchronous=FULL\n",
		cfg.cacheKiB, cfg.wbCache*4096>>20)
	systems := []system{ext, wb}
	type key struct{ workload, mode, sys string }
	all := map[key][]result{}
	for _, mode := range cfg.modes {
		for _, w := range []string{"commits", "bulk"} {
			var profs []*os.File
			for r := 0; r < cfg.runs; r++ {
				order := systems
				if r%2 == 1 {
					order = []system{systems[1], systems[0]}
				}
				for _, s := range order {
					var pf *os.File
					if cfg.cpuprofile != "" {
						pf, err = os.Create(filepath.Join(cfg.cpuprofile, fmt.Sprintf("%s-%s-%s-%d.pprof", w, mode, s.name(), r)))
						if err != nil {
							return err
						}
						profs = append(profs, pf)
						pprof.StartCPUProfile(pf)
					}
					res, err := runOne(s, w, mode, cfg)
					if pf != nil {
						pprof.StopCPUProfile()
					}
					if err != nil {
						return fmt.Errorf("%s %s on %s: %w", w, mode, s.name(), err)
					}
					all[key{w, mode, s.name()}] = append(all[key{w, mode, s.name()}], res)
					fmt.Printf("run %d %-7s %-6s %-8s %s\n", r, w, mode, s.name(), res.line(w))
				}
			}
			for _, f := range profs {
				f.Close()
			}
		}
	}
	fmt.Println()
	fmt.Printf("medians of %d alternated runs (min–max in brackets)\n", cfg.runs)
	fmt.Printf("%-8s %-6s %-8s %26s %26s %26s\n", "workload", "mode", "system", "rate", "CPU/op (process)", "CPU/op (machine)")
	for _, mode := range cfg.modes {
		for _, w := range []string{"commits", "bulk"} {
			for _, s := range systems {
				rs := all[key{w, mode, s.name()}]
				fmt.Printf("%-8s %-6s %-8s %s\n", w, mode, s.name(), summary(w, rs))
			}
		}
	}
	fmt.Println()
	fmt.Println("wbengine Stats of the last run of each:")
	for _, mode := range cfg.modes {
		for _, w := range []string{"commits", "bulk"} {
			rs := all[key{w, mode, "wbengine"}]
			fmt.Printf("%-8s %-6s %s\n", w, mode, rs[len(rs)-1].engStats)
		}
	}
	return nil
}

func runOne(s system, workload, mode string, cfg config) (result, error) {
	c, err := s.fresh(mode, cfg)
	if err != nil {
		return result{}, err
	}
	if err := c.Exec(`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		s.done(c)
		return result{}, err
	}
	ins, _, err := c.Prepare(`INSERT INTO t(v) VALUES (?)`)
	if err != nil {
		s.done(c)
		return result{}, err
	}
	var res result
	row := make([]byte, 1024)
	for i := range row {
		row[i] = byte(i*7 + 3)
	}
	cpu0, busy0 := cpuNow(), machineBusy()
	t0 := time.Now()
	switch workload {
	case "commits":
		for i := 0; i < cfg.commits; i++ {
			ins.BindBlob(1, row[:100])
			if err = ins.Exec(); err != nil {
				break
			}
		}
		res.ops = int64(cfg.commits)
	case "bulk":
		perTx := cfg.tx / int64(len(row))
		total := cfg.bulk / int64(len(row))
		for done := int64(0); done < total && err == nil; {
			if err = c.Exec(`BEGIN`); err != nil {
				break
			}
			for n := int64(0); n < perTx && done < total; n++ {
				ins.BindBlob(1, row)
				if err = ins.Exec(); err != nil {
					break
				}
				done++
			}
			if err == nil {
				err = c.Exec(`COMMIT`)
			}
		}
		res.ops = cfg.bulk
	}
	res.wall = time.Since(t0)
	res.cpu = cpuNow() - cpu0
	res.sysBusy = machineBusy() - busy0
	ins.Close()
	res.engStats = s.stats()
	if derr := s.done(c); err == nil {
		err = derr
	}
	return res, err
}

func (r result) line(workload string) string {
	if workload == "commits" {
		return fmt.Sprintf("%8.0f commits/s  %6.1f µs CPU/commit (process)  %6.1f µs (machine)  %v",
			float64(r.ops)/r.wall.Seconds(), us(r.cpu)/float64(r.ops), us(r.sysBusy)/float64(r.ops), r.wall.Round(time.Millisecond))
	}
	return fmt.Sprintf("%8.1f MB/s  %6.2f s CPU/GB (process)  %6.2f s (machine)  %v",
		float64(r.ops)/r.wall.Seconds()/1e6, r.cpu.Seconds()/(float64(r.ops)/1e9), r.sysBusy.Seconds()/(float64(r.ops)/1e9), r.wall.Round(time.Millisecond))
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func summary(workload string, rs []result) string {
	rate := func(r result) float64 {
		if workload == "commits" {
			return float64(r.ops) / r.wall.Seconds()
		}
		return float64(r.ops) / r.wall.Seconds() / 1e6
	}
	per := func(d time.Duration, r result) float64 {
		if workload == "commits" {
			return us(d) / float64(r.ops)
		}
		return d.Seconds() / (float64(r.ops) / 1e9)
	}
	var rates, cpus, busys []float64
	for _, r := range rs {
		rates = append(rates, rate(r))
		cpus = append(cpus, per(r.cpu, r))
		busys = append(busys, per(r.sysBusy, r))
	}
	unit, cunit := "commits/s", "µs"
	if workload == "bulk" {
		unit, cunit = "MB/s", "s/GB"
	}
	return fmt.Sprintf("%26s %26s %26s", med(rates, "%.1f")+" "+unit, med(cpus, "%.2f")+" "+cunit, med(busys, "%.2f")+" "+cunit)
}

func med(xs []float64, f string) string {
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf(f+" ["+f+"–"+f+"]", m, s[0], s[len(s)-1])
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the machine's non-idle CPU time so far (/proc/stat).
func machineBusy() time.Duration {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fs := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal …
	var busy int64
	for i, v := range fs[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is counted in user already
			break
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// ext4 is SQLite's default VFS over ext4 on a loop device.
type ext4 struct {
	dev *loopdev.Dev
	mnt string
	cur string
}

func newExt4(size int64) (*ext4, error) {
	d, err := loopdev.Create("", size, 4096)
	if err != nil {
		return nil, err
	}
	e := &ext4{dev: d}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", d.Path).CombinedOutput(); err != nil {
		d.Remove()
		return nil, fmt.Errorf("mkfs.ext4 %s: %v: %s", d.Path, err, out)
	}
	if e.mnt, err = os.MkdirTemp("", "sqlitebench-ext4-"); err != nil {
		d.Remove()
		return nil, err
	}
	if out, err := exec.Command("mount", "-t", "ext4", d.Path, e.mnt).CombinedOutput(); err != nil {
		os.Remove(e.mnt)
		d.Remove()
		return nil, fmt.Errorf("mount %s: %v: %s", d.Path, err, out)
	}
	return e, nil
}

func (e *ext4) name() string { return "ext4" }

func (e *ext4) fresh(mode string, cfg config) (*sqlite3.Conn, error) {
	for _, suffix := range []string{"", "-journal", "-wal"} {
		os.Remove(filepath.Join(e.mnt, "bench.db"+suffix))
	}
	e.cur = filepath.Join(e.mnt, "bench.db")
	c, err := sqlite3.Open("file:" + e.cur)
	if err != nil {
		return nil, err
	}
	if err := setup(c, mode, cfg); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (e *ext4) done(c *sqlite3.Conn) error { return c.Close() }
func (e *ext4) stats() string              { return "" }

func (e *ext4) close() {
	if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "umount %s: %v: %s\n", e.mnt, err, out)
	} else {
		os.Remove(e.mnt)
	}
	if err := e.dev.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// setup sets what both systems share; it checks the journal mode took.
func setup(c *sqlite3.Conn, mode string, cfg config) error {
	for _, p := range []string{"locking_mode=EXCLUSIVE", "page_size=4096", "journal_mode=" + mode, "synchronous=FULL", fmt.Sprintf("cache_size=-%d", cfg.cacheKiB)} {
		s, _, err := c.Prepare("PRAGMA " + p)
		if err != nil {
			return err
		}
		got := ""
		if s.Step() {
			got = s.ColumnText(0)
		}
		s.Close()
		if strings.HasPrefix(p, "journal_mode") && got != mode {
			return fmt.Errorf("PRAGMA %s returned %q", p, got)
		}
	}
	return nil
}

// wb is the wbengine VFS on a loop device.
type wb struct {
	dev *loopdev.Dev
	v   *sqlitevfs.VFS
}

func newWB(cfg config) (*wb, error) {
	d, err := loopdev.Create("", cfg.devSize, 4096)
	if err != nil {
		return nil, err
	}
	return &wb{dev: d}, nil
}

func (w *wb) name() string { return "wbengine" }

// regions: the database gets what the journal and the WAL leave; the
// WAL region (256 MiB) is larger than any bulk transaction (-tx).
func (w *wb) regions(cfg config) []sqlitevfs.Region {
	wal, journal := int64(256<<20), int64(128<<20)
	return sqlitevfs.DatabaseRegions("bench.db", cfg.devSize-wal-journal-1<<20, journal, wal)
}

func (w *wb) fresh(mode string, cfg config) (*sqlite3.Conn, error) {
	if cfg.tx+8<<20 > 256<<20 {
		return nil, fmt.Errorf("-tx %d: the WAL region is 256 MiB", cfg.tx)
	}
	if err := sqlitevfs.Format(w.dev.Path, w.regions(cfg), sqlitevfs.FormatOptions{Force: true}); err != nil {
		return nil, err
	}
	v, err := sqlitevfs.Open(w.dev.Path, sqlitevfs.Options{Cache: pages.Config{PageSize: 4096, Capacity: cfg.wbCache}})
	if err != nil {
		return nil, err
	}
	w.v = v
	c, err := v.OpenDB("bench.db", sqlitevfs.DBOptions{JournalMode: mode, Exclusive: true, CacheSize: -cfg.cacheKiB})
	if err != nil {
		v.Close()
		return nil, err
	}
	return c, nil
}

func (w *wb) stats() string {
	s := w.v.Stats()
	return fmt.Sprintf("pages written %d in %d writes (%.1f pages/write), syncs %d, sync rounds %d, flushes %d, read misses %d, reclaims %d, evictions %d, backend %s",
		s.PagesWritten, s.Writes, s.PagesPerWrite, s.Syncs, s.SyncRounds, s.Flushes, s.ReadMisses, s.Reclaims, s.Evictions, s.Backend)
}

func (w *wb) done(c *sqlite3.Conn) error {
	err := c.Close()
	if cerr := w.v.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *wb) close() {
	if err := w.dev.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// size is a flag.Value: a byte count with an optional binary suffix
// (KiB, MiB, GiB).
type size int64

func (s *size) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *size) Set(v string) error {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}} {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("bad size %q", v)
			}
			*s = size(n << u.shift)
			return nil
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("bad size %q", v)
	}
	*s = size(n)
	return nil
}
