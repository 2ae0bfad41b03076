package testutil

import (
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/go-kit/kit/log"
	"github.com/go-kit/kit/log/level"
)

// sdkLogLines is how many of the SDK's last log lines an SDKLogger keeps.
const sdkLogLines = 400

// sdkLog is the go-kit logger behind SDKLogger: a ring buffer of formatted lines.
type sdkLog struct {
	hook func(kv []any)

	mu    sync.Mutex
	lines []string
	next  int
	total int
}

// SDKLogger returns a go-kit logger for the SDK's producer or consumer (their Logger config field) that keeps the
// last lines in memory and prints them, labelled with name, only when the test fails: the SDK logs every
// heartbeat. Records below info level are dropped. hook, if not nil, is called with every record's key-values
// after it is kept, on the goroutine that logged it.
func SDKLogger(t testing.TB, name string, hook func(kv []any)) log.Logger {
	l := &sdkLog{lines: make([]string, 0, sdkLogLines), hook: hook}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		lines := append(slices.Clone(l.lines[l.next:]), l.lines[:l.next]...)
		t.Logf("last %d of %d %s log lines:\n%s", len(lines), l.total, name, strings.Join(lines, "\n"))
	})
	return level.NewFilter(l, level.AllowInfo())
}

func (l *sdkLog) Log(kv ...any) error {
	var b strings.Builder
	b.WriteString(time.Now().Format("15:04:05.000"))
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	l.mu.Lock()
	l.total++
	if len(l.lines) < sdkLogLines {
		l.lines = append(l.lines, b.String())
	} else {
		l.lines[l.next] = b.String()
		l.next = (l.next + 1) % sdkLogLines
	}
	l.mu.Unlock()
	if l.hook != nil {
		l.hook(kv)
	}
	return nil
}

// Poll calls cond every 50 ms until it reports done or d has passed. On timeout it fails the test (t.Errorf) with
// what and the last status cond returned, and returns false; callers that cannot go on stop the test themselves.
func Poll(t testing.TB, d time.Duration, what string, cond func() (done bool, status string)) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		done, status := cond()
		if done {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("timed out after %v waiting for %s; last status:\n%s", d, what, status)
			return false
		}
		<-tick.C
	}
}

// Within runs fn and waits at most d for it to return. On timeout it fails the test (t.Errorf) with the stacks of
// the SDK's goroutines and returns false; fn keeps running.
func Within(t testing.TB, d time.Duration, what string, fn func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		t.Errorf("%s did not return within %v; SDK goroutines:\n%s", what, d, sdkStacks(SDKGoroutines(), nil))
		return false
	}
}

// SDKGoroutines returns the stacks of the goroutines running code of the SDK's producer or consumer package, by
// goroutine id. Take it before starting SDK clients and pass it to NoSDKGoroutines as the baseline.
func SDKGoroutines() map[string]string {
	out := map[string]string{}
	for _, s := range GoroutineStacks() {
		if !strings.Contains(s, "aliyun-log-go-sdk/consumer.") && !strings.Contains(s, "aliyun-log-go-sdk/producer.") {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(s, "goroutine "), " ")
		out[id] = s
	}
	return out
}

// GoroutineStacks returns the stack of every goroutine of the process, one
// string each, for goleak-style checks restricted to a package's code.
func GoroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Split(string(buf), "\n\n")
}

// sdkStacks joins the stacks of gs whose goroutine id is not in skip.
func sdkStacks(gs map[string]string, skip map[string]string) string {
	var b strings.Builder
	for id, s := range gs {
		if _, ok := skip[id]; !ok {
			b.WriteString(s)
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

// NoSDKGoroutines waits up to 10 s until every SDK goroutine not in baseline (from SDKGoroutines) has ended. If
// some remain, it fails the test (t.Errorf) with their stacks and returns false.
func NoSDKGoroutines(t testing.TB, baseline map[string]string) bool {
	t.Helper()
	return Poll(t, 10*time.Second, "the SDK's producer and consumer goroutines to end", func() (bool, string) {
		left := sdkStacks(SDKGoroutines(), baseline)
		return left == "", left
	})
}

// PreinitSDKClient works around a data race in aliyun-log-go-sdk v0.1.127: (*sls.Client).initHttpClient fills in
// RequestTimeOut and RetryTimeOut lazily, on the first log-store call (GetCursor, PullLogs, PostLogStoreLogs),
// while holding only the client's read lock. The consumer library's shard goroutines (and the producer's send
// goroutines) make those first calls concurrently on one fresh client, so `go test -race` reports the SDK racing
// with itself. The client is internal to the worker / producer (no option sets these fields), so this reaches it
// along path by reflection (see Field), before Start, and sets the very defaults initHttpClient would set (60 s
// and 90 s). No behaviour changes: the lazy writes then never happen.
//
// For a producer the path is "threadPool", "ioworker", "client"; for a consumer worker "client", "client".
func PreinitSDKClient(t testing.TB, owner any, path ...string) {
	t.Helper()
	iface := Field[sls.ClientInterface](t, owner, path...)
	c, ok := (*iface).(*sls.Client)
	if !ok {
		t.Fatalf("PreinitSDKClient: %v is a %T, not *sls.Client (SDK layout changed?)", path, *iface)
	}
	if c.RequestTimeOut == 0 {
		c.RequestTimeOut = 60 * time.Second // sls defaultRequestTimeout
	}
	if c.RetryTimeOut == 0 {
		c.RetryTimeOut = 90 * time.Second // sls defaultRetryTimeout
	}
}

// HeartbeatFence works around a second data race in aliyun-log-go-sdk v0.1.127's consumer: after each heartbeat,
// ConsumerHeartBeat.heartBeatRun logs fmt.Sprintf("%v", heartbeat.heartShards) without holding shardLock
// (consumer/heart_beat.go:91), while the worker's run loop rewrites heartShards under that lock in
// removeHeartShard whenever a shard consumer has stopped (every handover). It makes the SDK's own lock order the
// two: when a heartbeat response body is closed (the last thing HeartBeat does, on the heartbeat goroutine, just
// before line 91) the fence read-locks shardLock, and it unlocks when that goroutine logs the heartbeat's outcome
// ("heart beat result" on success, "send heartbeat error" on failure), i.e. right after the unlocked read. A
// concurrent removeHeartShard then runs wholly before or wholly after the read, and nothing else changes.
//
// Wire it up before the worker starts: the worker's HTTP client goes through Transport, its logger calls Logged
// (as the SDKLogger hook), and Attach gives the fence the worker's shardLock. NewSDKConsumerWorker does all three.
// The zero value is ready to use; until Attach it does nothing.
type HeartbeatFence struct {
	lock *sync.RWMutex // the worker's ConsumerHeartBeat.shardLock, set before Start

	mu   sync.Mutex
	held bool
}

// Attach points the fence at w's heartbeat shardLock. Call it before w.Start.
func (f *HeartbeatFence) Attach(t testing.TB, w *consumer.ConsumerWorker) {
	t.Helper()
	f.lock = Field[sync.RWMutex](t, w, "consumerHeatBeat", "shardLock")
}

// Transport returns an http.RoundTripper sending requests through base that hands heartbeat responses to the
// fence when their body is closed.
func (f *HeartbeatFence) Transport(base http.RoundTripper) http.RoundTripper {
	return &fenceTransport{base: base, fence: f}
}

// closed runs on the heartbeat goroutine when a heartbeat response body is closed.
func (f *HeartbeatFence) closed() {
	if f.lock == nil {
		return
	}
	f.lock.RLock()
	f.mu.Lock()
	again := f.held
	f.held = true
	f.mu.Unlock()
	if again { // cannot happen with v0.1.127; never hold the lock twice
		f.lock.RUnlock()
	}
}

// Logged is the logger hook (see SDKLogger): the heartbeat goroutine's outcome record releases the read lock.
func (f *HeartbeatFence) Logged(kv []any) {
	outcome := false
	for i := 0; i+1 < len(kv); i += 2 {
		k, v := fmt.Sprint(kv[i]), fmt.Sprint(kv[i+1])
		if k == "heart beat result" || (k == "msg" && v == "send heartbeat error") {
			outcome = true
		}
	}
	if !outcome {
		return
	}
	f.mu.Lock()
	held := f.held
	f.held = false
	f.mu.Unlock()
	if held {
		f.lock.RUnlock()
	}
}

// fenceTransport hands heartbeat responses to the fence when their body is closed.
type fenceTransport struct {
	base  http.RoundTripper
	fence *HeartbeatFence
}

func (p *fenceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.base.RoundTrip(r)
	if err == nil && r.URL.Query().Get("type") == "heartbeat" {
		resp.Body = &fenceBody{ReadCloser: resp.Body, fence: p.fence}
	}
	return resp, err
}

type fenceBody struct {
	io.ReadCloser
	fence *HeartbeatFence
	once  sync.Once
}

func (b *fenceBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.fence.closed)
	return err
}

// NewSDKConsumerWorker creates (does not start) an SDK consumer worker configured by cfg, talking to the emulator
// through base, logging into an SDKLogger named after cfg.ConsumerName, with runtime metrics off and both SDK
// data-race workarounds (PreinitSDKClient, HeartbeatFence) applied. It overrides cfg's HTTPClient, Logger and
// DisableRuntimeMetrics. process is the worker's processor, run on the SDK's shard goroutines.
func NewSDKConsumerWorker(t testing.TB, cfg consumer.LogHubConfig, base http.RoundTripper,
	process func(shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) (string, error)) *consumer.ConsumerWorker {
	t.Helper()
	fence := &HeartbeatFence{}
	cfg.HTTPClient = &http.Client{Transport: fence.Transport(base), Timeout: time.Minute}
	cfg.Logger = SDKLogger(t, "consumer "+cfg.ConsumerName, fence.Logged)
	cfg.DisableRuntimeMetrics = true
	w := consumer.InitConsumerWorkerWithCheckpointTracker(cfg, process)
	PreinitSDKClient(t, w, "client", "client")
	fence.Attach(t, w)
	return w
}

// Field returns a pointer to the (possibly unexported) field reached from owner along path, following pointers
// and interfaces, so tests can reach SDK internals no option exposes. It fails the test if a field is missing or
// is not a T: the SDK's layout changed.
func Field[T any](t testing.TB, owner any, path ...string) *T {
	t.Helper()
	v := reflect.ValueOf(owner)
	for _, name := range path {
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			v = v.Elem()
		}
		f := v.FieldByName(name)
		if !f.IsValid() {
			t.Fatalf("Field: %s has no field %q (SDK layout changed?)", v.Type(), name)
		}
		v = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	}
	p, ok := v.Addr().Interface().(*T)
	if !ok {
		t.Fatalf("Field: %v is a %s, not a %T (SDK layout changed?)", path, v.Type(), *new(T))
	}
	return p
}
