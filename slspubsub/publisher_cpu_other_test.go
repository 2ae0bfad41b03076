//go:build !unix

package slspubsub_test

import "time"

// processCPU is not measured on this platform: benchmarks report 0 CPU.
func processCPU() time.Duration { return 0 }
