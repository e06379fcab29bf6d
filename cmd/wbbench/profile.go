package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// profiles are -cpuprofile and -trace: files made before anything is
// measured, profiling and tracing started right before the measured
// runs and stopped right after them. In the CPU profile every sample
// carries the pprof label system=NAME (engine, kernel, pwrite, fio): the
// engine's own work is `go tool pprof -tagfocus=system=engine`. In the
// trace each system's run is a task, the engine's timed Sync a region.
type profiles struct {
	cpu, trace *os.File
	started    bool
}

// openProfiles creates the files the flags name.
func openProfiles(cpuPath, tracePath string) (*profiles, error) {
	p := &profiles{}
	var err error
	if cpuPath != "" {
		if p.cpu, err = os.Create(cpuPath); err != nil {
			return nil, usage2("-cpuprofile %s: %v", cpuPath, err)
		}
	}
	if tracePath != "" {
		if p.trace, err = os.Create(tracePath); err != nil {
			p.close()
			return nil, usage2("-trace %s: %v", tracePath, err)
		}
	}
	return p, nil
}

// start starts the CPU profile and the trace.
func (p *profiles) start() error {
	if p.cpu != nil {
		if err := pprof.StartCPUProfile(p.cpu); err != nil {
			return fmt.Errorf("-cpuprofile %s: %w", p.cpu.Name(), err)
		}
	}
	if p.trace != nil {
		if err := trace.Start(p.trace); err != nil {
			if p.cpu != nil {
				pprof.StopCPUProfile()
			}
			return fmt.Errorf("-trace %s: %w", p.trace.Name(), err)
		}
	}
	p.started = true
	return nil
}

// stop stops what start started and closes the files.
func (p *profiles) stop() error {
	if p.started {
		if p.cpu != nil {
			pprof.StopCPUProfile()
		}
		if p.trace != nil {
			trace.Stop()
		}
		p.started = false
	}
	return p.close()
}

// remove closes and removes the files (nothing was measured).
func (p *profiles) remove() {
	for _, f := range []*os.File{p.cpu, p.trace} {
		if f != nil {
			os.Remove(f.Name())
		}
	}
	p.close()
}

func (p *profiles) close() error {
	var errs []error
	for _, f := range []*os.File{p.cpu, p.trace} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	p.cpu, p.trace = nil, nil
	return errors.Join(errs...)
}
