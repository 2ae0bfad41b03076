package exactlyonce_test

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

func TestPositionOrder(t *testing.T) {
	p := func(o int64, i int32) exactlyonce.Position { return exactlyonce.Position{Offset: o, Index: i} }
	cases := []struct {
		a, b exactlyonce.Position
		want int
	}{
		{p(1, 0), p(1, 0), 0},
		{p(1, 0), p(1, 1), -1},
		{p(1, 9), p(2, 0), -1},
		{p(-5, 3), p(-4, 0), -1},
		{p(10, 0), p(9, 99), 1},
	}
	for _, c := range cases {
		if got := c.a.Compare(c.b); got != c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := c.b.Compare(c.a); got != -c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.b, c.a, got, -c.want)
		}
		if c.a.After(c.b) != (c.want > 0) {
			t.Errorf("%v.After(%v) = %v", c.a, c.b, c.a.After(c.b))
		}
	}
}

// SLSCursor is the inverse of slspubsub.Position.CursorValue, and spells cursors as the SDK does.
func TestSLSCursorRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 9, 10, 99, 100, 1700000000000, -1, 1<<63 - 1, -1 << 63} {
		c := exactlyonce.Position{Offset: v}.SLSCursor()
		if want := base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(v, 10))); c != want {
			t.Errorf("SLSCursor(%d) = %q, want %q", v, c, want)
		}
		got, err := slspubsub.Position{Cursor: c}.CursorValue()
		if err != nil || got != v {
			t.Errorf("CursorValue(SLSCursor(%d)) = %d, %v", v, got, err)
		}
	}
}

func TestSLSPositionFromMetadata(t *testing.T) {
	msg := message.NewMessage("u", nil)
	cursor := exactlyonce.Position{Offset: 1234}.SLSCursor()
	msg.Metadata.Set(slspubsub.MetadataShard, "3")
	msg.Metadata.Set(slspubsub.MetadataCursor, cursor)
	msg.Metadata.Set(slspubsub.MetadataIndex, "7")
	got, err := exactlyonce.SLSPositionOf("logs")(msg)
	if want := (exactlyonce.Position{Stream: "logs", Partition: 3, Offset: 1234, Index: 7}); err != nil || got != want {
		t.Errorf("SLSPositionOf = %v, %v; want %v", got, err, want)
	}
	// Outside a router the stream is unknown; the handler config's Stream fills it in.
	if got, err := exactlyonce.SLSPosition(msg); err != nil || got.Stream != "" || got.Offset != 1234 {
		t.Errorf("SLSPosition outside a router = %v, %v", got, err)
	}
	delete(msg.Metadata, slspubsub.MetadataCursor)
	if _, err := exactlyonce.SLSPosition(msg); err == nil || !strings.Contains(err.Error(), slspubsub.MetadataCursor) {
		t.Errorf("SLSPosition without a cursor: %v", err)
	}
	if _, err := exactlyonce.KafkaPositionOf("t")(msg); err == nil {
		t.Error("KafkaPositionOf accepted a message without Kafka context")
	}
}

// Through a router, SLSPosition reads the logstore from the subscribed topic, and a Subscriber whose
// PositionStore is the Store resumes right after the stored log, in the middle of a LogGroup.
func TestSLSRouterPositionsAndResume(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, crashProject, "logs", 1)
	store, pool := newStore(t)
	ctx := context.Background()
	var cursor string
	for g := range 2 {
		group := &sls.LogGroup{}
		now := uint32(time.Now().Unix())
		for i := range 5 {
			k, v := "id", strconv.Itoa(g*5+i)
			group.Logs = append(group.Logs, &sls.Log{Time: &now, Contents: []*sls.LogContent{{Key: &k, Value: &v}}})
		}
		c, err := env.Server.AppendLogGroup(crashProject, "logs", 0, group)
		if err != nil {
			t.Fatal(err)
		}
		if g == 0 {
			cursor = c
		}
	}
	first, err := slspubsub.Position{Cursor: cursor}.CursorValue()
	if err != nil {
		t.Fatal(err)
	}
	// Logs 0..2 of the first group are applied.
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := store.Advance(ctx, tx, "c", exactlyonce.Position{Stream: "logs", Partition: 0, Offset: first, Index: 2})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig: slspubsub.ClientConfig{Endpoint: env.Endpoint, Project: crashProject,
			AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret, HTTPClient: env.HTTPClient},
		FetchInterval: 5 * time.Millisecond,
		PositionStore: store.SubscriberPositions("c"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	h, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition},
		func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
			_, err := tx.Exec(ctx, `INSERT INTO sink (id) VALUES ($1)`, string(msg.Payload))
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunRouter(t, "logs", sub, h.Handle)
	testutil.Poll(t, 20*time.Second, "logs 3..9 in the sink", func() (bool, string) {
		rows := sinkCounts(t, pool)
		return len(rows) == 7, strconv.Itoa(len(rows)) + " rows"
	})
	rows := sinkCounts(t, pool)
	for i := 3; i < 10; i++ {
		if id := `{"id":"` + strconv.Itoa(i) + `"}`; rows[id] != 1 {
			t.Errorf("sink holds log %d %d times; sink %v", i, rows[id], rows)
		}
	}
	if got, ok, _ := store.Load(ctx, "c", "logs", 0); !ok || got.Offset != first+1 || got.Index != 4 {
		t.Errorf("stored %v, want the second group's last log", got)
	}
}

// KafkaResume starts a watermill-kafka subscription right after the stored offset of each partition: with a
// consumer group (also when the group committed a later offset: the store wins) and without one. Partitions
// without a stored position start as sarama would. KafkaPosition reads partition and offset from the context
// and the topic from the router.
func TestKafkaResume(t *testing.T) {
	for _, group := range []string{"resume-group", ""} {
		t.Run("group="+group, func(t *testing.T) {
			brokers := testutil.KafkaWithPartitions(t, 2, "in")
			produceN(t, brokers, "in", 10) // 0..9 on partition 0, 10..19 on partition 1
			store, pool := newStore(t)
			ctx := context.Background()
			if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := store.Advance(ctx, tx, "c", exactlyonce.Position{Stream: "in", Partition: 0, Offset: 6})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if group != "" {
				commitGroupOffset(t, brokers, group, "in", 0, 9) // the group is ahead of the store
			}
			cfg := kafka.DefaultSaramaSubscriberConfig()
			cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
			sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
				Brokers: brokers, ConsumerGroup: group, OverwriteSaramaConfig: cfg,
				Tracer: store.KafkaResume("c", nil),
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Close() })
			h, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.KafkaPosition}, insertSink)
			if err != nil {
				t.Fatal(err)
			}
			// Record what is delivered: resuming must not deliver (and then skip) what the store holds.
			var mu sync.Mutex
			var delivered []exactlyonce.Position
			testutil.RunRouter(t, "in", sub, func(msg *message.Message) error {
				pos, err := exactlyonce.KafkaPosition(msg)
				if err != nil {
					return err
				}
				mu.Lock()
				delivered = append(delivered, pos)
				mu.Unlock()
				return h.Handle(msg)
			})
			want := 3 + 10 // 7..9 of partition 0, all of partition 1
			testutil.Poll(t, 30*time.Second, "13 records in the sink", func() (bool, string) {
				rows := sinkCounts(t, pool)
				return len(rows) == want, strconv.Itoa(len(rows)) + " rows"
			})
			rows := sinkCounts(t, pool)
			for i := range 20 {
				want := 1
				if i < 7 {
					want = 0
				}
				if rows[strconv.Itoa(i)] != want {
					t.Errorf("record %d in the sink %d times, want %d", i, rows[strconv.Itoa(i)], want)
				}
			}
			mu.Lock()
			for _, pos := range delivered {
				if pos.Stream != "in" || pos.Partition == 0 && pos.Offset < 7 {
					t.Errorf("delivered %v: before the stored position, or wrong stream", pos)
				}
			}
			mu.Unlock()
			for p, off := range map[int32]int64{0: 9, 1: 9} {
				if got, ok, _ := store.Load(ctx, "c", "in", p); !ok || got.Offset != off {
					t.Errorf("partition %d: stored %v, want offset %d", p, got, off)
				}
			}
		})
	}
}

// produceN writes records "0".."n-1" to partition 0 and "n".."2n-1" to partition 1.
func produceN(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for p := range int32(2) {
		for i := range n {
			r := &kgo.Record{Topic: topic, Partition: p, Value: []byte(strconv.Itoa(int(p)*n + i))}
			if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// commitGroupOffset commits offset for a partition on behalf of group.
func commitGroupOffset(t *testing.T, brokers []string, group, topic string, partition int32, offset int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var offsets kadm.Offsets
	offsets.Add(kadm.Offset{Topic: topic, Partition: partition, At: offset, LeaderEpoch: -1})
	resp, err := kadm.NewClient(cl).CommitOffsets(context.Background(), group, offsets)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit offset of group %s: %v", group, err)
	}
}

// Outside a router SLSPosition has no stream: the handler refuses the message unless HandlerConfig.Stream
// names it, and then stores the position under that name.
func TestHandlerConfigStream(t *testing.T) {
	store, pool := newStore(t)
	msg := func() *message.Message {
		m := message.NewMessage("u", []byte("x"))
		m.Metadata.Set(slspubsub.MetadataShard, "1")
		m.Metadata.Set(slspubsub.MetadataCursor, exactlyonce.Position{Offset: 42}.SLSCursor())
		m.Metadata.Set(slspubsub.MetadataIndex, "3")
		return m
	}
	h, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition}, insertSink)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(msg()); err == nil || !strings.Contains(err.Error(), "HandlerConfig.Stream") {
		t.Errorf("Handle without a stream = %v, want an error pointing at HandlerConfig.Stream", err)
	}
	h, err = exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: exactlyonce.SLSPosition, Stream: "named"}, insertSink)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(msg()); err != nil {
		t.Fatal(err)
	}
	got, ok, err := store.Load(context.Background(), "c", "named", 1)
	if want := (exactlyonce.Position{Stream: "named", Partition: 1, Offset: 42, Index: 3}); err != nil || !ok || got != want {
		t.Errorf("stored %v (%v, %v), want %v", got, ok, err, want)
	}
	if rows := sinkCounts(t, pool); rows["x"] != 1 {
		t.Errorf("sink %v", rows)
	}
}
