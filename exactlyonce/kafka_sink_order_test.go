package exactlyonce

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// chanSubscriber is a minimal message.Subscriber whose messages the test writes into ch, to drive the
// SubscriberDecorator in an exact delivery order.
type chanSubscriber struct {
	ch   chan *message.Message
	once sync.Once
}

func (c *chanSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return c.ch, nil
}

func (c *chanSubscriber) Close() error {
	c.once.Do(func() { close(c.ch) })
	return nil
}

// ksDecorated subscribes to "logs" through sink's SubscriberDecorator over a chanSubscriber, whose messages the
// test writes into src.ch; the subscription closes with the test.
func ksDecorated(t *testing.T, sink *KafkaSink) (src *chanSubscriber, out <-chan *message.Message) {
	t.Helper()
	src = &chanSubscriber{ch: make(chan *message.Message)}
	decorated, err := sink.SubscriberDecorator(ksPosition)(src)
	if err != nil {
		t.Fatal(err)
	}
	out, err = decorated.Subscribe(context.Background(), "logs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = decorated.Close() })
	return src, out
}

// deliverAll passes msgs through the decorated subscription and returns them as the handler would get them.
func deliverAll(t *testing.T, src *chanSubscriber, out <-chan *message.Message, msgs ...*message.Message) []*message.Message {
	t.Helper()
	var got []*message.Message
	for _, m := range msgs {
		src.ch <- m
		select {
		case d := <-out:
			got = append(got, d)
		case <-time.After(ksWait):
			t.Fatal("decorated subscriber did not deliver")
		}
	}
	return got
}

// TestKafkaSinkDeliveryOrder: with the SubscriberDecorator, messages of one partition that finish before an
// earlier one wait for it; when the earlier one fails, they stay uncommitted (the position does not pass the
// failed message) until its redelivery commits, and then everything commits once, in order.
func TestKafkaSinkDeliveryOrder(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out") // one output partition: the log order is the commit order
	sink := ksNewSink(t, ksConfig(brokers, "order"))
	src, out := ksDecorated(t, sink)

	var mu sync.Mutex
	failOnce := map[string]bool{"logs-0-1": true}
	process := func(msg *message.Message) ([]*message.Message, error) {
		mu.Lock()
		fail := failOnce[msg.UUID]
		delete(failOnce, msg.UUID)
		mu.Unlock()
		if fail {
			return nil, errors.New("first attempt fails")
		}
		return ksEcho(msg)
	}
	h := sink.Handler(process, ksPosition)
	msgs := deliverAll(t, src, out, ksSource("logs", 0, 1), ksSource("logs", 0, 2), ksSource("logs", 0, 3))

	later := make([]chan error, 2)
	for i, m := range msgs[1:] { // offsets 2 and 3 finish first
		later[i] = make(chan error, 1)
		go func() { later[i] <- h(m) }()
	}
	// Each request of another partition makes the batch loop look at the waiting ones again.
	probe := func(off int64) {
		t.Helper()
		if err := h(ksSource("logs", 1, off)); err != nil {
			t.Fatalf("probe: %v", err)
		}
		for i, ch := range later {
			select {
			case err := <-ch:
				t.Fatalf("offset %d returned (%v) before offset 1 committed", i+2, err)
			default:
			}
		}
		if p, ok := sink.CommittedPosition("logs", 0); ok {
			t.Fatalf("position of logs/0 moved to %+v before offset 1 committed", p)
		}
	}
	testutil.Poll(t, ksWait, "offsets 2 and 3 waiting in the batch loop", func() (bool, string) {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.inFlight) == 0 && len(sink.orders[partitionKey{"logs", 0}].delivered) == 3, ""
	})
	probe(1)
	if err := h(msgs[0]); err == nil {
		t.Fatal("offset 1 with a failing handler was acked")
	}
	probe(2) // offset 1 is now a hole: 2 and 3 must keep waiting

	again := deliverAll(t, src, out, msgs[0].Copy()) // the subscriber redelivers offset 1
	if err := h(again[0]); err != nil {
		t.Fatalf("redelivery of offset 1: %v", err)
	}
	for i, ch := range later {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("offset %d: %v", i+2, err)
			}
		case <-time.After(ksWait):
			t.Fatalf("offset %d still waits after offset 1 committed", i+2)
		}
	}
	if p, ok := sink.CommittedPosition("logs", 0); !ok || p.Offset != 3 {
		t.Errorf("position of logs/0 = %+v, %v; want offset 3", p, ok)
	}
	var got []string
	for _, m := range readOutputs(t, brokers, "out") {
		if m.UUID >= "out-logs-0" && m.UUID < "out-logs-1" {
			got = append(got, m.UUID)
		}
	}
	if want := []string{"out-logs-0-1", "out-logs-0-2", "out-logs-0-3"}; !slices.Equal(got, want) {
		t.Errorf("read_committed outputs of logs/0 in log order: %v, want %v", got, want)
	}
}

// TestKafkaSinkDeliveryOrderRetryMiddleware: a message retried by the same Handler (watermill's Retry
// middleware) without a new delivery fills its own hole.
func TestKafkaSinkDeliveryOrderRetryMiddleware(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	sink := ksNewSink(t, ksConfig(brokers, "order-retry"))
	src, out := ksDecorated(t, sink)
	attempts := 0
	process := func(msg *message.Message) ([]*message.Message, error) {
		if attempts++; attempts == 1 {
			return nil, errors.New("transient")
		}
		return ksEcho(msg)
	}
	h := sink.Handler(process, ksPosition)
	msgs := deliverAll(t, src, out, ksSource("logs", 0, 1), ksSource("logs", 0, 2))
	if err := h(msgs[0]); err == nil {
		t.Fatal("first attempt acked")
	}
	if err := h(msgs[0]); err != nil { // the retry
		t.Fatalf("retry: %v", err)
	}
	if err := h(msgs[1]); err != nil {
		t.Fatalf("next message: %v", err)
	}
	if p, ok := sink.CommittedPosition("logs", 0); !ok || p.Offset != 2 {
		t.Errorf("position = %+v, %v; want offset 2", p, ok)
	}
}

// TestKafkaSinkCloseReleasesWaitingBehind: a handler whose message waits behind an earlier one of its partition
// returns ErrKafkaSinkClosed at Close, and nothing of it commits.
func TestKafkaSinkCloseReleasesWaitingBehind(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	sink := ksNewSink(t, ksConfig(brokers, "order-close"))
	src, out := ksDecorated(t, sink)
	h := sink.Handler(ksEcho, ksPosition)
	msgs := deliverAll(t, src, out, ksSource("logs", 0, 1), ksSource("logs", 0, 2))
	waiting := make(chan error, 1)
	go func() { waiting <- h(msgs[1]) }()             // offset 1 is never handled
	if err := h(ksSource("logs", 1, 1)); err != nil { // the loop has looked at offset 2 by now, or will
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, ErrKafkaSinkClosed) {
			t.Errorf("handler waiting behind an earlier message: %v, want ErrKafkaSinkClosed", err)
		}
	case <-time.After(ksWait):
		t.Fatal("handler waiting behind an earlier message is stranded after Close")
	}
	for _, m := range readOutputs(t, brokers, "out") {
		if m.UUID == "out-logs-0-2" {
			t.Errorf("offset 2 committed although offset 1 never was")
		}
	}
}

// TestKafkaSinkDeliveryOrderMiddlewareNack: a message that a middleware nacks without calling the Handler
// (watermill's CircuitBreaker while open, a middleware that fails first) is delivered again; its two deliveries
// count as one, so once the redelivery commits, the messages after it commit too instead of waiting forever for
// the first delivery.
func TestKafkaSinkDeliveryOrderMiddlewareNack(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	sink := ksNewSink(t, ksConfig(brokers, "order-nack"))
	src, out := ksDecorated(t, sink)
	h := sink.Handler(ksEcho, ksPosition)
	msgs := deliverAll(t, src, out, ksSource("logs", 0, 1), ksSource("logs", 0, 2))
	// A middleware nacks offset 1 without calling the Handler; the subscriber delivers it again.
	again := deliverAll(t, src, out, msgs[0].Copy())
	if err := h(again[0]); err != nil {
		t.Fatalf("redelivery of offset 1: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- h(msgs[1]) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("offset 2: %v", err)
		}
	case <-time.After(ksWait):
		t.Fatal("offset 2 still waits after offset 1's redelivery committed")
	}
	if p, ok := sink.CommittedPosition("logs", 0); !ok || p.Offset != 2 {
		t.Errorf("position = %+v, %v; want offset 2", p, ok)
	}
}
