package sqlitevfs

import (
	"sync"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"
)

// lockState is SQLite's file lock for one file, in process (the device
// itself is held by one process: see Open). The protocol is SQLite's:
// any number of SHARED holders, at most one RESERVED, and EXCLUSIVE only
// when its holder is the last SHARED one (PENDING keeps new SHARED
// holders out meanwhile).
type lockState struct {
	mu       sync.Mutex // protects the fields below
	shared   int        // holders of SHARED or more
	reserved bool       // a RESERVED (or higher) holder exists
	pending  bool       // a holder waits for EXCLUSIVE
	waiter   *sync.Cond // EXCLUSIVE waits on it for SHARED holders to leave
}

// Lock raises the handle's lock to lock, or fails with SQLITE_BUSY.
func (f *file) Lock(lock vfs.LockLevel) error {
	if f.lock >= lock {
		return nil
	}
	if f.flags&vfs.OPEN_READONLY != 0 && lock >= vfs.LOCK_RESERVED {
		return sqlite3.IOERR_LOCK
	}
	l := &f.e.locks
	l.mu.Lock()
	defer l.mu.Unlock()
	switch lock {
	case vfs.LOCK_SHARED:
		if l.pending {
			return sqlite3.BUSY
		}
		l.shared++
	case vfs.LOCK_RESERVED:
		if l.reserved {
			return sqlite3.BUSY
		}
		l.reserved = true
	case vfs.LOCK_EXCLUSIVE:
		if f.lock == vfs.LOCK_RESERVED {
			f.lock = vfs.LOCK_PENDING
			l.pending = true
		}
		if l.shared > 1 {
			if l.waiter == nil {
				l.waiter = sync.NewCond(&l.mu)
			}
			// Wait a little for readers to leave, then let SQLite's busy
			// handler decide.
			before := time.Now()
			defer time.AfterFunc(time.Millisecond, l.waiter.Broadcast).Stop()
			for l.shared > 1 {
				if time.Since(before) > time.Millisecond {
					return sqlite3.BUSY
				}
				l.waiter.Wait()
			}
		}
	}
	f.lock = lock
	return nil
}

// Unlock lowers the handle's lock to lock (SHARED or NONE).
func (f *file) Unlock(lock vfs.LockLevel) error {
	if f.lock <= lock {
		return nil
	}
	l := &f.e.locks
	l.mu.Lock()
	defer l.mu.Unlock()
	if f.lock >= vfs.LOCK_RESERVED {
		l.reserved = false
	}
	if f.lock >= vfs.LOCK_PENDING {
		l.pending = false
	}
	if lock < vfs.LOCK_SHARED {
		l.shared--
		if l.pending && l.shared <= 1 && l.waiter != nil {
			l.waiter.Broadcast()
		}
	}
	f.lock = lock
	return nil
}

// CheckReservedLock reports whether any handle holds RESERVED or more.
func (f *file) CheckReservedLock() (bool, error) {
	if f.lock >= vfs.LOCK_RESERVED {
		return true, nil
	}
	l := &f.e.locks
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reserved, nil
}

// LockState implements vfs.FileLockState.
func (f *file) LockState() vfs.LockLevel { return f.lock }
