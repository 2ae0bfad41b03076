package exactlyonce_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/jackc/pgx/v5"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// seqLogs is the number of logs per shard in the ordering tests; the Subscriber releases seqInFlight of a
// shard at once.
const (
	seqShards   = 2
	seqLogs     = 12
	seqInFlight = 4
)

// orderingSetup writes one LogGroup of seqLogs logs {"id": "<shard>-<i>"} per shard and returns a Subscriber
// with MaxInFlight seqInFlight resuming from store.
func orderingSetup(t *testing.T, store *exactlyonce.Store) *slspubsub.Subscriber {
	t.Helper()
	env := testutil.SLS(t)
	env.LogStore(t, crashProject, "ordered", seqShards)
	now := uint32(time.Now().Unix())
	for shard := range seqShards {
		group := &sls.LogGroup{}
		for i := range seqLogs {
			k, v := "id", fmt.Sprintf("%d-%d", shard, i)
			group.Logs = append(group.Logs, &sls.Log{Time: &now, Contents: []*sls.LogContent{{Key: &k, Value: &v}}})
		}
		if _, err := env.Server.AppendLogGroup(crashProject, "ordered", shard, group); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig: slspubsub.ClientConfig{Endpoint: env.Endpoint, Project: crashProject,
			AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret, HTTPClient: env.HTTPClient},
		FetchInterval: 5 * time.Millisecond,
		MaxInFlight:   seqInFlight,
		PositionStore: store.SubscriberPositions("c"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// logID is the "id" of an SLS log message written by orderingSetup.
func logID(msg *message.Message) string {
	var log struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(msg.Payload, &log)
	return log.ID
}

func insertLogID(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
	_, err := tx.Exec(ctx, `INSERT INTO sink (id) VALUES ($1)`, logID(msg))
	return err
}

// runOrdered runs a router over sub with middleware mw in front of handle and waits until every log is in the
// sink, then checks that each is there once and that the stored positions are the last logs.
func runOrdered(t *testing.T, store *exactlyonce.Store, sub message.Subscriber, mw message.HandlerMiddleware, handle message.NoPublishHandlerFunc) {
	t.Helper()
	runOrderedDropping(t, store, sub, mw, handle, "")
}

// runOrderedDropping is runOrdered for a middleware that acks log dropped of each shard without the handler:
// that log must not be in the sink, every other log once.
func runOrderedDropping(t *testing.T, store *exactlyonce.Store, sub message.Subscriber, mw message.HandlerMiddleware, handle message.NoPublishHandlerFunc, dropped string) {
	t.Helper()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	router.AddConsumerHandler("eo", "ordered", sub, handle)
	router.AddMiddleware(mw)
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = router.Close()
		<-done
	})
	pool := store.Pool()
	testutil.Poll(t, 30*time.Second, "every log stored", func() (bool, string) {
		ps, err := store.Positions(context.Background(), "c", "ordered")
		if err != nil {
			return false, err.Error()
		}
		for shard := range int32(seqShards) {
			if ps[shard].Index != seqLogs-1 {
				return false, fmt.Sprint(ps)
			}
		}
		return true, ""
	})
	rows := sinkCounts(t, pool)
	for shard := range seqShards {
		for i := range seqLogs {
			id, want := fmt.Sprintf("%d-%d", shard, i), 1
			if fmt.Sprint(i) == dropped {
				want = 0
			}
			if rows[id] != want {
				t.Errorf("log %s is in the sink %d times, want %d", id, rows[id], want)
			}
		}
	}
}

// delayFirst holds the first log of each shard back, so that later logs released with it (MaxInFlight > 1)
// reach the handler first, as the router's goroutines may schedule them.
func delayFirst(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if msg.Metadata.Get(slspubsub.MetadataIndex) == "0" {
			select {
			case <-time.After(300 * time.Millisecond):
			case <-msg.Context().Done():
			}
		}
		return h(msg)
	}
}

// With several messages of a shard in flight, the handlers' Subscriber wrapper keeps each partition in
// delivery order: a later log that reaches the handler first waits, so the position never passes a log not
// yet applied.
func TestSubscriberWrapperKeepsPartitionOrder(t *testing.T) {
	forEachWrapping(t, func(t *testing.T, wrap func(message.Subscriber) message.Subscriber) {
		t.Run("batch", func(t *testing.T) {
			store, _ := newStore(t)
			h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
				HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition},
				MaxWait:       time.Millisecond,
			}, insertLogID)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Close() })
			runOrdered(t, store, h.Subscriber(wrap(orderingSetup(t, store))), delayFirst, h.Handle)
		})
		t.Run("message", func(t *testing.T) {
			store, _ := newStore(t)
			h, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition}, insertLogID)
			if err != nil {
				t.Fatal(err)
			}
			runOrdered(t, store, h.Subscriber(wrap(orderingSetup(t, store))), delayFirst, h.Handle)
		})
	})
}

// A message that a middleware nacks without calling the handler is not applied: later messages of its
// partition must not commit past it until it is redelivered and applied.
func TestSubscriberWrapperBlocksBehindMiddlewareNack(t *testing.T) {
	forEachWrapping(t, func(t *testing.T, wrap func(message.Subscriber) message.Subscriber) {
		store, _ := newStore(t)
		h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
			HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition},
			MaxWait:       time.Millisecond,
		}, insertLogID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		// Log 1 of each shard is refused once, after log 3 (released with it) went through the handler or, when
		// the handler holds log 3 back behind log 1 (as it must), after 2 s: without the ordering, logs 2 and 3
		// would commit while log 1 is not applied, and log 1 would then be skipped.
		var mu sync.Mutex
		refused := map[string]bool{}
		handled3 := map[string]chan struct{}{"0": make(chan struct{}), "1": make(chan struct{})}
		refuseOnce := func(next message.HandlerFunc) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				shard, index := msg.Metadata.Get(slspubsub.MetadataShard), msg.Metadata.Get(slspubsub.MetadataIndex)
				mu.Lock()
				first := !refused[shard+"/"+index]
				refused[shard+"/"+index] = true
				mu.Unlock()
				switch {
				case first && index == "3":
					defer close(handled3[shard])
				case first && index == "1":
					select {
					case <-handled3[shard]:
					case <-time.After(2 * time.Second):
					}
					return nil, errors.New("refused by middleware")
				}
				return next(msg)
			}
		}
		runOrdered(t, store, h.Subscriber(wrap(orderingSetup(t, store))), refuseOnce, h.Handle)
	})
}

// A message that a middleware acks without calling the handler lets its partition go on: the later messages,
// which reached the handler before it and wait for it, are applied once it is acked, with both handlers.
func TestSubscriberWrapperPassesMiddlewareAck(t *testing.T) {
	forEachWrapping(t, func(t *testing.T, wrap func(message.Subscriber) message.Subscriber) {
		dropLater := func(next message.HandlerFunc) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				if msg.Metadata.Get(slspubsub.MetadataIndex) != "1" {
					return next(msg)
				}
				select {
				case <-time.After(300 * time.Millisecond): // let logs 2, 3, ... reach the handler first
				case <-msg.Context().Done():
				}
				return nil, nil
			}
		}
		hc := exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition}
		t.Run("batch", func(t *testing.T) {
			store, _ := newStore(t)
			h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{HandlerConfig: hc, MaxWait: time.Millisecond}, insertLogID)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Close() })
			runOrderedDropping(t, store, h.Subscriber(wrap(orderingSetup(t, store))), dropLater, h.Handle, "1")
		})
		t.Run("message", func(t *testing.T) {
			store, _ := newStore(t)
			h, err := exactlyonce.NewMessageHandler(store, hc, insertLogID)
			if err != nil {
				t.Fatal(err)
			}
			runOrderedDropping(t, store, h.Subscriber(wrap(orderingSetup(t, store))), dropLater, h.Handle, "1")
		})
	})
}

// A message waiting behind an earlier one of its partition is released with ErrClosed when the wrapper
// closes, and the wrapper leaves no goroutine behind.
func TestSubscriberWrapperCloseReleasesWaiters(t *testing.T) {
	forEachWrapping(t, func(t *testing.T, wrap func(message.Subscriber) message.Subscriber) {
		store, _ := newStore(t)
		sub := orderingSetup(t, store)
		h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
			HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPositionOf("ordered")},
			MaxWait:       time.Millisecond,
		}, insertLogID)
		if err != nil {
			t.Fatal(err)
		}
		wrapped := h.Subscriber(wrap(sub))
		ch, err := wrapped.Subscribe(context.Background(), "ordered")
		if err != nil {
			t.Fatal(err)
		}
		// Take messages until log 1 of some shard arrives; hand only that one to the handler: it must wait for
		// log 0 of its shard, which nobody handles.
		var second *message.Message
		for second == nil {
			select {
			case m := <-ch:
				if m.Metadata.Get(slspubsub.MetadataIndex) == "1" {
					second = m
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no log 1 delivered")
			}
		}
		res := make(chan error, 1)
		go func() { res <- h.Handle(second) }()
		select {
		case err := <-res:
			t.Fatalf("log 1 was handled (%v) while log 0 of its shard was neither handled nor settled", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := wrapped.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := waitResult(t, res); !errors.Is(err, exactlyonce.ErrClosed) {
			t.Errorf("waiting Handle = %v, want ErrClosed", err)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		testutil.Poll(t, 10*time.Second, "the wrapper's goroutines to end", func() (bool, string) {
			left := packageGoroutines("watermill-sls/exactlyonce.(")
			return len(left) == 0, strings.Join(left, "\n\n")
		})
	})
}

// opaqueSubscriber hides the concrete type of the subscriber it wraps.
type opaqueSubscriber struct{ message.Subscriber }

// forEachWrapping runs f with the slspubsub Subscriber as it is, which the ordering wrapper observes as it
// delivers (slspubsub.Subscriber.SubscribeObserved), and hidden behind another type, whose channel the
// wrapper forwards from a goroutine of its own (any other subscriber, e.g. watermill-kafka's).
func forEachWrapping(t *testing.T, f func(t *testing.T, wrap func(message.Subscriber) message.Subscriber)) {
	t.Run("observed", func(t *testing.T) { f(t, func(s message.Subscriber) message.Subscriber { return s }) })
	t.Run("forwarded", func(t *testing.T) {
		f(t, func(s message.Subscriber) message.Subscriber { return opaqueSubscriber{s} })
	})
}
