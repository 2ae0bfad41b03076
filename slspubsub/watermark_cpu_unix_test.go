//go:build unix

package slspubsub

import (
	"syscall"
	"time"
)

// wmProcessCPU returns the CPU time (user + system) the process has used.
func wmProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
