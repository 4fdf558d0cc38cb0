//go:build !unix

package bench

// fdLimit is unknown off Unix.
func fdLimit() int { return 0 }
