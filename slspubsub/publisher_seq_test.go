package slspubsub_test

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// pubSeqFromMetadata is a SequenceID function: the message's "seq" metadata.
func pubSeqFromMetadata(_ string, msg *message.Message) (int64, error) {
	return strconv.ParseInt(msg.Metadata.Get("seq"), 10, 64)
}

// pubSeqMessage returns a message of key with sequence id seq.
func pubSeqMessage(key string, seq int64) *message.Message {
	m := pubMessages(1, 10)[0]
	m.Metadata.Set("key", key)
	m.Metadata.Set("seq", strconv.FormatInt(seq, 10))
	return m
}

// pubSeqConfig is a Publisher config with caller sequence ids from the "seq" metadata.
func pubSeqConfig(env *pubEnv) slspubsub.PublisherConfig {
	cfg := env.config()
	cfg.HashKey, cfg.IdempotentWrites, cfg.SequenceID = pubKeyFromMetadata, true, pubSeqFromMetadata
	return cfg
}

// pubSeqRecorder records the seqid parameter of every write request, in the order they start.
type pubSeqRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	ids  []string
}

func (r *pubSeqRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/shards/route") {
		r.mu.Lock()
		r.ids = append(r.ids, req.URL.Query().Get("seqid"))
		r.mu.Unlock()
	}
	return r.base.RoundTrip(req)
}

func (r *pubSeqRecorder) seqids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// TestPublisherSequenceIDIsTheSeqid: with SequenceID, every request carries one message and its id as seqid;
// a call's messages of one key go one request each, in call order, and are stored once each, in order.
func TestPublisherSequenceIDIsTheSeqid(t *testing.T) {
	env := newPubEnv(t, 2)
	rec := &pubSeqRecorder{base: env.HTTPClient.Transport}
	cfg := pubSeqConfig(env)
	cfg.HTTPClient = &http.Client{Transport: rec}
	p := pubNewPublisher(t, cfg)

	// Sequence ids need only increase per key: "b" starts below "a".
	if err := p.Publish(pubLogstore, pubSeqMessage("a", 10), pubSeqMessage("a", 11), pubSeqMessage("b", 3),
		pubSeqMessage("a", 15), pubSeqMessage("b", 4)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := p.Publish(pubLogstore, pubSeqMessage("a", 20)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	perKey := map[string][]string{}
	for _, l := range pubStoredLogs(t, env.Server, pubLogstore) {
		if n := len(l.group.Logs); n != 1 {
			t.Fatalf("a LogGroup holds %d logs, want 1 per request with caller sequence ids", n)
		}
		perKey[l.content("key")] = append(perKey[l.content("key")], l.content("seq"))
	}
	if got := strings.Join(perKey["a"], ","); got != "10,11,15,20" {
		t.Errorf("key a stored %s, want 10,11,15,20", got)
	}
	if got := strings.Join(perKey["b"], ","); got != "3,4" {
		t.Errorf("key b stored %s, want 3,4", got)
	}
	ids := rec.seqids()
	var a, b []string
	for _, id := range ids {
		if id == "3" || id == "4" {
			b = append(b, id)
		} else {
			a = append(a, id)
		}
	}
	if strings.Join(a, ",") != "10,11,15,20" || strings.Join(b, ",") != "3,4" {
		t.Fatalf("seqids sent %v, want 10, 11, 15, 20 for key a and 3, 4 for key b, in order", ids)
	}
}

// TestPublisherSequenceIDIdempotentLostAnswers: answers lost after SLS wrote the request are retried with the
// same seqid, refused as duplicates, and reported written: each message stored once.
func TestPublisherSequenceIDIdempotentLostAnswers(t *testing.T) {
	env := newPubEnv(t, 2)
	const lost = 5
	loser := &pubAnswerLoser{base: env.HTTPClient.Transport}
	loser.left.Store(lost)
	cfg := pubSeqConfig(env)
	cfg.HTTPClient = &http.Client{Transport: loser}
	p := pubNewPublisher(t, cfg)

	const keys, perKey = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	var msgs []*message.Message
	var mu sync.Mutex
	for k := range keys {
		wg.Go(func() {
			for i := range perKey {
				m := pubSeqMessage("k"+strconv.Itoa(k), int64(100+i))
				mu.Lock()
				msgs = append(msgs, m)
				mu.Unlock()
				if err := p.Publish(pubLogstore, m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	for _, m := range msgs {
		if n := counts[m.UUID]; n != 1 {
			t.Fatalf("message %s (key %s, seq %s) stored %d times, want 1", m.UUID, m.Metadata.Get("key"), m.Metadata.Get("seq"), n)
		}
	}
	refused := env.requests.count(slspubsub.CodeInvalidSequenceID)
	t.Logf("%d messages, %d lost answers, %d retries refused as duplicates", len(msgs), lost, refused)
	if refused != lost {
		t.Fatalf("%d retries refused as duplicates, want %d", refused, lost)
	}
}

// TestPublisherSequenceIDIdempotentResend: a new Publisher (another process) sending again messages an
// earlier one wrote, as an outbox relay does after a crash, gets them refused as duplicates on the first
// attempt and reported written; what follows them is written. Clock-based ids cannot do this.
func TestPublisherSequenceIDIdempotentResend(t *testing.T) {
	env := newPubEnv(t, 1)
	first := pubNewPublisher(t, pubSeqConfig(env))
	written := []*message.Message{pubSeqMessage("k", 1), pubSeqMessage("k", 2), pubSeqMessage("k", 5)}
	if err := first.Publish(pubLogstore, written...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	second := pubNewPublisher(t, pubSeqConfig(env))
	// The same messages again (the relay rebuilds them from the rows), then a new one.
	again := []*message.Message{pubSeqMessage("k", 2), pubSeqMessage("k", 5)}
	for i, m := range again {
		m.UUID = written[i+1].UUID
	}
	if err := second.Publish(pubLogstore, again...); err != nil {
		t.Fatalf("Publish of messages already written: %v, want nil (written)", err)
	}
	next := pubSeqMessage("k", 6)
	if err := second.Publish(pubLogstore, next); err != nil {
		t.Fatalf("Publish after the re-sent ones: %v", err)
	}
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	for _, m := range append(written, next) {
		if counts[m.UUID] != 1 {
			t.Fatalf("message seq %s stored %d times, want 1 (stored: %v)", m.Metadata.Get("seq"), counts[m.UUID], counts)
		}
	}
	if len(counts) != 4 {
		t.Fatalf("stored %d distinct messages, want 4", len(counts))
	}
	if n := env.requests.count(slspubsub.CodeInvalidSequenceID); n != 2 {
		t.Fatalf("%d requests refused as duplicates, want 2", n)
	}
}

// TestPublisherSequenceIDServerErrorStopsTheKey: a 5xx on a message is retried with the same seqid before
// anything after it is sent; when it fails for good, the messages after it in the call fail unsent, so nothing
// with a greater id is written before it and sending it again later is not mistaken for a duplicate.
func TestPublisherSequenceIDServerErrorStopsTheKey(t *testing.T) {
	env := newPubEnv(t, 1)
	rec := &pubSeqRecorder{base: env.HTTPClient.Transport}
	cfg := pubSeqConfig(env)
	cfg.HTTPClient = &http.Client{Transport: rec}
	p := pubNewPublisher(t, cfg)

	// Retried: the first attempt of 2 fails, its retry writes it, then 3.
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Skip: 1, Times: 1,
		Status: http.StatusInternalServerError, Code: "InternalServerError"})
	if err := p.Publish(pubLogstore, pubSeqMessage("k", 1), pubSeqMessage("k", 2), pubSeqMessage("k", 3)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := strings.Join(rec.seqids(), ","); got != "1,2,2,3" {
		t.Fatalf("seqids sent %s, want 1,2,2,3 (2 retried before 3)", got)
	}

	// Failing for good (no retries left): 5 fails, 6 fails unsent.
	cfg.MaxRetries = -1
	rec2 := &pubSeqRecorder{base: env.HTTPClient.Transport}
	cfg.HTTPClient = &http.Client{Transport: rec2}
	q := pubNewPublisher(t, cfg)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Skip: 1, Times: 1,
		Status: http.StatusServiceUnavailable, Code: "ServerBusy"})
	err := q.Publish(pubLogstore, pubSeqMessage("k", 4), pubSeqMessage("k", 5), pubSeqMessage("k", 6))
	var pe *slspubsub.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 2 {
		t.Fatalf("Publish: %v, want a PublishError for the messages with ids 5 and 6", err)
	}
	if got := strings.Join(rec2.seqids(), ","); got != "4,5" {
		t.Fatalf("seqids sent %s, want 4,5 (6 not sent after 5 failed)", got)
	}
	// The caller sends 5 and 6 again: both written, once.
	if err := q.Publish(pubLogstore, pubSeqMessage("k", 5), pubSeqMessage("k", 6)); err != nil {
		t.Fatalf("Publish again: %v", err)
	}
	var seqs []string
	for _, l := range pubStoredLogs(t, env.Server, pubLogstore) {
		seqs = append(seqs, l.content("seq"))
	}
	if got := strings.Join(seqs, ","); got != "1,2,3,4,5,6" {
		t.Fatalf("stored %s, want 1,2,3,4,5,6", got)
	}
}

// TestPublisherSequenceIDInvalid: ids that do not increase per key within a call, negative ids and SequenceID
// errors fail the call before anything is sent.
func TestPublisherSequenceIDInvalid(t *testing.T) {
	env := newPubEnv(t, 1)
	p := pubNewPublisher(t, pubSeqConfig(env))
	bad := pubSeqMessage("k", 1)
	bad.Metadata.Set("seq", "x")
	cases := []struct {
		name string
		msgs []*message.Message
		want string
	}{
		{"equal", []*message.Message{pubSeqMessage("k", 7), pubSeqMessage("k", 7)}, "not greater than 7"},
		{"decreasing", []*message.Message{pubSeqMessage("k", 9), pubSeqMessage("j", 1), pubSeqMessage("k", 8)}, "not greater than 9"},
		{"negative", []*message.Message{pubSeqMessage("k", -1)}, "not negative"},
		{"error", []*message.Message{pubSeqMessage("k", 1), bad}, "SequenceID of message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Publish(pubLogstore, tc.msgs...)
			var pe *slspubsub.PublishError
			if !errors.As(err, &pe) || len(pe.Failed) != len(tc.msgs) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Publish: %v, want every message failed with %q", err, tc.want)
			}
		})
	}
	if n := len(env.requests.writes()); n != 0 {
		t.Fatalf("%d write requests sent, want none", n)
	}
}

// TestPublisherSequenceIDRaceOnAKey: a call whose id is not greater than that of a message of its key still
// in flight (two callers racing on one key, against the contract) fails with ErrSequenceOrder, it and the
// rest of its call unsent, instead of being refused by SLS and reported written. Once the key has settled,
// publishing in order works again.
func TestPublisherSequenceIDRaceOnAKey(t *testing.T) {
	env := newPubEnv(t, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Times: 1, Latency: 300 * time.Millisecond})
	cfg := pubSeqConfig(env)
	var started <-chan *http.Request
	cfg.HTTPClient, started = pubWithStartSignal(env.HTTPClient)
	p := pubNewPublisher(t, cfg)

	first := make(chan error, 1)
	go func() { first <- p.Publish(pubLogstore, pubSeqMessage("k", 10)) }()
	<-started // 10 is in flight
	err := p.Publish(pubLogstore, pubSeqMessage("j", 1), pubSeqMessage("k", 9), pubSeqMessage("k", 12))
	var pe *slspubsub.PublishError
	if !errors.Is(err, slspubsub.ErrSequenceOrder) || !errors.As(err, &pe) || len(pe.Failed) != 2 {
		t.Fatalf("Publish racing a greater id of its key: %v, want ErrSequenceOrder for the 2 messages of key k", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("Publish of 10: %v", err)
	}
	if err := p.Publish(pubLogstore, pubSeqMessage("k", 11)); err != nil {
		t.Fatalf("Publish of 11 after 10 was written: %v", err)
	}
	var seqs []string
	for _, l := range pubStoredLogs(t, env.Server, pubLogstore) {
		seqs = append(seqs, l.content("key")+l.content("seq"))
	}
	slices.Sort(seqs)
	if got := strings.Join(seqs, ","); got != "j1,k10,k11" {
		t.Fatalf("stored %s, want j1,k10,k11", got)
	}
}
