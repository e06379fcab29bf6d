package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wbengine/wbengine/internal/loopdev/loopdevtest"
)

func TestFormatAndList(t *testing.T) {
	dev := loopdevtest.ShmFile(t, 16<<20)
	var out, errOut bytes.Buffer
	if err := run([]string{"format", "-db", "app.db", "-db-size", "8MiB", "-journal-size", "1MiB", "-wal-size", "4MiB", dev}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"formatted " + dev, "app.db ", "app.db-journal", "app.db-wal", "absent"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if err := run([]string{"format", "-db", "other.db", dev}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "already holds a directory") {
		t.Errorf("second format without -force: %v", err)
	}
	if err := run([]string{"format", "-force", "-db", "other.db", "-db-size", "64MiB", dev}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "the device has") {
		t.Errorf("regions larger than the device: %v", err)
	}
	for _, bad := range [][]string{nil, {"format", dev}, {"ls"}, {"frobnicate", dev}, {"format", "-db", "x", "-db-size", "lots", dev}} {
		if err := run(bad, &out, &errOut); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if n, err := parseSize("3MiB"); n != 3<<20 || err != nil {
		t.Errorf("parseSize(3MiB) = %d, %v", n, err)
	}
}
