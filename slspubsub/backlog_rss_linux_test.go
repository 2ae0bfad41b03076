//go:build linux

package slspubsub

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	rssEnvEndpoint = "WSLS_RSS_ENDPOINT"
	rssEnvRunFor   = "WSLS_RSS_RUN_FOR"
)

// TestBacklogRSSChild is the Subscriber process of
// BenchmarkSubscriberBacklogRSS (it does nothing unless started by it): it
// reads the backlog with a slow handler (each message acked 1 ms after it
// was received) for the given time and prints its peak resident set
// (VmHWM) and how many messages it handled.
func TestBacklogRSSChild(t *testing.T) {
	endpoint := os.Getenv(rssEnvEndpoint)
	if endpoint == "" {
		return // not a child process
	}
	runFor, err := time.ParseDuration(os.Getenv(rssEnvRunFor))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSubscriber(SubscriberConfig{
		ClientConfig: ClientConfig{
			Endpoint: endpoint, Project: testProject,
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: slstest.HTTPClientFor(endpoint),
		},
		StartPosition: StartAtBegin(),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runFor)
	defer cancel()
	ch, err := s.Subscribe(ctx, "backlog")
	if err != nil {
		t.Fatal(err)
	}
	handled := 0
	for msg := range ch {
		time.Sleep(time.Millisecond)
		msg.Ack()
		handled++
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	hwm, err := vmHWM()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("RSS-CHILD peak=%d handled=%d\n", hwm, handled)
}

// vmHWM returns the process's peak resident set size in bytes.
func vmHWM() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// BenchmarkSubscriberBacklogRSS is BenchmarkSubscriberBacklogMemory with
// the Subscriber in a process of its own, so its peak RSS (VmHWM: heap,
// stacks, runtime and binary included) is measured, not the heap: a
// backlog of 512 MiB (2 GiB under WSLS_SOAK) over 8 shards held by the
// emulator in this process, a slow handler, 5 s (30 s). The bound
// is the configured buffer (PrefetchBytes per shard, 16 MiB x 8) plus
// 64 MiB.
func BenchmarkSubscriberBacklogRSS(b *testing.B) {
	const logstore = "backlog"
	env := testutil.SLS(b)
	env.LogStore(b, testProject, logstore, benchShards)
	backlog := testutil.SoakOr[int64](512<<20, 2<<30)
	runFor := testutil.SoakOr(5*time.Second, 30*time.Second)
	raw := benchPreloadBytes(b, env, logstore, backlog)
	bound := int64(DefaultPrefetchBytes*benchShards + 64<<20)
	var peak int64
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBacklogRSSChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), rssEnvEndpoint+"="+env.Endpoint, rssEnvRunFor+"="+runFor.String())
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		var p, handled int64
		for _, line := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(line, "RSS-CHILD "); ok {
				if _, err := fmt.Sscanf(rest, "peak=%d handled=%d", &p, &handled); err != nil {
					b.Fatalf("child report %q: %v", line, err)
				}
			}
		}
		if p == 0 || handled == 0 {
			b.Fatalf("child reported nothing (peak %d, handled %d):\n%s", p, handled, out)
		}
		peak = max(peak, p)
	}
	b.ReportMetric(benchMiB(peak), "peak-RSS-MiB")
	b.ReportMetric(benchMiB(bound), "bound-MiB")
	within := "within"
	if peak > bound {
		within = "OVER"
	}
	fmt.Printf("SubscriberBacklogRSS: backlog %.0f MiB, slow handler, %v: Subscriber process peak RSS %.1f MiB, %s the bound PrefetchBytes*shards + 64 MiB = %.0f MiB\n",
		benchMiB(raw), runFor, benchMiB(peak), within, benchMiB(bound))
}
