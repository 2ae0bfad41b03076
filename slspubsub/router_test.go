package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// The Subscriber and the Publisher inside a watermill message.Router with
// watermill's Retry and PoisonQueue middlewares.

// Metadata keys of watermill's middleware.PoisonQueue.
const (
	rtReasonForPoisonedKey  = middleware.ReasonForPoisonedKey
	rtPoisonedTopicKey      = middleware.PoisonedTopicKey
	rtPoisonedHandlerKey    = middleware.PoisonedHandlerKey
	rtPoisonedSubscriberKey = middleware.PoisonedSubscriberKey
)

const (
	rtIn     = "rt-in"
	rtOut    = "rt-out"
	rtPoison = "rt-poison"
	rtGroup  = "rt-group"

	rtHandler    = "process"
	rtMaxRetries = 3
	rtKindKey    = "kind" // metadata: "ok", "flaky" (fails twice) or "poison" (always fails)
)

// rtCountingPublisher counts the messages it published by topic.
type rtCountingPublisher struct {
	message.Publisher
	mu sync.Mutex
	n  map[string]int
}

func (p *rtCountingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	p.mu.Lock()
	p.n[topic] += len(msgs)
	p.mu.Unlock()
	return nil
}

func (p *rtCountingPublisher) count(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[topic]
}

// rtHandlerFunc fails "flaky" messages on their first 2 attempts and
// "poison" ones always; others (and flaky ones from the third attempt) are
// republished to rtOut with UUID "out-<uuid>". attempts counts calls by UUID.
func rtHandlerFunc(attempts *sync.Map) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		n, _ := attempts.LoadOrStore(msg.UUID, new(atomic.Int32))
		attempt := n.(*atomic.Int32).Add(1)
		switch msg.Metadata.Get(rtKindKey) {
		case "poison":
			return nil, fmt.Errorf("poison message %s, attempt %d", msg.UUID, attempt)
		case "flaky":
			if attempt <= 2 {
				return nil, fmt.Errorf("flaky message %s, attempt %d", msg.UUID, attempt)
			}
		}
		out := message.NewMessage("out-"+msg.UUID, msg.Payload)
		out.Metadata.Set("source_uuid", msg.UUID)
		out.Metadata.Set(rtKindKey, msg.Metadata.Get(rtKindKey))
		return []*message.Message{out}, nil
	}
}

// rtInput returns the router's input: kinds by UUID.
func rtInput() ([]*message.Message, map[string]string) {
	kinds := map[string]string{}
	var msgs []*message.Message
	for i := range 60 {
		kind := "ok"
		switch {
		case i%6 == 1:
			kind = "flaky"
		case i%6 == 4:
			kind = "poison"
		}
		m := message.NewMessage(fmt.Sprintf("in-%02d", i), []byte(fmt.Sprintf(`{"i":%d}`, i)))
		m.Metadata.Set(rtKindKey, kind)
		kinds[m.UUID] = kind
		msgs = append(msgs, m)
	}
	return msgs, kinds
}

// rtPublisher returns a Publisher on env with fast retries.
func rtPublisher(t *testing.T, env *testutil.SLSEnv) *Publisher {
	t.Helper()
	p, err := NewPublisher(PublisherConfig{
		ClientConfig:        testConfig(env),
		RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff:     10 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestRouterRetryAndPoisonQueue(t *testing.T) {
	env := testutil.SLS(t)
	for _, ls := range []string{rtIn, rtOut, rtPoison} {
		env.LogStore(t, testProject, ls, 2)
	}
	baseline := runtime.NumGoroutine()

	pub := rtPublisher(t, env)
	counting := &rtCountingPublisher{Publisher: pub, n: map[string]int{}}
	sub := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.ConsumerGroup = rtGroup
		c.CommitInterval = 50 * time.Millisecond
	})

	logger := watermill.NewCaptureLogger()
	t.Cleanup(func() {
		if t.Failed() {
			logger.PrintCaptured(t)
		}
	})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	// First added is outermost: the poison queue sees the error Retry gives
	// up with.
	poison, err := middleware.PoisonQueue(counting, rtPoison)
	if err != nil {
		t.Fatal(err)
	}
	retry := middleware.Retry{MaxRetries: rtMaxRetries, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}
	router.AddMiddleware(poison, retry.Middleware)
	var attempts sync.Map
	router.AddHandler(rtHandler, rtIn, sub, rtOut, counting, rtHandlerFunc(&attempts))

	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	select {
	case <-router.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router not running within 10 s")
	}

	in, kinds := rtInput()
	if err := pub.Publish(rtIn, in...); err != nil {
		t.Fatalf("Publish input: %v", err)
	}
	wantOut, wantPoison := 0, 0
	for _, k := range kinds {
		if k == "poison" {
			wantPoison++
		} else {
			wantOut++
		}
	}
	rtEventually(t, 30*time.Second, "the router to route every message", func() string {
		out, poisoned := counting.count(rtOut), counting.count(rtPoison)
		if out == wantOut && poisoned == wantPoison {
			return ""
		}
		return fmt.Sprintf("%d of %d out, %d of %d poisoned", out, wantOut, poisoned, wantPoison)
	})

	if err := router.Close(); err != nil {
		t.Fatalf("router Close: %v", err)
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("router Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("router Run did not return within 10 s of Close")
	}
	if !router.IsClosed() {
		t.Fatal("router not closed")
	}
	// The router closed the handler's subscriber and publisher; closing
	// them again is harmless and reports no error (nothing was lost).
	if err := sub.Close(); err != nil {
		t.Fatalf("Subscriber Close: %v", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatalf("Publisher Close: %v", err)
	}
	if _, err := sub.Subscribe(context.Background(), rtIn); err == nil {
		t.Fatal("Subscribe after the router closed the Subscriber succeeded")
	}
	if err := pub.Publish(rtOut, message.NewMessage("late", nil)); !errors.Is(err, ErrPublisherClosed) {
		t.Fatalf("Publish after the router closed the Publisher: %v, want ErrPublisherClosed", err)
	}

	rtCheckAttempts(t, &attempts, kinds)
	rtCheckOutput(t, env, kinds)
	rtCheckPoison(t, env, in, kinds)
	rtCheckCommitted(t, env)
	rtRequireGoroutines(t, env, baseline)
}

// rtCheckAttempts: ok messages ran once, flaky ones three times, poison ones
// MaxRetries+1 times; nothing was redelivered.
func rtCheckAttempts(t *testing.T, attempts *sync.Map, kinds map[string]string) {
	t.Helper()
	want := map[string]int32{"ok": 1, "flaky": 3, "poison": rtMaxRetries + 1}
	for uuid, kind := range kinds {
		n, ok := attempts.Load(uuid)
		if !ok {
			t.Errorf("%s (%s) never handled", uuid, kind)
			continue
		}
		if got := n.(*atomic.Int32).Load(); got != want[kind] {
			t.Errorf("%s (%s) handled %d times, want %d", uuid, kind, got, want[kind])
		}
	}
}

// rtReadAll reads logstore to its end and returns its messages by UUID,
// failing on a duplicate.
func rtReadAll(t *testing.T, env *testutil.SLSEnv, logstore string, group string) map[string]*message.Message {
	t.Helper()
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.StopPosition = StopAtEnd()
		c.ConsumerGroup = group
	})
	ch, err := s.Subscribe(context.Background(), logstore)
	if err != nil {
		t.Fatalf("Subscribe %s: %v", logstore, err)
	}
	got := map[string]*message.Message{}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				if err := s.Close(); err != nil {
					t.Fatalf("Close reader of %s: %v", logstore, err)
				}
				return got
			}
			if _, dup := got[m.UUID]; dup {
				t.Errorf("%s: %s delivered twice", logstore, m.UUID)
			}
			got[m.UUID] = m
			m.Ack()
		case <-timeout:
			t.Fatalf("%s: read %d messages, channel not closed within 20 s", logstore, len(got))
		}
	}
}

func rtCheckOutput(t *testing.T, env *testutil.SLSEnv, kinds map[string]string) {
	t.Helper()
	out := rtReadAll(t, env, rtOut, "")
	n := 0
	for uuid, kind := range kinds {
		if kind == "poison" {
			continue
		}
		n++
		m, ok := out["out-"+uuid]
		if !ok {
			t.Errorf("%s (%s) missing from %s", uuid, kind, rtOut)
			continue
		}
		if m.Metadata.Get("source_uuid") != uuid || m.Metadata.Get(rtKindKey) != kind {
			t.Errorf("%s: metadata %v", m.UUID, m.Metadata)
		}
	}
	if len(out) != n {
		t.Errorf("%s holds %d messages, want %d", rtOut, len(out), n)
	}
}

func rtCheckPoison(t *testing.T, env *testutil.SLSEnv, in []*message.Message, kinds map[string]string) {
	t.Helper()
	poisoned := rtReadAll(t, env, rtPoison, "")
	n := 0
	for _, orig := range in {
		if kinds[orig.UUID] != "poison" {
			if _, ok := poisoned[orig.UUID]; ok {
				t.Errorf("%s (%s) in the poison queue", orig.UUID, kinds[orig.UUID])
			}
			continue
		}
		n++
		m, ok := poisoned[orig.UUID]
		if !ok {
			t.Errorf("%s missing from %s", orig.UUID, rtPoison)
			continue
		}
		if string(m.Payload) != string(orig.Payload) || m.Metadata.Get(rtKindKey) != "poison" {
			t.Errorf("%s: payload %q metadata %v; want the original", m.UUID, m.Payload, m.Metadata)
		}
		wantReason := fmt.Sprintf("poison message %s, attempt %d", orig.UUID, rtMaxRetries+1)
		for key, want := range map[string]string{
			rtReasonForPoisonedKey:  wantReason,
			rtPoisonedTopicKey:      rtIn,
			rtPoisonedHandlerKey:    rtHandler,
			rtPoisonedSubscriberKey: "slspubsub.Subscriber",
		} {
			if got := m.Metadata.Get(key); !strings.Contains(got, want) {
				t.Errorf("%s: poison metadata %s = %q, want %q", m.UUID, key, got, want)
			}
		}
	}
	if len(poisoned) != n {
		t.Errorf("%s holds %d messages, want %d", rtPoison, len(poisoned), n)
	}
}

// rtCheckCommitted: the router's consumer group committed every ack, so it
// resumes at the end of the input.
func rtCheckCommitted(t *testing.T, env *testutil.SLSEnv) {
	t.Helper()
	if left := rtReadAll(t, env, rtIn, rtGroup); len(left) != 0 {
		t.Errorf("consumer group %s redelivers %d messages after the router closed", rtGroup, len(left))
	}
}

// rtEventually polls cond (which returns "" when satisfied, else a status)
// until it holds or timeout passes.
func rtEventually(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		status := cond()
		if status == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, status)
		}
		<-tick.C
	}
}

// rtRequireGoroutines waits until the goroutine count is back to baseline
// (taken after the emulator started), closing the shared client's idle
// connections meanwhile: only the emulator's own goroutines may remain.
func rtRequireGoroutines(t *testing.T, env *testutil.SLSEnv, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		env.HTTPClient.CloseIdleConnections()
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines 10 s after closing the router, baseline %d:\n%s", n, baseline, buf)
		}
		<-tick.C
	}
}
