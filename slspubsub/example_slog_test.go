package slspubsub_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Structured logs: the Publisher and the Subscriber take any
// watermill.LoggerAdapter; watermill.NewSlogLogger adapts a *slog.Logger.
// They log retries, failed heartbeats and checkpoint commits, shard
// changes and unreadable logs, with the logstore and shard as attributes,
// and never credentials. Watermill's Trace level is watermill.LevelTrace
// (slog.LevelDebug - 4).
func Example_structuredLogs() {
	logger := watermill.NewSlogLogger(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		Level: slog.LevelInfo, // slog.LevelDebug or watermill.LevelTrace for more
	})))

	srv, err := slstest.NewServer()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("my-project", "app-log", 2); err != nil {
		panic(err)
	}
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: "my-project",
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, logger)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	if err := pub.Publish("app-log", message.NewMessage(watermill.NewUUID(), []byte("hello"))); err != nil {
		panic(err)
	}

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig: cfg,
		StopPosition: slspubsub.StopAtEnd(),
	}, logger)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(context.Background(), "app-log")
	if err != nil {
		panic(err)
	}
	for msg := range messages {
		fmt.Println(string(msg.Payload))
		msg.Ack()
	}
	// Output:
	// hello
}

// A Publisher and a consumer-group Subscriber (resuming through a PostgreSQL
// position store) run with STS credentials, under injected faults that make
// them log retries and failures at every level down to Trace; the captured
// log holds neither the AccessKeySecret, nor the security token, nor the
// password of the database URL. (Errors and a config's String are checked by
// TestAPIWrongSecret and TestClientConfigNeverPrintsSecrets; this covers
// the logs.)
func TestLogsShowNoSecrets(t *testing.T) {
	sts := slstest.Account{
		AccessKeyID:     "log-test-id",
		AccessKeySecret: "log-test-secret-Zq81",
		SecurityToken:   "log-test-token-Kp77",
		Expiration:      time.Now().Add(time.Hour),
	}
	env := testutil.SLS(t, slstest.WithAccount(sts))
	env.LogStore(t, "log-proj", "app-log", 2)
	cfg := slspubsub.ClientConfig{
		Endpoint: env.Endpoint, Project: "log-proj", HTTPClient: env.HTTPClient,
		AccessKeyID: sts.AccessKeyID, AccessKeySecret: sts.AccessKeySecret, SecurityToken: sts.SecurityToken,
	}
	dbURL, dbPassword := urlWithPassword(t, testutil.PostgresURL(t))
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate through %s: %v", redactedURL(dbURL), err)
	}

	var out testutil.Buffer
	logger := watermill.NewSlogLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: watermill.LevelTrace})))

	// Faults that make both sides log: busy writes, failing pulls,
	// heartbeats and checkpoint commits.
	for _, f := range []slstest.Fault{
		{Op: slstest.OpPutLogs, Status: 503, Code: "ServerBusy", Message: "injected", Times: 2},
		{Op: slstest.OpPullLogs, Status: 500, Code: "InternalServerError", Message: "injected", Times: 3},
		{Op: slstest.OpHeartBeat, Status: 500, Code: "InternalServerError", Message: "injected", Skip: 1, Times: 2},
		{Op: slstest.OpUpdateCheckPoint, Status: 500, Code: "InternalServerError", Message: "injected", Times: 1},
	} {
		env.Server.InjectFault(f)
	}

	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, logger)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		if err := pub.Publish("app-log", message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:      cfg,
		ConsumerGroup:     "log-group",
		ConsumerName:      "log-consumer",
		HeartbeatInterval: 100 * time.Millisecond,
		CommitInterval:    100 * time.Millisecond,
		StartPosition:     slspubsub.StartAtBegin(),
		PositionStore:     store.SubscriberPositions("log-consumer"),
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch, err := sub.Subscribe(ctx, "app-log")
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < n; got++ {
		select {
		case msg := <-ch:
			msg.Ack()
		case <-ctx.Done():
			t.Fatalf("consumed %d of %d messages within 60 s", got, n)
		}
	}
	// Let a periodic checkpoint commit meet its injected failure.
	testutil.Poll(t, 10*time.Second, "a logged checkpoint failure", func() (bool, string) {
		return strings.Contains(out.String(), "checkpoint commit failed"), "no checkpoint failure logged yet"
	})
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}

	logs := out.String()
	for _, want := range []string{"PutLogs failed", "PullLogs failed", "heartbeat failed", "checkpoint commit failed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no line with %q, so the faults did not exercise the logging they were meant to", want)
		}
	}
	for name, secret := range map[string]string{
		"AccessKeySecret":       sts.AccessKeySecret,
		"SecurityToken":         sts.SecurityToken,
		"DATABASE_URL password": dbPassword,
	} {
		if strings.Contains(logs, secret) || strings.Contains(logs, url.QueryEscape(secret)) {
			t.Errorf("the log shows the %s", name)
		}
	}
	t.Logf("captured %d log lines, %d bytes, no secret in them", strings.Count(logs, "\n"), len(logs))
}

// urlWithPassword returns dbURL with a password, and that password: the
// URL's own when it has one, else an added one (the throwaway cluster trusts
// loopback connections and ignores it).
func urlWithPassword(t *testing.T, dbURL string) (string, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil || u.User == nil {
		t.Fatalf("database URL %s has no user", redactedURL(dbURL))
	}
	if p, ok := u.User.Password(); ok && p != "" {
		return dbURL, p
	}
	const p = "db-pass-Wx93"
	u.User = url.UserPassword(u.User.Username(), p)
	return u.String(), p
}

func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
