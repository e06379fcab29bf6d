package bench

import (
	"fmt"

	"github.com/dustin/go-humanize"
)

// DeviceIO is what the block layer counted for one system's cycle, from
// the device's own write counters (/sys/block/DEV/stat): over the whole
// cycle (dirtying and flush), and inside its timed part. A system whose
// bytes were written before its timed part began — the kernel, when its
// flusher writes back while the pages are being dirtied — is not timed
// for its writeback.
type DeviceIO struct {
	WriteIOs   int64 `json:"write_ios"`
	WriteBytes int64 `json:"write_bytes"`
	// TimedWriteIOs and TimedWriteBytes are those counted inside the
	// timed part, and TimedShare their share of WriteBytes (0 when
	// nothing was written).
	TimedWriteIOs   int64   `json:"timed_write_ios"`
	TimedWriteBytes int64   `json:"timed_write_bytes"`
	TimedShare      float64 `json:"timed_share"`
	// MeanWriteMs is the block layer's mean time per write over the
	// cycle (write ticks / writes).
	MeanWriteMs float64 `json:"mean_write_ms"`
}

// minTimedShare is the least share of a system's device bytes that
// must fall inside its timed part for its flush time to measure its
// writeback.
const minTimedShare = 0.95

// devMarks reads the device's counters at the start of a cycle, the
// start of its timed part and its end. On a file (no block device) it
// reads nothing and deviceIO is nil.
type devMarks struct {
	dev string
	ok  bool
	d   [3]diskStat
}

func (b *Bench) devMarks() *devMarks {
	m := &devMarks{dev: b.target.Dev}
	m.d[0], m.ok = readDiskStat(m.dev)
	return m
}

// timed marks the start of the timed part.
func (m *devMarks) timed() { m.mark(1) }

// end marks the end of the cycle (and of its timed part).
func (m *devMarks) end() { m.mark(2) }

func (m *devMarks) mark(i int) {
	if !m.ok {
		return
	}
	d, ok := readDiskStat(m.dev)
	m.d[i], m.ok = d, ok
}

// deviceIO is what the counters say, or nil.
func (m *devMarks) deviceIO() *DeviceIO {
	if !m.ok {
		return nil
	}
	all, timed := sub(m.d[2], m.d[0]), sub(m.d[2], m.d[1])
	d := &DeviceIO{
		WriteIOs: all.writes, WriteBytes: all.sectors * 512,
		TimedWriteIOs: timed.writes, TimedWriteBytes: timed.sectors * 512,
		TimedShare:  ratio(float64(timed.sectors), float64(all.sectors)),
		MeanWriteMs: ratio(float64(all.ticks), float64(all.writes)),
	}
	return d
}

func sub(a, b diskStat) diskStat {
	return diskStat{writes: a.writes - b.writes, sectors: a.sectors - b.sectors, ticks: a.ticks - b.ticks}
}

// setDevice records what the block layer counted into s and flags a
// sample whose device bytes fell mostly outside its timed part.
func (s *Sample) setDevice(d *DeviceIO) {
	s.Device = d
	s.EarlyWriteback = d != nil && d.WriteBytes > 0 && d.TimedShare < minTimedShare
}

// deviceWarnings says, for each result, where the block layer's count
// does not back what was timed or reported: a system whose bytes were
// mostly written before its timed part (the kernel's early writeback),
// and an engine whose bytes the block layer counted differently.
func deviceWarnings(results []Result, hot bool, holding bool) []string {
	var out []string
	for i := range results {
		r := &results[i]
		var worst *Sample
		for k := range r.Runs {
			s := &r.Runs[k]
			if s.EarlyWriteback && (worst == nil || s.Device.TimedShare < worst.Device.TimedShare) {
				worst = s
			}
		}
		if worst != nil {
			what := "its timed part"
			if r.Name == "kernel" {
				what = "its timed fdatasync"
			}
			msg := fmt.Sprintf("%s: in run %d only %.0f%% of the %s the device wrote for it fell inside %s (%s of them before it): the rest was written back while the pages were being dirtied, so its flush time does not measure its writeback",
				r.Name, worst.Run, 100*worst.Device.TimedShare, humanize.IBytes(uint64(worst.Device.WriteBytes)), what,
				humanize.IBytes(uint64(worst.Device.WriteBytes-worst.Device.TimedWriteBytes)))
			if !holding {
				msg += "; -hold-kernel-writeback holds the kernel's early writeback back for the run"
			}
			out = append(out, msg)
		}
		if r.Name != "engine" {
			continue
		}
		for k := range r.Runs {
			s := &r.Runs[k]
			want := s.Bytes
			if hot {
				want = s.DeviceBytes
			}
			if s.Device != nil && s.Device.WriteBytes != want {
				out = append(out, fmt.Sprintf("engine: in run %d the block layer counted %s written (%d writes), the engine reports %s (%d writes): something else wrote to the device, or the counts are wrong",
					s.Run, humanize.IBytes(uint64(s.Device.WriteBytes)), s.Device.WriteIOs, humanize.IBytes(uint64(want)), s.IOs))
				break
			}
		}
	}
	return out
}
