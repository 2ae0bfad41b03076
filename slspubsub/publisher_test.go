package slspubsub_test

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	pubProject  = "pub-project"
	pubLogstore = "pub-logstore"
)

// pubEnv is an emulator with one logstore, a record of the requests it
// answered, and a Publisher config pointing at it.
type pubEnv struct {
	*testutil.SLSEnv
	requests *pubRequestLog
}

func newPubEnv(t *testing.T, shards int, opts ...slstest.Option) *pubEnv {
	t.Helper()
	rl := &pubRequestLog{}
	env := testutil.SLS(t, append(opts, slstest.WithRequestObserver(rl.observe))...)
	// Before the server closes: connections the client dialed but never
	// used hold http.Server.Shutdown for 5 s.
	t.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(t, pubProject, pubLogstore, shards)
	return &pubEnv{SLSEnv: env, requests: rl}
}

// config returns a Publisher config for the environment with fast retries
// and the test marshaler.
func (e *pubEnv) config() slspubsub.PublisherConfig {
	return slspubsub.PublisherConfig{
		ClientConfig: slspubsub.ClientConfig{
			Endpoint:        e.Endpoint,
			Project:         pubProject,
			AccessKeyID:     e.AccessKeyID,
			AccessKeySecret: e.AccessKeySecret,
			HTTPClient:      e.HTTPClient,
		},
		Marshaler:           pubTestMarshaler{},
		RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff:     10 * time.Millisecond,
	}
}

// pubRequestLog records the requests the emulator answered.
type pubRequestLog struct {
	mu   sync.Mutex
	seen []slstest.RequestInfo
}

func (r *pubRequestLog) observe(ri slstest.RequestInfo) {
	r.mu.Lock()
	r.seen = append(r.seen, ri)
	r.mu.Unlock()
}

// writes returns the PutLogs and PostLogStoreLogs requests answered so far.
func (r *pubRequestLog) writes() []slstest.RequestInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slstest.RequestInfo
	for _, ri := range r.seen {
		if ri.Op == slstest.OpPutLogs || ri.Op == slstest.OpPostLogStoreLogs {
			out = append(out, ri)
		}
	}
	return out
}

func (r *pubRequestLog) count(code string) int {
	n := 0
	for _, ri := range r.writes() {
		if ri.ErrorCode == code {
			n++
		}
	}
	return n
}

// pubTestMarshaler writes a message as contents "uuid", "payload" and its
// metadata, sorted by key, so that these tests can read back what they
// wrote (key, sequence number) from plain contents. It also exercises the
// Marshaler seam; DefaultMarshaler is covered by TestPublisherRoundTrip.
type pubTestMarshaler struct{}

func (pubTestMarshaler) Marshal(_ string, msg *message.Message) (slspubsub.Record, error) {
	rec := slspubsub.Record{Log: slspubsub.Log{Time: time.Now()}}
	rec.Log.Contents = append(rec.Log.Contents,
		slspubsub.Content{Key: "uuid", Value: msg.UUID},
		slspubsub.Content{Key: "payload", Value: string(msg.Payload)})
	keys := make([]string, 0, len(msg.Metadata))
	for k := range msg.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		rec.Log.Contents = append(rec.Log.Contents, slspubsub.Content{Key: k, Value: msg.Metadata[k]})
	}
	return rec, nil
}

// pubKeyFromMetadata is a HashKey function: the message's "key" metadata.
func pubKeyFromMetadata(_ string, msg *message.Message) (string, error) {
	return msg.Metadata.Get("key"), nil
}

// pubNewPublisher creates a Publisher closed, and checked for leftover
// goroutines, when the test ends.
func pubNewPublisher(t *testing.T, cfg slspubsub.PublisherConfig) *slspubsub.Publisher {
	t.Helper()
	p, err := slspubsub.NewPublisher(cfg, watermill.NewStdLogger(false, false))
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		pubRequireNoGoroutines(t)
	})
	return p
}

// pubStoredLog is one log as the emulator stored it, with its group.
type pubStoredLog struct {
	shard    int
	groupIdx int // index of its group in the shard
	group    *sls.LogGroup
	log      *sls.Log
}

func (s pubStoredLog) content(key string) string {
	for _, c := range s.log.Contents {
		if c.GetKey() == key {
			return c.GetValue()
		}
	}
	return ""
}

// pubStoredLogs returns every log of the logstore, shard by shard in order.
func pubStoredLogs(t *testing.T, srv *slstest.Server, logstore string) []pubStoredLog {
	t.Helper()
	shards, err := srv.Shards(pubProject, logstore)
	if err != nil {
		t.Fatalf("Shards: %v", err)
	}
	var out []pubStoredLog
	for _, sh := range shards {
		groups, err := srv.LogGroups(pubProject, logstore, sh.ShardID)
		if err != nil {
			t.Fatalf("LogGroups: %v", err)
		}
		for gi, g := range groups {
			for _, l := range g.Group.Logs {
				out = append(out, pubStoredLog{shard: sh.ShardID, groupIdx: gi, group: g.Group, log: l})
			}
		}
	}
	return out
}

// pubStoredGroups returns every LogGroup of the logstore.
func pubStoredGroups(t *testing.T, srv *slstest.Server, logstore string) []*sls.LogGroup {
	t.Helper()
	shards, err := srv.Shards(pubProject, logstore)
	if err != nil {
		t.Fatalf("Shards: %v", err)
	}
	var out []*sls.LogGroup
	for _, sh := range shards {
		groups, err := srv.LogGroups(pubProject, logstore, sh.ShardID)
		if err != nil {
			t.Fatalf("LogGroups: %v", err)
		}
		for _, g := range groups {
			out = append(out, g.Group)
		}
	}
	return out
}

// pubUUIDCounts counts the stored logs per uuid content.
func pubUUIDCounts(logs []pubStoredLog) map[string]int {
	m := make(map[string]int, len(logs))
	for _, l := range logs {
		m[l.content("uuid")]++
	}
	return m
}

func pubMessages(n int, payloadSize int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		payload := fmt.Sprintf("message %d ", i)
		if len(payload) < payloadSize {
			payload += strings.Repeat("x", payloadSize-len(payload))
		}
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(payload))
	}
	return msgs
}

// pubEventually polls cond until it holds or timeout passes.
func pubEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// pubGoroutineStacks returns the stacks of goroutines running Publisher code:
// its workers, retry timers, and callers inside Publish.
func pubGoroutineStacks() []string {
	var out []string
	for _, g := range testutil.GoroutineStacks() {
		if strings.Contains(g, "slspubsub.(*Publisher)") || strings.Contains(g, "slspubsub.(*budget)") {
			out = append(out, g)
		}
	}
	return out
}

// pubRequireNoGoroutines fails unless every Publisher goroutine
// ends soon (goleak-style, restricted to this package's code: HTTP
// connections of a shared client may outlive a Publisher legitimately).
func pubRequireNoGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		left := pubGoroutineStacks()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Publisher goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		<-tick.C
	}
}

// pubPublishAll publishes msgs from workers goroutines, one message per call,
// and returns the calls' errors.
func pubPublishAll(p *slspubsub.Publisher, topic string, msgs []*message.Message, workers int) []error {
	errs := make([]error, len(msgs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(msgs) {
					return
				}
				errs[i] = p.Publish(topic, msgs[i])
			}
		}()
	}
	wg.Wait()
	return errs
}

func pubRequireNoErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
}

// TestPublisherRoundTrip publishes with DefaultMarshaler and reads the
// LogGroups back as the SDK decodes them: the SLS metadata keys become the
// group's topic, source and tags and the log's time (nanoseconds
// included); UUID, payload (binary too) and other metadata are contents.
func TestPublisherRoundTrip(t *testing.T) {
	for _, comp := range []slspubsub.Compression{slspubsub.CompressionLZ4, slspubsub.CompressionZstd, slspubsub.CompressionNone} {
		t.Run(comp.String(), func(t *testing.T) {
			env := newPubEnv(t, 2)
			cfg := env.config()
			cfg.Marshaler, cfg.Compression = nil, comp // nil: DefaultMarshaler
			p := pubNewPublisher(t, cfg)

			at := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)
			msgs := pubMessages(3, 50)
			msgs[2].Payload = []byte{0, 1, 2, 0xff, 0xfe}
			for _, m := range msgs {
				m.Metadata.Set(slspubsub.MetadataTopic, "orders")
				m.Metadata.Set(slspubsub.MetadataSource, "10.0.0.7")
				m.Metadata.Set(slspubsub.MetadataTagPrefix+"env", "prod")
				m.Metadata.Set(slspubsub.MetadataTagPrefix+"app", "shop")
				m.Metadata.Set(slspubsub.MetadataTime, at.Format(time.RFC3339Nano))
				m.Metadata.Set("other", "value")
			}
			if err := p.Publish(pubLogstore, msgs...); err != nil {
				t.Fatalf("Publish: %v", err)
			}

			logs := pubStoredLogs(t, env.Server, pubLogstore)
			if len(logs) != len(msgs) {
				t.Fatalf("stored %d logs, want %d", len(logs), len(msgs))
			}
			for i, l := range logs {
				m := msgs[i] // one call, no key: one group, in call order
				g := l.group
				if g.GetTopic() != "orders" || g.GetSource() != "10.0.0.7" {
					t.Errorf("log %d: topic %q source %q", i, g.GetTopic(), g.GetSource())
				}
				var tags []string
				for _, tag := range g.LogTags {
					tags = append(tags, tag.GetKey()+"="+tag.GetValue())
				}
				if want := []string{"app=shop", "env=prod"}; !slices.Equal(tags, want) {
					t.Errorf("log %d: tags %v, want %v", i, tags, want)
				}
				if l.log.GetTime() != uint32(at.Unix()) || l.log.GetTimeNs() != uint32(at.Nanosecond()) {
					t.Errorf("log %d: time %d ns %d, want %d ns %d", i, l.log.GetTime(), l.log.GetTimeNs(), at.Unix(), at.Nanosecond())
				}
				payload := l.content("wm_payload")
				if l.content("wm_payload_encoding") == "base64" {
					b, err := base64.StdEncoding.DecodeString(payload)
					if err != nil {
						t.Fatalf("log %d: payload: %v", i, err)
					}
					payload = string(b)
				}
				if l.content("wm_uuid") != m.UUID || payload != string(m.Payload) || l.content("wm_metadata") != `{"other":"value"}` {
					t.Errorf("log %d: contents %v, want uuid %s payload %q", i, l.log.Contents, m.UUID, m.Payload)
				}
			}
		})
	}
}

// TestPublisherSDKPullLogs reads what the Publisher wrote with the SDK's
// PullLogs, the way any SLS consumer does.
func TestPublisherSDKPullLogs(t *testing.T) {
	env := newPubEnv(t, 1)
	cfg := env.config()
	cfg.Marshaler = slspubsub.DefaultMarshaler{}
	p := pubNewPublisher(t, cfg)
	msgs := pubMessages(10, 200)
	if err := p.Publish(pubLogstore, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	client := env.Client()
	cursor, err := client.GetCursor(pubProject, pubLogstore, 0, "begin")
	if err != nil {
		t.Fatalf("GetCursor: %v", err)
	}
	list, _, err := client.PullLogs(pubProject, pubLogstore, 0, cursor, "", 100)
	if err != nil {
		t.Fatalf("PullLogs: %v", err)
	}
	var got []string
	for _, g := range list.LogGroups {
		for _, l := range g.Logs {
			for _, c := range l.Contents {
				if c.GetKey() == "wm_uuid" {
					got = append(got, c.GetValue())
				}
			}
		}
	}
	var want []string
	for _, m := range msgs {
		want = append(want, m.UUID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("SDK pulled uuids %v, want %v", got, want)
	}
}

func TestPublisherConfigValidation(t *testing.T) {
	valid := func() slspubsub.PublisherConfig {
		return slspubsub.PublisherConfig{ClientConfig: slspubsub.ClientConfig{
			Endpoint: "cn-hangzhou.log.aliyuncs.com", Project: "proj", AccessKeyID: "id", AccessKeySecret: "very-secret",
		}}
	}
	key := func(string, *message.Message) (string, error) { return "", nil }
	seq := func(string, *message.Message) (int64, error) { return 0, nil }
	cases := []struct {
		name   string
		modify func(*slspubsub.PublisherConfig)
		fields []string // each must be named in the error
	}{
		{"valid defaults", func(*slspubsub.PublisherConfig) {}, nil},
		{"valid full", func(c *slspubsub.PublisherConfig) {
			c.HashKey, c.HashBuckets, c.IdempotentWrites = key, 256, true
			c.MaxBatchCount, c.MaxBatchBytes = 40960, 10<<20
		}, nil},
		{"endpoint", func(c *slspubsub.PublisherConfig) { c.Endpoint = "" }, []string{"Endpoint"}},
		{"project", func(c *slspubsub.PublisherConfig) { c.Project = "" }, []string{"Project"}},
		{"credentials", func(c *slspubsub.PublisherConfig) { c.AccessKeyID, c.AccessKeySecret = "", "" }, []string{"credentials"}},
		{"buckets not power of two", func(c *slspubsub.PublisherConfig) { c.HashKey, c.HashBuckets = key, 6 }, []string{"HashBuckets"}},
		{"buckets too many", func(c *slspubsub.PublisherConfig) { c.HashKey, c.HashBuckets = key, 512 }, []string{"HashBuckets"}},
		{"buckets negative", func(c *slspubsub.PublisherConfig) { c.HashKey, c.HashBuckets = key, -2 }, []string{"HashBuckets"}},
		{"buckets without key", func(c *slspubsub.PublisherConfig) { c.HashBuckets = 8 }, []string{"HashBuckets"}},
		{"batch count over SLS limit", func(c *slspubsub.PublisherConfig) { c.MaxBatchCount = 40961 }, []string{"MaxBatchCount"}},
		{"batch count negative", func(c *slspubsub.PublisherConfig) { c.MaxBatchCount = -1 }, []string{"MaxBatchCount"}},
		{"batch bytes over SLS limit", func(c *slspubsub.PublisherConfig) { c.MaxBatchBytes = 10<<20 + 1 }, []string{"MaxBatchBytes"}},
		{"batch bytes negative", func(c *slspubsub.PublisherConfig) { c.MaxBatchBytes = -1 }, []string{"MaxBatchBytes"}},
		{"buffer negative", func(c *slspubsub.PublisherConfig) { c.MaxBufferBytes = -1 }, []string{"MaxBufferBytes"}},
		{"concurrency negative", func(c *slspubsub.PublisherConfig) { c.MaxConcurrentRequests = -1 }, []string{"MaxConcurrentRequests"}},
		{"compression", func(c *slspubsub.PublisherConfig) { c.Compression = 7 }, []string{"Compression"}},
		{"backoff negative", func(c *slspubsub.PublisherConfig) { c.RetryInitialBackoff = -1 }, []string{"RetryInitialBackoff"}},
		{"max backoff below initial", func(c *slspubsub.PublisherConfig) {
			c.RetryInitialBackoff, c.RetryMaxBackoff = time.Second, time.Millisecond
		}, []string{"RetryMaxBackoff"}},
		{"retry timeout negative", func(c *slspubsub.PublisherConfig) { c.RetryTimeout = -1 }, []string{"RetryTimeout"}},
		{"idempotent without key", func(c *slspubsub.PublisherConfig) { c.IdempotentWrites = true }, []string{"IdempotentWrites"}},
		{"sequence id", func(c *slspubsub.PublisherConfig) {
			c.HashKey, c.IdempotentWrites, c.SequenceID = key, true, seq
		}, nil},
		{"sequence id without idempotent writes", func(c *slspubsub.PublisherConfig) {
			c.HashKey, c.SequenceID = key, seq
		}, []string{"SequenceID: requires IdempotentWrites"}},
		{"sequence id without key", func(c *slspubsub.PublisherConfig) {
			c.IdempotentWrites, c.SequenceID = true, seq
		}, []string{"SequenceID: requires HashKey"}},
		{"sequence id with buckets", func(c *slspubsub.PublisherConfig) {
			c.HashKey, c.HashBuckets, c.IdempotentWrites, c.SequenceID = key, 16, true, seq
		}, []string{"SequenceID: requires HashBuckets 0"}},
		{"close timeout negative", func(c *slspubsub.PublisherConfig) { c.CloseTimeout = -1 }, []string{"CloseTimeout"}},
		{"v4 without region", func(c *slspubsub.PublisherConfig) { c.AuthVersion = sls.AuthV4 }, []string{"Region"}},
		{"everything at once", func(c *slspubsub.PublisherConfig) {
			c.Project, c.MaxBatchCount, c.MaxBatchBytes, c.HashBuckets = "", 50000, -5, 3
			c.MaxConcurrentRequests, c.IdempotentWrites, c.CloseTimeout = -1, true, -1
		}, []string{"Project", "MaxBatchCount", "MaxBatchBytes", "HashBuckets", "MaxConcurrentRequests", "IdempotentWrites", "CloseTimeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.modify(&cfg)
			p, err := slspubsub.NewPublisher(cfg, nil)
			if tc.fields == nil {
				if err != nil {
					t.Fatalf("NewPublisher: %v", err)
				}
				if err := p.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return
			}
			if err == nil {
				_ = p.Close()
				t.Fatalf("NewPublisher accepted an invalid config")
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error does not name %s: %v", f, err)
				}
			}
			if strings.Contains(err.Error(), "very-secret") {
				t.Errorf("error contains the secret: %v", err)
			}
		})
	}
}

func TestPublisherCredentials(t *testing.T) {
	const (
		akID, akSecret   = "pub-ak", "pub-ak-secret"
		stsID, stsSecret = "pub-sts", "pub-sts-secret"
		stsToken         = "pub-sts-token"
	)
	env := newPubEnv(t, 1,
		slstest.WithAccount(slstest.Account{AccessKeyID: akID, AccessKeySecret: akSecret}),
		slstest.WithAccount(slstest.Account{AccessKeyID: stsID, AccessKeySecret: stsSecret, SecurityToken: stsToken,
			Expiration: time.Now().Add(time.Hour)}))
	cases := []struct {
		name string
		set  func(c *slspubsub.ClientConfig)
	}{
		{"static AccessKey", func(c *slspubsub.ClientConfig) { c.AccessKeyID, c.AccessKeySecret = akID, akSecret }},
		{"STS token", func(c *slspubsub.ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret, c.SecurityToken = stsID, stsSecret, stsToken
		}},
		{"CredentialsProvider", func(c *slspubsub.ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = "", ""
			c.CredentialsProvider = sls.NewStaticCredentialsProvider(stsID, stsSecret, stsToken)
		}},
		{"V4 signature", func(c *slspubsub.ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = akID, akSecret
			c.AuthVersion, c.Region = sls.AuthV4, "cn-hangzhou"
		}},
		{"endpoint with scheme", func(c *slspubsub.ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = akID, akSecret
			c.Endpoint = "http://" + c.Endpoint
		}},
		{"request timeout", func(c *slspubsub.ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = akID, akSecret
			c.RequestTimeout = 5 * time.Second
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := env.config()
			tc.set(&cfg.ClientConfig)
			p := pubNewPublisher(t, cfg)
			msg := message.NewMessage(watermill.NewUUID(), []byte(tc.name))
			if err := p.Publish(pubLogstore, msg); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if n := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))[msg.UUID]; n != 1 {
				t.Fatalf("message stored %d times, want 1", n)
			}
		})
	}
}

func TestPublisherGroupCommit(t *testing.T) {
	t.Run("lone message is one request, sent at once", func(t *testing.T) {
		env := newPubEnv(t, 1)
		p := pubNewPublisher(t, env.config())
		for i := range 3 {
			if err := p.Publish(pubLogstore, pubMessages(1, 10)...); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if n := len(env.requests.writes()); n != i+1 {
				t.Fatalf("after %d lone Publish calls the server saw %d writes", i+1, n)
			}
		}
	})
	t.Run("concurrent callers share requests", func(t *testing.T) {
		env := newPubEnv(t, 2, slstest.WithSeed(1))
		// A little latency per request lets callers pile up behind it, as
		// network round trips do in production.
		env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Latency: 2 * time.Millisecond})
		cfg := env.config()
		cfg.HashKey = func(string, *message.Message) (string, error) { return "one-key", nil }
		p := pubNewPublisher(t, cfg)
		msgs := pubMessages(64*20, 100)
		pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 64))

		writes := env.requests.writes()
		t.Logf("%d messages in %d requests", len(msgs), len(writes))
		if len(writes) > len(msgs)/4 {
			t.Fatalf("%d concurrent publishers of one key made %d requests for %d messages; want group commit", 64, len(writes), len(msgs))
		}
		counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
		for _, m := range msgs {
			if counts[m.UUID] != 1 {
				t.Fatalf("message %s stored %d times", m.UUID, counts[m.UUID])
			}
		}
	})
}

// TestPublisherOrderUnderFaults: 64 publishers, each with its own keys
// (which share hash buckets with other publishers' keys), publish
// sequentially numbered messages while the server answers 20% of writes
// with 503 and 20% with ShardWriteQuotaExceed. Per key, storage must hold
// every message exactly once, in the order the calls returned.
func TestPublisherOrderUnderFaults(t *testing.T) {
	for _, idempotent := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotent=%v", idempotent), func(t *testing.T) {
			env := newPubEnv(t, 4, slstest.WithSeed(42))
			env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Probability: 0.2,
				Status: http.StatusServiceUnavailable, Code: "ServerBusy"})
			env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Probability: 0.2,
				Status: http.StatusForbidden, Code: "ShardWriteQuotaExceed"})
			cfg := env.config()
			cfg.HashKey, cfg.HashBuckets, cfg.IdempotentWrites = pubKeyFromMetadata, 8, idempotent
			cfg.MaxRetries, cfg.RetryTimeout = 1000, time.Minute
			p := pubNewPublisher(t, cfg)

			const publishers, calls, keysPer = 64, 30, 2
			var wg sync.WaitGroup
			errs := make(chan error, publishers)
			for g := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					seq := make([]int, keysPer)
					for c := range calls {
						// 1 to 3 messages per call, alternating keys within
						// the call, so calls span keys and batches.
						var msgs []*message.Message
						for j := range 1 + c%3 {
							k := (c + j) % keysPer
							m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(seq[k])))
							m.Metadata.Set("key", fmt.Sprintf("p%d-k%d", g, k))
							seq[k]++
							msgs = append(msgs, m)
						}
						if err := p.Publish(pubLogstore, msgs...); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("Publish: %v", err)
			}

			perKey := map[string][]int{}
			keyShard := map[string]int{}
			for _, l := range pubStoredLogs(t, env.Server, pubLogstore) {
				key := l.content("key")
				n, err := strconv.Atoi(l.content("payload"))
				if err != nil {
					t.Fatalf("payload %q: %v", l.content("payload"), err)
				}
				perKey[key] = append(perKey[key], n)
				if s, ok := keyShard[key]; ok && s != l.shard {
					t.Fatalf("key %s stored in shards %d and %d", key, s, l.shard)
				}
				keyShard[key] = l.shard
			}
			if len(perKey) != publishers*keysPer {
				t.Fatalf("stored %d keys, want %d", len(perKey), publishers*keysPer)
			}
			total := 0
			for key, seqs := range perKey {
				for i, n := range seqs {
					if n != i {
						t.Fatalf("key %s: stored sequence %v, want 0, 1, 2, ... in order, once each", key, seqs)
					}
				}
				total += len(seqs)
			}
			busy, quota := env.requests.count("ServerBusy"), env.requests.count("ShardWriteQuotaExceed")
			t.Logf("%d messages, %d write requests, %d ServerBusy, %d ShardWriteQuotaExceed",
				total, len(env.requests.writes()), busy, quota)
			if busy == 0 || quota == 0 {
				t.Fatalf("faults did not fire: %d ServerBusy, %d quota", busy, quota)
			}
		})
	}
}

func TestPublisherAuthErrorFailsFast(t *testing.T) {
	env := newPubEnv(t, 1)
	cfg := env.config()
	cfg.AccessKeySecret = "wrong-secret-value"
	p := pubNewPublisher(t, cfg)
	msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
	err := p.Publish(pubLogstore, msg)
	if err == nil {
		t.Fatal("Publish with a wrong secret succeeded")
	}
	if n := len(env.requests.writes()); n != 1 {
		t.Fatalf("server saw %d write requests, want 1 (no retry of an auth error)", n)
	}
	var se *slspubsub.Error
	if !errors.As(err, &se) {
		t.Fatalf("errors.As(*slspubsub.Error) failed: %v", err)
	}
	if se.Code != slspubsub.CodeSignatureNotMatch || se.RequestID == "" || se.HTTPStatus != http.StatusUnauthorized {
		t.Fatalf("error %+v, want 401 SignatureNotMatch with a request id", se)
	}
	var pe *slspubsub.PublishError
	if !errors.As(err, &pe) || !slices.Equal(pe.Failed, []string{msg.UUID}) {
		t.Fatalf("PublishError %+v does not name the message", pe)
	}
	for _, s := range []string{msg.UUID, "SignatureNotMatch", se.RequestID} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not mention %q: %v", s, err)
		}
	}
	if strings.Contains(err.Error(), cfg.AccessKeySecret) {
		t.Fatalf("error contains the secret: %v", err)
	}
}

func TestPublisherLogStoreNotExistNotRetried(t *testing.T) {
	env := newPubEnv(t, 1)
	p := pubNewPublisher(t, env.config())
	err := p.Publish("no-such-logstore", pubMessages(3, 10)...)
	var se *slspubsub.Error
	if !errors.As(err, &se) || se.Code != slspubsub.CodeLogStoreNotExist || se.HTTPStatus != http.StatusNotFound {
		t.Fatalf("Publish error %v, want 404 LogStoreNotExist", err)
	}
	if n := len(env.requests.writes()); n != 1 {
		t.Fatalf("server saw %d write requests, want 1", n)
	}
}

// TestPublisherPartialFailure: one Publish call spans shards; writes to one
// shard fail for good. The error names exactly the messages bound for it,
// and the others are written.
func TestPublisherPartialFailure(t *testing.T) {
	env := newPubEnv(t, 2)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Shards: []int{1},
		Status: http.StatusBadRequest, Code: "PostBodyInvalid"})
	cfg := env.config()
	cfg.HashKey = pubKeyFromMetadata
	p := pubNewPublisher(t, cfg)
	msgs := pubMessages(40, 10)
	for i, m := range msgs {
		m.Metadata.Set("key", strconv.Itoa(i))
	}
	err := p.Publish(pubLogstore, msgs...)
	var pe *slspubsub.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish: %v, want a PublishError", err)
	}
	stored := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	failed := map[string]bool{}
	for _, id := range pe.Failed {
		failed[id] = true
	}
	for _, m := range msgs {
		if failed[m.UUID] == (stored[m.UUID] == 1) {
			t.Fatalf("message %s: reported failed %v, stored %d times", m.UUID, failed[m.UUID], stored[m.UUID])
		}
	}
	if len(pe.Failed) == 0 || len(pe.Failed) == len(msgs) || pe.Total != len(msgs) {
		t.Fatalf("%d of %d failed; want some but not all", len(pe.Failed), pe.Total)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%d of %d messages", len(pe.Failed), len(msgs))) {
		t.Fatalf("error does not count the failures: %v", err)
	}
	var se *slspubsub.Error
	if !errors.As(err, &se) || se.Code != "PostBodyInvalid" {
		t.Fatalf("errors.As(*Error): %v", err)
	}
}

// TestPublisherLostAnswers: the server writes a batch but its answer is
// lost on the way back (the client sees a connection reset). Without
// idempotent writes the retry writes the batch again: SLS cannot tell a
// retry from a new batch, so at-least-once is all PutLogs offers, and each
// lost answer duplicates exactly its one batch. With idempotent writes the
// retry is refused as a duplicate (InvalidSequenceId) and counts as
// success: each message is stored once.
//
// The emulator's Truncate fault cannot lose a PutLogs answer: its status
// line arrives, and a 200 status means written (TestPublisherTruncatedAnswer).
// So the answers are dropped by the client's transport after the server
// answered.
func TestPublisherLostAnswers(t *testing.T) {
	for _, idempotent := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotent=%v", idempotent), func(t *testing.T) {
			env := newPubEnv(t, 2)
			const lost = 5
			loser := &pubAnswerLoser{base: env.HTTPClient.Transport}
			loser.left.Store(lost)
			cfg := env.config()
			cfg.HTTPClient = &http.Client{Transport: loser}
			cfg.HashKey, cfg.HashBuckets, cfg.IdempotentWrites = pubKeyFromMetadata, 4, idempotent
			p := pubNewPublisher(t, cfg)
			msgs := pubMessages(300, 50)
			for i, m := range msgs {
				m.Metadata.Set("key", strconv.Itoa(i%16))
			}
			pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 16))

			counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
			extra := 0
			for _, m := range msgs {
				switch n := counts[m.UUID]; {
				case n == 0:
					t.Fatalf("message %s lost", m.UUID)
				case idempotent && n != 1:
					t.Fatalf("message %s stored %d times with idempotent writes", m.UUID, n)
				default:
					extra += n - 1
				}
			}
			groups := pubStoredGroups(t, env.Server, pubLogstore)
			dupGroups := len(groups) - pubDistinctGroups(groups)
			t.Logf("%d lost answers: %d duplicated groups, %d duplicated logs; %d InvalidSequenceId answers",
				lost, dupGroups, extra, env.requests.count(slspubsub.CodeInvalidSequenceID))
			want := lost
			if idempotent {
				want = 0
				if n := env.requests.count(slspubsub.CodeInvalidSequenceID); n != lost {
					t.Errorf("%d retries refused as duplicates, want %d", n, lost)
				}
			}
			if dupGroups != want {
				t.Fatalf("%d duplicated groups after %d lost answers, want %d", dupGroups, lost, want)
			}
		})
	}
}

// pubAnswerLoser drops the answers of the first writes the server accepted,
// as a network failure after the write would: the caller sees a reset.
type pubAnswerLoser struct {
	base http.RoundTripper
	left atomic.Int32
}

func (a *pubAnswerLoser) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.base.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusOK && a.left.Add(-1) >= 0 {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return resp, err
}

// pubDistinctGroups counts groups with distinct contents.
func pubDistinctGroups(groups []*sls.LogGroup) int {
	seen := map[string]bool{}
	for _, g := range groups {
		var ids []string
		for _, l := range g.Logs {
			for _, c := range l.Contents {
				if c.GetKey() == "uuid" {
					ids = append(ids, c.GetValue())
				}
			}
		}
		seen[strings.Join(ids, ",")] = true
	}
	return len(seen)
}

// TestPublisherTruncatedAnswer: a PutLogs answer whose body is cut short
// still carried its 200 status line, which means written: no retry, no
// duplicate, even without idempotent writes.
func TestPublisherTruncatedAnswer(t *testing.T) {
	env := newPubEnv(t, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Truncate: true})
	p := pubNewPublisher(t, env.config())
	msgs := pubMessages(50, 10)
	pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 4))
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	for _, m := range msgs {
		if counts[m.UUID] != 1 {
			t.Fatalf("message %s stored %d times", m.UUID, counts[m.UUID])
		}
	}
}

// pubStartSignal wraps an HTTP client to report each request as it starts.
type pubStartSignal struct {
	base    http.RoundTripper
	started chan *http.Request
}

func (s *pubStartSignal) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case s.started <- r:
	default:
	}
	return s.base.RoundTrip(r)
}

func pubWithStartSignal(c *http.Client) (*http.Client, <-chan *http.Request) {
	s := &pubStartSignal{base: c.Transport, started: make(chan *http.Request, 1024)}
	return &http.Client{Transport: s}, s.started
}

func TestPublisherBackPressure(t *testing.T) {
	env := newPubEnv(t, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: 300 * time.Millisecond})
	cfg := env.config()
	cfg.MaxBufferBytes = 1 // one message at a time
	var started <-chan *http.Request
	cfg.HTTPClient, started = pubWithStartSignal(env.HTTPClient)
	p := pubNewPublisher(t, cfg)

	first := message.NewMessage(watermill.NewUUID(), []byte("first"))
	firstDone := make(chan error, 1)
	go func() { firstDone <- p.Publish(pubLogstore, first) }()
	<-started // first holds the whole buffer until its slow write ends

	ctx, cancel := context.WithCancel(context.Background())
	second := message.NewMessageWithContext(ctx, watermill.NewUUID(), []byte("second"))
	stop := time.AfterFunc(50*time.Millisecond, cancel)
	defer stop.Stop()
	err := p.Publish(pubLogstore, second)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish of a message waiting for buffer space: %v, want context.Canceled after it blocked", err)
	}
	var pe *slspubsub.PublishError
	if !errors.As(err, &pe) || !slices.Equal(pe.Failed, []string{second.UUID}) {
		t.Fatalf("PublishError %v does not name the cancelled message", err)
	}
	if err := <-firstDone; err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	third := message.NewMessage(watermill.NewUUID(), []byte("third"))
	if err := p.Publish(pubLogstore, third); err != nil {
		t.Fatalf("Publish after the buffer emptied: %v", err)
	}
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	if counts[first.UUID] != 1 || counts[third.UUID] != 1 || counts[second.UUID] != 0 {
		t.Fatalf("stored %v; want first and third once, the cancelled second never", counts)
	}
}

func TestPublisherBatchLimits(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		// The server refuses more than 7 logs per request: exceeding the
		// limit would fail the test through Publish errors too.
		env := newPubEnv(t, 1, slstest.WithLimits(slstest.Limits{MaxPutLogs: 7}))
		env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: time.Millisecond})
		cfg := env.config()
		cfg.MaxBatchCount = 7
		p := pubNewPublisher(t, cfg)
		msgs := pubMessages(500, 20)
		pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 64))
		full := 0
		for _, g := range pubStoredGroups(t, env.Server, pubLogstore) {
			if len(g.Logs) > 7 {
				t.Fatalf("a group of %d logs, limit 7", len(g.Logs))
			}
			if len(g.Logs) == 7 {
				full++
			}
		}
		if full == 0 {
			t.Fatal("no batch reached the count limit: the test did not batch")
		}
	})
	t.Run("bytes", func(t *testing.T) {
		const limit = 4 << 10
		env := newPubEnv(t, 1, slstest.WithLimits(slstest.Limits{MaxPutBytes: limit}))
		env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: time.Millisecond})
		cfg := env.config()
		cfg.MaxBatchBytes = limit
		p := pubNewPublisher(t, cfg)
		msgs := pubMessages(500, 300)
		pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 64))
		biggest := 0
		for _, g := range pubStoredGroups(t, env.Server, pubLogstore) {
			biggest = max(biggest, g.Size())
		}
		if biggest > limit || biggest < limit*3/4 {
			t.Fatalf("largest group %d bytes; want close to, and at most, %d", biggest, limit)
		}
	})
	t.Run("message larger than a batch", func(t *testing.T) {
		env := newPubEnv(t, 1)
		cfg := env.config()
		cfg.MaxBatchBytes = 1000
		p := pubNewPublisher(t, cfg)
		msgs := pubMessages(2, 10)
		msgs[1].Payload = make([]byte, 2000)
		err := p.Publish(pubLogstore, msgs...)
		if err == nil || !strings.Contains(err.Error(), "MaxBatchBytes") || !strings.Contains(err.Error(), msgs[1].UUID) {
			t.Fatalf("Publish of an oversized message: %v", err)
		}
		if n := len(env.requests.writes()); n != 0 {
			t.Fatalf("%d requests sent; a call with an oversized message sends nothing", n)
		}
	})
}

func TestPublisherCloseUnblocksCallers(t *testing.T) {
	env := newPubEnv(t, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: time.Minute})
	cfg := env.config()
	cfg.MaxBufferBytes = 1
	cfg.CloseTimeout = 100 * time.Millisecond
	var started <-chan *http.Request
	cfg.HTTPClient, started = pubWithStartSignal(env.HTTPClient)
	p, err := slspubsub.NewPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}

	const callers = 10
	errs := make(chan error, callers)
	for range callers {
		go func() { errs <- p.Publish(pubLogstore, pubMessages(1, 10)...) }()
	}
	<-started // one write is stuck in flight, the other callers wait for buffer space
	pubEventually(t, 5*time.Second, "callers to block", func() bool {
		n := 0
		for _, s := range pubGoroutineStacks() {
			if strings.Contains(s, "(*Publisher).Publish") {
				n++
			}
		}
		return n == callers
	})

	start := time.Now()
	closeErr := p.Close()
	if closeErr == nil || !strings.Contains(closeErr.Error(), "1 messages were not written") {
		t.Fatalf("Close: %v, want the stuck message reported", closeErr)
	}
	for range callers {
		if err := <-errs; !errors.Is(err, slspubsub.ErrPublisherClosed) {
			t.Fatalf("blocked Publish returned %v, want ErrPublisherClosed", err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close and callers took %v", d)
	}
	pubRequireNoGoroutines(t)
	if err := p.Close(); err != closeErr {
		t.Fatalf("second Close: %v, want the first's result", err)
	}
}

// TestPublisherCloseDuringRetries: Close gives up on batches waiting for a
// retry (and on those queued behind them) at CloseTimeout; their callers
// get ErrPublisherClosed with the last SLS error, and no retry timer
// outlives Close.
func TestPublisherCloseDuringRetries(t *testing.T) {
	env := newPubEnv(t, 2)
	env.Server.InjectFault(slstest.ErrorFault(slstest.OpPostLogStoreLogs, http.StatusServiceUnavailable, "ServerBusy"))
	cfg := env.config()
	cfg.HashKey, cfg.MaxRetries = pubKeyFromMetadata, 1000
	cfg.RetryInitialBackoff, cfg.RetryMaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	cfg.CloseTimeout = 300 * time.Millisecond
	p, err := slspubsub.NewPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := pubMessages(20, 10)
	for i, m := range msgs {
		m.Metadata.Set("key", strconv.Itoa(i%5))
	}
	errs := make(chan []error, 1)
	go func() { errs <- pubPublishAll(p, pubLogstore, msgs, 20) }()
	pubEventually(t, 5*time.Second, "retries", func() bool { return env.requests.count("ServerBusy") > 10 })
	if err := p.Close(); err == nil || !strings.Contains(err.Error(), "20 messages were not written") {
		t.Fatalf("Close: %v, want 20 messages reported unwritten", err)
	}
	withCause := 0
	for i, err := range <-errs {
		if !errors.Is(err, slspubsub.ErrPublisherClosed) {
			t.Fatalf("Publish %d: %v, want ErrPublisherClosed", i, err)
		}
		var se *slspubsub.Error
		if errors.As(err, &se) && se.Code == "ServerBusy" {
			withCause++
		}
	}
	if withCause == 0 {
		t.Fatal("no error carries the last SLS error of its batch")
	}
	pubRequireNoGoroutines(t)
}

func TestPublisherCloseFlushes(t *testing.T) {
	env := newPubEnv(t, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: 20 * time.Millisecond})
	p, err := slspubsub.NewPublisher(env.config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := pubMessages(100, 10)
	errs := make(chan []error, 1)
	go func() { errs <- pubPublishAll(p, pubLogstore, msgs, 20) }()
	pubEventually(t, 5*time.Second, "the first write", func() bool { return len(env.requests.writes()) > 0 })
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	written := 0
	for i, err := range <-errs {
		switch {
		case err == nil:
			written++
		case !errors.Is(err, slspubsub.ErrPublisherClosed):
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	if len(counts) != written {
		t.Fatalf("%d calls succeeded but %d messages are stored", written, len(counts))
	}
	pubRequireNoGoroutines(t)
}

func TestPublisherPublishAfterClose(t *testing.T) {
	env := newPubEnv(t, 1)
	p, err := slspubsub.NewPublisher(env.config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Publish(pubLogstore, pubMessages(1, 1)...); !errors.Is(err, slspubsub.ErrPublisherClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if n := len(env.requests.writes()); n != 0 {
		t.Fatalf("%d requests after Close", n)
	}
	pubRequireNoGoroutines(t)
}

// TestPublisherHashBuckets: with HashBuckets 4, 200 keys map to at most 4
// hash keys on the wire, and each key's messages all land in one shard.
func TestPublisherHashBuckets(t *testing.T) {
	env := newPubEnv(t, 4)
	cfg := env.config()
	cfg.HashKey, cfg.HashBuckets = pubKeyFromMetadata, 4
	var mu sync.Mutex
	hashKeys := map[string]bool{}
	base := env.HTTPClient.Transport
	cfg.HTTPClient = &http.Client{Transport: pubRoundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		hashKeys[r.URL.Query().Get("key")] = true
		mu.Unlock()
		return base.RoundTrip(r)
	})}
	p := pubNewPublisher(t, cfg)
	msgs := pubMessages(1000, 20)
	for i, m := range msgs {
		m.Metadata.Set("key", fmt.Sprintf("user-%d", i%200))
	}
	pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 32))

	mu.Lock()
	defer mu.Unlock()
	if len(hashKeys) > 4 || hashKeys[""] {
		t.Fatalf("hash keys on the wire: %v; want at most 4, none empty", hashKeys)
	}
	keyShard := map[string]int{}
	shards := map[int]bool{}
	for _, l := range pubStoredLogs(t, env.Server, pubLogstore) {
		key := l.content("key")
		if s, ok := keyShard[key]; ok && s != l.shard {
			t.Fatalf("key %s in shards %d and %d", key, s, l.shard)
		}
		keyShard[key] = l.shard
		shards[l.shard] = true
	}
	if len(keyShard) != 200 {
		t.Fatalf("%d keys stored, want 200", len(keyShard))
	}
	t.Logf("hash keys %v over %d shards", hashKeys, len(shards))
}

type pubRoundTripFunc func(*http.Request) (*http.Response, error)

func (f pubRoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPublisherRetryLimits(t *testing.T) {
	t.Run("MaxRetries", func(t *testing.T) {
		env := newPubEnv(t, 1)
		env.Server.InjectFault(slstest.ErrorFault(slstest.OpPutLogs, http.StatusServiceUnavailable, "ServerBusy"))
		cfg := env.config()
		cfg.MaxRetries = 2
		p := pubNewPublisher(t, cfg)
		err := p.Publish(pubLogstore, pubMessages(1, 1)...)
		if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") {
			t.Fatalf("Publish: %v, want it to give up after 3 attempts", err)
		}
		var se *slspubsub.Error
		if !errors.As(err, &se) || se.Code != "ServerBusy" {
			t.Fatalf("errors.As(*Error): %v", err)
		}
		if n := len(env.requests.writes()); n != 3 {
			t.Fatalf("server saw %d writes, want 3", n)
		}
	})
	t.Run("no retries", func(t *testing.T) {
		env := newPubEnv(t, 1)
		env.Server.InjectFault(slstest.ErrorFault(slstest.OpPutLogs, http.StatusForbidden, "ShardWriteQuotaExceed"))
		cfg := env.config()
		cfg.MaxRetries = -1
		p := pubNewPublisher(t, cfg)
		if err := p.Publish(pubLogstore, pubMessages(1, 1)...); err == nil {
			t.Fatal("Publish succeeded against a failing server")
		}
		if n := len(env.requests.writes()); n != 1 {
			t.Fatalf("server saw %d writes, want 1", n)
		}
	})
	t.Run("RetryTimeout", func(t *testing.T) {
		env := newPubEnv(t, 1)
		env.Server.InjectFault(slstest.ErrorFault(slstest.OpPutLogs, http.StatusInternalServerError, "InternalServerError"))
		cfg := env.config()
		cfg.MaxRetries, cfg.RetryTimeout = 1000000, 100*time.Millisecond
		p := pubNewPublisher(t, cfg)
		start := time.Now()
		err := p.Publish(pubLogstore, pubMessages(1, 1)...)
		if err == nil || !strings.Contains(err.Error(), "RetryTimeout") {
			t.Fatalf("Publish: %v, want a RetryTimeout error", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("Publish took %v with a RetryTimeout of 100ms", d)
		}
		if n := len(env.requests.writes()); n < 2 {
			t.Fatalf("server saw %d writes, want retries", n)
		}
	})
}

// TestPublisherFailedBatchFencesItsKey: when a batch of a key fails for
// good, what was queued behind it on the key fails too, unsent, so that a
// caller publishing the failed messages again cannot find them written
// after later ones. Other lanes are not affected, and the key works again
// afterwards.
func TestPublisherFailedBatchFencesItsKey(t *testing.T) {
	env := newPubEnv(t, 1)
	const otherLogstore = "other-logstore"
	env.LogStore(t, pubProject, otherLogstore, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Logstore: pubLogstore, Times: 1,
		Latency: 200 * time.Millisecond, Status: http.StatusBadRequest, Code: "PostBodyInvalid"})
	cfg := env.config()
	cfg.HashKey = pubKeyFromMetadata
	var started <-chan *http.Request
	cfg.HTTPClient, started = pubWithStartSignal(env.HTTPClient)
	p := pubNewPublisher(t, cfg)
	keyed := func() *message.Message {
		m := pubMessages(1, 10)[0]
		m.Metadata.Set("key", "a")
		return m
	}
	first := make(chan error, 1)
	go func() { first <- p.Publish(pubLogstore, keyed()) }()
	<-started // the first batch of the key is in flight: what follows queues behind it
	behind, other := keyed(), keyed()
	behindErr := make(chan error, 1)
	go func() { behindErr <- p.Publish(pubLogstore, behind) }()
	if err := p.Publish(otherLogstore, other); err != nil {
		t.Fatalf("Publish to another lane: %v", err)
	}

	var se *slspubsub.Error
	if err := <-first; !errors.As(err, &se) || se.Code != "PostBodyInvalid" {
		t.Fatalf("first Publish: %v, want PostBodyInvalid", err)
	}
	if err := <-behindErr; !errors.As(err, &se) || se.Code != "PostBodyInvalid" || !strings.Contains(err.Error(), "queued behind") {
		t.Fatalf("Publish queued behind the failed batch: %v, want it failed with the batch's error", err)
	}
	again := keyed()
	if err := p.Publish(pubLogstore, again); err != nil {
		t.Fatalf("Publish after the failure: %v", err)
	}
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	if len(counts) != 1 || counts[again.UUID] != 1 {
		t.Fatalf("stored %v, want only the message published after the failure", counts)
	}
	if n := pubUUIDCounts(pubStoredLogs(t, env.Server, otherLogstore))[other.UUID]; n != 1 {
		t.Fatalf("other lane's message stored %d times", n)
	}
}

func TestPublisherMaxConcurrentRequests(t *testing.T) {
	env := newPubEnv(t, 4)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Latency: 5 * time.Millisecond})
	cfg := env.config()
	cfg.HashKey, cfg.MaxConcurrentRequests = pubKeyFromMetadata, 3
	var inFlight, peak atomic.Int32
	base := env.HTTPClient.Transport
	cfg.HTTPClient = &http.Client{Transport: pubRoundTripFunc(func(r *http.Request) (*http.Response, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		return base.RoundTrip(r)
	})}
	p := pubNewPublisher(t, cfg)
	msgs := pubMessages(400, 10)
	for i, m := range msgs {
		m.Metadata.Set("key", strconv.Itoa(i%40))
	}
	pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, 64))
	if got := peak.Load(); got != 3 {
		t.Fatalf("peak of %d requests in flight, want exactly MaxConcurrentRequests (3) with 40 busy keys", got)
	}
}

func ExamplePublisher() {
	srv, err := slstest.NewServer()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	client := srv.HTTPClient() // dials the emulator whatever host is asked for
	defer client.CloseIdleConnections()
	if err := srv.CreateLogStore("my-project", "app-log", 2); err != nil {
		panic(err)
	}

	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{
		ClientConfig: slspubsub.ClientConfig{
			Endpoint:        srv.Endpoint(), // e.g. "cn-hangzhou.log.aliyuncs.com"
			Project:         "my-project",
			AccessKeyID:     slstest.DefaultAccessKeyID,
			AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient:      client,
		},
		// Per-user order: a user's messages go to one shard, in order.
		HashKey: func(_ string, msg *message.Message) (string, error) {
			return msg.Metadata.Get("user"), nil
		},
		HashBuckets: 16,
	}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"action":"login"}`))
	msg.Metadata.Set("user", "alice")
	msg.Metadata.Set(slspubsub.MetadataTopic, "audit") // the LogGroup topic
	if err := pub.Publish("app-log", msg); err != nil {
		panic(err) // nil above means SLS has written the message
	}
	fmt.Println("written")
	// Output: written
}

// pubPeakInFlight wraps c to record the most requests in flight at once.
func pubPeakInFlight(c *http.Client) (*http.Client, *atomic.Int32) {
	var inFlight, peak atomic.Int32
	base := c.Transport
	return &http.Client{Transport: pubRoundTripFunc(func(r *http.Request) (*http.Response, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		return base.RoundTrip(r)
	})}, &peak
}

// TestPublisherRequestsInFlightPerLane: a hash key has one request in
// flight at a time whatever waits behind it (its order); a logstore
// without a hash key has one while the next request can still grow (group
// commit), and several, up to MaxConcurrentRequests, once full batches
// wait.
func TestPublisherRequestsInFlightPerLane(t *testing.T) {
	for _, tc := range []struct {
		name       string
		keyed      bool
		batchCount int
		callers    int
		want       int32
	}{
		{"one key, full batches waiting", true, 10, 1, 1},
		{"no key, full batches waiting", false, 10, 1, 4},
		{"no key, batches still growing", false, 4096, 64, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newPubEnv(t, 4)
			// Requests slow enough that the workers start theirs before
			// the first one is answered, even on a loaded machine.
			for _, op := range []slstest.Operation{slstest.OpPutLogs, slstest.OpPostLogStoreLogs} {
				env.Server.InjectFault(slstest.Fault{Op: op, Latency: 50 * time.Millisecond})
			}
			cfg := env.config()
			if tc.keyed {
				cfg.HashKey = func(string, *message.Message) (string, error) { return "one-key", nil }
			}
			cfg.MaxBatchCount, cfg.MaxConcurrentRequests = tc.batchCount, 4
			var peak *atomic.Int32
			cfg.HTTPClient, peak = pubPeakInFlight(env.HTTPClient)
			p := pubNewPublisher(t, cfg)
			msgs := pubMessages(200, 10)
			if tc.callers == 1 {
				if err := p.Publish(pubLogstore, msgs...); err != nil {
					t.Fatalf("Publish: %v", err)
				}
			} else {
				pubRequireNoErrors(t, pubPublishAll(p, pubLogstore, msgs, tc.callers))
			}
			t.Logf("%d messages in %d requests, at most %d in flight", len(msgs), len(env.requests.writes()), peak.Load())
			if got := peak.Load(); got != tc.want {
				t.Fatalf("peak of %d requests in flight, want %d", got, tc.want)
			}
			counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
			for _, m := range msgs {
				if counts[m.UUID] != 1 {
					t.Fatalf("message %s stored %d times", m.UUID, counts[m.UUID])
				}
			}
		})
	}
}

// TestPublisherUnkeyedRetriesInFlight: without a hash key, batches in
// flight together retry independently; every message is written once, and
// Close then leaves no goroutine behind.
func TestPublisherUnkeyedRetriesInFlight(t *testing.T) {
	env := newPubEnv(t, 4, slstest.WithSeed(7))
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Probability: 0.3,
		Status: http.StatusServiceUnavailable, Code: "ServerBusy"})
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: 2 * time.Millisecond})
	cfg := env.config()
	cfg.MaxBatchCount, cfg.MaxConcurrentRequests, cfg.MaxRetries = 5, 4, 1000
	var peak *atomic.Int32
	cfg.HTTPClient, peak = pubPeakInFlight(env.HTTPClient)
	p := pubNewPublisher(t, cfg)
	msgs := pubMessages(300, 10)
	// One call: 60 full batches wait at once, so requests go out together
	// whatever the scheduling.
	if err := p.Publish(pubLogstore, msgs...); err != nil {
		t.Fatal(err)
	}
	busy := env.requests.count("ServerBusy")
	t.Logf("%d messages, %d write requests, %d ServerBusy, at most %d in flight", len(msgs), len(env.requests.writes()), busy, peak.Load())
	if busy == 0 || peak.Load() < 2 {
		t.Fatalf("%d ServerBusy answers, peak of %d requests in flight: the test did not exercise concurrent retries", busy, peak.Load())
	}
	counts := pubUUIDCounts(pubStoredLogs(t, env.Server, pubLogstore))
	for _, m := range msgs {
		if counts[m.UUID] != 1 {
			t.Fatalf("message %s stored %d times", m.UUID, counts[m.UUID])
		}
	}
}

// TestPublisherCloseGivesUpUnkeyedInFlight: Close gives up at CloseTimeout
// on an unkeyed lane with several requests in flight and batches waiting
// for a retry; every caller returns ErrPublisherClosed, Close counts them,
// and no goroutine outlives it.
func TestPublisherCloseGivesUpUnkeyedInFlight(t *testing.T) {
	env := newPubEnv(t, 2)
	// The first two requests hang; every request is refused.
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Times: 2, Latency: time.Minute})
	env.Server.InjectFault(slstest.ErrorFault(slstest.OpPutLogs, http.StatusServiceUnavailable, "ServerBusy"))
	cfg := env.config()
	cfg.MaxBatchCount, cfg.MaxConcurrentRequests, cfg.MaxRetries = 5, 4, 1000
	cfg.RetryInitialBackoff, cfg.RetryMaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	cfg.CloseTimeout = 300 * time.Millisecond
	var peak *atomic.Int32
	cfg.HTTPClient, peak = pubPeakInFlight(env.HTTPClient)
	p, err := slspubsub.NewPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := pubMessages(100, 10)
	errs := make(chan error, 1)
	go func() { errs <- p.Publish(pubLogstore, msgs...) }()
	pubEventually(t, 5*time.Second, "requests in flight and retries", func() bool {
		return peak.Load() >= 3 && env.requests.count("ServerBusy") > 2
	})
	closeErr := p.Close()
	if closeErr == nil || !strings.Contains(closeErr.Error(), "100 messages were not written") {
		t.Fatalf("Close: %v, want 100 messages reported unwritten", closeErr)
	}
	err = <-errs
	var pe *slspubsub.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != len(msgs) || !errors.Is(err, slspubsub.ErrPublisherClosed) {
		t.Fatalf("Publish: %v, want all %d messages failed with ErrPublisherClosed", err, len(msgs))
	}
	pubRequireNoGoroutines(t)
}

// TestPublisherRequestBodySizes writes one call as one request with each
// compression, once small (its body is allocated for the request and sent
// with the headers in one write) and once large and incompressible (more
// than 64 KiB compressed: its body comes from the pool, which takes it back
// when net/http closes it), and reads every payload back. A reused buffer
// would show as a corrupt body (refused) or another request's payload.
func TestPublisherRequestBodySizes(t *testing.T) {
	for _, compression := range []slspubsub.Compression{slspubsub.CompressionLZ4, slspubsub.CompressionZstd, slspubsub.CompressionNone} {
		for _, size := range []struct {
			name     string
			n, bytes int
		}{{"small", 20, 100}, {"large", 40, 4 << 10}} {
			t.Run(compression.String()+"/"+size.name, func(t *testing.T) {
				env := newPubEnv(t, 1)
				cfg := env.config()
				cfg.Compression = compression
				p := pubNewPublisher(t, cfg)
				want := make(map[string]string)
				for round := range 3 {
					msgs := make([]*message.Message, size.n)
					for i := range msgs {
						raw := make([]byte, size.bytes*3/4)
						_, _ = cryptorand.Read(raw)
						msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(base64.StdEncoding.EncodeToString(raw)))
						want[msgs[i].UUID] = string(msgs[i].Payload)
					}
					if err := p.Publish(pubLogstore, msgs...); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
				}
				if n := len(env.requests.writes()); n != 3 {
					t.Fatalf("%d requests for 3 calls; want one each", n)
				}
				got := 0
				for _, g := range pubStoredGroups(t, env.Server, pubLogstore) {
					for _, l := range g.Logs {
						var uuid, payload string
						for _, c := range l.Contents {
							switch c.GetKey() {
							case "uuid":
								uuid = c.GetValue()
							case "payload":
								payload = c.GetValue()
							}
						}
						if w, ok := want[uuid]; !ok || w != payload {
							t.Fatalf("log %s: payload of %d bytes does not match the %d published", uuid, len(payload), len(w))
						}
						got++
					}
				}
				if got != len(want) {
					t.Fatalf("%d logs stored, %d published", got, len(want))
				}
			})
		}
	}
}
