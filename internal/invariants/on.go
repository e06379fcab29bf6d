//go:build invariants || race

package invariants

// Enabled is true in builds with the invariants tag and in race builds.
const Enabled = true
