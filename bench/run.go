package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"runtime/trace"
	"strings"

	"github.com/wbengine/wbengine/internal/verify"
)

// Run measures the engine and the baselines at the options' queue depth
// and I/O size: Runs cycles, each system once per cycle, the order
// rotated from cycle to cycle so no system always goes first. Errors of
// one cycle (a failed Sync, fio failing) are recorded in the report and
// the run goes on; a cancelled ctx stops it.
func (b *Bench) Run(ctx context.Context) (*Report, error) {
	_, _, r := b.header(b.eng)
	results, errs, err := b.measure(ctx, b.eng)
	if err != nil {
		return nil, err
	}
	r.Results = results
	r.Errors = errs
	r.Warnings = append(r.Warnings, deviceWarnings(results, b.opts.Pattern == Hot, b.hold != nil)...)
	if b.eng.faulty != nil && b.layout != nil {
		// A flush pattern ends with faults off and one more Sync (hot
		// ends each period so): what the failed cycles left dirty is
		// made durable, or the engine fails on its own.
		if err := b.lastSync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctxErr(ctx)
			}
			r.Errors = append(r.Errors, err.Error())
			b.opts.Logf("%v", err)
		}
	}
	if b.eng.faulty != nil {
		r.Faults = faultsOf(b.eng.faulty.Stats())
	}
	if b.journal != nil {
		v := b.journal.Last()
		r.JournalSynced = &v
	}
	r.SyncErrors = b.syncErrs
	r.EngineEnd = b.eng.end()
	roundFloats(&r)
	return &r, nil
}

// lastSync switches -inject's faults off and syncs the engine once
// more, journaling "synced 1" if it returned nil and the layout was
// written into the cache.
func (b *Bench) lastSync(ctx context.Context) error {
	es := b.eng
	es.setFaults(false)
	b.setRunLabel("")
	b.status("engine: last sync, faults off")
	if err := es.sync(ctx); err != nil {
		err = fmt.Errorf("engine: last sync, faults off: %w", err)
		b.syncFailed(err)
		return err
	}
	if b.journal != nil && b.dirtied {
		return b.journal.Synced(1)
	}
	return nil
}

// systems lists the systems that run, engine first.
func (b *Bench) systems() []string {
	out := []string{"engine"}
	for _, name := range b.opts.Baselines {
		if b.runs(name) {
			out = append(out, name)
		}
	}
	return out
}

// measure runs every system Runs times with the engine es.
func (b *Bench) measure(ctx context.Context, es *engineSys) ([]Result, []string, error) {
	o := &b.opts
	systems := b.systems()
	samples := map[string][]Sample{}
	notes, commands := map[string]string{}, map[string]string{}
	var errs []string
	qd, maxIO := es.cfg.QueueDepth, es.cfg.MaxIOBytes
	if b.fio != "" && b.layout != nil {
		var args []string
		args, notes["fio"] = b.fioArgs(qd, maxIO)
		commands["fio"] = shellCommand(append([]string{b.fio}, args...))
	}
	hotStates := map[string]*hotState{}
	for run := range o.Runs {
		label := ""
		if o.Runs > 1 {
			label = fmt.Sprintf("run %d/%d · ", run+1, o.Runs)
		}
		b.setRunLabel(label)
		for k := range systems {
			name := systems[(k+run)%len(systems)]
			b.cycle++
			var s Sample
			var err error
			// Each system's work carries the pprof label system=NAME (the
			// engine's own goroutines carry it from openEngine), and is a
			// task in an execution trace.
			pprof.Do(ctx, pprof.Labels("system", name), func(ctx context.Context) {
				ctx, task := trace.NewTask(ctx, fmt.Sprintf("%s run %d", name, run+1))
				defer task.End()
				if o.Pattern == Hot {
					st := hotStates[name]
					if name == "engine" {
						st = b.hot
					} else if st == nil {
						st = newHotState(b.n, o.Writers)
						hotStates[name] = st
					}
					s, err = b.hotCycle(ctx, b.hotSystem(name, es), st, b.journalFor(name))
					return
				}
				switch name {
				case "engine":
					s, err = es.flushCycle(ctx)
				case "kernel":
					s, err = b.kernelCycle(ctx)
				case "pwrite":
					s, err = b.pwriteCycle(ctx, qd, maxIO)
				case "fio":
					s, err = b.fioCycle(ctx, qd, maxIO)
				}
			})
			if ctx.Err() != nil {
				return nil, nil, ctxErr(ctx)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s%v", label, err))
				o.Logf("%s%v", label, err)
			}
			if s.Seconds > 0 {
				s.Run = run + 1
				samples[name] = append(samples[name], s)
			}
		}
	}
	b.status("done")
	results := sortedResults(samples, notes, commands, o.PageSize)
	if len(results) == 0 && len(errs) > 0 {
		return nil, nil, errors.New(errs[0])
	}
	return results, errs, nil
}

func (b *Bench) hotSystem(name string, es *engineSys) hotSystem {
	switch name {
	case "kernel":
		return &kernelHot{b: b}
	case "pwrite":
		return &pwriteHot{b: b}
	}
	return &engineHot{es: es}
}

func (b *Bench) journalFor(name string) *verify.Journal {
	if name == "engine" {
		return b.journal
	}
	return nil
}

// shellCommand quotes a command line for a POSIX shell: words of safe
// characters as they are, the others in single quotes.
func shellCommand(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+./:,%@") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
