//go:build linux

package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FaultKind is what a FaultRule injects. The semantics are chosen so
// that what the engine sees is exactly what a real ring can report
// (ring.go: a Completion is final, and N < length only with an error).
type FaultKind uint8

const (
	// FaultEIO completes the request with EIO and N 0 without
	// submitting it: nothing reaches the target.
	FaultEIO FaultKind = iota + 1
	// FaultPartialEIO submits only the first half of the request
	// (rounded down to the alignment) and completes it with EIO and N =
	// that prefix once the prefix is on the target: a write that failed
	// part way. A request of one aligned block cannot be split and fails
	// like FaultEIO (and is counted as such).
	FaultPartialEIO
	// FaultShort makes the transfer short: the wrapper submits the first
	// half of the request (rounded down to the alignment), and when that
	// completes it submits the rest, exactly as every backend resumes a
	// short transfer from the kernel; the final Completion carries the
	// full length and no error. It is invisible to the engine except in
	// timing, and exercises the resume path (iovec trimming, offset
	// advance, a write landing in two pieces) on real data. A request of
	// one aligned block is not split (and not counted).
	FaultShort
	// FaultEAGAIN fails Times consecutive attempts of the request with
	// -EAGAIN before it reaches the inner ring. The wrapper retries them
	// itself, like a ring does: up to Config.MaxRetries retries are
	// invisible to the engine (the request is then submitted normally);
	// with Times > MaxRetries the request completes with EAGAIN and N 0.
	FaultEAGAIN
	// FaultDelay holds the request's Completion back for Delay after it
	// completed. It combines with any other fault.
	FaultDelay
	// FaultFlushErr completes a flush with EIO without flushing.
	FaultFlushErr
)

var faultKindNames = [...]string{
	FaultEIO:        "eio",
	FaultPartialEIO: "eio-partial",
	FaultShort:      "short",
	FaultEAGAIN:     "eagain",
	FaultDelay:      "delay",
	FaultFlushErr:   "flusherr",
}

func (k FaultKind) String() string {
	if int(k) < len(faultKindNames) && faultKindNames[k] != "" {
		return faultKindNames[k]
	}
	return "fault?"
}

// defaultOps is the set of ops a rule of kind k applies to when its Ops
// is 0: flushes for FaultFlushErr, everything for FaultDelay, writes for
// the rest.
func (k FaultKind) defaultOps() OpSet {
	switch k {
	case FaultFlushErr:
		return OpSetOf(OpFlush)
	case FaultDelay:
		return OpSetOf(OpWrite, OpRead, OpFlush, OpNop)
	}
	return OpSetOf(OpWrite)
}

// OpSet is a set of Ops.
type OpSet uint8

// OpSetOf returns the set of ops.
func OpSetOf(ops ...Op) OpSet {
	var s OpSet
	for _, o := range ops {
		s |= 1 << o
	}
	return s
}

// Has reports whether o is in s.
func (s OpSet) Has(o Op) bool { return o < 8 && s&(1<<o) != 0 }

// FaultRule says which requests get which fault. A request matches when
// its op is in Ops and, if the rule has a block range, its bytes overlap
// the range; a matching request is then hit if it is the rule's Nth
// match (Nth > 0), or else with probability Fraction (0 meaning always).
//
// Every rule counts and draws for every request it matches, so rules do
// not change each other's streams. Of the rules that hit a request, the
// first in order whose fault applies to it decides its fault; FaultDelay
// rules combine with it (the longest delay wins).
type FaultRule struct {
	Kind FaultKind
	// Ops the rule applies to; 0 means the kind's default (writes, but
	// flushes for FaultFlushErr and every op for FaultDelay).
	Ops OpSet
	// FirstBlock and EndBlock restrict the rule to requests touching
	// blocks [FirstBlock, EndBlock) of FaultConfig.BlockSize bytes each;
	// EndBlock 0 means no restriction. Flushes and NOPs never touch a
	// range. A rule of kind FaultEIO with a range and no Nth or Fraction
	// is a permanent bad block.
	FirstBlock, EndBlock uint64
	// Nth, if positive, hits only the Nth matching request (1-based).
	Nth uint64
	// Fraction, in [0, 1], is the probability a matching request is hit
	// (0: every one). Ignored when Nth is set.
	Fraction float64
	// Seed seeds the rule's random stream (together with the rule's
	// position, so equal seeds still give independent streams).
	Seed uint64
	// Times is the number of consecutive failed attempts a FaultEAGAIN
	// hit causes (0 means 1).
	Times int
	// Delay is how long FaultDelay holds a completion back.
	Delay time.Duration
}

func (r FaultRule) validate() error {
	switch {
	case r.Kind < FaultEIO || r.Kind > FaultFlushErr:
		return fmt.Errorf("%w: fault rule: unknown kind %d", ErrBadConfig, r.Kind)
	case !(r.Fraction >= 0 && r.Fraction <= 1):
		return fmt.Errorf("%w: fault rule %s: fraction %v not in [0, 1]", ErrBadConfig, r.Kind, r.Fraction)
	case r.EndBlock != 0 && r.EndBlock <= r.FirstBlock:
		return fmt.Errorf("%w: fault rule %s: empty block range [%d, %d)", ErrBadConfig, r.Kind, r.FirstBlock, r.EndBlock)
	case r.Times < 0:
		return fmt.Errorf("%w: fault rule %s: negative Times %d", ErrBadConfig, r.Kind, r.Times)
	case r.Kind == FaultDelay && r.Delay <= 0:
		return fmt.Errorf("%w: fault rule delay: Delay %v must be positive", ErrBadConfig, r.Delay)
	case r.Ops>>(OpNop+1) != 0 || r.Ops&1 != 0:
		return fmt.Errorf("%w: fault rule %s: unknown ops in set %#x", ErrBadConfig, r.Kind, r.Ops)
	}
	return nil
}

// FaultConfig configures a Faulty ring.
type FaultConfig struct {
	// Rules are the faults to inject; they can be replaced later with
	// SetRules.
	Rules []FaultRule
	// BlockSize is the unit of FaultRule.FirstBlock/EndBlock in bytes
	// (default 4096; the engine passes its page size, so rule blocks are
	// the mapper's blocks).
	BlockSize int64
	// Align is the alignment of the prefixes FaultShort and
	// FaultPartialEIO submit: the target's logical block size (default
	// 512; OpenFaulty takes it from the target).
	Align int64
}

// FaultStats counts what a Faulty ring injected.
type FaultStats struct {
	Requests   uint64 // requests accepted
	EIO        uint64 // requests failed with EIO before submission
	PartialEIO uint64 // requests failed with EIO after a partial transfer
	Short      uint64 // requests split into a prefix and a resumed rest
	EAGAIN     uint64 // attempts failed with EAGAIN (retried or surfaced)
	// EAGAINSurfaced counts requests completed with EAGAIN because their
	// attempts ran out.
	EAGAINSurfaced uint64
	Delayed        uint64 // completions held back
	FlushErr       uint64 // flushes failed without flushing
	Resumed        uint64 // rests of short transfers submitted
}

// Faulty is a Ring that wraps another and injects faults into it by
// rule (see FaultRule, FaultKind, ParseFaultRules). It keeps the Ring
// contract: every accepted request gets exactly one Completion; the
// Handler is called from the wrapper's own goroutine only (never
// concurrently, never from inside Submit), injected completions
// included; Close drains. Rules can be switched off (SetEnabled) or
// replaced (SetRules, Clear) at any time; requests already accepted
// keep the faults they were given.
//
// The wrapper gives the inner ring its own Handler and tags, and owns a
// table of Depth slots like any backend: a request's slot is taken at
// Submit and freed after its Completion was delivered. The inner ring
// holds at most one request per slot at a time (a prefix, then the
// rest), so it never holds more than Depth.
type Faulty struct {
	inner   Ring
	cfg     Config // defaulted; Handler is the caller's
	fc      FaultConfig
	enabled atomic.Bool

	// rmu protects rules (their counters and random streams).
	rmu   sync.Mutex
	rules []ruleState

	slots []faultSlot
	pool  slotPool

	// mu protects events, spare and stop; cond wakes the mover.
	mu     sync.Mutex
	cond   sync.Cond
	events []faultEvent // capacity Depth: a slot has at most one event pending
	spare  []faultEvent
	stop   bool
	exited chan struct{} // closed when the mover returns

	stats struct {
		requests, eio, partial, short, eagain, surfaced, delayed, flushErr, resumed atomic.Uint64
	}

	closeOnce sync.Once
	closeErr  error
}

var _ Ring = (*Faulty)(nil)

type ruleState struct {
	FaultRule
	seen uint64
	rng  *rand.Rand
}

// faultSlot is one accepted request. Submit fills it; from then on only
// the mover touches it (the inner ring only sees copies).
type faultSlot struct {
	req         Request // the caller's request, with the caller's Tag
	total, done int64
	fault       FaultKind // the outcome fault (0: none, or only a delay)
	split       int64     // prefix length for FaultShort/FaultPartialEIO
	eagain      int       // EAGAIN attempts still to inject
	retries     int
	delay       time.Duration
	iov         []unix.Iovec // scratch iovecs for a prefix or a rest
	res         Completion   // the final completion while it is held back
}

type faultEventKind uint8

const (
	evInner   faultEventKind = iota + 1 // the inner ring completed the slot's request
	evStart                             // an injected fault to act on before submitting
	evDeliver                           // a held-back completion is due
)

type faultEvent struct {
	slot int32
	kind faultEventKind
	c    Completion
}

// NewFaulty opens the inner ring by calling open with cfg, its Handler
// replaced by the wrapper's, and wraps it. open is typically
//
//	func(c ring.Config) (ring.Ring, error) { return ring.Open(t, "pwritev", c) }
//
// (a wrapper must own the inner ring's Handler, so it cannot wrap a ring
// that is already open). Zero cfg fields take Open's defaults.
func NewFaulty(open func(Config) (Ring, error), cfg Config, fc FaultConfig) (*Faulty, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	switch {
	case fc.BlockSize < 0 || fc.Align < 0:
		return nil, fmt.Errorf("%w: fault config: negative BlockSize %d or Align %d", ErrBadConfig, fc.BlockSize, fc.Align)
	case fc.BlockSize == 0:
		fc.BlockSize = 4096
	}
	if fc.Align == 0 {
		fc.Align = 512
	}
	f := &Faulty{
		cfg:    cfg,
		fc:     fc,
		slots:  make([]faultSlot, cfg.Depth),
		events: make([]faultEvent, 0, cfg.Depth),
		spare:  make([]faultEvent, 0, cfg.Depth),
		exited: make(chan struct{}),
	}
	if err := f.SetRules(fc.Rules); err != nil {
		return nil, err
	}
	f.enabled.Store(true)
	f.pool.init(cfg.Depth)
	f.cond.L = &f.mu
	icfg := cfg
	icfg.Handler = f.onInner
	if f.inner, err = open(icfg); err != nil {
		return nil, err
	}
	go f.mover()
	return f, nil
}

// OpenFaulty opens backend on t (as Open does) wrapped in a Faulty ring,
// taking fc.Align from the target's logical block size when it is 0. It
// fits engine.Config.OpenRing:
//
//	cfg.OpenRing = func(t *ring.Target, c ring.Config) (ring.Ring, error) {
//		return ring.OpenFaulty(t, "auto", c, ring.FaultConfig{Rules: rules, BlockSize: pageSize})
//	}
func OpenFaulty(t *Target, backend string, cfg Config, fc FaultConfig) (*Faulty, error) {
	if fc.Align == 0 && t != nil {
		fc.Align = int64(t.LogicalBlockSize)
	}
	return NewFaulty(func(c Config) (Ring, error) { return Open(t, backend, c) }, cfg, fc)
}

// SetRules replaces the rules (resetting their counters and random
// streams). Requests already accepted keep their faults.
func (f *Faulty) SetRules(rules []FaultRule) error {
	rs := make([]ruleState, len(rules))
	for i, r := range rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
		if r.Ops == 0 {
			r.Ops = r.Kind.defaultOps()
		}
		rs[i] = ruleState{FaultRule: r, rng: rand.New(rand.NewPCG(r.Seed, uint64(i)))}
	}
	f.rmu.Lock()
	f.rules = rs
	f.rmu.Unlock()
	return nil
}

// Clear removes every rule.
func (f *Faulty) Clear() { _ = f.SetRules(nil) }

// SetEnabled switches injection on or off for requests submitted from
// now on (rule counters do not advance while it is off).
func (f *Faulty) SetEnabled(on bool) { f.enabled.Store(on) }

// Enabled reports whether injection is on.
func (f *Faulty) Enabled() bool { return f.enabled.Load() }

// Inner is the wrapped ring.
func (f *Faulty) Inner() Ring { return f.inner }

// Stats returns what was injected so far.
func (f *Faulty) Stats() FaultStats {
	s := &f.stats
	return FaultStats{
		Requests: s.requests.Load(), EIO: s.eio.Load(), PartialEIO: s.partial.Load(),
		Short: s.short.Load(), EAGAIN: s.eagain.Load(), EAGAINSurfaced: s.surfaced.Load(),
		Delayed: s.delayed.Load(), FlushErr: s.flushErr.Load(), Resumed: s.resumed.Load(),
	}
}

// Submit implements Ring.
func (f *Faulty) Submit(reqs []Request) error {
	if len(reqs) > f.cfg.Depth {
		return fmt.Errorf("%w: %d requests, depth %d", ErrTooMany, len(reqs), f.cfg.Depth)
	}
	for i := range reqs {
		if err := checkOp(&reqs[i]); err != nil {
			return err
		}
	}
	if err := f.pool.lockAcquire(len(reqs)); err != nil {
		return err
	}
	idx := make([]int32, len(reqs))
	for i := range idx {
		idx[i] = f.pool.pop()
	}
	f.pool.mu.Unlock()
	if len(reqs) == 0 {
		return nil
	}

	on := f.enabled.Load()
	f.rmu.Lock()
	for i := range reqs {
		s := &f.slots[idx[i]]
		*s = faultSlot{req: reqs[i], iov: s.iov[:0]}
		if s.req.Op == OpWrite || s.req.Op == OpRead {
			s.total = s.req.Len()
		}
		if on {
			f.decide(s)
		}
	}
	f.rmu.Unlock()

	// Once the batch is in the inner ring its slots belong to the mover
	// (they may even be free again), so count before submitting.
	batch := make([]Request, 0, len(reqs))
	var start []int32
	var eio, partial, short, flushErr uint64
	for _, i := range idx {
		s := &f.slots[i]
		switch s.fault {
		case FaultEIO:
			eio++
		case FaultPartialEIO:
			partial++
		case FaultShort:
			short++
		case FaultFlushErr:
			flushErr++
		}
		switch {
		case s.fault == FaultEIO || s.fault == FaultFlushErr || s.eagain > 0:
			start = append(start, i)
		case s.split > 0:
			batch = append(batch, f.innerReq(i, 0, s.split))
		default:
			batch = append(batch, f.innerReq(i, 0, s.total))
		}
	}
	if len(batch) > 0 {
		if err := f.inner.Submit(batch); err != nil {
			f.pool.release(idx)
			return err
		}
	}
	f.stats.requests.Add(uint64(len(reqs)))
	f.stats.eio.Add(eio)
	f.stats.partial.Add(partial)
	f.stats.short.Add(short)
	f.stats.flushErr.Add(flushErr)
	if len(start) > 0 {
		f.mu.Lock()
		for _, i := range start {
			f.events = append(f.events, faultEvent{slot: i, kind: evStart})
		}
		f.cond.Signal()
		f.mu.Unlock()
	}
	return nil
}

// decide applies the rules to the request in s; f.rmu is held.
func (f *Faulty) decide(s *faultSlot) {
	for i := range f.rules {
		r := &f.rules[i]
		if !r.Ops.Has(s.req.Op) || !f.inRange(r, s) {
			continue
		}
		r.seen++
		var hit bool
		switch {
		case r.Nth > 0:
			hit = r.seen == r.Nth
		case r.Fraction == 0 || r.Fraction >= 1:
			hit = true
		default:
			hit = r.rng.Float64() < r.Fraction
		}
		if !hit {
			continue
		}
		if r.Kind == FaultDelay {
			s.delay = max(s.delay, r.Delay)
			continue
		}
		if s.fault != 0 {
			continue
		}
		switch r.Kind {
		case FaultEIO, FaultFlushErr:
			s.fault = r.Kind
		case FaultEAGAIN:
			s.fault = FaultEAGAIN
			s.eagain = max(r.Times, 1)
		case FaultPartialEIO, FaultShort:
			half := s.total / 2 / f.fc.Align * f.fc.Align
			switch {
			case half > 0:
				s.fault, s.split = r.Kind, half
			case r.Kind == FaultPartialEIO:
				s.fault = FaultEIO
			}
		}
	}
}

// inRange reports whether the request in s touches r's block range.
func (f *Faulty) inRange(r *ruleState, s *faultSlot) bool {
	if r.EndBlock == 0 {
		return true
	}
	if s.total == 0 {
		return false
	}
	bs := uint64(f.fc.BlockSize)
	lo, hi := satMul(r.FirstBlock, bs), satMul(r.EndBlock, bs)
	off := uint64(s.req.Off)
	return off < hi && lo < off+uint64(s.total)
}

func satMul(a, b uint64) uint64 {
	if b != 0 && a > math.MaxUint64/b {
		return math.MaxUint64
	}
	return a * b
}

// innerReq is the request the inner ring gets for bytes [from, to) of
// slot i's request, tagged with the slot index.
func (f *Faulty) innerReq(i int32, from, to int64) Request {
	s := &f.slots[i]
	q := s.req
	q.Tag = uint64(i)
	if from != 0 || to != s.total {
		s.iov = iovRange(s.iov, s.req.Iov, from, to)
		q.Iov = s.iov
		q.Off += from
	}
	return q
}

// onInner is the inner ring's Handler: it queues the completions for
// the mover and returns at once.
func (f *Faulty) onInner(cs []Completion) {
	f.mu.Lock()
	for _, c := range cs {
		f.events = append(f.events, faultEvent{slot: int32(c.Tag), kind: evInner, c: c})
	}
	f.cond.Signal()
	f.mu.Unlock()
}

// mover is the wrapper's goroutine: it acts on events, submits rests and
// retries to the inner ring, and calls the caller's Handler.
func (f *Faulty) mover() {
	defer close(f.exited)
	batch := make([]Request, 0, f.cfg.Depth)
	out := make([]Completion, 0, f.cfg.Depth)
	outSlots := make([]int32, 0, f.cfg.Depth)
	for {
		f.mu.Lock()
		for len(f.events) == 0 && !f.stop {
			f.cond.Wait()
		}
		if len(f.events) == 0 {
			f.mu.Unlock()
			return
		}
		evs := f.events
		f.events = f.spare[:0]
		f.mu.Unlock()

		for _, ev := range evs {
			batch, out, outSlots = f.step(ev, batch, out, outSlots)
		}
		if len(batch) > 0 {
			if err := f.inner.Submit(batch); err != nil {
				// Cannot happen while the wrapper is open (the inner
				// ring accepted these requests' first parts); fail them
				// rather than lose them.
				for _, q := range batch {
					s := &f.slots[q.Tag]
					out, outSlots = f.finish(int32(q.Tag), Completion{N: s.done, Err: unix.EIO}, out, outSlots)
				}
			}
			batch = batch[:0]
		}
		if len(out) > 0 {
			f.cfg.Handler(out)
			for _, i := range outSlots {
				s := &f.slots[i]
				clear(s.iov)
				s.req = Request{}
			}
			f.pool.release(outSlots)
			out, outSlots = out[:0], outSlots[:0]
		}
		f.mu.Lock()
		f.spare = evs[:0]
		f.mu.Unlock()
	}
}

// step acts on one event.
func (f *Faulty) step(ev faultEvent, batch []Request, out []Completion, outSlots []int32) ([]Request, []Completion, []int32) {
	i := ev.slot
	s := &f.slots[i]
	switch ev.kind {
	case evDeliver:
		return batch, append(out, s.res), append(outSlots, i)
	case evStart:
		if s.eagain > 0 {
			for ; s.eagain > 0; s.eagain-- {
				f.stats.eagain.Add(1)
				if s.retries >= f.cfg.MaxRetries {
					f.stats.surfaced.Add(1)
					out, outSlots = f.finish(i, Completion{N: s.done, Err: unix.EAGAIN}, out, outSlots)
					return batch, out, outSlots
				}
				s.retries++
			}
			return append(batch, f.innerReq(i, 0, s.total)), out, outSlots
		}
		out, outSlots = f.finish(i, Completion{Err: unix.EIO}, out, outSlots)
		return batch, out, outSlots
	}
	c := ev.c
	s.done += c.N
	switch {
	case c.Err != 0:
		c = Completion{N: s.done, Err: c.Err}
	case s.fault == FaultPartialEIO:
		c = Completion{N: s.done, Err: unix.EIO}
	case s.done < s.total && c.N > 0:
		f.stats.resumed.Add(1)
		return append(batch, f.innerReq(i, s.done, s.total)), out, outSlots
	case s.done < s.total:
		c = Completion{N: s.done, Err: unix.EIO} // no progress
	default:
		c = Completion{N: s.done}
	}
	out, outSlots = f.finish(i, c, out, outSlots)
	return batch, out, outSlots
}

// finish completes slot i with c, now or after its delay.
func (f *Faulty) finish(i int32, c Completion, out []Completion, outSlots []int32) ([]Completion, []int32) {
	s := &f.slots[i]
	c.Tag = s.req.Tag
	if s.delay <= 0 {
		return append(out, c), append(outSlots, i)
	}
	f.stats.delayed.Add(1)
	s.res = c
	time.AfterFunc(s.delay, func() {
		f.mu.Lock()
		f.events = append(f.events, faultEvent{slot: i, kind: evDeliver})
		f.cond.Signal()
		f.mu.Unlock()
	})
	return out, outSlots
}

// RegisterBuffers implements Ring by passing the buffers to the inner
// ring.
func (f *Faulty) RegisterBuffers(bufs [][]byte) error { return f.inner.RegisterBuffers(bufs) }

// Caps implements Ring: the inner ring's, with Backend "faulty(inner)".
func (f *Faulty) Caps() Caps {
	c := f.inner.Caps()
	c.Backend = "faulty(" + c.Backend + ")"
	return c
}

// Close implements Ring: it refuses new requests, waits until every
// accepted request's Completion was delivered (held-back ones included),
// stops the wrapper's goroutine and closes the inner ring.
func (f *Faulty) Close() error {
	f.closeOnce.Do(func() {
		f.pool.closeAndDrain()
		f.mu.Lock()
		f.stop = true
		f.cond.Broadcast()
		f.mu.Unlock()
		<-f.exited
		f.closeErr = f.inner.Close()
	})
	return f.closeErr
}

// ParseFaultRules parses the wbbench -inject flag: a comma-separated
// list of items, spaces around items ignored:
//
//	spec     = [ item { "," item } ]
//	item     = "seed=" UINT                 seed of every rule's random stream (default 0)
//	         | "badblock=" UINT [ "-" UINT ]  blocks FIRST..LAST, inclusive: every
//	                                          write touching them fails with EIO
//	         | kind [ ":" ops ] "=" value
//	kind     = "eio" | "eio-partial" | "short" | "eagain" | "delay" | "flusherr"
//	ops      = op { "+" op }                  op = "write" | "read" | "flush" | "nop"
//	value    = trigger                        eio, eio-partial, short, flusherr
//	         | trigger [ "x" UINT ]           eagain: failed attempts per hit (default 1)
//	         | DURATION [ "@" trigger ]       delay (time.ParseDuration; default: every request)
//	trigger  = FRACTION                       0 < f <= 1: each matching request with probability f
//	         | "#" UINT                       only the Nth matching request (N >= 1)
//
// Blocks are FaultConfig.BlockSize bytes (the engine's page). Without
// ops, a rule applies to writes (flusherr: flushes; delay: every op).
// See FaultKind for what each kind does. For example
//
//	eio=0.01,short=0.01,eagain=0.01,delay=5ms@0.001,flusherr=0.1,badblock=4096-4100,seed=7
//	eagain=1x9          every write gets 9 EAGAINs: past the default 8 retries, so it surfaces
//	eio:read=#3         the third read fails
//
// Errors wrap ErrBadConfig and quote the bad item.
func ParseFaultRules(spec string) ([]FaultRule, error) {
	var rules []FaultRule
	var seed uint64
	seenSeed := false
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			if strings.TrimSpace(spec) == "" {
				break
			}
			return nil, fmt.Errorf("%w: -inject %q: empty item", ErrBadConfig, spec)
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: -inject: bad item %q: %s", ErrBadConfig, item, fmt.Sprintf(format, args...))
		}
		key, val, ok := strings.Cut(item, "=")
		if !ok {
			return nil, bad("want KIND=VALUE")
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		name, opsSpec, hasOps := strings.Cut(key, ":")
		switch name {
		case "seed":
			if hasOps {
				return nil, bad("seed takes no ops")
			}
			if seenSeed {
				return nil, bad("seed given twice")
			}
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return nil, bad("seed %q is not an unsigned integer", val)
			}
			seed, seenSeed = n, true
			continue
		case "badblock":
			if hasOps {
				return nil, bad("badblock takes no ops (it fails writes)")
			}
			first, last, isRange := strings.Cut(val, "-")
			a, err := strconv.ParseUint(first, 10, 64)
			if err != nil {
				return nil, bad("block %q is not an unsigned integer", first)
			}
			b := a
			if isRange {
				if b, err = strconv.ParseUint(last, 10, 64); err != nil {
					return nil, bad("block %q is not an unsigned integer", last)
				}
			}
			if b < a || b == math.MaxUint64 {
				return nil, bad("block range %d-%d is empty or too large", a, b)
			}
			rules = append(rules, FaultRule{Kind: FaultEIO, FirstBlock: a, EndBlock: b + 1})
			continue
		}
		var kind FaultKind
		for k, n := range faultKindNames {
			if n != "" && n == name {
				kind = FaultKind(k)
			}
		}
		if kind == 0 {
			return nil, bad("unknown kind %q (want seed, badblock, eio, eio-partial, short, eagain, delay or flusherr)", name)
		}
		r := FaultRule{Kind: kind}
		if hasOps {
			for o := range strings.SplitSeq(opsSpec, "+") {
				op, ok := map[string]Op{"write": OpWrite, "read": OpRead, "flush": OpFlush, "nop": OpNop}[o]
				if !ok {
					return nil, bad("unknown op %q (want write, read, flush or nop)", o)
				}
				r.Ops |= OpSetOf(op)
			}
		}
		trigger := val
		switch kind {
		case FaultDelay:
			d, t, hasTrigger := strings.Cut(val, "@")
			dur, err := time.ParseDuration(d)
			if err != nil || dur <= 0 {
				return nil, bad("delay %q is not a positive duration", d)
			}
			r.Delay = dur
			trigger = "1"
			if hasTrigger {
				trigger = t
			}
		case FaultEAGAIN:
			t, times, hasTimes := strings.Cut(val, "x")
			trigger = t
			r.Times = 1
			if hasTimes {
				n, err := strconv.Atoi(times)
				if err != nil || n < 1 {
					return nil, bad("attempts %q is not a positive integer", times)
				}
				r.Times = n
			}
		}
		if n, ok := strings.CutPrefix(trigger, "#"); ok {
			nth, err := strconv.ParseUint(n, 10, 64)
			if err != nil || nth == 0 {
				return nil, bad("#%s: want #N with N >= 1", n)
			}
			r.Nth = nth
		} else {
			frac, err := strconv.ParseFloat(trigger, 64)
			if err != nil || !(frac > 0 && frac <= 1) {
				return nil, bad("fraction %q not in (0, 1]", trigger)
			}
			r.Fraction = frac
		}
		rules = append(rules, r)
	}
	for i := range rules {
		rules[i].Seed = seed
	}
	return rules, nil
}
