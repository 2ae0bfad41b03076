package slspubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// stSubscriber returns a Subscriber on env with fast pacing, closed on
// cleanup; mutate adjusts the config.
func stSubscriber(t *testing.T, env *testutil.SLSEnv, mutate func(*SubscriberConfig)) *Subscriber {
	t.Helper()
	cfg := SubscriberConfig{ClientConfig: testConfig(env), FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewSubscriber(cfg, nil)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// stWrite appends one LogGroup of messages written by DefaultMarshaler, with
// UUIDs "<prefix>-<i>", to shard.
func stWrite(t *testing.T, env *testutil.SLSEnv, shard int, prefix string, n int) {
	t.Helper()
	g := LogGroup{}
	for i := range n {
		rec, err := DefaultMarshaler{}.Marshal(testLogstore, message.NewMessage(fmt.Sprintf("%s-%d", prefix, i), []byte("payload "+prefix)))
		if err != nil {
			t.Fatal(err)
		}
		g.Logs = append(g.Logs, rec.Log)
	}
	if _, err := env.Server.AppendLogGroup(testProject, testLogstore, shard, toSDK(&g)); err != nil {
		t.Fatalf("AppendLogGroup: %v", err)
	}
}

// stReceive takes n messages from ch, acking each when ack is set.
func stReceive(t *testing.T, ch <-chan *message.Message, n int, ack bool) []*message.Message {
	t.Helper()
	var out []*message.Message
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d messages", len(out), n)
			}
			out = append(out, m)
			if ack {
				m.Ack()
			}
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(out), n)
		}
	}
	return out
}

// stNothing checks that ch delivers nothing for a short while.
func stNothing(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s", m.UUID)
		}
		t.Fatal("channel closed unexpectedly")
	case <-time.After(150 * time.Millisecond):
	}
}

func stClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s", m.UUID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("channel not closed")
	}
}

func uuids(msgs []*message.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.UUID
	}
	return out
}

func TestSubscriberConfigValidate(t *testing.T) {
	cfg := SubscriberConfig{ClientConfig: ClientConfig{Endpoint: "e", Project: "proj", AccessKeyID: "a", AccessKeySecret: "s"},
		FetchCount: 1001, FetchInterval: -1, PrefetchBytes: -1, MaxInFlight: -1, StartPosition: StartPosition{Kind: StartTime},
		StopPosition: StopPosition{Kind: 9}, CommitInterval: -1, OnUnmarshalError: 7}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, field := range []string{"FetchCount", "FetchInterval", "PrefetchBytes", "MaxInFlight", "StartPosition", "StopPosition", "CommitInterval", "OnUnmarshalError"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	cfg = SubscriberConfig{ClientConfig: cfg.ClientConfig}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults are invalid: %v", err)
	}
	if cfg.FetchCount != 1000 || cfg.PrefetchBytes != DefaultPrefetchBytes || cfg.MaxInFlight != 1 || cfg.Unmarshaler == nil {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestSubscriberDeliversInShardOrder(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	for g := range 20 {
		for shard := range 2 {
			stWrite(t, env, shard, fmt.Sprintf("s%d-g%02d", shard, g), 3)
		}
	}
	s := stSubscriber(t, env, func(c *SubscriberConfig) { c.FetchCount = 7 })
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	msgs := stReceive(t, ch, 120, true)
	stNothing(t, ch)
	perShard := map[int][]string{}
	for _, m := range msgs {
		p, err := PositionFromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(m.UUID, fmt.Sprintf("s%d-", p.Shard)) {
			t.Fatalf("message %s has shard %d", m.UUID, p.Shard)
		}
		perShard[p.Shard] = append(perShard[p.Shard], m.UUID)
	}
	for shard := range 2 {
		var want []string
		for g := range 20 {
			for i := range 3 {
				want = append(want, fmt.Sprintf("s%d-g%02d-%d", shard, g, i))
			}
		}
		if got := strings.Join(perShard[shard], ","); got != strings.Join(want, ",") {
			t.Fatalf("shard %d order:\n got %s\nwant %s", shard, got, strings.Join(want, ","))
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	stClosed(t, ch)
}

func TestSubscriberTwoSubscriptionsEachGetEverything(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	stWrite(t, env, 0, "a", 5)
	s := stSubscriber(t, env, nil)
	ch1, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch2, err := s.Subscribe(ctx, testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := uuids(stReceive(t, ch1, 5, true)), uuids(stReceive(t, ch2, 5, true)); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("subscriptions differ: %v %v", a, b)
	}
	cancel()
	stClosed(t, ch2)
}

func TestSubscriberConsumerGroupResume(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	for g := range 10 {
		stWrite(t, env, 0, fmt.Sprintf("g%d", g), 2)
	}
	// One stable consumer name, as a restarted process should have: it
	// takes its shards back at once instead of waiting for its previous
	// incarnation to expire from the group.
	group := func(c *SubscriberConfig) { c.ConsumerGroup = "cg"; c.ConsumerName = "c1"; c.CommitInterval = time.Hour }
	s1 := stSubscriber(t, env, group)
	ch, err := s1.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	// Ack groups 0 and 1 and the first log of group 2; receive (not ack) one more.
	stReceive(t, ch, 5, true)
	stReceive(t, ch, 1, false)
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	begin, _, err := env.Server.Cursors(testProject, testLogstore, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cursorToInt64(begin)
	cps, err := newTestClient(t, testConfig(env)).getCheckpoints(ctxT(t), testLogstore, "cg")
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 1 || cps[0].CheckPoint != cursorFromInt64(b+2) {
		t.Fatalf("checkpoints %+v, want cursor of group 2 (%s)", cps, cursorFromInt64(b+2))
	}

	s2 := stSubscriber(t, env, group)
	ch, err = s2.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	// Group 2 again (its acked log 0 is the documented redelivery), then the rest.
	got := uuids(stReceive(t, ch, 16, true))
	if got[0] != "g2-0" || got[1] != "g2-1" || got[15] != "g9-1" {
		t.Fatalf("resumed with %v", got)
	}
	stNothing(t, ch)
}

func TestSubscriberStartPositions(t *testing.T) {
	var mu sync.Mutex
	offset := -10 * time.Minute // the server checks request times against its clock
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	middle := time.Now().Add(-5 * time.Minute)
	env := testutil.SLS(t, slstest.WithClock(clock))
	env.LogStore(t, testProject, testLogstore, 1)
	stWrite(t, env, 0, "old", 2)
	mu.Lock()
	offset = 0
	mu.Unlock()
	stWrite(t, env, 0, "new", 2)

	tests := []struct {
		name  string
		start StartPosition
		want  []string
	}{
		{"begin", StartAtBegin(), []string{"old-0", "old-1", "new-0", "new-1"}},
		{"time", StartAtTime(middle), []string{"new-0", "new-1"}},
		{"end", StartAtEnd(), []string{"later-0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := stSubscriber(t, env, func(c *SubscriberConfig) { c.StartPosition = tt.start })
			ch, err := s.Subscribe(context.Background(), testLogstore)
			if err != nil {
				t.Fatal(err)
			}
			if tt.start.Kind == StartEnd {
				stWrite(t, env, 0, "later", 1)
			}
			if got := uuids(stReceive(t, ch, len(tt.want), true)); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			stNothing(t, ch)
		})
	}
}

func TestSubscriberStopPositions(t *testing.T) {
	var mu sync.Mutex
	offset := -10 * time.Minute // the server checks request times against its clock
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	middle := time.Now().Add(-5 * time.Minute)
	env := testutil.SLS(t, slstest.WithClock(clock))
	env.LogStore(t, testProject, testLogstore, 2)
	stWrite(t, env, 0, "a", 3)
	stWrite(t, env, 1, "b", 2)
	mu.Lock()
	offset = 0
	mu.Unlock()
	stWrite(t, env, 0, "c", 1)

	t.Run("end", func(t *testing.T) {
		s := stSubscriber(t, env, func(c *SubscriberConfig) { c.StopPosition = StopAtEnd() })
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		stWrite(t, env, 1, "after", 1) // past the stop position
		stReceive(t, ch, 6, true)
		stClosed(t, ch)
	})
	t.Run("time", func(t *testing.T) {
		s := stSubscriber(t, env, func(c *SubscriberConfig) { c.StopPosition = StopAtTime(middle) })
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range stReceive(t, ch, 5, true) {
			if strings.HasPrefix(m.UUID, "c-") {
				t.Fatalf("received %s, written after the stop time", m.UUID)
			}
		}
		stClosed(t, ch)
	})
	t.Run("waits for acks", func(t *testing.T) {
		s := stSubscriber(t, env, func(c *SubscriberConfig) { c.StopPosition = StopAtEnd() })
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		held := stReceive(t, ch, 2, false) // one per shard: MaxInFlight 1
		stNothing(t, ch)                   // not closed while un-acked
		for _, m := range held {
			m.Ack()
		}
		stReceive(t, ch, 5, true)
		stClosed(t, ch)
	})
}

func TestSubscriberNackRedelivers(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	stWrite(t, env, 0, "m", 3)
	s := stSubscriber(t, env, nil)
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 2 {
		m := stReceive(t, ch, 1, false)[0]
		got = append(got, m.UUID)
		m.Nack()
	}
	got = append(got, uuids(stReceive(t, ch, 3, true))...)
	if want := "[m-0 m-0 m-0 m-1 m-2]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestSubscriberMaxInFlight(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	for g := range 3 {
		stWrite(t, env, 0, fmt.Sprintf("g%d", g), 2)
	}
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.MaxInFlight = 3
		c.ConsumerGroup = "cg"
		c.CommitInterval = time.Hour
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	first := stReceive(t, ch, 3, false) // g0-0 g0-1 g1-0
	stNothing(t, ch)                    // the window is full
	first[2].Ack()
	first[0].Nack()                 // redelivered after those in flight
	m := stReceive(t, ch, 2, false) // g1-1 and g0-0 again, in either order
	first[1].Ack()
	for _, x := range m {
		x.Ack()
	}
	rest := stReceive(t, ch, 2, true)
	if got := uuids(append(m, rest...)); len(got) != 4 || !strings.Contains(fmt.Sprint(got), "g0-0") || got[3] != "g2-1" {
		t.Fatalf("got %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cps, err := newTestClient(t, testConfig(env)).getCheckpoints(ctxT(t), testLogstore, "cg")
	if err != nil {
		t.Fatal(err)
	}
	_, end, _ := env.Server.Cursors(testProject, testLogstore, 0)
	if len(cps) != 1 || cps[0].CheckPoint != end {
		t.Fatalf("checkpoints %+v, want the end %s", cps, end)
	}
}

func TestSubscriberSurvivesFetchFaults(t *testing.T) {
	env := testutil.SLS(t, slstest.WithSeed(42))
	env.LogStore(t, testProject, testLogstore, 2)
	for g := range 50 {
		stWrite(t, env, g%2, fmt.Sprintf("g%d", g), 4)
	}
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPullLogs, Probability: 0.1, Status: 503, Code: "ServerBusy"})
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.FetchCount = 2
		c.FetchInterval = time.Millisecond
		c.MaxFetchInterval = 5 * time.Millisecond
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range stReceive(t, ch, 200, true) {
		if seen[m.UUID] {
			t.Fatalf("duplicate %s", m.UUID)
		}
		seen[m.UUID] = true
	}
	stNothing(t, ch)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestSubscriberPrefetchBound(t *testing.T) {
	var pulls atomic.Int64
	env := testutil.SLS(t, slstest.WithRequestObserver(func(ri slstest.RequestInfo) {
		if ri.Op == slstest.OpPullLogs {
			pulls.Add(1)
		}
	}))
	env.LogStore(t, testProject, testLogstore, 1)
	for g := range 50 {
		stWrite(t, env, 0, fmt.Sprintf("g%d", g), 1)
	}
	s := stSubscriber(t, env, func(c *SubscriberConfig) { c.FetchCount = 1; c.PrefetchBytes = 1 })
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stReceive(t, ch, 1, false) // never acked
	stNothing(t, ch)
	// One answer delivered (held by the un-acked message), one buffered in
	// the channel, one waiting for the budget.
	if n := pulls.Load(); n > 3 {
		t.Fatalf("%d PullLogs with a full prefetch buffer", n)
	}
}

func TestSubscriberCloseLeaksNoGoroutine(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 4)
	for g := range 40 {
		stWrite(t, env, g%4, fmt.Sprintf("g%d", g), 10)
	}
	base := runtime.NumGoroutine()
	s := stSubscriber(t, env, func(c *SubscriberConfig) { c.MaxInFlight = 4; c.ConsumerGroup = "cg" })
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stReceive(t, ch, 30, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stClosed(t, ch)
	if _, err := s.Subscribe(context.Background(), testLogstore); err == nil {
		t.Fatal("Subscribe after Close succeeded")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		env.HTTPClient.CloseIdleConnections()
		n := runtime.NumGoroutine()
		if n <= base {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stFailing rejects logs whose payload says "bad".
type stFailing struct{}

func (stFailing) Unmarshal(in ReceivedLog) (*message.Message, error) {
	m, err := DefaultMarshaler{}.Unmarshal(in)
	if err == nil && strings.HasPrefix(m.UUID, "bad") {
		return nil, errors.New("bad log")
	}
	return m, err
}

func TestSubscriberUnmarshalErrorPolicies(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	stWrite(t, env, 0, "ok", 2)
	stWrite(t, env, 0, "bad", 1)
	stWrite(t, env, 0, "after", 1)

	t.Run("fail", func(t *testing.T) {
		s := stSubscriber(t, env, func(c *SubscriberConfig) { c.Unmarshaler = stFailing{} })
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		stReceive(t, ch, 2, true)
		stClosed(t, ch) // the only shard stopped
		if err := s.Close(); err == nil || !strings.Contains(err.Error(), "bad log") {
			t.Fatalf("Close = %v, want the unmarshal error", err)
		}
	})
	t.Run("deliver raw", func(t *testing.T) {
		s := stSubscriber(t, env, func(c *SubscriberConfig) {
			c.Unmarshaler = stFailing{}
			c.OnUnmarshalError = UnmarshalErrorDeliverRaw
		})
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		msgs := stReceive(t, ch, 4, true)
		raw := msgs[2]
		if raw.Metadata.Get(MetadataUnmarshalError) != "bad log" || !json.Valid(raw.Payload) || msgs[3].UUID != "after-0" {
			t.Fatalf("raw message %s %v %s; next %s", raw.UUID, raw.Metadata, raw.Payload, msgs[3].UUID)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSubscriberForeignLogs(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	g := testGroup(3, "x")
	if err := env.Client().PutLogs(testProject, testLogstore, toSDK(&g)); err != nil { // the SDK writes
		t.Fatal(err)
	}
	s := stSubscriber(t, env, nil)
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range stReceive(t, ch, 3, true) {
		var payload map[string]string
		if err := json.Unmarshal(m.Payload, &payload); err != nil {
			t.Fatalf("payload %q: %v", m.Payload, err)
		}
		if payload["i"] != fmt.Sprint(i) || m.Metadata.Get(MetadataTopic) != "topic-x" || m.Metadata.Get(MetadataSource) != "10.0.0.1" ||
			m.Metadata.Get(MetadataTagPrefix+"__tag__:k") != "x" {
			t.Fatalf("message %d: %v %s", i, m.Metadata, m.Payload)
		}
		if p, err := PositionFromMessage(m); err != nil || p.Index != i {
			t.Fatalf("position %v %v", p, err)
		}
	}
}

// stPositions is a PositionStore in memory.
type stPositions map[int]Position

func (p stPositions) LoadPosition(_ context.Context, _ string, shard int) (Position, bool, error) {
	pos, ok := p[shard]
	return pos, ok, nil
}

func TestSubscriberPositionStoreFirst(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	for g := range 4 {
		stWrite(t, env, 0, fmt.Sprintf("g%d", g), 3)
	}
	begin, _, err := env.Server.Cursors(testProject, testLogstore, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cursorToInt64(begin)
	// A checkpoint at group 3 loses to the store's position, index 1 of group 1.
	api := newTestClient(t, testConfig(env))
	if err := api.createConsumerGroup(ctxT(t), testLogstore, sls.ConsumerGroup{ConsumerGroupName: "cg", Timeout: 60, InOrder: true}); err != nil {
		t.Fatal(err)
	}
	if err := api.updateCheckpoint(ctxT(t), testLogstore, "cg", "c", 0, cursorFromInt64(b+3), true); err != nil {
		t.Fatal(err)
	}
	store := stPositions{0: {Shard: 0, Cursor: cursorFromInt64(b + 1), Index: 1}}
	s := stSubscriber(t, env, func(c *SubscriberConfig) { c.PositionStore = store; c.ConsumerGroup = "cg" })
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	got := uuids(stReceive(t, ch, 7, true))
	if want := "[g1-2 g2-0 g2-1 g2-2 g3-0 g3-1 g3-2]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	stNothing(t, ch)
}

func TestSubscriberNonRetryableFetchError(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	stWrite(t, env, 0, "m", 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPullLogs, Status: 401, Code: "Unauthorized"})
	s := stSubscriber(t, env, nil)
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stClosed(t, ch) // its only shard stopped
	var se *Error
	if err := s.Close(); !errors.As(err, &se) || se.Code != "Unauthorized" {
		t.Fatalf("Close = %v, want the Unauthorized error", err)
	}
}

func TestSubscriberSubscribeInitialize(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	s := stSubscriber(t, env, nil)
	var se *Error
	if err := s.SubscribeInitialize("missing"); !errors.As(err, &se) || se.Code != CodeLogStoreNotExist {
		t.Fatalf("SubscribeInitialize without InitializeLogStore = %v", err)
	}
	s = stSubscriber(t, env, func(c *SubscriberConfig) { c.InitializeLogStore = true; c.LogStoreShards = 3 })
	for range 2 { // the second finds it existing
		if err := s.SubscribeInitialize("created"); err != nil {
			t.Fatal(err)
		}
	}
	shards, err := newTestClient(t, testConfig(env)).listShards(ctxT(t), "created")
	if err != nil || len(shards) != 3 {
		t.Fatalf("shards %v, %v", shards, err)
	}
}

func BenchmarkSubscriberDelivery(b *testing.B) {
	env := testutil.SLS(b)
	env.LogStore(b, testProject, testLogstore, 1)
	const perGroup = 1000
	groups := (b.N + perGroup - 1) / perGroup
	for g := range groups {
		lg := LogGroup{}
		for i := range perGroup {
			rec, err := DefaultMarshaler{}.Marshal(testLogstore, message.NewMessage(fmt.Sprintf("g%d-%d", g, i), []byte(strings.Repeat("x", 200))))
			if err != nil {
				b.Fatal(err)
			}
			lg.Logs = append(lg.Logs, rec.Log)
		}
		if _, err := env.Server.AppendLogGroup(testProject, testLogstore, 0, toSDK(&lg)); err != nil {
			b.Fatal(err)
		}
	}
	s, err := NewSubscriber(SubscriberConfig{ClientConfig: testConfig(env), FetchInterval: time.Millisecond}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		(<-ch).Ack()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logs/s")
}

func TestSubscriberCommitsPeriodically(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	for g := range 3 {
		stWrite(t, env, 0, fmt.Sprintf("g%d", g), 1)
	}
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.ConsumerGroup = "cg"
		c.CommitInterval = 20 * time.Millisecond
		c.Compression = CompressionZstd
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stReceive(t, ch, 2, true)
	begin, _, _ := env.Server.Cursors(testProject, testLogstore, 0)
	b, _ := cursorToInt64(begin)
	api := newTestClient(t, testConfig(env))
	deadline := time.Now().Add(10 * time.Second)
	for {
		cps, err := api.getCheckpoints(ctxT(t), testLogstore, "cg")
		if err != nil {
			t.Fatal(err)
		}
		if len(cps) == 1 && cps[0].CheckPoint == cursorFromInt64(b+2) {
			break // committed without Close: groups 0 and 1 acked
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoints %+v, want %s", cps, cursorFromInt64(b+2))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
