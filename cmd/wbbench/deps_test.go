package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestingLinked: the shipped binary does not link package testing
// (test helpers live in packages of their own, such as
// internal/loopdev/loopdevtest), neither as built by make build nor with
// the iceber backend compiled in.
func TestNoTestingLinked(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is unavailable: %v", err)
	}
	for _, tags := range []string{"", "iceber"} {
		out, err := exec.Command(goCmd, "list", "-tags", tags, "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", ".").Output()
		if err != nil {
			msg := err.Error()
			if ee, ok := err.(*exec.ExitError); ok {
				msg += ": " + strings.TrimSpace(string(ee.Stderr))
			}
			t.Fatalf("go list -tags %q -deps: %s", tags, msg)
		}
		var linked bool
		var importers []string
		for line := range strings.Lines(string(out)) {
			path, imports, _ := strings.Cut(strings.TrimSpace(line), ": ")
			if path == "testing" {
				linked = true
			}
			if path != "testing" && strings.Contains(" "+imports+" ", " testing ") {
				importers = append(importers, path)
			}
		}
		if linked {
			t.Errorf("wbbench built with tags %q links package testing, imported by %s", tags, strings.Join(importers, ", "))
		}
	}
}

// TestImportsOnlyBenchAndEngine: of the module's packages, wbbench
// imports bench and engine only (docs/design.md's layers); what it needs
// of the ring, bench re-exports.
func TestImportsOnlyBenchAndEngine(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is unavailable: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-f", "{{join .Imports \"\\n\"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/wbengine/wbengine/"
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, mod) && p != mod+"bench" && p != mod+"engine" {
			t.Errorf("wbbench imports %s: only bench and engine of this module", p)
		}
	}
}
