package slspubsub

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/aliyun/aliyun-log-go-sdk/producer"
	"github.com/gogo/protobuf/proto"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// Round trips with the SDK's own producer and consumer libraries
// (aliyun-log-go-sdk v0.1.127): what one writes, the other reads in full.

var interopBase = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// interopEnv starts an emulator with logstore (2 shards).
func interopEnv(t *testing.T, logstore string) *testutil.SLSEnv {
	t.Helper()
	env := testutil.SLS(t)
	t.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(t, testProject, logstore, 2)
	return env
}

// interopProducerLog is the i-th log the SDK producer sends, and where.
func interopProducerLog(i int) (topic, source string, l *sls.Log, contents map[string]string, at time.Time) {
	topic = []string{"orders", "payments"}[i%2]
	source = []string{"10.0.0.1", "host-b"}[(i/2)%2]
	at = interopBase.Add(time.Duration(i)*time.Second + time.Duration(i*1_000_003%1_000_000_000))
	contents = map[string]string{"i": strconv.Itoa(i), "msg": fmt.Sprintf(`hello "world" %d`, i), "text": "日本語 <&>"}
	l = &sls.Log{Time: proto.Uint32(uint32(at.Unix())), TimeNs: proto.Uint32(uint32(at.Nanosecond()))}
	for _, k := range []string{"i", "msg", "text"} {
		l.Contents = append(l.Contents, &sls.LogContent{Key: proto.String(k), Value: proto.String(contents[k])})
	}
	return topic, source, l, contents, at
}

// interopCallback counts the producer's outcomes.
type interopCallback struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	lastErr    string
}

func (c *interopCallback) Success(*producer.Result) { c.ok.Add(1) }
func (c *interopCallback) Fail(r *producer.Result) {
	c.failed.Add(1)
	c.mu.Lock()
	c.lastErr = r.GetErrorCode() + ": " + r.GetErrorMessage()
	c.mu.Unlock()
}

func TestInteropSDKProducerToSubscriber(t *testing.T) {
	const logstore, n = "from-sdk", 200
	env := interopEnv(t, logstore)
	sdkBaseline := testutil.SDKGoroutines()

	cfg := producer.GetDefaultProducerConfig()
	cfg.Endpoint = env.Endpoint
	cfg.AccessKeyID = env.AccessKeyID
	cfg.AccessKeySecret = env.AccessKeySecret
	cfg.HTTPClient = env.HTTPClient
	cfg.LingerMs = 100
	cfg.LogTags = []*sls.LogTag{
		{Key: proto.String("env"), Value: proto.String("interop")},
		{Key: proto.String("team"), Value: proto.String("wm")},
	}
	cfg.Logger = testutil.SDKLogger(t, "producer", nil)
	cfg.DisableRuntimeMetrics = true
	prod := producer.InitProducer(cfg)
	testutil.PreinitSDKClient(t, prod, "threadPool", "ioworker", "client")
	prod.Start()
	var closeOnce sync.Once
	closeProducer := func() {
		closeOnce.Do(func() { testutil.Within(t, 30*time.Second, "producer SafeClose", prod.SafeClose) })
	}
	t.Cleanup(closeProducer)

	cb := &interopCallback{}
	for i := range n {
		topic, source, l, _, _ := interopProducerLog(i)
		if err := prod.SendLogWithCallBack(testProject, logstore, topic, source, l, cb); err != nil {
			t.Fatalf("SendLogWithCallBack %d: %v", i, err)
		}
	}
	if !testutil.Poll(t, 30*time.Second, "the producer's callbacks", func() (bool, string) {
		ok, failed := cb.ok.Load(), cb.failed.Load()
		return ok+failed >= n, fmt.Sprintf("%d succeeded, %d failed of %d", ok, failed, n)
	}) {
		t.FailNow()
	}
	if failed := cb.failed.Load(); failed > 0 {
		cb.mu.Lock()
		defer cb.mu.Unlock()
		t.Fatalf("%d sends failed, last: %s", failed, cb.lastErr)
	}
	closeProducer()
	if !testutil.NoSDKGoroutines(t, sdkBaseline) {
		t.FailNow()
	}

	s := stSubscriber(t, env, func(c *SubscriberConfig) { c.StopPosition = StopAtEnd() })
	ch, err := s.Subscribe(t.Context(), logstore)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	seen := make([]bool, n)
	count := 0
	timeout := time.After(20 * time.Second)
	for done := false; !done; {
		select {
		case m, ok := <-ch:
			if !ok {
				done = true
				break
			}
			m.Ack()
			count++
			interopCheckProduced(t, m, seen)
		case <-timeout:
			t.Fatalf("%d messages received; the bounded subscription did not end within 20 s", count)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if count != n {
		t.Fatalf("received %d messages, want exactly %d", count, n)
	}
}

// interopCheckProduced checks one message read from what the SDK producer
// wrote: the payload is the JSON object of the contents, and the metadata
// holds the group's topic, source and tags and the log time with ns.
func interopCheckProduced(t *testing.T, m *message.Message, seen []bool) {
	t.Helper()
	var payload map[string]string
	if err := json.Unmarshal(m.Payload, &payload); err != nil {
		t.Fatalf("payload %q is not a JSON object of strings: %v", m.Payload, err)
	}
	i, err := strconv.Atoi(payload["i"])
	if err != nil || i < 0 || i >= len(seen) {
		t.Fatalf("payload %q: bad i", m.Payload)
	}
	if seen[i] {
		t.Fatalf("log %d delivered twice", i)
	}
	seen[i] = true
	topic, source, _, contents, at := interopProducerLog(i)
	if !reflect.DeepEqual(payload, contents) {
		t.Errorf("log %d: payload %v, want %v", i, payload, contents)
	}
	f, err := LogFieldsFromMessage(m)
	if err != nil {
		t.Fatalf("LogFieldsFromMessage: %v", err)
	}
	if f.Topic != topic || f.Source != source || !f.Time.Equal(at) {
		t.Errorf("log %d: topic %q source %q time %s; want %q %q %s", i, f.Topic, f.Source,
			f.Time.Format(time.RFC3339Nano), topic, source, at.Format(time.RFC3339Nano))
	}
	if f.Tags["env"] != "interop" || f.Tags["team"] != "wm" {
		t.Errorf("log %d: tags %v, want env=interop team=wm", i, f.Tags)
	}
	if m.Metadata.Get(MetadataShard) == "" || m.Metadata.Get(MetadataCursor) == "" {
		t.Errorf("log %d: no position in metadata %v", i, m.Metadata)
	}
}

// interopSeen is one log as the SDK consumer's processor got it.
type interopSeen struct {
	topic, source string
	tags          map[string]string
	time          time.Time
	contents      map[string]string
}

// interopPublished is the i-th message the Publisher writes: some payloads
// are binary, which DefaultMarshaler stores in base64.
func interopPublished(i int) *message.Message {
	payload := []byte(fmt.Sprintf(`{"n":%d}`, i))
	if i%10 == 9 {
		payload = []byte{0xff, 0x00, byte(i)}
	}
	m := message.NewMessage(fmt.Sprintf("wm-%03d", i), payload)
	m.Metadata.Set(MetadataTopic, fmt.Sprintf("t-%d", i%3))
	m.Metadata.Set(MetadataSource, "svc-a")
	m.Metadata.Set(MetadataTagPrefix+"env", "interop")
	m.Metadata.Set(MetadataTime, interopBase.Add(time.Duration(i)*time.Second+time.Duration(7*i+1)).Format(time.RFC3339Nano))
	m.Metadata.Set("trace", fmt.Sprintf("tr-%d", i))
	return m
}

func TestInteropPublisherToSDKConsumer(t *testing.T) {
	const logstore, n = "to-sdk", 100
	env := interopEnv(t, logstore)
	sdkBaseline := testutil.SDKGoroutines()

	pub := rtPublisher(t, env)
	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, interopPublished(i))
	}
	if err := pub.Publish(logstore, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatalf("Publisher Close: %v", err)
	}

	var (
		mu   sync.Mutex
		seen = map[string][]interopSeen{}
	)
	w := testutil.NewSDKConsumerWorker(t, consumer.LogHubConfig{
		Endpoint:                  env.Endpoint,
		AccessKeyID:               env.AccessKeyID,
		AccessKeySecret:           env.AccessKeySecret,
		Project:                   testProject,
		Logstore:                  logstore,
		ConsumerGroupName:         "sdk-consumer",
		ConsumerName:              "c1",
		CursorPosition:            consumer.BEGIN_CURSOR,
		HeartbeatIntervalInSecond: 1,
		DataFetchIntervalInMs:     50,
		AutoCommitIntervalInMS:    200,
	}, env.HTTPClient.Transport, func(_ int, l *sls.LogGroupList, tr consumer.CheckPointTracker) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range l.LogGroups {
			tags := map[string]string{}
			for _, tag := range g.LogTags {
				tags[tag.GetKey()] = tag.GetValue()
			}
			for _, lg := range g.Logs {
				s := interopSeen{topic: g.GetTopic(), source: g.GetSource(), tags: tags,
					time: time.Unix(int64(lg.GetTime()), int64(lg.GetTimeNs())).UTC(), contents: map[string]string{}}
				for _, c := range lg.Contents {
					s.contents[c.GetKey()] = c.GetValue()
				}
				seen[s.contents[contentUUID]] = append(seen[s.contents[contentUUID]], s)
			}
		}
		return "", tr.SaveCheckPoint(false)
	})
	w.Start()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() { testutil.Within(t, 30*time.Second, "consumer StopAndWait", w.StopAndWait) })
	}
	t.Cleanup(stop)
	if !testutil.Poll(t, 30*time.Second, "the SDK consumer to see every message", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n, fmt.Sprintf("%d of %d messages seen", len(seen), n)
	}) {
		t.FailNow()
	}
	stop()
	if !testutil.NoSDKGoroutines(t, sdkBaseline) {
		t.FailNow()
	}

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("the SDK saw %d distinct wm_uuid values, want %d", len(seen), n)
	}
	for i, m := range msgs {
		logs := seen[m.UUID]
		if len(logs) != 1 {
			t.Errorf("%s seen %d times by the SDK consumer", m.UUID, len(logs))
			continue
		}
		interopCheckConsumed(t, i, m, logs[0])
	}
}

// interopCheckConsumed checks that the SDK got message i as a proper log.
func interopCheckConsumed(t *testing.T, i int, m *message.Message, got interopSeen) {
	t.Helper()
	wantTime, _ := time.Parse(time.RFC3339Nano, m.Metadata.Get(MetadataTime))
	if got.topic != m.Metadata.Get(MetadataTopic) || got.source != "svc-a" || got.tags["env"] != "interop" ||
		!got.time.Equal(wantTime) {
		t.Errorf("%s: topic %q source %q tags %v time %s; want %q svc-a env=interop %s", m.UUID, got.topic, got.source,
			got.tags, got.time.Format(time.RFC3339Nano), m.Metadata.Get(MetadataTopic), wantTime.Format(time.RFC3339Nano))
	}
	want := map[string]string{
		contentUUID:     m.UUID,
		contentPayload:  string(m.Payload),
		contentMetadata: fmt.Sprintf(`{"trace":"tr-%d"}`, i),
	}
	if i%10 == 9 {
		want[contentPayload] = base64.StdEncoding.EncodeToString(m.Payload)
		want[contentPayloadEncoding] = encodingBase64
	}
	if !reflect.DeepEqual(got.contents, want) {
		t.Errorf("%s: contents %v, want %v", m.UUID, got.contents, want)
	}
}
