package ring

// This file holds everything in package ring that speaks io_uring's
// binary interface or needs unsafe: the uapi structs and constants
// (from include/uapi/linux/io_uring.h; x/sys/unix has the syscall
// numbers but no io_uring types), the raw setup/enter/register calls,
// the mmap'd SQ and CQ rings and the pointer arithmetic on them, SQE
// preparation, and the few unsafe helpers the rest of the package uses
// (iovec addresses, eventfd signalling). Nothing here takes a lock or
// knows about slots; native_linux.go drives it from one owner thread.

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Setup flags (io_uring_params.flags).
const (
	setupCQSize       = 1 << 3  // IORING_SETUP_CQSIZE: cq_entries is ours
	setupSubmitAll    = 1 << 7  // IORING_SETUP_SUBMIT_ALL: keep submitting past a bad SQE
	setupCoopTaskrun  = 1 << 8  // IORING_SETUP_COOP_TASKRUN: no IPI for task work
	setupTaskrunFlag  = 1 << 9  // IORING_SETUP_TASKRUN_FLAG: IORING_SQ_TASKRUN in sq flags
	setupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER: one task submits
	setupDeferTaskrun = 1 << 13 // IORING_SETUP_DEFER_TASKRUN: completions run on enter(GETEVENTS)
)

// setupFlagNames names the setup flags for Caps.Setup, in the order the
// native ring drops them when the kernel answers EINVAL (each later flag
// depends on none of the earlier ones: DEFER_TASKRUN needs SINGLE_ISSUER,
// TASKRUN_FLAG needs COOP_TASKRUN or DEFER_TASKRUN).
var setupFlagNames = []struct {
	flag uint32
	name string
}{
	{setupDeferTaskrun, "DEFER_TASKRUN"},
	{setupSingleIssuer, "SINGLE_ISSUER"},
	{setupTaskrunFlag, "TASKRUN_FLAG"},
	{setupCoopTaskrun, "COOP_TASKRUN"},
	{setupSubmitAll, "SUBMIT_ALL"},
	{setupCQSize, "CQSIZE"},
}

// Features (io_uring_params.features).
const featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP: SQ and CQ rings share one mapping

// io_uring_enter flags.
const enterGetEvents = 1 << 0 // IORING_ENTER_GETEVENTS

// mmap offsets.
const (
	offSQRing = 0          // IORING_OFF_SQ_RING
	offCQRing = 0x8000000  // IORING_OFF_CQ_RING
	offSQEs   = 0x10000000 // IORING_OFF_SQES
)

// Opcodes (enum io_uring_op).
const (
	opNop          = 0  // IORING_OP_NOP
	opReadv        = 1  // IORING_OP_READV
	opWritev       = 2  // IORING_OP_WRITEV
	opFsync        = 3  // IORING_OP_FSYNC
	opReadFixed    = 4  // IORING_OP_READ_FIXED
	opWriteFixed   = 5  // IORING_OP_WRITE_FIXED
	opRead         = 22 // IORING_OP_READ
	opReadvFixed   = 60 // IORING_OP_READV_FIXED (6.15)
	opWritevFixed  = 61 // IORING_OP_WRITEV_FIXED (6.15)
	fsyncDatasync  = 1  // IORING_FSYNC_DATASYNC
	opSupported    = 1  // IO_URING_OP_SUPPORTED in io_uring_probe_op.flags
	probeOpsMax    = 256
	maxRegBuffers  = 16384   // IORING_MAX_REG_BUFFERS
	maxRegBufBytes = 1 << 30 // the kernel's per-buffer limit (SZ_1G)
	iovMax         = 1024    // UIO_MAXIOV: iovecs per vectored SQE
)

// io_uring_register opcodes.
const (
	registerBuffers   = 0 // IORING_REGISTER_BUFFERS
	unregisterBuffers = 1 // IORING_UNREGISTER_BUFFERS
	registerFiles     = 2 // IORING_REGISTER_FILES
	unregisterFiles   = 3 // IORING_UNREGISTER_FILES
	registerProbe     = 8 // IORING_REGISTER_PROBE
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// ioUringParams is struct io_uring_params.
type ioUringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe (64 bytes; the unions reduced to the
// members this package uses).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32 // rw_flags, fsync_flags
	userData    uint64
	bufIndex    uint16
	personality uint16
	fileIndex   uint32
	addr3       uint64
	pad2        uint64
}

// cqe is struct io_uring_cqe (16 bytes; no CQE32).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16
	resv2 uint32
}

type probe struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
	ops    [probeOpsMax]probeOp
}

// Compile-time checks of the uapi layouts: an index out of range fails
// the build.
var (
	_ = [1]int{}[unsafe.Sizeof(sqe{})-64]
	_ = [1]int{}[unsafe.Sizeof(cqe{})-16]
	_ = [1]int{}[unsafe.Sizeof(ioUringParams{})-120]
	_ = [1]int{}[unsafe.Sizeof(probeOp{})-8]
	_ = [1]int{}[unsafe.Offsetof(sqe{}.userData)-32]
	_ = [1]int{}[unsafe.Offsetof(sqe{}.bufIndex)-40]
)

// ioUringSetup is io_uring_setup(2).
func ioUringSetup(entries uint32, p *ioUringParams) (int, unix.Errno) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	return int(fd), errno
}

// ioUringEnter is io_uring_enter(2) without a signal mask.
//
// An enter that waits (minComplete > 0) goes through unix.Syscall6, so
// the runtime knows the thread may block: sysmon can hand its P to other
// goroutines, and a stop-the-world does not wait for it. That matters:
// the wait can last as long as the device takes, and it can be a wait
// for the eventfd that only another goroutine writes.
//
// An enter that does not wait goes through unix.RawSyscall6. It submits
// (io_uring issues every request non-blocking and hands what would block
// to its own workers) and runs completions' task work; it does not wait
// for I/O (at most for the ring's own lock, which an io-wq worker holds
// for microseconds). What it costs is CPU, in proportion to the SQEs it
// carries (about 2 µs each on a loop device; at most maxSQEsPerEnter per
// enter), and while it runs the runtime sees an ordinary running
// goroutine: a stop-the-world or a preemption waits that long at most.
// In exchange the owner thread skips entersyscall/exitsyscall, and
// sysmon does not take a long submit for a blocked syscall and hand the
// P to another thread mid-pass (issue 12: on the 2-vCPU reference VM the
// isolated-page flush made 25–40 % fewer context switches and 55–70 %
// fewer futex calls, and spent 7–12 % less CPU per page).
func ioUringEnter(fd int, toSubmit, minComplete, flags uint32) (int, unix.Errno) {
	if minComplete == 0 {
		n, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), 0, uintptr(flags), 0, 0)
		return int(n), errno
	}
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	return int(n), errno
}

// ioUringRegister is io_uring_register(2).
func ioUringRegister(fd int, op uint32, arg unsafe.Pointer, nargs uint32) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(op), uintptr(arg), uintptr(nargs), 0, 0)
	return int(n), errno
}

// uring is one io_uring instance and its three mappings. Only the owner
// thread touches it after setup.
type uring struct {
	fd       int
	flags    uint32 // setup flags the kernel accepted
	features uint32

	sqMem, cqMem, sqeMem []byte // cqMem is nil when it shares sqMem

	sqHead   *uint32 // written by the kernel
	sqTail   *uint32 // written by us
	sqMask   uint32
	sqN      uint32
	sqes     []sqe
	tail     uint32  // our SQ tail, published to *sqTail by flush
	cqHead   *uint32 // written by us
	cqTail   *uint32 // written by the kernel
	cqMask   uint32
	cqN      uint32
	cqes     []cqe
	overflow *uint32
}

// newURing sets up a ring with sq SQEs and cq CQEs and the given setup
// flags and maps it. On failure it returns the errno of the call that
// failed (io_uring_setup's EINVAL means the kernel rejects a flag) and
// the name of that call.
func newURing(sq, cq, flags uint32) (*uring, string, error) {
	p := ioUringParams{flags: flags, cqEntries: cq}
	fd, errno := ioUringSetup(sq, &p)
	if errno != 0 {
		return nil, "io_uring_setup", errno
	}
	u := &uring{fd: fd, flags: flags, features: p.features}
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(cqe{}))
	single := p.features&featSingleMmap != 0
	if single && cqSize > sqSize {
		sqSize = cqSize
	}
	prot, mflags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	var err error
	if u.sqMem, err = unix.Mmap(fd, offSQRing, sqSize, prot, mflags); err != nil {
		u.close()
		return nil, "mmap SQ ring", err
	}
	cqMem := u.sqMem
	if !single {
		if u.cqMem, err = unix.Mmap(fd, offCQRing, cqSize, prot, mflags); err != nil {
			u.close()
			return nil, "mmap CQ ring", err
		}
		cqMem = u.cqMem
	}
	sqeSize := int(p.sqEntries) * int(unsafe.Sizeof(sqe{}))
	if u.sqeMem, err = unix.Mmap(fd, offSQEs, sqeSize, prot, mflags); err != nil {
		u.close()
		return nil, "mmap SQEs", err
	}

	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	u.sqHead = u32(u.sqMem, p.sqOff.head)
	u.sqTail = u32(u.sqMem, p.sqOff.tail)
	u.sqMask = *u32(u.sqMem, p.sqOff.ringMask)
	u.sqN = *u32(u.sqMem, p.sqOff.ringEntries)
	u.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&u.sqeMem[0])), p.sqEntries)
	// The SQ index array maps ring position i to SQE i, once and for all;
	// SQE tail&mask is then the one to fill.
	array := unsafe.Slice(u32(u.sqMem, p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	u.tail = atomic.LoadUint32(u.sqTail)

	u.cqHead = u32(cqMem, p.cqOff.head)
	u.cqTail = u32(cqMem, p.cqOff.tail)
	u.cqMask = *u32(cqMem, p.cqOff.ringMask)
	u.cqN = *u32(cqMem, p.cqOff.ringEntries)
	u.overflow = u32(cqMem, p.cqOff.overflow)
	u.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&cqMem[p.cqOff.cqes])), p.cqEntries)
	return u, "", nil
}

// close unmaps the rings and closes the ring's fd (which also drops
// registered buffers).
func (u *uring) close() error {
	var first error
	for _, m := range [][]byte{u.sqeMem, u.cqMem, u.sqMem} {
		if m != nil {
			if err := unix.Munmap(m); err != nil && first == nil {
				first = err
			}
		}
	}
	u.sqeMem, u.cqMem, u.sqMem, u.sqes, u.cqes = nil, nil, nil, nil, nil
	if u.fd >= 0 {
		if err := unix.Close(u.fd); err != nil && first == nil {
			first = err
		}
		u.fd = -1
	}
	return first
}

// sqFree is how many SQEs can be filled before the next flush.
func (u *uring) sqFree() uint32 {
	return u.sqN - (u.tail - atomic.LoadUint32(u.sqHead))
}

// nextSQE returns the next SQE, zeroed, and counts it. The caller must
// have checked sqFree.
func (u *uring) nextSQE() *sqe {
	e := &u.sqes[u.tail&u.sqMask]
	*e = sqe{}
	u.tail++
	return e
}

// flush publishes the filled SQEs and returns how many the kernel has
// not consumed yet (the to_submit for io_uring_enter).
func (u *uring) flush() uint32 {
	atomic.StoreUint32(u.sqTail, u.tail)
	return u.tail - atomic.LoadUint32(u.sqHead)
}

// unconsumed calls fn with the user_data of every SQE filled and not
// yet consumed by the kernel (the kernel leaves them in the SQ when
// io_uring_enter fails with EAGAIN or EBUSY, or submits only part).
func (u *uring) unconsumed(fn func(userData uint64)) {
	for i := atomic.LoadUint32(u.sqHead); i != u.tail; i++ {
		fn(u.sqes[i&u.sqMask].userData)
	}
}

// enter is io_uring_enter(GETEVENTS) on this ring.
func (u *uring) enter(toSubmit, minComplete uint32) (int, unix.Errno) {
	return ioUringEnter(u.fd, toSubmit, minComplete, enterGetEvents)
}

// cqPending returns the ring positions [head, tail) of the CQEs posted
// and not yet reaped; read them with cqeAt, then hand the slots back
// with cqAdvance(tail).
func (u *uring) cqPending() (head, tail uint32) {
	return *u.cqHead, atomic.LoadUint32(u.cqTail) // only we write cqHead
}

// cqeAt returns the CQE at ring position i.
func (u *uring) cqeAt(i uint32) (userData uint64, res int32) {
	c := &u.cqes[i&u.cqMask]
	return c.userData, c.res
}

// cqAdvance hands the CQ slots before ring position tail back to the
// kernel.
func (u *uring) cqAdvance(tail uint32) { atomic.StoreUint32(u.cqHead, tail) }

// cqReady is how many CQEs wait to be reaped.
func (u *uring) cqReady() uint32 {
	return atomic.LoadUint32(u.cqTail) - *u.cqHead
}

// probe returns which opcodes the kernel supports (IORING_REGISTER_PROBE).
func (u *uring) probe() ([probeOpsMax]bool, error) {
	var ok [probeOpsMax]bool
	p := new(probe)
	if err := u.register(registerProbe, unsafe.Pointer(p), probeOpsMax); err != nil {
		return ok, err
	}
	for i := 0; i < int(p.opsLen) && i < probeOpsMax; i++ {
		if p.ops[i].flags&opSupported != 0 {
			ok[p.ops[i].op] = true
		}
	}
	return ok, nil
}

// registerBuffers is IORING_REGISTER_BUFFERS. The memory stays pinned
// (and charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK)
// until unregisterBuffers or close.
func (u *uring) registerBuffers(bufs [][]byte) error {
	iov := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
	}
	return u.register(registerBuffers, unsafe.Pointer(&iov[0]), uint32(len(iov)))
}

func (u *uring) unregisterBuffers() error { return u.register(unregisterBuffers, nil, 0) }

// register is io_uring_register(2) on u, its errno as an error (nil for
// none: an Errno 0 in an error interface would not be).
func (u *uring) register(op uint32, arg unsafe.Pointer, nargs uint32) error {
	if _, errno := ioUringRegister(u.fd, op, arg, nargs); errno != 0 {
		return errno
	}
	return nil
}

// sqeFixedFile is IOSQE_FIXED_FILE: the SQE's fd is an index into the
// ring's registered files.
const sqeFixedFile = 1 << 0

// fileRef is how an SQE names a file: a descriptor, or (flags
// sqeFixedFile) an index into the registered files.
type fileRef struct {
	fd    int32
	flags uint8
}

// plainFile names fd by its descriptor.
func plainFile(fd int) fileRef { return fileRef{fd: int32(fd)} }

// registeredFile names the one file registerFile registered.
var registeredFile = fileRef{fd: 0, flags: sqeFixedFile}

// registered reports whether f names a registered file.
func (f fileRef) registered() bool { return f.flags&sqeFixedFile != 0 }

// registerFile is IORING_REGISTER_FILES with the one descriptor fd: an
// SQE then names it as registeredFile, and the kernel skips the
// per-request file lookup and reference count (fget/fput). The ring
// holds its own reference to the file until unregisterFiles (or until
// the ring is freed, which the kernel does asynchronously after close).
func (u *uring) registerFile(fd int) error {
	fds := [1]int32{int32(fd)}
	return u.register(registerFiles, unsafe.Pointer(&fds[0]), 1)
}

// unregisterFiles is IORING_UNREGISTER_FILES: it drops the ring's
// reference to the registered file now, not when the kernel gets round
// to freeing the ring.
func (u *uring) unregisterFiles() error { return u.register(unregisterFiles, nil, 0) }

// prepRW fills e for a read or write: a vectored op takes iov as the
// iovec array; a fixed non-vectored op takes iov[0] as the buffer.
func prepRW(e *sqe, op uint8, f fileRef, iov []unix.Iovec, off int64, rwFlags uint32, bufIndex uint16) {
	e.opcode = op
	e.fd = f.fd
	e.flags = f.flags
	e.off = uint64(off)
	e.opFlags = rwFlags
	switch op {
	case opReadFixed, opWriteFixed:
		e.addr = uint64(uintptr(unsafe.Pointer(iov[0].Base)))
		e.len = uint32(iov[0].Len)
		e.bufIndex = bufIndex
	default:
		if len(iov) > 0 {
			e.addr = uint64(uintptr(unsafe.Pointer(&iov[0])))
		}
		e.len = uint32(len(iov))
		if op == opReadvFixed || op == opWritevFixed {
			e.bufIndex = bufIndex
		}
	}
}

// prepFsync fills e for IORING_OP_FSYNC with IORING_FSYNC_DATASYNC.
func prepFsync(e *sqe, f fileRef) {
	e.opcode = opFsync
	e.fd = f.fd
	e.flags = f.flags
	e.opFlags = fsyncDatasync
}

// prepRead fills e for IORING_OP_READ of len(buf) bytes into buf (the
// eventfd read; buf must not be Go heap memory the GC could reuse).
func prepRead(e *sqe, fd int, buf []byte) {
	e.opcode = opRead
	e.fd = int32(fd)
	e.addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	e.len = uint32(len(buf))
	e.off = ^uint64(0) // -1: the file position (an eventfd has none)
}

// mapScratch maps n bytes of anonymous memory for the kernel to write
// into asynchronously (the eventfd read buffer): memory the Go heap
// never owns, so no collection can reuse it while a read is armed.
func mapScratch(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

func unmapScratch(b []byte) error { return unix.Munmap(b) }

// eventfdOne is the 8-byte value eventfdSignal writes. Read-only.
var eventfdOne = [8]byte{1}

// eventfdSignal adds 1 to an eventfd counter without allocating.
func eventfdSignal(fd int) unix.Errno {
	for {
		_, _, errno := unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&eventfdOne[0])), 8)
		if errno != unix.EINTR {
			return errno
		}
	}
}
