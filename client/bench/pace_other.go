//go:build !linux

package bench

import "time"

// fineSleep falls back to the runtime's sleep off Linux.
func fineSleep(d time.Duration) { time.Sleep(d) }
