package slspubsub

// BenchCPU is benchCPU for the benchmarks of package slspubsub_test.
var BenchCPU = benchCPU
