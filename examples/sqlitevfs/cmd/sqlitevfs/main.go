// Command sqlitevfs lays out a device for the sqlitevfs VFS and lists
// what is on one.
//
//	sqlitevfs format [-force] -db NAME [-db-size 1GiB] [-journal-size 64MiB] [-wal-size 256MiB] DEVICE
//	sqlitevfs ls DEVICE
//
// format writes an empty directory with a region for the database NAME,
// one for its rollback journal and one for its WAL (a WAL database needs
// a journal region too: SQLite switches into WAL mode through it).
// Writing to a device destroys what is on it; a device that already
// holds a directory is refused unless -force.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/wbengine/wbengine/examples/sqlitevfs"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sqlitevfs:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: sqlitevfs format [-force] -db NAME [-db-size N] [-journal-size N] [-wal-size N] DEVICE | sqlitevfs ls DEVICE")

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "format":
		return format(args[1:], stdout, stderr)
	case "ls":
		if len(args) != 2 {
			return errUsage
		}
		return ls(args[1], stdout)
	}
	return errUsage
}

func format(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("format", flag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "format a device that already holds a directory")
	db := fs.String("db", "", "the database's name, as SQLite opens it (required)")
	dbSize := fs.String("db-size", "1GiB", "the database's region")
	jSize := fs.String("journal-size", "64MiB", "the rollback journal's region (0: none)")
	wSize := fs.String("wal-size", "256MiB", "the WAL's region (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *db == "" || fs.NArg() != 1 {
		return errUsage
	}
	var sizes [3]int64
	for i, s := range []struct{ name, v string }{{"db-size", *dbSize}, {"journal-size", *jSize}, {"wal-size", *wSize}} {
		n, err := parseSize(s.v)
		if err != nil || n < 0 || (i == 0 && n == 0) {
			return fmt.Errorf("-%s %q: want a size such as 512MiB", s.name, s.v)
		}
		sizes[i] = n
	}
	dev := fs.Arg(0)
	if err := sqlitevfs.Format(dev, sqlitevfs.DatabaseRegions(*db, sizes[0], sizes[1], sizes[2]), sqlitevfs.FormatOptions{Force: *force}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "formatted %s\n", dev)
	return ls(dev, stdout)
}

func ls(dev string, stdout io.Writer) error {
	v, err := sqlitevfs.Open(dev, sqlitevfs.Options{})
	if err != nil {
		return err
	}
	defer v.Close()
	fmt.Fprintf(stdout, "%-32s %12s %12s %14s  %s\n", "file", "first page", "pages", "size", "")
	for _, f := range v.Files() {
		state := "absent"
		if f.Exists {
			state = "exists"
		}
		fmt.Fprintf(stdout, "%-32s %12d %12d %14d  %s\n", f.Name, f.Start, f.Pages, f.Size, state)
	}
	return nil
}

// parseSize reads a byte count with an optional binary suffix (KiB, MiB,
// GiB, TiB; K, M, G, T mean the same).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}, {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40}, {"B", 0}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 || n > (1<<62)>>u.shift {
				return 0, fmt.Errorf("bad size %q", s)
			}
			return n << u.shift, nil
		}
	}
	return strconv.ParseInt(s, 10, 64)
}
