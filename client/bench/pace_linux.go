package bench

import (
	"syscall"
	"time"
)

// fineSleep blocks the calling goroutine's thread for about d with
// nanosleep, which the kernel wakes within its timer slack (50 µs by
// default) instead of at the next millisecond. The runtime hands the
// thread's processor to other goroutines meanwhile. d is at most
// coarseMargin, so a blocked thread is brief.
func fineSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil) // EINTR: sleepUntil's loop sleeps the rest
}
