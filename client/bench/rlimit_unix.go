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
