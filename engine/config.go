package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/wbengine/wbengine/mapper"
	"github.com/wbengine/wbengine/ring"
)

// Errors. Test with errors.Is; each is wrapped with the operation and
// the target.
var (
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine: closed")
	// ErrConfig: a Config value is out of range or inconsistent with the
	// target or cache; the message names the value.
	ErrConfig = errors.New("engine: bad config")
	// ErrIO: a write failed. Pages held in error (after MaxRetries
	// consecutive failures) make every Sync covering them fail with an
	// error matching ErrIO until they are written or invalidated.
	ErrIO = errors.New("engine: I/O error")
	// ErrFlush: the device cache flush failed; the pages it would have
	// made durable are dirty again. It also matches ErrIO.
	ErrFlush = errors.New("engine: device flush failed")
	// ErrHole: a dirty page maps to a hole and the mapper cannot
	// allocate. The page stays dirty. Same value as mapper.ErrHole.
	ErrHole = mapper.ErrHole
	// ErrOutOfRange: the mapper put a page past the end of the target.
	// The page stays dirty.
	ErrOutOfRange = errors.New("engine: mapped past the end of the target")
)

// Config configures an engine. A zero field means its default.
type Config struct {
	// Path of the target: a block device (opened O_DIRECT|O_EXCL) or a
	// regular file (O_DIRECT).
	Path string
	// QueueDepth is the most writes in flight (at most 4096). On a block
	// device at most its nr_requests of them are in the kernel at once
	// (the block layer has no room for more); the rest wait in the ring,
	// and Open says so through Logger. Default:
	// the block device's nr_requests, clamped to 32..128 (32 for files):
	// what the block layer queues anyway, as the kernel's own writeback
	// fills it; a shallower queue cannot keep a fast device busy across
	// the time a completion takes to come back and be replaced.
	QueueDepth int
	// MaxIOBytes caps one write; rounded down to whole pages. Default:
	// 1 MiB, and on a block device at most its max_sectors_kb and what
	// its max_segments covers when every memory page of the cache is a
	// segment of its own (128 segments of 4 KiB: 512 KiB), because the
	// cache's pages are seldom physically contiguous and io_uring hands
	// a write the block layer would have to split to a worker thread.
	// At most 1024 pages (the iovecs one write takes) and the device's
	// max_hw_sectors_kb; a larger value than the max_segments bound is
	// taken, and Open says so through Logger.
	MaxIOBytes int
	// MaxRetries is how many consecutive failed writes put a page in
	// error (default 3).
	MaxRetries int
	// Mapper maps page indexes to device blocks (blocks are page-sized).
	// nil writes each page on its own at block = index.
	Mapper mapper.Mapper
	// Ring is the backend: "auto" (default: native io_uring, falling back
	// to the pwritev pool where io_uring is refused, and saying so once),
	// "native", "pwritev" or "iceber" (only in builds with -tags iceber).
	Ring string
	// OpenRing, if set, opens the ring instead of ring.Open(target, Ring,
	// cfg): tests and wbbench use it to wrap a backend (fault injection,
	// simulated power loss) or to substitute one.
	OpenRing ring.Opener
	// OnError receives every write or flush error, also those a retry
	// later fixed. It is called outside the completion path, from the
	// goroutine of a WritePages or Sync call, and must not call back into
	// the engine.
	OnError func(error)
	// Logger receives notices (a fallback taken, registration refused,
	// pages held in error, background writeback failures). Default:
	// discard.
	Logger *slog.Logger
	// CloseTimeout bounds how long Close waits for the device (default
	// 30 s).
	CloseTimeout time.Duration
	// NoRegisterBuffers turns off registering the cache's arena with
	// io_uring (by default the engine registers it where the backend can,
	// and uses the *_FIXED opcodes).
	NoRegisterBuffers bool
	// FillGaps, if positive, lets a write fill gaps of up to that many
	// pages between two dirty runs with the clean pages there — cached,
	// up to date, unlocked and pinned by nobody — so the two runs go out
	// as one larger write: fewer I/Os for devices limited by their count
	// (the kernel never does this; InnoDB writes only dirty neighbours).
	// The gap pages are stable while in flight. The cost: a clean page
	// rewritten with its own content is exposed to a torn write at power
	// loss, so a client that relies on power-safe overwrite (SQLite's
	// POWERSAFE_OVERWRITE) must keep it 0. Off by default; at most 1023.
	FillGaps int
	// FlushAlways flushes on Sync even where the target says it has no
	// volatile write cache (write through). Tests over simulated power
	// loss set it; so may the paranoid.
	FlushAlways bool

	// Background writeback and dirty throttling, configured like the
	// kernel's vm.dirty_* settings; all off by default. Thresholds count
	// dirty pages plus pages under writeback; a Bytes value wins over
	// its Ratio (a percentage of the cache's capacity).
	//
	// Above the background threshold (dirty_background_bytes/_ratio) a
	// flusher goroutine writes pages in 4 MiB chunks, cyclically.
	DirtyBackgroundBytes int64
	DirtyBackgroundRatio int
	// At the hard threshold (dirty_bytes/_ratio) writers wait; from the
	// midpoint between the two thresholds they are paced. With only a
	// hard threshold, the background one is half of it.
	DirtyBytes int64
	DirtyRatio int
	// DirtyExpire: the flusher writes pages dirty for longer than this
	// (dirty_expire_centisecs) each WritebackInterval.
	DirtyExpire time.Duration
	// WritebackInterval is how often the flusher wakes
	// (dirty_writeback_centisecs; default 5 s when the flusher runs).
	WritebackInterval time.Duration
}

const (
	defaultQueueDepth    = 32
	maxDefaultQueueDepth = 128
	maxQueueDepth        = 4096
	defaultMaxIOBytes    = 1 << 20
	defaultMaxRetries    = 3
	defaultCloseTimeout  = 30 * time.Second
	maxIovecs            = 1024 // IOV_MAX: iovecs in one write
)

// resolve validates cfg against the target and the page size and fills
// in the defaults.
func (cfg Config) resolve(t *ring.Target, pageSize int) (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return cfg, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case cfg.QueueDepth < 0:
		return bad("QueueDepth %d: must not be negative", cfg.QueueDepth)
	case cfg.QueueDepth > maxQueueDepth:
		return bad("QueueDepth %d: at most %d", cfg.QueueDepth, maxQueueDepth)
	case cfg.MaxIOBytes < 0:
		return bad("MaxIOBytes %d: must not be negative", cfg.MaxIOBytes)
	case cfg.FillGaps < 0 || cfg.FillGaps > maxIovecs-1:
		return bad("FillGaps %d: must be 0..%d", cfg.FillGaps, maxIovecs-1)
	case cfg.MaxRetries < 0:
		return bad("MaxRetries %d: must not be negative", cfg.MaxRetries)
	case cfg.CloseTimeout < 0:
		return bad("CloseTimeout %v: must not be negative", cfg.CloseTimeout)
	case cfg.DirtyBackgroundBytes < 0:
		return bad("DirtyBackgroundBytes %d: must not be negative", cfg.DirtyBackgroundBytes)
	case cfg.DirtyBytes < 0:
		return bad("DirtyBytes %d: must not be negative", cfg.DirtyBytes)
	case cfg.DirtyBackgroundRatio < 0 || cfg.DirtyBackgroundRatio > 100:
		return bad("DirtyBackgroundRatio %d: must be 0..100", cfg.DirtyBackgroundRatio)
	case cfg.DirtyRatio < 0 || cfg.DirtyRatio > 100:
		return bad("DirtyRatio %d: must be 0..100", cfg.DirtyRatio)
	case cfg.DirtyExpire < 0:
		return bad("DirtyExpire %v: must not be negative", cfg.DirtyExpire)
	case cfg.WritebackInterval < 0:
		return bad("WritebackInterval %v: must not be negative", cfg.WritebackInterval)
	}
	if cfg.QueueDepth == 0 {
		cfg.QueueDepth = defaultQueueDepth
		if t.NrRequests > 0 {
			cfg.QueueDepth = min(max(t.NrRequests, defaultQueueDepth), maxDefaultQueueDepth)
		}
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = defaultMaxRetries
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = defaultCloseTimeout
	}
	if cfg.Ring == "" {
		cfg.Ring = "auto"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// One write carries at most maxIovecs iovecs, so at most that many
	// pages where they are not adjacent in memory, and at most what the
	// device takes in one request. Nothing is allocated in proportion to
	// MaxIOBytes before it is checked against that.
	limit, limitWhy := maxIovecs*pageSize, fmt.Sprintf("%d pages of %d bytes, one iovec each", maxIovecs, pageSize)
	if hw := t.MaxHWSectorsKB; hw > 0 && hw*1024 < limit {
		limit, limitWhy = hw*1024, fmt.Sprintf("%s's max_hw_sectors_kb %d", t.Path, hw)
	}
	if cfg.MaxIOBytes == 0 {
		cfg.MaxIOBytes = defaultMaxIOBytes
		if t.MaxSectorsKB > 0 && t.MaxSectorsKB*1024 < cfg.MaxIOBytes {
			cfg.MaxIOBytes = t.MaxSectorsKB * 1024
		}
		if sb := segmentBytes(t, pageSize); sb > 0 && sb < cfg.MaxIOBytes {
			cfg.MaxIOBytes = sb
		}
		cfg.MaxIOBytes = max(min(cfg.MaxIOBytes, limit), pageSize)
	}
	if cfg.MaxIOBytes < pageSize {
		return bad("MaxIOBytes %d: smaller than the page size %d", cfg.MaxIOBytes, pageSize)
	}
	if cfg.MaxIOBytes > limit {
		return bad("MaxIOBytes %d: above %d, the most one write can carry (%s)", cfg.MaxIOBytes, limit, limitWhy)
	}
	cfg.MaxIOBytes -= cfg.MaxIOBytes % pageSize
	if lbs := t.LogicalBlockSize; lbs > 0 && pageSize%lbs != 0 {
		return bad("page size %d is not a multiple of %s's logical block size %d", pageSize, t.Path, lbs)
	}
	if t.Size < int64(pageSize) {
		return bad("%s holds %d bytes, less than one page of %d", t.Path, t.Size, pageSize)
	}
	if b, ok := cfg.Mapper.(mapper.Bounded); ok {
		blocks := uint64(t.Size) / uint64(pageSize)
		if mb := b.MaxBlock(); mb > blocks {
			return bad("the mapper reaches block %d, past the end of %s (%d blocks of %d bytes)", mb-1, t.Path, blocks, pageSize)
		}
	}
	return cfg, nil
}

// segmentBytes is the most bytes of whole pages one write to t carries
// without the block layer splitting it by t's max_segments, wherever
// the pages lie in physical memory: each memory page (os.Getpagesize)
// of a cache page can be a segment of its own. 0 when t does not say.
//
// Go cannot see physical addresses, and a cache whose pages were
// recycled in any order, or whose memory is not backed by huge pages,
// is physically scattered. A write with more segments is split, and a
// write io_uring issues without blocking (REQ_NOWAIT) may not be split:
// io_uring gives it to an io-wq worker thread, which splits and waits.
// (Issue 12: on a loop device, max_segments 128, every 1 MiB write of
// scattered pages went to a worker, at 1.35 × the CPU per GiB of 512 KiB
// writes and 0.92 × the pages/s.)
func segmentBytes(t *ring.Target, pageSize int) int {
	if t.MaxSegments <= 0 {
		return 0
	}
	perPage := max(pageSize/os.Getpagesize(), 1)
	return max(t.MaxSegments/perPage, 1) * pageSize
}

// PageError reports pages whose writes failed. It matches ErrIO (and
// ErrFlush for a failed flush) and the errno with errors.Is.
type PageError struct {
	Op    string // "write", "flush", "map"
	Path  string
	Pages []uint64 // the pages (the first 16 of them; Count has all)
	Count int
	Errno syscall.Errno // 0 when Err says more
	Err   error         // the cause: a ring errno, ErrHole, ErrOutOfRange…
	Held  bool          // held in error after MaxRetries failures
	Class error         // ErrIO or ErrFlush
}

const maxNamedPages = 16

func (e *PageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "engine: %s %s: ", e.Op, e.Path)
	switch {
	case e.Count == 1:
		fmt.Fprintf(&b, "page %d", e.Pages[0])
	case e.Count > 0:
		b.WriteString("pages ")
		for i, p := range e.Pages {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprint(&b, p)
		}
		if e.Count > len(e.Pages) {
			fmt.Fprintf(&b, ", … (%d pages)", e.Count)
		} else {
			fmt.Fprintf(&b, " (%d pages)", e.Count)
		}
	default:
		b.WriteString("device")
	}
	if e.Held {
		b.WriteString(" held in error")
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap lets errors.Is see the class (ErrIO, ErrFlush) and the cause.
func (e *PageError) Unwrap() []error {
	errs := []error{e.Err}
	if e.Class != nil {
		errs = append(errs, e.Class)
		if e.Class == ErrFlush {
			errs = append(errs, ErrIO)
		}
	}
	return errs
}
