package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
)

// callRecorder records the size of every Publish call before handing it to a collector.
type callRecorder struct {
	*collector
	mu    sync.Mutex
	sizes []int
}

func (c *callRecorder) Publish(topic string, msgs ...*message.Message) error {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(msgs))
	c.mu.Unlock()
	return c.collector.Publish(topic, msgs...)
}

func (c *callRecorder) calls() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

// TestRelayPacksRowsIntoFewPublishCalls: a backlog of 20 keys x 15 rows (two topics alternating in runs of 5
// rows within each key, keys switching at different rows) and 10 unkeyed rows is relayed in Publish calls of several messages, never more than
// MaxMessagesPerPublish, one topic per call, each key in commit order; with MaxMessagesPerPublish 1 every call
// carries one message.
func TestRelayPacksRowsIntoFewPublishCalls(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perCall int
	}{{"perCall=40", 40}, {"perCall=1", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			db := migrated(t)
			ctx := context.Background()
			const keys, perKey, unkeyed = 20, 15, 10
			var msgs []*message.Message
			var topics []string
			for seq := range perKey {
				for k := range keys {
					msgs = append(msgs, keyed("key-"+strconv.Itoa(k), strconv.Itoa(seq)))
					topics = append(topics, topicOf(k, seq)) // runs of 5 rows per topic, switching at different rows
				}
			}
			for i := range unkeyed {
				msgs, topics = append(msgs, keyed("", "u"+strconv.Itoa(i))), append(topics, "a")
			}
			for i, m := range msgs {
				if err := publishInTx(ctx, db, outbox.PublisherConfig{}, topics[i], "k", i, true, m); err != nil {
					t.Fatal(err)
				}
			}
			dest := &callRecorder{collector: &collector{}}
			runRelay(t, db, outbox.RelayConfig{Publisher: dest, MaxMessagesPerPublish: tc.perCall,
				PollInterval: 20 * time.Millisecond})
			testutil.Poll(t, time.Minute, "every row delivered", func() (bool, string) {
				n := countRows(t, db, "delivered_at IS NULL")
				return n == 0, fmt.Sprintf("%d rows pending", n)
			})
			got := dest.snapshot()
			calls := dest.calls()
			if len(got) != len(msgs) {
				t.Errorf("destination has %d messages, want %d (no failure, so no duplicate)", len(got), len(msgs))
			}
			for k := range keys {
				key := "key-" + strconv.Itoa(k)
				want := make([]string, perKey)
				for i := range want {
					want[i] = strconv.Itoa(i)
				}
				if p := payloads(got, key); fmt.Sprint(p) != fmt.Sprint(want) {
					t.Errorf("%s: destination order %v, want %v", key, p, want)
				}
			}
			for _, r := range got {
				want := "a"
				if r.key != "" {
					k, _ := strconv.Atoi(r.key[len("key-"):])
					seq, _ := strconv.Atoi(string(r.msg.Payload))
					want = topicOf(k, seq)
				}
				if r.topic != want {
					t.Errorf("row %d (%s %s) published to %q, want %q", r.id, r.key, r.msg.Payload, r.topic, want)
				}
			}
			largest := 0
			for _, n := range calls {
				largest = max(largest, n)
			}
			t.Logf("%d rows in %d Publish calls, largest %d", len(got), len(calls), largest)
			if largest > tc.perCall {
				t.Errorf("a Publish call carried %d messages, more than MaxMessagesPerPublish %d", largest, tc.perCall)
			}
			if tc.perCall > 1 && len(calls) > len(msgs)/4 {
				t.Errorf("%d Publish calls for %d rows: rows are not packed into calls", len(calls), len(msgs))
			}
		})
	}
}

// topicOf is the topic of row seq of key k in TestRelayPacksRowsIntoFewPublishCalls: runs of 5 rows,
// "a" then "b", shifted by the key so that a round's calls mix topics.
func topicOf(k, seq int) string { return []string{"a", "b"}[(seq+k)/5%2] }

// TestRelayFailedCallBlamesOneRow: a Publish call that fails because of one row (the destination refuses the
// whole call) is retried one row per call: only that row counts a failed attempt, the rows of other keys in
// the call are delivered, and its key stops at it (later rows neither delivered nor charged an attempt).
func TestRelayFailedCallBlamesOneRow(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	poison := keyed("k", "poison")
	dest := &callRecorder{collector: &collector{}}
	dest.setFail(func(_ string, m *message.Message) error {
		if m.UUID == poison.UUID {
			return errors.New("destination rejects poison")
		}
		return nil
	})
	msgs := []*message.Message{keyed("k", "a"), keyed("x", "x1"), poison, keyed("y", "y1"), keyed("k", "b"),
		keyed("x", "x2"), keyed("", "u")}
	for i, m := range msgs {
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", i, true, m); err != nil {
			t.Fatal(err)
		}
	}
	runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: 20 * time.Millisecond,
		RetryInitialBackoff: time.Hour, RetryMaxBackoff: time.Hour})
	testutil.Poll(t, 30*time.Second, "every row but key k's last two delivered", func() (bool, string) {
		n := countRows(t, db, "delivered_at IS NOT NULL")
		return n == 5, fmt.Sprintf("%d rows delivered", n)
	})
	if n := countRows(t, db, "delivered_at IS NOT NULL AND attempts <> 1"); n != 0 {
		t.Errorf("%d delivered rows were charged a failed attempt", n)
	}
	if n := countRows(t, db, fmt.Sprintf("uuid = '%s' AND attempts = 1 AND last_error LIKE '%%poison%%'", poison.UUID)); n != 1 {
		t.Errorf("the poison row does not have exactly one failed attempt with its error")
	}
	if n := countRows(t, db, "ordering_key = 'k' AND payload = 'b' AND attempts = 0 AND delivered_at IS NULL"); n != 1 {
		t.Errorf("the row after the poison row was delivered or charged an attempt")
	}
	if got := payloads(dest.snapshot(), "k"); fmt.Sprint(got) != "[a]" {
		t.Errorf("key k delivered %v, want [a]", got)
	}
	t.Logf("Publish calls: %v", dest.calls())
	if calls := dest.calls(); len(calls) == 0 || calls[0] < 2 {
		t.Errorf("first Publish call carried %v messages, want the batch in one call", calls)
	}
}

// TestRelayDeleteOnDelivery: with DeleteOnDelivery the relay deletes the rows it delivers; a parked row stays.
func TestRelayDeleteOnDelivery(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	poison := keyed("p", "poison")
	dest := &collector{}
	dest.setFail(func(_ string, m *message.Message) error {
		if m.UUID == poison.UUID {
			return errors.New("destination rejects poison")
		}
		return nil
	})
	for i := range 50 {
		m := keyed("key-"+strconv.Itoa(i%5), strconv.Itoa(i))
		if i == 10 {
			m = poison
		}
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", i, true, m); err != nil {
			t.Fatal(err)
		}
	}
	runRelay(t, db, outbox.RelayConfig{Publisher: dest, DeleteOnDelivery: true, MaxAttempts: 1,
		PollInterval: 20 * time.Millisecond})
	testutil.Poll(t, 30*time.Second, "every row but the poison row deleted", func() (bool, string) {
		n := countRows(t, db, "true")
		return n == 1 && dest.count() == 49, fmt.Sprintf("%d rows left, %d delivered", n, dest.count())
	})
	if n := countRows(t, db, fmt.Sprintf("uuid = '%s' AND parked_at IS NOT NULL", poison.UUID)); n != 1 {
		t.Errorf("the poison row is not the parked row left")
	}
}
