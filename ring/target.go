package ring

// Kind is what a target is.
type Kind uint8

const (
	KindFile  Kind = iota + 1 // a regular file, opened O_DIRECT
	KindBlock                 // a block device, opened O_DIRECT|O_EXCL
)

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindBlock:
		return "block"
	}
	return "kind?"
}

// Target is an open device or file that rings write to. Its limits are
// read once at OpenTarget.
type Target struct {
	Path string
	Kind Kind
	// Size in bytes (BLKGETSIZE64 for a block device, st_size for a file).
	Size int64
	// LogicalBlockSize is the alignment every offset, length and buffer
	// address must have (sysfs logical_block_size; for a file the
	// STATX_DIOALIGN offset alignment, else 512).
	LogicalBlockSize int
	// MaxSectorsKB is sysfs max_sectors_kb (0 when unknown, as for files):
	// the block layer splits larger writes.
	MaxSectorsKB int
	// MaxHWSectorsKB is sysfs max_hw_sectors_kb (0 when unknown): the
	// most the device takes in one request, the ceiling max_sectors_kb
	// can be raised to.
	MaxHWSectorsKB int
	// NrRequests is sysfs nr_requests: how many requests the block layer
	// queues for the device (0 when unknown, as for files).
	NrRequests int
	// MaxSegments is sysfs max_segments (0 when unknown, as for files):
	// the most physically contiguous pieces of memory one request
	// carries. The block layer splits a write whose memory is in more
	// pieces, and a write io_uring issues without blocking is not split
	// but handed to an io-wq worker thread.
	MaxSegments int
	// WriteCache is sysfs write_cache ("write back" or "write through";
	// "" for files).
	WriteCache string
	// FUA is sysfs fua = 1.
	FUA bool
	// StableWrites is sysfs stable_writes = 1 (writers must not change a
	// page while it is under writeback).
	StableWrites bool
	// Dev is the device's name under /sys/block ("" for files).
	Dev string

	fd int
}
