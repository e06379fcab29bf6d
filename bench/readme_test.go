package bench

import (
	"bytes"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

// TestREADMEExample: the library example in the project's README builds
// and runs as written, against a file, and the page it writes is there.
func TestREADMEExample(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the build of the README's example in -short mode")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: no go command to build the README's example: %v", err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "\n## Using the library\n")
	if !ok {
		t.Fatal(`README.md has no "## Using the library" section`)
	}
	_, rest, ok = strings.Cut(rest, "```go\n")
	code, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 || !strings.Contains(code, "package main") {
		t.Fatalf("no whole program in a go block under \"Using the library\":\n%s", rest[:min(len(rest), 500)])
	}
	if formatted, err := format.Source([]byte(code)); err != nil || string(formatted) != code {
		t.Fatalf("the README's example is not gofmt'ed (%v):\n%s", err, formatted)
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "main.go"), filepath.Join(dir, "example")
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(gobin, "build", "-o", bin, src)
	build.Dir = ".." // in the module, so its imports are the module's packages
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the README's example does not build: %v\n%s\n%s", err, out, code)
	}
	target := loopdevtest.ShmFile(t, 4<<20)
	out, err := exec.Command(bin, target).CombinedOutput()
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "page 2000 refused: ") || !strings.Contains(lines[0], "2000") ||
		lines[1] != "page 7 is on "+target {
		t.Fatalf("the README's example: %v: %s", err, out)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if page := got[7*4096 : 8*4096]; !bytes.HasPrefix(page, []byte("hello, page 7\x00")) {
		t.Fatalf("page 7 of the target starts %q", page[:16])
	}
}
