package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Least privilege: the Publisher and the Subscriber work with accounts
// allowed only the actions they call, and a missing action fails fast with
// SLS's error naming it. The README's "Least privilege" policies are these.

const (
	privLogstore = "priv"
	privGroup    = "priv-group"
)

// Minimal action sets, as README.md lists them.
var (
	privPublisherActions = []string{"log:PostLogStoreLogs"}
	// privReadActions are what a Subscriber without a ConsumerGroup calls:
	// ListShards, then GetCursor and PullLogs (both log:GetCursorOrData).
	privReadActions = []string{"log:ListShards", "log:GetCursorOrData"}
	// privGroupActions are added by a ConsumerGroup: Subscribe creates the
	// group (an existing one included; its settings are then listed, on
	// the resource .../consumergroup/*), reads its checkpoints and
	// heartbeats; commits write checkpoints.
	privGroupActions = []string{
		"log:CreateConsumerGroup", "log:ListConsumerGroup", "log:GetConsumerGroupCheckPoint",
		"log:ConsumerGroupHeartBeat", "log:ConsumerGroupUpdateCheckPoint",
	}
)

// privAccount is an account allowed actions on resource only; the
// consumer-group actions on the group privGroup of resource, the resource
// SLS checks them on.
func privAccount(id, resource string, actions []string) slstest.Account {
	acc := slstest.Account{AccessKeyID: id, AccessKeySecret: id + "-secret", Policy: []slstest.Permission{}}
	for _, a := range actions {
		r := resource
		switch {
		case a == "log:ListConsumerGroup":
			r = resource + "/consumergroup/*"
		case slices.Contains(privGroupActions, a):
			r = resource + "/consumergroup/" + privGroup
		}
		acc.Policy = append(acc.Policy, slstest.Permission{Action: a, Resource: r})
	}
	return acc
}

// privConfig is a client config signed by acc.
func privConfig(env *testutil.SLSEnv, acc slstest.Account) ClientConfig {
	cfg := testConfig(env)
	cfg.AccessKeyID, cfg.AccessKeySecret = acc.AccessKeyID, acc.AccessKeySecret
	return cfg
}

// privEnv starts an emulator with accounts and the logstores "priv" and
// "other" (2 shards each).
func privEnv(t *testing.T, accounts ...slstest.Account) *testutil.SLSEnv {
	t.Helper()
	var opts []slstest.Option
	for _, a := range accounts {
		opts = append(opts, slstest.WithAccount(a))
	}
	env := testutil.SLS(t, opts...)
	t.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(t, testProject, privLogstore, 2)
	env.LogStore(t, testProject, "other", 2)
	return env
}

// privRequireDenied checks that err is SLS's Unauthorized answer naming
// action, and final (not retried).
func privRequireDenied(t *testing.T, err error, action string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want a denial of %s", action)
	}
	var se *Error
	if !errors.As(err, &se) || se.Code != CodeUnauthorized || se.HTTPStatus != http.StatusForbidden {
		t.Fatalf("error %v (%T): want a 403 %s *Error", err, err, CodeUnauthorized)
	}
	if !strings.Contains(err.Error(), "denied by sts or ram, action: "+action+",") {
		t.Fatalf("error %q does not name the action %s", err, action)
	}
	if IsRetryable(err) {
		t.Fatalf("denial %v is retryable; want final", err)
	}
}

func TestLeastPrivilegePublisher(t *testing.T) {
	acc := privAccount("pub-only", testProject+"/"+privLogstore, privPublisherActions)
	env := privEnv(t, acc)
	pub, err := NewPublisher(PublisherConfig{
		ClientConfig:        privConfig(env, acc),
		RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff:     10 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })

	var msgs []*message.Message
	for i := range 20 {
		msgs = append(msgs, message.NewMessage(fmt.Sprintf("priv-%d", i), []byte("payload")))
	}
	if err := pub.Publish(privLogstore, msgs...); err != nil {
		t.Fatalf("Publish with only %v: %v", privPublisherActions, err)
	}
	if n := privStoredLogs(t, env, privLogstore); n != len(msgs) {
		t.Fatalf("%d logs stored, want %d", n, len(msgs))
	}

	// The grant is per logstore: another one is denied at once, not retried.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- pub.Publish("other", message.NewMessage("denied", []byte("x"))) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("Publish to a logstore the account may not write did not fail within 10 s")
	}
	privRequireDenied(t, err, "log:PostLogStoreLogs")
	if !strings.Contains(err.Error(), "resource: acs:log:*:*:project/"+testProject+"/logstore/other") {
		t.Fatalf("error %q does not name the resource", err)
	}
}

// privStoredLogs counts the logs the emulator holds in logstore.
func privStoredLogs(t *testing.T, env *testutil.SLSEnv, logstore string) int {
	t.Helper()
	n := 0
	for shard := range 2 {
		groups, err := env.Server.LogGroups(testProject, logstore, shard)
		if err != nil {
			t.Fatalf("LogGroups: %v", err)
		}
		for _, g := range groups {
			n += len(g.Group.Logs)
		}
	}
	return n
}

// privSubscriber is a fast-pacing Subscriber signed by acc, closed on
// cleanup.
func privSubscriber(t *testing.T, env *testutil.SLSEnv, acc slstest.Account, group string, logger watermill.LoggerAdapter) *Subscriber {
	t.Helper()
	s, err := NewSubscriber(SubscriberConfig{
		ClientConfig:     privConfig(env, acc),
		FetchInterval:    5 * time.Millisecond,
		MaxFetchInterval: 20 * time.Millisecond,
		ConsumerGroup:    group,
		ConsumerName:     "priv-consumer", // stable: a second Subscriber takes the shards at once
		CommitInterval:   20 * time.Millisecond,
	}, logger)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// privWrite stores n messages in the priv logstore, bypassing auth.
func privWrite(t *testing.T, env *testutil.SLSEnv, n int) {
	t.Helper()
	g := LogGroup{}
	for i := range n {
		rec, err := DefaultMarshaler{}.Marshal(privLogstore, message.NewMessage(fmt.Sprintf("m-%d", i), []byte("p")))
		if err != nil {
			t.Fatal(err)
		}
		g.Logs = append(g.Logs, rec.Log)
	}
	if _, err := env.Server.AppendLogGroup(testProject, privLogstore, 0, toSDK(&g)); err != nil {
		t.Fatalf("AppendLogGroup: %v", err)
	}
}

func TestLeastPrivilegeSubscriber(t *testing.T) {
	resource := testProject + "/" + privLogstore
	for _, tc := range []struct {
		name    string
		group   string
		actions []string
	}{
		{"without consumer group", "", privReadActions},
		{"with consumer group", privGroup, append(append([]string{}, privReadActions...), privGroupActions...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acc := privAccount("sub", resource, tc.actions)
			env := privEnv(t, acc)
			privWrite(t, env, 10)
			s := privSubscriber(t, env, acc, tc.group, nil)
			ch, err := s.Subscribe(context.Background(), privLogstore)
			if err != nil {
				t.Fatalf("Subscribe with only %v: %v", tc.actions, err)
			}
			stReceive(t, ch, 10, true)
			if err := s.Close(); err != nil {
				t.Fatalf("Close (final checkpoint commit) with only %v: %v", tc.actions, err)
			}
			if tc.group == "" {
				return
			}
			// The acks were committed: a new subscription of the group
			// starts after them.
			privWrite(t, env, 1)
			s2 := privSubscriber(t, env, acc, tc.group, nil)
			ch2, err := s2.Subscribe(context.Background(), privLogstore)
			if err != nil {
				t.Fatalf("second Subscribe: %v", err)
			}
			if got := stReceive(t, ch2, 1, true); got[0].UUID != "m-0" || got[0].Metadata[MetadataIndex] != "0" {
				t.Fatalf("resumed at %s (index %s); want the new group's m-0", got[0].UUID, got[0].Metadata[MetadataIndex])
			}
			stNothing(t, ch2)
		})
	}
}

// TestLeastPrivilegeSubscriberMissingAction removes each required action in
// turn: the Subscriber fails fast with SLS's denial naming it. Actions used
// to start (ListShards, GetCursorOrData for the start cursor, the consumer
// group's create and checkpoint read) fail Subscribe itself; the checkpoint
// commit, used only after messages are acked, is logged at Error level at
// the first CommitInterval and returned by Close, while delivery goes on.
func TestLeastPrivilegeSubscriberMissingAction(t *testing.T) {
	resource := testProject + "/" + privLogstore
	required := append(append([]string{}, privReadActions...), privGroupActions...)
	for _, missing := range required {
		t.Run(missing, func(t *testing.T) {
			var actions []string
			for _, a := range required {
				if a != missing {
					actions = append(actions, a)
				}
			}
			acc := privAccount("sub", resource, actions)
			admin := privAccount("admin", resource, required)
			env := privEnv(t, acc, admin)
			privWrite(t, env, 3)
			if missing == "log:ListConsumerGroup" {
				// Listed only when the group exists already.
				adminAPI := newTestClient(t, privConfig(env, admin))
				g := sls.ConsumerGroup{ConsumerGroupName: privGroup, Timeout: 30, InOrder: true}
				if err := adminAPI.createConsumerGroup(ctxT(t), privLogstore, g); err != nil {
					t.Fatal(err)
				}
			}
			logger := watermill.NewCaptureLogger()
			s := privSubscriber(t, env, acc, privGroup, logger)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ch, err := s.Subscribe(ctx, privLogstore)
			if missing != "log:ConsumerGroupUpdateCheckPoint" {
				if ctx.Err() != nil {
					t.Fatalf("Subscribe did not fail within the deadline: %v", err)
				}
				privRequireDenied(t, err, missing)
				return
			}
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			stReceive(t, ch, 3, true)
			privWaitLoggedDenial(t, logger, missing)
			privRequireDenied(t, s.Close(), missing)
		})
	}
}

// TestLeastPrivilegeSubscriberResumeWithoutData: resuming from committed
// checkpoints needs no GetCursor, so without log:GetCursorOrData Subscribe
// succeeds, but the first PullLogs of each shard is denied: the shards stop,
// the channel closes and Close returns the denial.
func TestLeastPrivilegeSubscriberResumeWithoutData(t *testing.T) {
	resource := testProject + "/" + privLogstore
	required := append(append([]string{}, privReadActions...), privGroupActions...)
	full := privAccount("full", resource, required)
	noData := privAccount("no-data", resource, slices.DeleteFunc(slices.Clone(required),
		func(a string) bool { return a == "log:GetCursorOrData" }))
	env := privEnv(t, full, noData)
	privWrite(t, env, 3)
	s := privSubscriber(t, env, full, privGroup, nil)
	ch, err := s.Subscribe(context.Background(), privLogstore)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	stReceive(t, ch, 3, true)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := privSubscriber(t, env, noData, privGroup, nil)
	ch2, err := s2.Subscribe(context.Background(), privLogstore)
	if err != nil {
		t.Fatalf("Subscribe resuming from checkpoints: %v", err)
	}
	select {
	case m, ok := <-ch2:
		if ok {
			t.Fatalf("message %s delivered without log:GetCursorOrData", m.UUID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed within 10 s of every shard being denied")
	}
	privRequireDenied(t, s2.Close(), "log:GetCursorOrData")
}

// privWaitLoggedDenial waits until logger has an Error record whose error
// names action.
func privWaitLoggedDenial(t *testing.T, logger *watermill.CaptureLoggerAdapter, action string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, m := range logger.Captured()[watermill.ErrorLogLevel] {
			if m.Err != nil && strings.Contains(m.Err.Error(), "action: "+action+",") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Error log naming %s within 10 s; captured: %v", action, logger.Captured())
		}
		<-tick.C
	}
}

// TestLeastPrivilegeSubscribeInitialize: SubscribeInitialize needs
// GetLogStore on the logstore, or, with InitializeLogStore, CreateLogStore,
// which SLS checks on the project (the logstore does not exist yet).
func TestLeastPrivilegeSubscribeInitialize(t *testing.T) {
	for _, tc := range []struct {
		name     string
		create   bool
		action   string
		resource string
	}{
		{"check", false, "log:GetLogStore", testProject + "/" + privLogstore},
		{"create", true, "log:CreateLogStore", testProject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allowed := privAccount("init", tc.resource, []string{tc.action})
			denied := privAccount("no-init", tc.resource, []string{"log:ListShards"})
			env := privEnv(t, allowed, denied)
			logstore := privLogstore
			if tc.create {
				logstore = "created"
			}
			for _, acc := range []slstest.Account{allowed, denied} {
				s, err := NewSubscriber(SubscriberConfig{ClientConfig: privConfig(env, acc), InitializeLogStore: tc.create}, nil)
				if err != nil {
					t.Fatalf("NewSubscriber: %v", err)
				}
				err = s.SubscribeInitialize(logstore)
				_ = s.Close()
				if acc.AccessKeyID == allowed.AccessKeyID && err != nil {
					t.Fatalf("SubscribeInitialize with only %s: %v", tc.action, err)
				}
				if acc.AccessKeyID == denied.AccessKeyID {
					privRequireDenied(t, err, tc.action)
				}
			}
		})
	}
}
