//go:build !unix

package slspubsub

import "time"

// benchCPU is not measured on this platform: benchmarks report 0 CPU.
func benchCPU() time.Duration { return 0 }
