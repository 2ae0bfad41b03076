package slspubsub_test

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/aliyun/aliyun-log-go-sdk/producer"
	"github.com/gogo/protobuf/proto"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// BenchmarkPublisherVsSDKProducer writes ~200-byte logs from 64 goroutines
// to one emulator (4 shards, no hash key: load-balanced writes), with this
// package's Publisher and with the SDK's producer library, side by side in
// one run, and prints for each shape both throughputs, their ratio and our
// p50/p99 Publish latency on one line. Shapes:
//
//   - per-call=1: each Publish (SendLog) carries one message, the issue's
//     headline;
//   - per-call=16 and per-call=128: each Publish carries 16 or 128
//     messages, as a forwarder or a batch handler calls it; the SDK gets
//     the same logs as one SendLogList each.
//
// Each sub-benchmark reports logs/s, logs/request and cpu-µs/log (the CPU
// time of the whole process, clients, emulator and runtime, per log: unlike
// logs/s it hardly moves when other processes share the machine); ours
// also cpu-µs/request and the p50 and p99 latency of a Publish call; the
// SDK's also watermill/sdk, the throughput ratio against ours just before.
//
// Both clients share one HTTP client (the emulator's, with a 64 KiB write
// buffer as the Publisher's default Transport has, so that a request goes
// out in one write), and every timed run writes to a new logstore,
// deleted after it, with a collection before it: logs stored by earlier
// runs do not weigh on the garbage collector of later ones.
//
// The emulator runs in the same process, so its CPU counts. On a 2-core
// machine logs/s is at most about 2 cores divided by cpu-µs/log. The SDK's
// producer lingers into ~2 500-log requests, so its per-request costs (HTTP
// on both sides, syscalls, signing and checking, request parsing) vanish
// per log; 64 synchronous callers of one message can put at most 64 logs
// in a request (about 47 measured), and those costs dominate ours.
// Measured on 2 cores: ~240 CPU µs a request at ~47 logs, of which ~150 µs
// do not depend on the logs (~60 µs the emulator's HTTP server,
// authentication and storage, ~70 µs our worker and net/http's client, the
// rest scheduling), against ~1.9 CPU µs a log for either library when
// requests are large (per-call=16 and 128). So with one message a call
// logs/s is bounded by 2 cores / (1.9 + 150/64) µs ≈ 470 000 even if every
// request carried 64 logs and both cores were busy; they are not, since a
// synchronous round (callers, request, emulator, response, wake-ups) is
// largely one chain: ~4 000 requests/s x ~47 logs ≈ 190 000 logs/s on an
// idle machine, where the SDK producer, asynchronous, reaches 450 000 to
// 800 000 (its ratio falls when other processes take CPU: it needs both
// cores, we use about one). See the Group commit notes in batcher.go. With
// 16 or 128 messages per call, 64 callers keep up to 1 024 or 8 192 logs
// outstanding, requests grow accordingly, and the per-request costs vanish
// for us too.
//
//   - watermill-sls: Publish is synchronous, it returns once SLS has
//     written the message; throughput comes from group commit alone.
//     Default PublisherConfig.
//   - sdk-producer: SendLog is asynchronous, it returns at once and the
//     log is written later; the run ends when the success callback of every
//     log has fired. Default ProducerConfig (GetDefaultProducerConfig:
//     512 KiB / 4096-log batches, 50 I/O workers, lz4, 10 retries) except
//     LingerMs 100, the SDK's minimum, instead of 2000: under this load
//     batches fill long before they linger, so it changes nothing while the
//     run goes on, but the producer's mover sleeps up to LingerMs between
//     looks at its queues, so SafeClose takes up to a full linger to send
//     the last batch, which at 2 s would dominate every timed run (and keep
//     b.N at 1). AllowLogLevel is "error" to keep its log lines out.
//
// For context, two variants the issue does not ask for:
//   - context/sdk-producer-sync: the same producer used synchronously, as
//     Publish is (each goroutine waits for its log's callback before the
//     next).
//   - context/watermill-sls-1024-goroutines: Publish of one message from
//     1024 goroutines: a synchronous publisher's throughput grows with its
//     callers, since each request carries the messages that arrived during
//     the previous one (Little's law: throughput = callers / latency).
func BenchmarkPublisherVsSDKProducer(b *testing.B) {
	const project = "bench-project"
	var puts atomic.Int64
	env := testutil.SLS(b, slstest.WithRequestObserver(func(ri slstest.RequestInfo) {
		if ri.Op == slstest.OpPutLogs && ri.Status == 200 {
			puts.Add(1)
		}
	}))
	client := env.Server.HTTPClient()
	client.Transport.(*http.Transport).WriteBufferSize = 64 << 10
	b.Cleanup(client.CloseIdleConnections)
	payload := []byte(strings.Repeat("p", 160)) // + a 36-byte UUID and keys: ~200 bytes a log
	bench := &pubBench{env: env, client: client, project: project, payload: payload, puts: &puts}

	for _, per := range []int{1, 16, 128} {
		shape := fmt.Sprintf("per-call=%d", per)
		var ours, sdk pubResult
		b.Run(shape+"/watermill-sls", func(b *testing.B) { ours = bench.publisher(b, 64, per) })
		b.Run(shape+"/sdk-producer", func(b *testing.B) {
			sdk = bench.sdkProducer(b, 64, per, false)
			if ours.rate > 0 {
				b.ReportMetric(ours.rate/sdk.rate, "watermill/sdk")
			}
		})
		if ours.rate > 0 && sdk.rate > 0 {
			// Printed rather than logged: a parent benchmark's log shows only
			// with -v.
			fmt.Printf("64 goroutines x %d per call: watermill-sls %.0f logs/s (synchronous, p50 %.2f ms, p99 %.2f ms "+
				"per Publish, %.1f logs/request, %.1f CPU µs/log), SDK producer %.0f logs/s (asynchronous, %.1f CPU µs/log): "+
				"ratio %.2f\n", per, ours.rate, ours.p50ms, ours.p99ms, ours.perRequest, ours.cpuPerLog,
				sdk.rate, sdk.cpuPerLog, ours.rate/sdk.rate)
		}
	}
	b.Run("context/sdk-producer-sync", func(b *testing.B) { bench.sdkProducer(b, 64, 1, true) })
	b.Run("context/watermill-sls-1024-goroutines", func(b *testing.B) { bench.publisher(b, 1024, 1) })
}

// pubResult is what a sub-benchmark measured.
type pubResult struct {
	rate       float64 // logs/s
	p50ms      float64 // p50 Publish latency (ours only)
	p99ms      float64 // p99 Publish latency (ours only)
	perRequest float64 // logs per PutLogs request
	cpuPerLog  float64 // CPU time of the whole process (clients, emulator, runtime) per log, µs
}

type pubBench struct {
	env       *testutil.SLSEnv
	client    *http.Client
	project   string
	payload   []byte
	puts      *atomic.Int64 // successful PutLogs requests
	logstores int
}

// logstore creates a new logstore of 4 shards for one timed run, and
// returns its name and a function that deletes it.
func (s *pubBench) logstore(b *testing.B) (string, func()) {
	s.logstores++
	name := fmt.Sprintf("bench-%d", s.logstores)
	s.env.LogStore(b, s.project, name, 4)
	return name, func() {
		if err := s.env.Server.DeleteLogStore(s.project, name); err != nil {
			b.Error(err)
		}
	}
}

// take hands out the next chunk of up to per of b.N logs: its size, or 0
// when all are taken.
func take(next *atomic.Int64, n, per int) int {
	end := next.Add(int64(per))
	start := end - int64(per)
	if start >= int64(n) {
		return 0
	}
	return int(min(end, int64(n)) - start)
}

// publisher measures Publish from goroutines callers, per messages a call.
func (s *pubBench) publisher(b *testing.B, goroutines, per int) pubResult {
	logstore, drop := s.logstore(b)
	defer drop()
	p, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: slspubsub.ClientConfig{
		Endpoint: s.env.Endpoint, Project: s.project, AccessKeyID: s.env.AccessKeyID,
		AccessKeySecret: s.env.AccessKeySecret, HTTPClient: s.client,
	}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	latencies := make([][]time.Duration, goroutines)
	var next, failed atomic.Int64
	runtime.GC()
	s.puts.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := slspubsub.BenchCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, b.N/goroutines/per+1)
			msgs := make([]*message.Message, 0, per)
			for n := take(&next, b.N, per); n > 0; n = take(&next, b.N, per) {
				msgs = msgs[:0]
				for range n {
					msgs = append(msgs, message.NewMessage(watermill.NewUUID(), s.payload))
				}
				t0 := time.Now()
				if err := p.Publish(logstore, msgs...); err != nil {
					failed.Add(1)
				}
				lat = append(lat, time.Since(t0))
			}
			latencies[g] = lat
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := slspubsub.BenchCPU() - cpu0
	b.StopTimer()
	if err := p.Close(); err != nil {
		b.Fatal(err)
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d Publish calls failed", n)
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	puts := max(s.puts.Load(), 1)
	res := pubResult{
		rate:       float64(b.N) / elapsed.Seconds(),
		p50ms:      float64(pubPercentile(all, 0.50).Microseconds()) / 1000,
		p99ms:      float64(pubPercentile(all, 0.99).Microseconds()) / 1000,
		perRequest: float64(b.N) / float64(puts),
		cpuPerLog:  float64(cpu.Nanoseconds()) / 1000 / float64(b.N),
	}
	b.ReportMetric(res.rate, "logs/s")
	b.ReportMetric(res.perRequest, "logs/request")
	b.ReportMetric(res.p50ms, "p50-ms")
	b.ReportMetric(res.p99ms, "p99-ms")
	b.ReportMetric(res.cpuPerLog, "cpu-µs/log")
	b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(puts), "cpu-µs/request")
	return res
}

// sdkProducer measures the SDK's producer with goroutines senders, per logs
// a call (SendLogWithCallBack for 1, else SendLogListWithCallBack), and
// wait makes each sender wait for its call's callback.
func (s *pubBench) sdkProducer(b *testing.B, goroutines, per int, wait bool) pubResult {
	logstore, drop := s.logstore(b)
	defer drop()
	cfg := producer.GetDefaultProducerConfig()
	cfg.Endpoint = s.env.Endpoint
	cfg.AccessKeyID, cfg.AccessKeySecret = s.env.AccessKeyID, s.env.AccessKeySecret
	cfg.HTTPClient = s.client
	cfg.LingerMs = 100
	cfg.AllowLogLevel = "error"
	prod, err := producer.NewProducer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	prod.Start()
	total := &pubBenchCallback{}
	var next, failed atomic.Int64
	runtime.GC()
	s.puts.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := slspubsub.BenchCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var done chan struct{}
			if wait {
				done = make(chan struct{}, 1)
			}
			for n := take(&next, b.N, per); n > 0; n = take(&next, b.N, per) {
				var cb producer.CallBack = total
				if wait || n > 1 {
					cb = &pubBenchCallback{total: total, logs: int64(n), done: done}
				}
				logs := make([]*sls.Log, n)
				for i := range logs {
					logs[i] = &sls.Log{
						Time: proto.Uint32(uint32(time.Now().Unix())),
						Contents: []*sls.LogContent{
							{Key: proto.String("uuid"), Value: proto.String(watermill.NewUUID())},
							{Key: proto.String("payload"), Value: proto.String(string(s.payload))},
						},
					}
				}
				var err error
				if n == 1 {
					err = prod.SendLogWithCallBack(s.project, logstore, "", "", logs[0], cb)
				} else {
					err = prod.SendLogListWithCallBack(s.project, logstore, "", "", logs, cb)
				}
				if err != nil {
					failed.Add(int64(n))
					continue
				}
				if done != nil {
					<-done
				}
			}
		}()
	}
	wg.Wait()
	prod.SafeClose() // sends what lingers and waits for it
	elapsed := time.Since(start)
	cpu := slspubsub.BenchCPU() - cpu0
	b.StopTimer()
	if n := failed.Load() + total.failed.Load(); n > 0 {
		b.Fatalf("%d logs failed", n)
	}
	if got := total.ok.Load(); got != int64(b.N) {
		b.Fatalf("success callbacks for %d logs of %d", got, b.N)
	}
	res := pubResult{
		rate:       float64(b.N) / elapsed.Seconds(),
		perRequest: float64(b.N) / float64(max(s.puts.Load(), 1)),
		cpuPerLog:  float64(cpu.Nanoseconds()) / 1000 / float64(b.N),
	}
	b.ReportMetric(res.rate, "logs/s")
	b.ReportMetric(res.perRequest, "logs/request")
	b.ReportMetric(res.cpuPerLog, "cpu-µs/log")
	return res
}

func pubPercentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// pubBenchCallback counts the SDK producer's outcomes in logs. The shared
// one (total nil) counts one log a callback; one with total set counts logs
// into total and signals done, when set.
type pubBenchCallback struct {
	ok, failed atomic.Int64
	total      *pubBenchCallback
	logs       int64
	done       chan struct{}
}

func (c *pubBenchCallback) Success(r *producer.Result) {
	if c.total == nil {
		c.ok.Add(1)
		return
	}
	c.total.ok.Add(c.logs)
	if c.done != nil {
		c.done <- struct{}{}
	}
}

func (c *pubBenchCallback) Fail(r *producer.Result) {
	if c.total == nil {
		c.failed.Add(1)
		return
	}
	c.total.failed.Add(c.logs)
	if c.done != nil {
		c.done <- struct{}{}
	}
}
