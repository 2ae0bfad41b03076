package slspubsub

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// recordingObserver records, per shard, the positions it observed, and tags
// each message's context so the consumer can tell it was observed.
type recordingObserver struct {
	mu       sync.Mutex
	observed map[int][]Position
	ended    int
	afterEnd int // Observe calls after Ended
}

type observedKey struct{}

func (o *recordingObserver) Observe(msg *message.Message) {
	pos, err := PositionFromMessage(msg)
	if err != nil {
		panic(fmt.Sprintf("observed message without a position: %v", err))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended > 0 {
		o.afterEnd++
	}
	o.observed[pos.Shard] = append(o.observed[pos.Shard], pos)
	msg.SetContext(context.WithValue(msg.Context(), observedKey{}, len(o.observed[pos.Shard])))
}

func (o *recordingObserver) Ended() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended++
}

// SubscribeObserved shows the observer every message before the consumer
// gets it, each shard's in delivery order, a nacked message again when it is
// sent again, and calls Ended once, after the last message, before the
// channel closes.
func TestSubscribeObservedSeesEveryDeliveryInOrder(t *testing.T) {
	env := testutil.SLS(t)
	const shards, perShard = 3, 40
	env.LogStore(t, testProject, testLogstore, shards)
	for shard := range shards {
		stWrite(t, env, shard, fmt.Sprintf("s%d", shard), perShard)
	}
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.StopPosition = StopAtEnd()
		c.MaxInFlight = 4
	})
	o := &recordingObserver{observed: map[int][]Position{}}
	ch, err := s.SubscribeObserved(t.Context(), testLogstore, o)
	if err != nil {
		t.Fatal(err)
	}
	received := map[int][]Position{}
	nacked := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case m, ok := <-ch:
			if !ok {
				done = true
				break
			}
			pos, err := PositionFromMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := m.Context().Value(observedKey{}).(int)
			received[pos.Shard] = append(received[pos.Shard], pos)
			if n != len(received[pos.Shard]) {
				t.Fatalf("message %s is delivery %d of shard %d but was observed as %d", pos, len(received[pos.Shard]), pos.Shard, n)
			}
			if pos.Index == 7 && !nacked[pos.String()] { // once per shard: sent again, observed again
				nacked[pos.String()] = true
				m.Nack()
				continue
			}
			m.Ack()
		case <-timeout:
			t.Fatal("the bounded subscription did not end within 30 s")
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended != 1 || o.afterEnd != 0 {
		t.Fatalf("Ended called %d times, %d Observe calls after it; want 1 and 0", o.ended, o.afterEnd)
	}
	for shard := range shards {
		if got, want := len(received[shard]), perShard+1; got != want {
			t.Errorf("shard %d: %d deliveries, want %d (every log, one nacked and sent again)", shard, got, want)
		}
		if fmt.Sprint(o.observed[shard]) != fmt.Sprint(received[shard]) {
			t.Errorf("shard %d: observed %v, delivered %v", shard, o.observed[shard], received[shard])
		}
	}
}
