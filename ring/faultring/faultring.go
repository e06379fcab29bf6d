// Package faultring injects faults into a ring: an Injector is a
// ring.Interposer, given to a ring in ring.Config.Interposers, so it sees
// every attempt at every request on every backend — also the native
// ring's owner-thread path, where the engine's writeback pass puts SQEs
// in the submission queue itself.
//
// Rules say when to fail — the N-th matching request, a seeded fraction
// of them, or every one — and where: an op set (writes, reads, flushes)
// and a block range. The Kind says how: EIO, a write that fails part
// way, a short transfer the ring resumes, EAGAIN, a delay, a failed
// flush. Parse reads a list of rules from text (wbbench's -inject).
//
// What the engine sees is exactly what a real ring can report: a
// Completion is final, and N < length only with an error.
package faultring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wbengine/wbengine/ring"
)

// Kind is what a Rule injects. The semantics are chosen so
// that what the engine sees is exactly what a real ring can report
// (ring.go: a Completion is final, and N < length only with an error).
type Kind uint8

const (
	// EIO completes the request with EIO and N 0 without
	// submitting it: nothing reaches the target.
	EIO Kind = iota + 1
	// PartialEIO lets only the first half of the request (rounded down
	// to the alignment) reach the target and completes it with EIO and N
	// = that prefix: a write that failed part way. A request of one
	// aligned block cannot be split and fails like EIO (and is counted
	// as such).
	PartialEIO
	// Short makes the transfer short: the first attempt carries only the
	// first half of the request (rounded down to the alignment), and the
	// ring resumes the rest as it resumes any short transfer from the
	// kernel; the final Completion carries the full length and no error.
	// It is invisible to the engine except in timing, and exercises the
	// resume path (iovec trimming, offset advance, a write landing in two
	// pieces) on real data. A request of one aligned block is not split
	// (and not counted).
	Short
	// EAGAIN fails Times consecutive attempts of the request with
	// -EAGAIN before they reach the target. The ring retries them as it
	// retries any -EAGAIN: up to its MaxRetries retries are invisible to
	// the engine (the request then goes through); with Times > MaxRetries
	// the request completes with EAGAIN and N 0.
	EAGAIN
	// Delay holds each attempt's result back for Delay before the ring
	// acts on it. It combines with any other fault.
	Delay
	// FlushErr completes a flush with EIO without flushing.
	FlushErr
)

var kindNames = [...]string{
	EIO:        "eio",
	PartialEIO: "eio-partial",
	Short:      "short",
	EAGAIN:     "eagain",
	Delay:      "delay",
	FlushErr:   "flusherr",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "fault?"
}

// defaultOps is the set of ops a rule of kind k applies to when its Ops
// is 0: flushes for FlushErr, everything for Delay, writes for
// the rest.
func (k Kind) defaultOps() OpSet {
	switch k {
	case FlushErr:
		return OpSetOf(ring.OpFlush)
	case Delay:
		return OpSetOf(ring.OpWrite, ring.OpRead, ring.OpFlush, ring.OpNop)
	}
	return OpSetOf(ring.OpWrite)
}

// OpSet is a set of Ops.
type OpSet uint8

// OpSetOf returns the set of ops.
func OpSetOf(ops ...ring.Op) OpSet {
	var s OpSet
	for _, o := range ops {
		s |= 1 << o
	}
	return s
}

// Has reports whether o is in s.
func (s OpSet) Has(o ring.Op) bool { return o < 8 && s&(1<<o) != 0 }

// Rule says which requests get which fault. A request matches when
// its op is in Ops and, if the rule has a block range, its bytes overlap
// the range; a matching request is then hit if it is the rule's Nth
// match (Nth > 0), or else with probability Fraction (0 meaning always).
//
// Every rule counts and draws for every request it matches, so rules do
// not change each other's streams. Of the rules that hit a request, the
// first in order whose fault applies to it decides its fault; Delay
// rules combine with it (the longest delay wins).
type Rule struct {
	Kind Kind
	// Ops the rule applies to; 0 means the kind's default (writes, but
	// flushes for FlushErr and every op for Delay).
	Ops OpSet
	// FirstBlock and EndBlock restrict the rule to requests touching
	// blocks [FirstBlock, EndBlock) of Config.BlockSize bytes each;
	// EndBlock 0 means no restriction. Flushes and NOPs never touch a
	// range. A rule of kind EIO with a range and no Nth or Fraction
	// is a permanent bad block.
	FirstBlock, EndBlock uint64
	// Nth, if positive, hits only the Nth matching request (1-based).
	Nth uint64
	// Fraction, in [0, 1], is the probability a matching request is hit
	// (0: every one). Ignored when Nth is set.
	Fraction float64
	// Seed seeds the rule's random stream (together with the rule's
	// position, so equal seeds still give independent streams). The same
	// seed hits the same requests where the ring issues them in order
	// (native, iceber); the pwritev pool's workers race to issue theirs.
	Seed uint64
	// Times is the number of consecutive failed attempts a EAGAIN
	// hit causes (0 means 1).
	Times int
	// Delay is how long Delay holds a completion back.
	Delay time.Duration
}

func (r Rule) validate() error {
	switch {
	case r.Kind < EIO || r.Kind > FlushErr:
		return fmt.Errorf("%w: fault rule: unknown kind %d", ring.ErrBadConfig, r.Kind)
	case !(r.Fraction >= 0 && r.Fraction <= 1):
		return fmt.Errorf("%w: fault rule %s: fraction %v not in [0, 1]", ring.ErrBadConfig, r.Kind, r.Fraction)
	case r.EndBlock != 0 && r.EndBlock <= r.FirstBlock:
		return fmt.Errorf("%w: fault rule %s: empty block range [%d, %d)", ring.ErrBadConfig, r.Kind, r.FirstBlock, r.EndBlock)
	case r.Times < 0:
		return fmt.Errorf("%w: fault rule %s: negative Times %d", ring.ErrBadConfig, r.Kind, r.Times)
	case r.Kind == Delay && r.Delay <= 0:
		return fmt.Errorf("%w: fault rule delay: Delay %v must be positive", ring.ErrBadConfig, r.Delay)
	case r.Ops>>(ring.OpNop+1) != 0 || r.Ops&1 != 0:
		return fmt.Errorf("%w: fault rule %s: unknown ops in set %#x", ring.ErrBadConfig, r.Kind, r.Ops)
	}
	return nil
}

// Config configures an Injector.
type Config struct {
	// Rules are the faults to inject; they can be replaced later with
	// SetRules.
	Rules []Rule
	// BlockSize is the unit of Rule.FirstBlock/EndBlock in bytes
	// (default 4096; the engine's page size makes rule blocks the
	// mapper's blocks).
	BlockSize int64
	// Align is the alignment of the prefixes Short and PartialEIO let
	// through: the target's logical block size (default 512), or the page
	// size to cut only at page boundaries.
	Align int64
	// MaxRetries is the ring's Config.MaxRetries (default 8), for
	// counting the EAGAIN hits that surface (Stats.EAGAINSurfaced).
	MaxRetries int
}

// Stats counts what an Injector injected.
type Stats struct {
	Requests   uint64 // requests seen (first attempts)
	EIO        uint64 // requests failed with EIO before reaching the target
	PartialEIO uint64 // requests failed with EIO after a partial transfer
	Short      uint64 // requests cut short (their rest resumed by the ring)
	EAGAIN     uint64 // attempts failed with EAGAIN (retried or surfaced)
	// EAGAINSurfaced counts requests whose EAGAIN hits outnumber the
	// ring's retries: they complete with EAGAIN.
	EAGAINSurfaced uint64
	Delayed        uint64 // attempt results held back
	FlushErr       uint64 // flushes failed without flushing
	Resumed        uint64 // rests of short transfers the ring issued
}

// Injector is a ring.Interposer that injects faults by rule. Rules can
// be switched off (SetEnabled) or replaced (SetRules, Clear) at any
// time; requests already seen keep the faults they were given. It is
// safe for concurrent use (the pwritev pool calls it from several
// workers).
type Injector struct {
	cfg     Config
	enabled atomic.Bool

	// rmu protects rules (their counters and random streams).
	rmu   sync.Mutex
	rules []ruleState

	// slots[i] is the fault given to the request in the ring's slot i;
	// only the goroutine working on that request touches it.
	slots []slotFault

	stats struct {
		requests, eio, partial, short, eagain, surfaced, delayed, flushErr, resumed atomic.Uint64
	}
}

var _ ring.Interposer = (*Injector)(nil)

type ruleState struct {
	Rule
	seen uint64
	rng  *rand.Rand
}

// slotFault is the fault of one request.
type slotFault struct {
	fault  Kind  // the outcome fault (0: none, or only a delay)
	split  int64 // prefix length for Short/PartialEIO
	eagain int   // EAGAIN attempts still to inject
	delay  time.Duration
}

// New makes an Injector.
func New(cfg Config) (*Injector, error) {
	switch {
	case cfg.BlockSize < 0 || cfg.Align < 0:
		return nil, fmt.Errorf("%w: fault config: negative BlockSize %d or Align %d", ring.ErrBadConfig, cfg.BlockSize, cfg.Align)
	case cfg.BlockSize == 0:
		cfg.BlockSize = 4096
	}
	if cfg.Align == 0 {
		cfg.Align = 512
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = ring.DefaultMaxRetries
	}
	f := &Injector{cfg: cfg}
	if err := f.SetRules(cfg.Rules); err != nil {
		return nil, err
	}
	f.enabled.Store(true)
	return f, nil
}

// SetRules replaces the rules (resetting their counters and random
// streams). Requests already seen keep their faults.
func (f *Injector) SetRules(rules []Rule) error {
	rs := make([]ruleState, len(rules))
	for i, r := range rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
		if r.Ops == 0 {
			r.Ops = r.Kind.defaultOps()
		}
		rs[i] = ruleState{Rule: r, rng: rand.New(rand.NewPCG(r.Seed, uint64(i)))}
	}
	f.rmu.Lock()
	f.rules = rs
	f.rmu.Unlock()
	return nil
}

// Clear removes every rule.
func (f *Injector) Clear() { _ = f.SetRules(nil) }

// SetEnabled switches injection on or off for requests seen from now on
// (rule counters do not advance while it is off).
func (f *Injector) SetEnabled(on bool) { f.enabled.Store(on) }

// Enabled reports whether injection is on.
func (f *Injector) Enabled() bool { return f.enabled.Load() }

// Stats returns what was injected so far.
func (f *Injector) Stats() Stats {
	s := &f.stats
	return Stats{
		Requests: s.requests.Load(), EIO: s.eio.Load(), PartialEIO: s.partial.Load(),
		Short: s.short.Load(), EAGAIN: s.eagain.Load(), EAGAINSurfaced: s.surfaced.Load(),
		Delayed: s.delayed.Load(), FlushErr: s.flushErr.Load(), Resumed: s.resumed.Load(),
	}
}

// Attach implements ring.Interposer.
func (f *Injector) Attach(depth int) { f.slots = make([]slotFault, depth) }

// Issue implements ring.Interposer: on a request's first attempt it
// decides the request's fault; on every attempt it applies it.
func (f *Injector) Issue(a *ring.Attempt) {
	s := &f.slots[a.Slot]
	if a.Seq == 0 {
		*s = slotFault{}
		f.stats.requests.Add(1)
		if f.enabled.Load() {
			f.decide(s, a)
		}
	} else if s.fault == Short && s.split > 0 && a.Done > 0 {
		f.stats.resumed.Add(1) // the ring issues the rest
		s.split = 0
	}
	if s.eagain > 0 {
		s.eagain--
		f.stats.eagain.Add(1)
		a.Complete, a.Result = true, -int32(syscall.EAGAIN)
		return
	}
	switch s.fault {
	case EIO, FlushErr:
		a.Complete, a.Result = true, -int32(syscall.EIO)
	case PartialEIO, Short:
		if a.Done == 0 && s.split > 0 {
			a.Limit = s.split
		}
	}
}

// Done implements ring.Interposer.
func (f *Injector) Done(a *ring.Attempt) {
	s := &f.slots[a.Slot]
	if s.fault == PartialEIO && a.Result >= 0 {
		a.Fail = syscall.EIO
	}
	if s.delay > 0 {
		f.stats.delayed.Add(1)
		a.Delay = s.delay
	}
}

// decide applies the rules to the request of a (its first attempt).
func (f *Injector) decide(s *slotFault, a *ring.Attempt) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	for i := range f.rules {
		r := &f.rules[i]
		if !r.Ops.Has(a.Req.Op) || !f.inRange(r, a) {
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
		if r.Kind == Delay {
			s.delay = max(s.delay, r.Delay)
			continue
		}
		if s.fault != 0 {
			continue
		}
		switch r.Kind {
		case EIO, FlushErr:
			s.fault = r.Kind
		case EAGAIN:
			s.fault = EAGAIN
			s.eagain = max(r.Times, 1)
		case PartialEIO, Short:
			half := a.Len / 2 / f.cfg.Align * f.cfg.Align
			switch {
			case half > 0:
				s.fault, s.split = r.Kind, half
			case r.Kind == PartialEIO:
				s.fault = EIO
			}
		}
	}
	switch s.fault {
	case EIO:
		f.stats.eio.Add(1)
	case FlushErr:
		f.stats.flushErr.Add(1)
	case PartialEIO:
		f.stats.partial.Add(1)
	case Short:
		f.stats.short.Add(1)
	case EAGAIN:
		if s.eagain > f.cfg.MaxRetries {
			f.stats.surfaced.Add(1)
		}
	}
}

// inRange reports whether the request of a touches r's block range.
func (f *Injector) inRange(r *ruleState, a *ring.Attempt) bool {
	if r.EndBlock == 0 {
		return true
	}
	if a.Len == 0 {
		return false
	}
	bs := uint64(f.cfg.BlockSize)
	lo, hi := satMul(r.FirstBlock, bs), satMul(r.EndBlock, bs)
	off := uint64(a.Off)
	return off < hi && lo < off+uint64(a.Len)
}

func satMul(a, b uint64) uint64 {
	if b != 0 && a > math.MaxUint64/b {
		return math.MaxUint64
	}
	return a * b
}

// Parse parses a list of fault rules (wbbench -inject takes one): a comma-separated
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
// See Kind for what each kind does. For example
//
//	eio=0.01,short=0.01,eagain=0.01,delay=5ms@0.001,flusherr=0.1,badblock=4096-4100,seed=7
//	eagain=1x9          every write gets 9 EAGAINs: past the default 8 retries, so it surfaces
//	eio:read=#3         the third read fails
//
// Errors wrap ring.ErrBadConfig and quote the bad item.
func Parse(spec string) ([]Rule, error) {
	var rules []Rule
	var seed uint64
	seenSeed := false
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			if strings.TrimSpace(spec) == "" {
				break
			}
			return nil, fmt.Errorf("%w: %q: empty item", ring.ErrBadConfig, spec)
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: fault rules: bad item %q: %s", ring.ErrBadConfig, item, fmt.Sprintf(format, args...))
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
			rules = append(rules, Rule{Kind: EIO, FirstBlock: a, EndBlock: b + 1})
			continue
		}
		var kind Kind
		for k, n := range kindNames {
			if n != "" && n == name {
				kind = Kind(k)
			}
		}
		if kind == 0 {
			return nil, bad("unknown kind %q (want seed, badblock, eio, eio-partial, short, eagain, delay or flusherr)", name)
		}
		r := Rule{Kind: kind}
		if hasOps {
			for o := range strings.SplitSeq(opsSpec, "+") {
				op, ok := map[string]ring.Op{"write": ring.OpWrite, "read": ring.OpRead, "flush": ring.OpFlush, "nop": ring.OpNop}[o]
				if !ok {
					return nil, bad("unknown op %q (want write, read, flush or nop)", o)
				}
				r.Ops |= OpSetOf(op)
			}
		}
		trigger := val
		switch kind {
		case Delay:
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
		case EAGAIN:
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
