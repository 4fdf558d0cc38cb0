//go:build !unix

package bench

// fdLimit is unknown off Unix.
func fdLimit() int { return 0 }

// syncDisks does nothing off Unix.
func syncDisks() {}
