package sqlitevfs

import (
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// memFile is a nameless temporary file or one opened delete-on-close
// (temp databases, statement journals, sorter spills): it lives in
// memory and is gone when closed, as it would be after a crash anyway.
// One connection uses it, so its locks always succeed.
type memFile struct{ vfsutil.SliceFile }

func (*memFile) Lock(vfs.LockLevel) error         { return nil }
func (*memFile) Unlock(vfs.LockLevel) error       { return nil }
func (*memFile) CheckReservedLock() (bool, error) { return false, nil }
func (*memFile) SectorSize() int                  { return defaultPageSize }
func (f *memFile) DeviceCharacteristics() vfs.DeviceCharacteristic {
	return f.SliceFile.DeviceCharacteristics()
}
