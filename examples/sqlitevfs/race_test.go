//go:build race

package sqlitevfs

const raceEnabled = true
