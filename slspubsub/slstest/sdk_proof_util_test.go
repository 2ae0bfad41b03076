package slstest_test

// Helpers of the SDK proof tests (sdk_proof_test.go, sdk_proof_heartbeat_test.go): a recorder of what the SDK's
// consumer library delivered, checks of per-key order and duplicates, a ring-buffer logger for the SDK's chatty
// go-kit logging, bounded waits, a goroutine-leak check for the SDK's goroutines, and an HTTP transport that can be
// partitioned from the emulator to simulate a crashed process.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/go-kit/kit/log"
	"github.com/go-kit/kit/log/level"
	"github.com/gogo/protobuf/proto"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Contents of every log the proof tests write: the key index and the key's sequence number.
const (
	proofKeyField = "k"
	proofSeqField = "s"
)

// proofLog builds a log carrying key and seq.
func proofLog(key, seq int, now uint32) *sls.Log {
	return &sls.Log{
		Time: proto.Uint32(now),
		Contents: []*sls.LogContent{
			{Key: proto.String(proofKeyField), Value: proto.String(strconv.Itoa(key))},
			{Key: proto.String(proofSeqField), Value: proto.String(strconv.Itoa(seq))},
		},
	}
}

// proofParse extracts key and seq from a log written by proofLog.
func proofParse(l *sls.Log) (key, seq int, err error) {
	key, seq = -1, -1
	for _, c := range l.Contents {
		switch c.GetKey() {
		case proofKeyField:
			key, err = strconv.Atoi(c.GetValue())
		case proofSeqField:
			seq, err = strconv.Atoi(c.GetValue())
		}
		if err != nil {
			return 0, 0, err
		}
	}
	if key < 0 || seq < 0 {
		return 0, 0, fmt.Errorf("log without %q/%q contents: %v", proofKeyField, proofSeqField, l.Contents)
	}
	return key, seq, nil
}

// proofRecord is one log as a processor saw it. Records are kept in the order processors reported them (one
// lock), so a record's index is a global consumption sequence number.
type proofRecord struct {
	shard  int32
	key    int32
	seq    int32
	worker int8
}

// proofRecorder collects what the consumer workers' processors were given. It is safe for concurrent use.
type proofRecorder struct {
	keys, perKey int
	names        []string // worker names by id

	mu       sync.Mutex
	recs     []proofRecord
	first    []int8 // per (key, seq): worker of the first delivery, -1 before
	unique   int
	byWorker map[int8]int
	byShard  map[int]int // unique logs per shard (by first delivery)
	errs     []string
}

func newProofRecorder(keys, perKey int) *proofRecorder {
	first := make([]int8, keys*perKey)
	for i := range first {
		first[i] = -1
	}
	return &proofRecorder{keys: keys, perKey: perKey, first: first, byWorker: map[int8]int{}, byShard: map[int]int{}}
}

// worker registers a worker name and returns its id.
func (r *proofRecorder) worker(name string) int8 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, name)
	return int8(len(r.names) - 1)
}

func (r *proofRecorder) name(id int8) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[id]
}

// record stores every log of l as delivered to worker from shard. Parse errors are kept for the test to report
// (processors run on SDK goroutines, where t.Fatal must not be called).
func (r *proofRecorder) record(worker int8, shard int, l *sls.LogGroupList) {
	var batch []proofRecord
	var errs []string
	for _, g := range l.LogGroups {
		for _, lg := range g.Logs {
			k, s, err := proofParse(lg)
			if err == nil && (k >= r.keys || s >= r.perKey) {
				err = fmt.Errorf("key %d seq %d out of range", k, s)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("shard %d: %v", shard, err))
				continue
			}
			batch = append(batch, proofRecord{shard: int32(shard), key: int32(k), seq: int32(s), worker: worker})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, errs...)
	for _, rec := range batch {
		i := int(rec.key)*r.perKey + int(rec.seq)
		if r.first[i] < 0 {
			r.first[i] = worker
			r.unique++
			r.byShard[shard]++
		}
		r.byWorker[worker]++
	}
	r.recs = append(r.recs, batch...)
}

// counts returns the number of distinct logs seen, and per shard.
func (r *proofRecorder) counts() (unique int, byShard map[int]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unique, maps.Clone(r.byShard)
}

func (r *proofRecorder) delivered(worker int8) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byWorker[worker]
}

// snapshot returns a copy of the records, in consumption order.
func (r *proofRecorder) snapshot() []proofRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// proofDup is a log delivered again, and where it was first delivered.
type proofDup struct {
	rec         proofRecord
	firstShard  int32
	firstWorker int8
}

// checkOrder verifies at-least-once delivery in per-key order: for every key, the sequence numbers of first
// deliveries, in consumption order, are exactly 0..perKey-1. It returns the later deliveries (duplicates) for the
// caller to account for.
func (r *proofRecorder) checkOrder(t *testing.T) []proofDup {
	t.Helper()
	r.mu.Lock()
	errs := slices.Clone(r.errs)
	r.mu.Unlock()
	for i, e := range errs {
		if i == 10 {
			t.Errorf("... and %d more unparsable logs", len(errs)-10)
			break
		}
		t.Errorf("consumed an unparsable log: %s", e)
	}
	next := make([]int32, r.keys)
	firstAt := make([]proofRecord, r.keys*r.perKey)
	var dups []proofDup
	bad := 0
	for _, rec := range r.snapshot() {
		switch k := rec.key; {
		case rec.seq < next[k]:
			f := firstAt[int(k)*r.perKey+int(rec.seq)]
			dups = append(dups, proofDup{rec: rec, firstShard: f.shard, firstWorker: f.worker})
		case rec.seq == next[k]:
			firstAt[int(k)*r.perKey+int(rec.seq)] = rec
			next[k]++
		default:
			if bad++; bad <= 10 {
				t.Errorf("key %d: consumed seq %d (shard %d, worker %s) while seq %d was never consumed: order broken or a log lost",
					k, rec.seq, rec.shard, r.name(rec.worker), next[k])
			}
		}
	}
	missing := 0
	for k, n := range next {
		if int(n) != r.perKey {
			if missing++; missing <= 10 {
				t.Errorf("key %d: consumed seq 0..%d in order, want 0..%d", k, n-1, r.perKey-1)
			}
		}
	}
	if bad > 10 || missing > 10 {
		t.Errorf("%d out-of-order deliveries, %d keys incomplete", bad, missing)
	}
	return dups
}

// proofSDKLog is a go-kit logger for the SDK's producer and consumer that keeps the last lines in memory and
// prints them only when the test fails: the SDK logs every heartbeat.
type proofSDKLog struct {
	hook func(kv []any)

	mu    sync.Mutex
	lines []string
	next  int
	total int
}

const proofLogLines = 400

func newProofSDKLog(t *testing.T, name string) log.Logger { return newProofSDKLogHook(t, name, nil) }

// newProofSDKLogHook is newProofSDKLog calling hook with every record's key-values after keeping it.
func newProofSDKLogHook(t *testing.T, name string, hook func(kv []any)) log.Logger {
	l := &proofSDKLog{lines: make([]string, 0, proofLogLines), hook: hook}
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

func (l *proofSDKLog) Log(kv ...any) error {
	var b strings.Builder
	b.WriteString(time.Now().Format("15:04:05.000"))
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	l.mu.Lock()
	l.total++
	if len(l.lines) < proofLogLines {
		l.lines = append(l.lines, b.String())
	} else {
		l.lines[l.next] = b.String()
		l.next = (l.next + 1) % proofLogLines
	}
	l.mu.Unlock()
	if l.hook != nil {
		l.hook(kv)
	}
	return nil
}

// proofPoll calls cond every interval until it reports done or d has passed. On timeout it fails the test with
// what and the last status cond returned, and returns false.
func proofPoll(t *testing.T, d time.Duration, what string, cond func() (done bool, status string)) bool {
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

// proofWithin runs fn and waits at most d for it to return. On timeout it fails the test with the stacks of the
// SDK's goroutines and returns false; fn keeps running.
func proofWithin(t *testing.T, d time.Duration, what string, fn func()) bool {
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
		t.Errorf("%s did not return within %v; SDK goroutines:\n%s", what, d, proofStacks(proofSDKGoroutines(), nil))
		return false
	}
}

// proofSDKGoroutines returns the stacks of the goroutines running code of the SDK's producer or consumer
// package, by goroutine id.
func proofSDKGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		if !strings.Contains(s, "aliyun-log-go-sdk/consumer.") && !strings.Contains(s, "aliyun-log-go-sdk/producer.") {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(s, "goroutine "), " ")
		out[id] = s
	}
	return out
}

func proofStacks(gs map[string]string, skip map[string]string) string {
	var b strings.Builder
	for id, s := range gs {
		if _, ok := skip[id]; !ok {
			b.WriteString(s)
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

// proofNoSDKGoroutines waits until every SDK goroutine not in baseline has ended.
func proofNoSDKGoroutines(t *testing.T, baseline map[string]string) {
	t.Helper()
	proofPoll(t, 10*time.Second, "the SDK's producer and consumer goroutines to end", func() (bool, string) {
		left := proofStacks(proofSDKGoroutines(), baseline)
		return left == "", left
	})
}

// proofWorker is a started consumer worker whose stop is bounded and idempotent.
type proofWorker struct {
	name string
	id   int8
	w    *consumer.ConsumerWorker
	once sync.Once
	ok   bool
}

// stop calls StopAndWait, failing the test if it does not return within d.
func (w *proofWorker) stop(t *testing.T, d time.Duration) bool {
	t.Helper()
	w.once.Do(func() { w.ok = proofWithin(t, d, "StopAndWait of worker "+w.name, w.w.StopAndWait) })
	return w.ok
}

// proofStopAll stops workers concurrently (each StopAndWait takes at least half a second).
func proofStopAll(t *testing.T, d time.Duration, ws ...*proofWorker) {
	t.Helper()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.stop(t, d)
		}()
	}
	wg.Wait()
}

// proofGroupStatus renders a consumer group's server-side state and the shards' end cursors for failure messages.
func proofGroupStatus(env interface {
	ConsumerGroupState(project, logstore, group string) (slstest.ConsumerGroupState, error)
	Shards(project, logstore string) ([]slstest.ShardInfo, error)
	Cursors(project, logstore string, shard int) (string, string, error)
}, project, logstore, group string) string {
	var b strings.Builder
	st, err := env.ConsumerGroupState(project, logstore, group)
	if err != nil {
		return fmt.Sprintf("consumer group state: %v", err)
	}
	for _, c := range st.Consumers {
		fmt.Fprintf(&b, "consumer %s holds %v (last heartbeat %s ago)\n", c.Name, c.Shards, time.Since(c.LastHeartbeat).Round(time.Millisecond))
	}
	infos, _ := env.Shards(project, logstore)
	status := map[int]string{}
	for _, in := range infos {
		status[in.ShardID] = in.Status
	}
	for _, a := range st.Shards {
		_, end, _ := env.Cursors(project, logstore, a.Shard)
		fmt.Fprintf(&b, "shard %d (%s): %s holder=%q checkpoint=%q end=%q\n", a.Shard, status[a.Shard], a.Status, a.Consumer, a.Checkpoint, end)
	}
	return b.String()
}

// proofPartition is an http.RoundTripper that can be cut off from the server, to make a consumer worker look
// crashed: while cut, its requests never reach the server (they hang, as on a dead network), so it sends no
// heartbeat, pull or checkpoint. Heal lets new requests through and fails the hung ones with a connection error.
//
// A hang rather than an immediate error: the SDK retries failed GETs (PullLogs, GetCheckpoint) with backoff for
// up to 90 s inside one call, so a worker whose requests fail fast cannot be stopped promptly after the test.
type proofPartition struct {
	base http.RoundTripper

	mu     sync.Mutex
	cut    bool
	healed chan struct{}
}

var errProofPartition = errors.New("proof partition: connection lost")

func (p *proofPartition) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	cut, healed := p.cut, p.healed
	p.mu.Unlock()
	if !cut {
		return p.base.RoundTrip(r)
	}
	if r.Body != nil {
		_ = r.Body.Close()
	}
	select {
	case <-healed:
	case <-r.Context().Done():
	}
	return nil, errProofPartition
}

// Cut makes every request from now on hang until Heal.
func (p *proofPartition) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut, p.healed = true, make(chan struct{})
	}
}

// Heal fails the hung requests and lets new ones through.
func (p *proofPartition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.healed)
	}
}

// proofPreinitSDKClient works around a data race in aliyun-log-go-sdk v0.1.127: (*sls.Client).initHttpClient
// fills in RequestTimeOut and RetryTimeOut lazily, on the first log-store call (GetCursor, PullLogs,
// PostLogStoreLogs), while holding only the client's read lock. The consumer library's shard goroutines (and the
// producer's send goroutines) make those first calls concurrently on one fresh client, so `go test -race` reports
// the SDK racing with itself. The client is internal to the worker / producer (no option sets these fields), so
// this reaches it along path by reflection, before Start, and sets the very defaults initHttpClient would set
// (60 s and 90 s). No behaviour changes: the lazy writes then never happen.
func proofPreinitSDKClient(t *testing.T, owner any, path ...string) {
	t.Helper()
	iface := proofField[sls.ClientInterface](t, owner, path...)
	c, ok := (*iface).(*sls.Client)
	if !ok {
		t.Fatalf("proofPreinitSDKClient: %v is a %T, not *sls.Client (SDK layout changed?)", path, *iface)
	}
	if c.RequestTimeOut == 0 {
		c.RequestTimeOut = 60 * time.Second // sls defaultRequestTimeout
	}
	if c.RetryTimeOut == 0 {
		c.RetryTimeOut = 90 * time.Second // sls defaultRetryTimeout
	}
}

// proofHeartbeatFence works around a second data race in aliyun-log-go-sdk v0.1.127's consumer: after each
// heartbeat, ConsumerHeartBeat.heartBeatRun logs fmt.Sprintf("%v", heartbeat.heartShards) without holding
// shardLock (consumer/heart_beat.go:91), while the worker's run loop rewrites heartShards under that lock in
// removeHeartShard whenever a shard consumer has stopped (every handover). It makes the SDK's own lock order the
// two: when a heartbeat response body is closed (the last thing HeartBeat does, on the heartbeat goroutine, just
// before line 91) the fence read-locks shardLock, and it unlocks when that goroutine logs the heartbeat's outcome
// ("heart beat result" on success, "send heartbeat error" on failure), i.e. right after the unlocked read. A
// concurrent removeHeartShard then runs wholly before or wholly after the read, and nothing else changes.
type proofHeartbeatFence struct {
	lock *sync.RWMutex // the worker's ConsumerHeartBeat.shardLock, set before Start

	mu   sync.Mutex
	held bool
}

// closed runs on the heartbeat goroutine when a heartbeat response body is closed.
func (f *proofHeartbeatFence) closed() {
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

// logged is the logger hook: the heartbeat goroutine's outcome record releases the read lock.
func (f *proofHeartbeatFence) logged(kv []any) {
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

// proofFenceTransport hands heartbeat responses to the fence when their body is closed.
type proofFenceTransport struct {
	base  http.RoundTripper
	fence *proofHeartbeatFence
}

func (p *proofFenceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.base.RoundTrip(r)
	if err == nil && r.URL.Query().Get("type") == "heartbeat" {
		resp.Body = &proofFenceBody{ReadCloser: resp.Body, fence: p.fence}
	}
	return resp, err
}

type proofFenceBody struct {
	io.ReadCloser
	fence *proofHeartbeatFence
	once  sync.Once
}

func (b *proofFenceBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.fence.closed)
	return err
}

// newProofWorker creates (does not start) an SDK consumer worker configured by cfg, talking to the emulator
// through base (nil: env.HTTPClient's transport), logging into a ring buffer dumped on failure, with both SDK
// data-race workarounds applied. process is the worker's processor.
func newProofWorker(t *testing.T, rec *proofRecorder, cfg consumer.LogHubConfig, base http.RoundTripper,
	process func(w *proofWorker, shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) error) *proofWorker {
	t.Helper()
	w := &proofWorker{name: cfg.ConsumerName, id: rec.worker(cfg.ConsumerName)}
	fence := &proofHeartbeatFence{}
	cfg.HTTPClient = &http.Client{Transport: &proofFenceTransport{base: base, fence: fence}, Timeout: time.Minute}
	cfg.Logger = newProofSDKLogHook(t, "consumer "+cfg.ConsumerName, fence.logged)
	cfg.DisableRuntimeMetrics = true
	w.w = consumer.InitConsumerWorkerWithCheckpointTracker(cfg, func(shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) (string, error) {
		return "", process(w, shard, l, tr)
	})
	proofPreinitSDKClient(t, w.w, "client", "client")
	fence.lock = proofField[sync.RWMutex](t, w.w, "consumerHeatBeat", "shardLock")
	return w
}

// proofField returns a pointer to the (unexported) field reached from owner along path.
func proofField[T any](t *testing.T, owner any, path ...string) *T {
	t.Helper()
	v := reflect.ValueOf(owner)
	for _, name := range path {
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			v = v.Elem()
		}
		f := v.FieldByName(name)
		if !f.IsValid() {
			t.Fatalf("proofField: %s has no field %q (SDK layout changed?)", v.Type(), name)
		}
		v = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	}
	p, ok := v.Addr().Interface().(*T)
	if !ok {
		t.Fatalf("proofField: %v is a %s, not a %T (SDK layout changed?)", path, v.Type(), *new(T))
	}
	return p
}
