package exactlyonce_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/outbox"
)

// TestToOutboxExactlyOnce: outputs written through ToOutbox commit with
// the consumed position: a redelivered message writes none again, a failed
// message writes none (also when some of its outputs were written before
// the failure), and a batch whose one message fails keeps the others'
// outputs.
func TestToOutboxExactlyOnce(t *testing.T) {
	store, pool := newStore(t)
	ctx := context.Background()
	if err := (outbox.Table{}).Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	failing := map[string]bool{"0/3": true}
	produce := func(_ context.Context, _ pgx.Tx, msg *message.Message) ([]exactlyonce.Output, error) {
		id := string(msg.Payload) // "<partition>/<offset>"
		if failing[id] {
			return nil, errors.New("refused")
		}
		var outs []exactlyonce.Output
		for i, topic := range []string{"a", "a", "b"} {
			payload := []byte("x")
			if id == "0/4" && topic == "b" {
				payload = make([]byte, 1000) // over MaxPayloadBytes: written after the "a" outputs
			}
			out := message.NewMessage(fmt.Sprintf("%s-out%d", id, i), payload)
			out.Metadata.Set(outbox.DefaultOrderingKeyMetadata, id)
			outs = append(outs, exactlyonce.Output{Topic: topic, Message: out})
		}
		return outs, nil
	}
	cfg := outbox.PublisherConfig{MaxPayloadBytes: 100}
	h := newMessageHandler(t, store, exactlyonce.ToOutbox(cfg, produce))
	for _, o := range []int64{1, 2, 1, 2} { // the second round is a redelivery
		if err := h.Handle(testMsg(0, o)); err != nil {
			t.Fatalf("offset %d: %v", o, err)
		}
	}
	if err := h.Handle(testMsg(0, 3)); err == nil {
		t.Fatal("a failing message was acked")
	}
	failing["0/3"] = false
	if err := h.Handle(testMsg(0, 3)); err != nil {
		t.Fatal(err)
	}
	// Its first outputs are written, the last is refused: none may stay.
	var tooLarge *outbox.PayloadTooLargeError
	if err := h.Handle(testMsg(0, 4)); !errors.As(err, &tooLarge) {
		t.Fatalf("message with a too large output: %v", err)
	}
	b := newBatchHandler(t, store, 2, exactlyonce.ToOutbox(cfg, produce))
	failing["1/2"] = true
	errs := make(chan error, 2)
	for _, o := range []int64{1, 2} {
		go func() { errs <- b.Handle(testMsg(1, o)) }()
	}
	failed := 0
	for range 2 {
		if err := waitResult(t, errs); err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d of the batch's messages failed, want 1", failed)
	}

	rows, err := pool.Query(ctx, `SELECT uuid, topic FROM watermill_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var id, topic string
		err := r.Scan(&id, &topic)
		return id + "@" + topic, err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0/1-out0@a", "0/1-out1@a", "0/1-out2@b", "0/2-out0@a", "0/2-out1@a", "0/2-out2@b",
		"0/3-out0@a", "0/3-out1@a", "0/3-out2@b", "1/1-out0@a", "1/1-out1@a", "1/1-out2@b"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outbox rows\n%v\nwant\n%v", got, want)
	}
}
