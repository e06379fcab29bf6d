package ring

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Defaults for a zero Config field.
const (
	DefaultDepth      = 32
	DefaultMaxRetries = 8
	// MaxDepth is the largest Config.Depth Open accepts.
	MaxDepth = 4096
	// RunSlotBatch is how many free slots a Run function's Queue.Add may
	// take at a time, beyond those its requests hold. A caller that wants
	// Submit never to wait while a Run function holds the ring sizes
	// Depth as what the Run function keeps outstanding, plus this, plus
	// what other goroutines submit at once.
	RunSlotBatch = 32
)

// backends maps a backend name to its constructor. Each backend file
// registers itself from its init function (native_linux.go: "native";
// pwritev.go: "pwritev"; iceber.go, built only with -tags iceber:
// "iceber"). Constructors get a Config that Open has already validated
// and filled with defaults. Written only during package initialization;
// read-only afterwards.
var backends = map[string]Opener{}

// An Opener opens a ring on a target: Open with the backend chosen
// (OpenerOf), a backend's constructor, or a wrapper around one that adds
// interposers or wraps the ring (engine.Config.OpenRing: wbbench's timing
// and fault injection, the tests' power-cut model and fake rings).
type Opener func(t *Target, cfg Config) (Ring, error)

// OpenerOf is Open with the backend named.
func OpenerOf(backend string) Opener {
	return func(t *Target, cfg Config) (Ring, error) { return Open(t, backend, cfg) }
}

// Backends lists the names of the compiled-in backends, sorted.
func Backends() []string {
	names := make([]string, 0, len(backends))
	for name := range backends {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Open starts a ring of the named backend on t:
//
//   - "auto" (or ""): the native io_uring ring; if io_uring is refused
//     (ErrRefused: seccomp, kernel.io_uring_disabled), the "pwritev" pool,
//     saying why once through cfg.Logf and in Caps().Setup.
//   - "native": the native io_uring ring, or its error.
//   - "pwritev": the goroutine pool (fallback and baseline).
//   - "iceber": github.com/iceber/iouring-go, only in binaries built
//     with -tags iceber -ldflags=-checklinkname=0.
//
// Zero cfg fields take their defaults (Depth 32, MaxRetries 8); a
// negative or out-of-range value, or a nil Handler, is ErrBadConfig.
// Closing the ring does not close t.
func Open(t *Target, backend string, cfg Config) (Ring, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("%w: nil target", ErrBadConfig)
	}
	if t.fd < 0 {
		return nil, fmt.Errorf("ring: %s: %w: target is closed", t.Path, ErrTarget)
	}
	switch backend {
	case "", "auto":
		return openAuto(t, cfg)
	}
	open, ok := backends[backend]
	if !ok {
		if backend == "iceber" {
			return nil, fmt.Errorf("%w: backend \"iceber\" is not compiled in: build with -tags iceber -ldflags=-checklinkname=0", ErrNotSupported)
		}
		return nil, fmt.Errorf("%w: unknown backend %q (known: auto, %s)", ErrBadConfig, backend, strings.Join(Backends(), ", "))
	}
	return open(t, cfg)
}

// openAuto is Open's "auto": native, falling back to pwritev only when
// io_uring itself is refused. Any other native failure is returned: it
// would fail the pool too, or it is a bug worth seeing.
func openAuto(t *Target, cfg Config) (Ring, error) {
	native, ok := backends["native"]
	if !ok {
		return nil, fmt.Errorf("%w: no native backend compiled in", ErrNotSupported)
	}
	r, err := native(t, cfg)
	if err == nil || !errors.Is(err, ErrRefused) {
		return r, err
	}
	pool, ok := backends["pwritev"]
	if !ok {
		return nil, fmt.Errorf("%w (and no pwritev backend is compiled in to fall back to)", err)
	}
	why := fmt.Sprintf("io_uring refused (%v); using the pwritev pool", err)
	fr, ferr := pool(t, cfg)
	if ferr != nil {
		return nil, fmt.Errorf("%w; falling back to pwritev failed too: %w", err, ferr)
	}
	if cfg.Logf != nil {
		cfg.Logf("ring: %s: %s", t.Path, why)
	}
	return &fallbackRing{Ring: fr, why: why}, nil
}

// fallbackRing is the ring "auto" fell back to; it adds why to
// Caps().Setup.
type fallbackRing struct {
	Ring
	why string
}

func (f *fallbackRing) Caps() Caps {
	c := f.Ring.Caps()
	if c.Setup == "" {
		c.Setup = f.why
	} else {
		c.Setup = f.why + "; " + c.Setup
	}
	return c
}

// withDefaults validates c and fills its zero fields with defaults.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Depth < 0 || c.Depth > MaxDepth:
		return c, fmt.Errorf("%w: Depth %d out of range [1, %d] (0 means %d)", ErrBadConfig, c.Depth, MaxDepth, DefaultDepth)
	case c.Depth == 0:
		c.Depth = DefaultDepth
	}
	switch {
	case c.InFlight < 0 || c.InFlight > c.Depth:
		return c, fmt.Errorf("%w: InFlight %d out of range [1, Depth %d] (0 means Depth)", ErrBadConfig, c.InFlight, c.Depth)
	case c.InFlight == 0:
		c.InFlight = c.Depth
	}
	switch {
	case c.MaxRetries < 0:
		return c, fmt.Errorf("%w: MaxRetries %d is negative (0 means %d)", ErrBadConfig, c.MaxRetries, DefaultMaxRetries)
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMaxRetries
	}
	if c.Handler == nil {
		return c, fmt.Errorf("%w: Handler is nil", ErrBadConfig)
	}
	return c, nil
}
