//go:build unix

package slspubsub

import (
	"syscall"
	"time"
)

// benchCPU returns the CPU time (user + system) the process has used, the
// in-process emulator's included.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
