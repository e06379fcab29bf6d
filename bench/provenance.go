package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SchemaVersion is the version of the JSON documents wbbench prints
// (Report, SweepReport, CheckReport). 2: run 1 apart from the steady
// median, provenance, device accounting, numbers rounded to 4
// significant digits.
const SchemaVersion = 2

// Provenance is where and how a result was measured: enough to tell two
// results apart, or to run the same again.
type Provenance struct {
	Wbbench     string `json:"wbbench"` // Version()
	VCSRevision string `json:"vcs_revision,omitempty"`
	VCSTime     string `json:"vcs_time,omitempty"`
	VCSModified bool   `json:"vcs_modified,omitempty"`
	Go          string `json:"go"`
	Time        string `json:"time"`   // when the benchmark started, RFC 3339
	Kernel      string `json:"kernel"` // uname: release and version
	Arch        string `json:"arch"`
	CPUModel    string `json:"cpu_model"`
	CPUs        int    `json:"cpus"` // online
	GOMAXPROCS  int    `json:"gomaxprocs"`
	MemTotal    int64  `json:"mem_total_bytes"`
	// CommandLine is wbbench's own command line, as given.
	CommandLine []string `json:"command_line"`
	// Sysctls are the ones that decide the kernel's writeback and whether
	// io_uring may be used, as they were when the benchmark started.
	Sysctls map[string]string `json:"sysctls"`
	Fio     string            `json:"fio,omitempty"` // fio --version, when fio runs
}

// VersionInfo is what the binary knows of its build.
type VersionInfo struct {
	Module, Revision, Time string
	Modified               bool
	Go                     string
}

// The VCS revision, commit time and "true" if the tree was modified,
// for builds whose build information has none (the go command records
// it only in a checkout whose .git is a directory, not in a git
// worktree): make build sets them with -ldflags -X.
var (
	vcsRevision string
	vcsTime     string
	vcsModified string
)

// BuildVersion reads the build information the Go toolchain stamped
// into the binary (runtime/debug.ReadBuildInfo): the module version and,
// where the build recorded it (go build with -buildvcs), the VCS revision
// and time and whether the tree was modified; failing that, what make
// build stamped with -ldflags.
func BuildVersion() VersionInfo {
	v := buildInfoVersion()
	if v.Revision == "" && vcsRevision != "" {
		v.Revision, v.Time, v.Modified = vcsRevision, vcsTime, vcsModified == "true"
	}
	return v
}

func buildInfoVersion() VersionInfo {
	v := VersionInfo{Module: "(unknown)", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Module = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the version on one line: "wbbench MODULE (REVISION, TIME[,
// modified]) GO OS/ARCH", or without the revision where the build did
// not record it.
func (v VersionInfo) String() string {
	s := "wbbench " + v.Module
	switch {
	case v.Revision != "":
		s += " (" + v.Revision
		if v.Time != "" {
			s += ", " + v.Time
		}
		if v.Modified {
			s += ", modified"
		}
		s += ")"
	default:
		s += " (no VCS revision recorded: make build records it)"
	}
	return s + " " + v.Go + " " + runtime.GOOS + "/" + runtime.GOARCH
}

// provenance collects the report's provenance; start is when the
// benchmark started.
func (b *Bench) provenance() Provenance {
	v := BuildVersion()
	p := Provenance{
		Wbbench: v.Module, VCSRevision: v.Revision, VCSTime: v.Time, VCSModified: v.Modified,
		Go: v.Go, Time: b.started.Format(time.RFC3339), Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		CommandLine: b.opts.CommandLine, Sysctls: b.sysctls, Fio: b.fioVersion,
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		p.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Version[:])
	}
	p.CPUModel = cpuModel()
	p.MemTotal = memTotal()
	return p
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open(filepath.Join(procRoot, "cpuinfo"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// memTotal is MemTotal from /proc/meminfo in bytes (0 when unknown).
func memTotal() int64 { return meminfo("MemTotal:") }

// fioVersionOf runs fio --version.
func fioVersionOf(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// QueueLimits are a block device's request-queue limits and settings
// (/sys/block/DEV/queue/): what decides how its writes are split,
// queued and made durable.
type QueueLimits struct {
	NrRequests        int    `json:"nr_requests"`
	MaxSectorsKB      int    `json:"max_sectors_kb"`
	MaxHwSectorsKB    int    `json:"max_hw_sectors_kb"`
	MaxSegments       int    `json:"max_segments"`
	LogicalBlockSize  int    `json:"logical_block_size"`
	PhysicalBlockSize int    `json:"physical_block_size"`
	Rotational        bool   `json:"rotational"`
	WriteCache        string `json:"write_cache"`
	FUA               bool   `json:"fua"`
	Scheduler         string `json:"scheduler"`
}

// readQueueLimits reads the queue limits of the disk dev (a name under
// /sys/block), or nil.
func readQueueLimits(dev string) *QueueLimits {
	if dev == "" {
		return nil
	}
	dir := filepath.Join(sysRoot, "block", dev, "queue")
	str := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	num := func(name string) int {
		n, _ := strconv.Atoi(str(name))
		return n
	}
	q := &QueueLimits{
		NrRequests: num("nr_requests"), MaxSectorsKB: num("max_sectors_kb"), MaxHwSectorsKB: num("max_hw_sectors_kb"),
		MaxSegments:      num("max_segments"),
		LogicalBlockSize: num("logical_block_size"), PhysicalBlockSize: num("physical_block_size"),
		Rotational: str("rotational") == "1", WriteCache: str("write_cache"), FUA: str("fua") == "1",
	}
	// "[none] mq-deadline kyber": the one in brackets is in use.
	if s := str("scheduler"); s != "" {
		q.Scheduler = s
		if i := strings.IndexByte(s, '['); i >= 0 {
			if j := strings.IndexByte(s[i:], ']'); j > 0 {
				q.Scheduler = s[i+1 : i+j]
			}
		}
	}
	if q.LogicalBlockSize == 0 && q.MaxSectorsKB == 0 {
		return nil
	}
	return q
}

// fileSystemOf names the file system a file is on (statfs), or "".
func fileSystemOf(path string) string {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return ""
	}
	switch uint32(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext2/3/4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	}
	return fmt.Sprintf("type %#x", uint32(st.Type))
}
