//go:build linux

package slspubsub

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	scEnvName     = "WSLS_SCALING_CHILD"
	scEnvEndpoint = "WSLS_SCALING_ENDPOINT"
	scEnvOut      = "WSLS_SCALING_OUT"
	scLogstore    = "scaling"
)

// TestScalingChild is a consumer process of BenchmarkConsumerGroupScaling
// (it does nothing unless started by it): a member of the "scaling"
// consumer group that acks every message and writes how many it acked to
// its output file every 20 ms, until SIGTERM.
func TestScalingChild(t *testing.T) {
	name := os.Getenv(scEnvName)
	if name == "" {
		return // not a child process
	}
	endpoint := os.Getenv(scEnvEndpoint)
	s, err := NewSubscriber(SubscriberConfig{
		ClientConfig: ClientConfig{
			Endpoint: endpoint, Project: testProject,
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: slstest.HTTPClientFor(endpoint),
		},
		ConsumerGroup: "scaling", ConsumerName: name,
		HeartbeatInterval: rbHeartbeat, HeartbeatTimeout: rbTimeout,
		FetchInterval: 10 * time.Millisecond, MaxFetchInterval: 50 * time.Millisecond,
		CommitInterval: time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ch, err := s.Subscribe(ctx, scLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	out := os.Getenv(scEnvOut)
	go func() {
		for range time.Tick(20 * time.Millisecond) {
			_ = os.WriteFile(out+".tmp", []byte(strconv.FormatInt(acked.Load(), 10)), 0o644)
			_ = os.Rename(out+".tmp", out)
		}
	}()
	for msg := range ch {
		msg.Ack()
		acked.Add(1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

type scChild struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func scStart(b *testing.B, env *testutil.SLSEnv, dir, name string) *scChild {
	c := &scChild{out: filepath.Join(dir, name), done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestScalingChild$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), scEnvName+"="+name, scEnvEndpoint+"="+env.Endpoint, scEnvOut+"="+c.out)
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	return c
}

func (c *scChild) acked() int64 {
	b, err := os.ReadFile(c.out)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (c *scChild) stop(sig os.Signal) {
	_ = c.cmd.Process.Signal(sig)
	<-c.done
}

func scWait(b *testing.B, what string, d time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			b.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// BenchmarkConsumerGroupScaling measures the aggregate throughput of 1, 2
// and 4 subscriber processes in one consumer group reading the same
// preloaded backlog (200 000 logs over 8 shards; 1 000 000 under
// WSLS_SOAK) from the beginning, each in a fresh group, and prints the
// scaling ratios against one process. The emulator serves them from this
// process, so on a machine with few cores it saturates first. Then, with 2
// processes, it kills one (SIGKILL) and measures the time until the
// survivor has consumed logs written to every shard after the kill: the
// time to rebalance (target: one group timeout plus one heartbeat
// interval, here 2 s + 200 ms).
func BenchmarkConsumerGroupScaling(b *testing.B) {
	env := testutil.SLS(b)
	env.LogStore(b, testProject, scLogstore, benchShards)
	n := testutil.SoakOr(200_000, 1_000_000)
	benchPreload(b, env, scLogstore, n)
	rates, cores := map[int]float64{}, map[int]float64{}
	for range b.N {
		for _, procs := range []int{1, 2, 4} {
			rate, used := scRun(b, env, procs, n)
			if rate > rates[procs] {
				rates[procs], cores[procs] = rate, used
			}
		}
	}
	for _, procs := range []int{1, 2, 4} {
		b.ReportMetric(rates[procs], fmt.Sprintf("logs/s-%dproc", procs))
	}
	rebalance := scRebalance(b, env)
	b.ReportMetric(rebalance.Seconds(), "rebalance-s")
	fmt.Printf("ConsumerGroupScaling: %d logs, 8 shards, %d cores: 1 process %.0f logs/s (%.1f cores busy), 2 processes %.0f (%.2fx, %.1f cores), 4 processes %.0f (%.2fx, %.1f cores); time to rebalance after a SIGKILL %v (target <= %v)\n",
		n, runtime.NumCPU(), rates[1], cores[1], rates[2], rates[2]/rates[1], cores[2], rates[4], rates[4]/rates[1], cores[4],
		rebalance.Round(time.Millisecond), rbTimeout+rbHeartbeat)
}

// scRun consumes the backlog with procs processes in a fresh group and
// returns logs/s and the cores busy meanwhile (CPU time of this process,
// the emulator's, and of the children, over the elapsed time).
func scRun(b *testing.B, env *testutil.SLSEnv, procs, n int) (rate, cores float64) {
	if err := deleteGroup(env, "scaling"); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cpu0 := scCPU()
	var children []*scChild
	for i := range procs {
		children = append(children, scStart(b, env, dir, fmt.Sprintf("p%d", i)))
	}
	total := func() int64 {
		var s int64
		for _, c := range children {
			s += c.acked()
		}
		return s
	}
	elapsed := scWait(b, "backlog consumed", 5*time.Minute, func() bool { return total() >= int64(n) })
	for _, c := range children {
		c.stop(syscall.SIGTERM)
	}
	// Children's CPU is counted once they are waited for: it includes the
	// short shutdown after the measurement.
	return float64(n) / elapsed.Seconds(), (scCPU() - cpu0).Seconds() / elapsed.Seconds()
}

// scCPU returns the CPU time (user + system) of this process and of its
// waited-for children.
func scCPU() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// scRebalance kills one of two caught-up members and returns how long the
// survivor took to consume logs written to every shard after the kill.
func scRebalance(b *testing.B, env *testutil.SLSEnv) time.Duration {
	if err := deleteGroup(env, "scaling"); err != nil {
		b.Fatal(err)
	}
	before := int64(0)
	for shard := range benchShards {
		gs, err := env.Server.LogGroups(testProject, scLogstore, shard)
		if err != nil {
			b.Fatal(err)
		}
		for _, g := range gs {
			before += int64(len(g.Group.Logs))
		}
	}
	dir := b.TempDir()
	a, c := scStart(b, env, dir, "a"), scStart(b, env, dir, "c")
	scWait(b, "backlog consumed", 5*time.Minute, func() bool { return a.acked()+c.acked() >= before })
	scWait(b, "both members holding shards", time.Minute, func() bool {
		st, err := env.Server.ConsumerGroupState(testProject, scLogstore, "scaling")
		return err == nil && len(st.Consumers) == 2
	})
	c.stop(syscall.SIGKILL)
	killed := time.Now()
	for shard := range benchShards {
		g := LogGroup{}
		for i := range 10 {
			rec, err := DefaultMarshaler{}.Marshal(scLogstore, message.NewMessage(fmt.Sprintf("late-%d-%d", shard, i), []byte("x")))
			if err != nil {
				b.Fatal(err)
			}
			g.Logs = append(g.Logs, rec.Log)
		}
		if _, err := env.Server.AppendLogGroup(testProject, scLogstore, shard, toSDK(&g)); err != nil {
			b.Fatal(err)
		}
	}
	want := a.acked() + benchShards*10
	scWait(b, "the survivor consumed every shard's new logs", time.Minute, func() bool { return a.acked() >= want })
	took := time.Since(killed)
	a.stop(syscall.SIGTERM)
	return took
}

func deleteGroup(env *testutil.SLSEnv, group string) error {
	err := env.Client().DeleteConsumerGroup(testProject, scLogstore, group)
	if err != nil && !strings.Contains(err.Error(), "ConsumerGroupNotExist") {
		return err
	}
	return nil
}
