//go:build !unix

package slspubsub

import "time"

// wmProcessCPU is not measured on this platform: benchmarks report 0 CPU.
func wmProcessCPU() time.Duration { return 0 }
