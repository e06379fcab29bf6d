package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// fillSrc fills the baselines' source buffer with the layout's pages,
// page at position pos of the layout at byte pos × page size: the same
// contents the engine's cache gets.
func (b *Bench) fillSrc() {
	ps := b.opts.PageSize
	b.layout.Each(func(pos int, index uint64) {
		b.fill(b.src.b[pos*ps:(pos+1)*ps], index, b.cycle)
	})
}

// kernelCycle is the kernel's own writeback of the same dirty set:
// buffered pwrite of each extent into the device's page cache (the
// dirtying), then a timed fdatasync (the flush). BLKFLSBUF afterwards
// drops the device's page cache, so the next system starts clean. I/Os
// are the device's own count of writes (/sys/block/DEV/stat).
func (b *Bench) kernelCycle(ctx context.Context) (Sample, error) {
	ps := int64(b.opts.PageSize)
	fd, err := openTarget(b.target.Path, false)
	if err != nil {
		return Sample{}, fmt.Errorf("kernel: %w", err)
	}
	defer closeFd(fd)
	dm := b.devMarks()
	t0 := time.Now()
	b.status("kernel: dirtying")
	b.fillSrc()
	var done atomic.Int64
	b.statusFunc(func() string {
		return fmt.Sprintf("kernel: buffered pwrite %d%%", 100*done.Load()/int64(b.layout.Pages))
	})
	pos := int64(0)
	for _, e := range b.layout.Extents {
		if ctx.Err() != nil {
			return Sample{}, ctxErr(ctx)
		}
		n := int64(e.Len) * ps
		if err := pwriteAll(fd, b.src.b[pos*ps:pos*ps+n], int64(e.Start)*ps); err != nil {
			return Sample{}, fmt.Errorf("kernel: %w", err)
		}
		pos += int64(e.Len)
		done.Store(pos)
	}
	b.status("kernel: fdatasync")
	dm.timed()
	t1, cpu0 := time.Now(), cpuTimes()
	err = fdatasync(fd)
	t2, cpu1 := time.Now(), cpuTimes()
	dm.end()
	if err != nil {
		return Sample{}, fmt.Errorf("kernel: %w", err)
	}
	if err := dropCache(fd); err != nil {
		return Sample{}, fmt.Errorf("kernel: %w", err)
	}
	s := Sample{
		Bytes:        int64(b.layout.Pages) * ps,
		Pages:        int64(b.layout.Pages),
		Seconds:      t2.Sub(t1).Seconds(),
		TotalSeconds: t2.Sub(t0).Seconds(),
	}
	s.setCPU(cpu0, cpu1)
	s.setDevice(dm.deviceIO())
	if s.Device != nil {
		s.IOs = s.Device.WriteIOs
	}
	return s, nil
}

// pwriteCycle is what one writes by hand: the engine's writes (each
// extent cut at MaxIOBytes), each one O_DIRECT pwritev from the source
// buffer, issued by QueueDepth goroutines, then fdatasync where the
// target has a volatile write cache (as the engine's Sync flushes). The
// timed flush is the writes and the fdatasync; latency is per pwritev.
func (b *Bench) pwriteCycle(ctx context.Context, qd, maxIO int) (Sample, error) {
	ps := int64(b.opts.PageSize)
	fd, err := openTarget(b.target.Path, true)
	if err != nil {
		return Sample{}, fmt.Errorf("pwrite: %w", err)
	}
	defer closeFd(fd)
	writes := b.layout.Writes(uint64(maxIO) / uint64(ps))
	dm := b.devMarks()
	t0 := time.Now()
	b.status("pwrite: dirtying")
	b.fillSrc()
	var next, done atomic.Int64
	b.statusFunc(func() string {
		return fmt.Sprintf("pwrite: %d%% of %s writes", 100*done.Load()/int64(len(writes)), humanize.Comma(int64(len(writes))))
	})
	hists := make([]*hdr.Histogram, qd)
	errs := make([]error, qd)
	var wg sync.WaitGroup
	dm.timed()
	t1, cpu0 := time.Now(), cpuTimes()
	for g := range qd {
		hists[g] = newHist()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(writes)) || ctx.Err() != nil {
					return
				}
				w := writes[i]
				buf := b.src.b[int64(w.Pos)*ps : int64(w.Pos+w.Len)*ps]
				ts := time.Now()
				if err := pwriteAll(fd, buf, int64(w.Start)*ps); err != nil {
					errs[g] = err
					return
				}
				_ = hists[g].RecordValue(min(max(int64(time.Since(ts)), latMin), latMax))
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Sample{}, fmt.Errorf("pwrite: %w", err)
	}
	if ctx.Err() != nil {
		return Sample{}, ctxErr(ctx)
	}
	if b.target.NeedsFlush {
		if err := fdatasync(fd); err != nil {
			return Sample{}, fmt.Errorf("pwrite: %w", err)
		}
	}
	t2, cpu1 := time.Now(), cpuTimes()
	dm.end()
	all := newHist()
	for _, h := range hists {
		all.Merge(h)
	}
	s := Sample{
		Bytes:        int64(b.layout.Pages) * ps,
		Pages:        int64(b.layout.Pages),
		Seconds:      t2.Sub(t1).Seconds(),
		TotalSeconds: t2.Sub(t0).Seconds(),
		IOs:          int64(len(writes)),
		Latency:      latencyOf(all),
	}
	s.setCPU(cpu0, cpu1)
	s.setDevice(dm.deviceIO())
	return s, nil
}

// fioArgs is the fio command line for the layout at queue depth qd and
// I/O size maxIO: its io_uring engine, O_DIRECT, registered buffers and
// file, submitting in batches of qd/4 like the engine, over the same
// region of the same target, with end_fsync where the target has a
// volatile cache.
//
// seq is exact: the whole region in maxIO writes. fio cannot replay a
// given list of offsets at a queue depth above 1 and count it right (its
// iolog replay leaves the last iodepth-1 completions out of its
// numbers), so single and runs are fio's own random writes of the same
// shape: single writes as many one-page blocks as the pattern has pages,
// runs as many writes as the engine issues, of 1 to 32 pages (capped at
// maxIO), at random page-aligned offsets, never writing a block twice.
func (b *Bench) fioArgs(qd, maxIO int) (args []string, note string) {
	ps := b.opts.PageSize
	args = []string{
		"--name=wbbench", "--filename=" + b.target.Path,
		"--ioengine=io_uring", "--direct=1",
		"--iodepth=" + strconv.Itoa(qd),
		"--iodepth_batch_submit=" + strconv.Itoa(max(1, qd/4)),
		"--iodepth_batch_complete_min=1",
		"--iodepth_batch_complete_max=" + strconv.Itoa(qd),
		"--fixedbufs=1", "--registerfiles=1",
		"--offset=0", "--size=" + strconv.FormatInt(int64(b.n)*int64(ps), 10),
		"--randseed=" + strconv.FormatUint(b.opts.Seed, 10),
		"--output-format=json",
		// Fixed contents ("WBENCH00" repeated) rather than fio's random
		// buffers, so nothing fio leaves on the device can look like a
		// file-system signature to the next run's safety check.
		"--buffer_pattern=0x5742454e43483030",
	}
	if b.target.NeedsFlush {
		args = append(args, "--end_fsync=1")
	}
	shape, note := rowOf(b.layout.Pattern).fio(b.layout, ps, maxIO)
	args = append(args, shape...)
	return args, note
}

// fioJSON is the part of fio's --output-format=json that is read.
type fioJSON struct {
	Jobs []struct {
		Error      int     `json:"error"`
		JobRuntime int64   `json:"job_runtime"` // ms
		UsrCPU     float64 `json:"usr_cpu"`     // % of job_runtime
		SysCPU     float64 `json:"sys_cpu"`
		Write      struct {
			IOBytes  int64 `json:"io_bytes"`
			Runtime  int64 `json:"runtime"` // ms
			TotalIOs int64 `json:"total_ios"`
			ClatNs   struct {
				N          int64              `json:"N"`
				Min        float64            `json:"min"`
				Max        float64            `json:"max"`
				Mean       float64            `json:"mean"`
				Stddev     float64            `json:"stddev"`
				Percentile map[string]float64 `json:"percentile"`
			} `json:"clat_ns"`
		} `json:"write"`
		IodepthSubmit   map[string]float64 `json:"iodepth_submit"`
		IodepthComplete map[string]float64 `json:"iodepth_complete"`
	} `json:"jobs"`
}

// fioCycle runs fio once. Its flush time is fio's write runtime (fio
// reports it in whole milliseconds), its CPU time fio's usr+sys share
// of its job runtime, its latency fio's completion-latency percentiles;
// its total is the wall time of the fio process, start-up included.
func (b *Bench) fioCycle(ctx context.Context, qd, maxIO int) (Sample, error) {
	args, _ := b.fioArgs(qd, maxIO)
	b.status("fio: running")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, b.fio, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	dm := b.devMarks()
	dm.timed() // fio's runtime is all its writing; the whole process is the window
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	dm.end()
	if ctx.Err() != nil {
		return Sample{}, ctxErr(ctx)
	}
	if err != nil {
		return Sample{}, fmt.Errorf("fio: %v: %s", err, strings.TrimSpace(stderr.String()+" "+firstLine(stdout.String())))
	}
	s, err := fioSample(stdout.Bytes(), int64(b.opts.PageSize))
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return Sample{}, fmt.Errorf("fio: %w", err)
	}
	s.TotalSeconds = wall.Seconds()
	s.setDevice(dm.deviceIO())
	return s, nil
}

// fioSample reads a Sample off fio's JSON output (out): its write
// runtime (whole ms) as the flush time, its usr+sys CPU share of the job
// runtime, its completion latency and its submit and complete batch
// distributions. TotalSeconds is left to the caller.
func fioSample(out []byte, ps int64) (Sample, error) {
	all := out
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:] // fio may print notes before the JSON
	}
	var r fioJSON
	if err := json.Unmarshal(out, &r); err != nil || len(r.Jobs) == 0 {
		return Sample{}, fmt.Errorf("cannot read its JSON output (%v): %.200s", err, all)
	}
	j := r.Jobs[0]
	if j.Error != 0 {
		return Sample{}, fmt.Errorf("job failed with error %d", j.Error)
	}
	ms := j.Write.Runtime
	if ms <= 0 {
		ms = j.JobRuntime
	}
	if ms <= 0 {
		ms = 1 // fio reports whole milliseconds; under one is "about one"
	}
	s := Sample{
		Bytes:   j.Write.IOBytes,
		Pages:   j.Write.IOBytes / ps,
		Seconds: float64(ms) / 1e3,
		IOs:     j.Write.TotalIOs,
	}
	s.CPUUserSeconds = j.UsrCPU / 100 * float64(j.JobRuntime) / 1e3
	s.CPUSystemSeconds = j.SysCPU / 100 * float64(j.JobRuntime) / 1e3
	s.CPUSeconds = s.CPUUserSeconds + s.CPUSystemSeconds
	if c := j.Write.ClatNs; len(c.Percentile) > 0 {
		s.Latency = fioLatency(c.N, c.Mean, c.Stddev, c.Min, c.Max, c.Percentile)
	}
	if len(j.IodepthSubmit) > 0 {
		s.SubmitBatch = &Batch{FioPercent: j.IodepthSubmit}
	}
	if len(j.IodepthComplete) > 0 {
		s.CompleteBatch = &Batch{FioPercent: j.IodepthComplete}
	}
	return s, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
