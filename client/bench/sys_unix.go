//go:build unix

package bench

import "syscall"

// fdLimit returns the soft limit on open files (the Go runtime raises it
// to the hard limit at startup), or 0 if unknown.
func fdLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 0
	}
	return int(l.Cur)
}

// syncDisks writes every dirty page in the system back, so that a case
// does not pay for the previous case's writes: the log case alone gave
// 211,000-227,000 appends/s and 171,000 right after the dm case.
func syncDisks() { syscall.Sync() }
