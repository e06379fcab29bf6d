//go:build !race

package sqlitevfs

const raceEnabled = false
