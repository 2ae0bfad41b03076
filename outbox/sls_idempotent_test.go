package outbox_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// answerLoser drops the answer of the n-th write SLS accepted, as a network failure after the write would:
// the Publisher sees a reset although the row is written.
type answerLoser struct {
	base     http.RoundTripper
	accepted atomic.Int32
	n        int32
}

func (a *answerLoser) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.base.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusOK && r.Method == http.MethodPost && a.accepted.Add(1) == a.n {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return resp, err
}

// TestRelayToSLSIdempotentFailures: a relay publishing with caller sequence ids (outbox.SequenceKey,
// outbox.SequenceID) meets a 5xx on one row (not written) and a lost answer on another (written, but the
// Publish fails). The Publisher does not retry (MaxRetries -1), so the relay sees both failures: each stops its
// key, which is relayed again after the backoff from that row on. Every row ends up in the logstore once, in
// order per key, nothing after a failed row written before it; the row whose answer was lost is refused as a
// duplicate when relayed again. Rows without an ordering key get a sequence each.
//
// With MaxMessagesPerPublish 1 (one row per Publish call) the faults hit as planned: 1 refused duplicate, 2
// rows retried. With the default, the 30 rows go in one Publish call; the Publisher sends each key's rows one
// request each, in order, and stops a key at its failure; the relay then publishes the call's rows again one
// per call, so the rows already written are refused as duplicates (counted written) and the failed ones are
// written: every row once all the same.
func TestRelayToSLSIdempotentFailures(t *testing.T) {
	for _, perCall := range []int{1, 0} {
		t.Run("MaxMessagesPerPublish="+strconv.Itoa(perCall), func(t *testing.T) { testRelayToSLSIdempotentFailures(t, perCall) })
	}
}

func testRelayToSLSIdempotentFailures(t *testing.T, perCall int) {
	const topic, project = "idem", "outbox-idem"
	var refused, failed atomic.Int64
	env := testutil.SLS(t, slstest.WithRequestObserver(func(ri slstest.RequestInfo) {
		switch ri.ErrorCode {
		case slspubsub.CodeInvalidSequenceID:
			refused.Add(1)
		case "InternalServerError":
			failed.Add(1)
		}
	}))
	t.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(t, project, topic, 2)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPostLogStoreLogs, Skip: 4, Times: 1,
		Status: http.StatusInternalServerError, Code: "InternalServerError"})
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{
		ClientConfig: slspubsub.ClientConfig{Endpoint: env.Endpoint, Project: project,
			AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret,
			HTTPClient: &http.Client{Transport: &answerLoser{base: env.HTTPClient.Transport, n: 9}}},
		HashKey:          outbox.SequenceKey,
		IdempotentWrites: true,
		SequenceID:       outbox.SequenceID,
		MaxRetries:       -1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })

	db := migrated(t)
	ctx := context.Background()
	keyOf := map[string]string{}
	var order []string // commit order
	for i := range 30 {
		key := []string{"a", "b", ""}[i%3]
		m := keyed(key, strconv.Itoa(i))
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, topic, key, i, true, m); err != nil {
			t.Fatal(err)
		}
		keyOf[m.UUID], order = key, append(order, m.UUID)
	}
	runRelay(t, db, outbox.RelayConfig{Publisher: pub, PollInterval: 20 * time.Millisecond, MaxMessagesPerPublish: perCall,
		RetryInitialBackoff: 10 * time.Millisecond, RetryMaxBackoff: 50 * time.Millisecond})
	testutil.Poll(t, time.Minute, "every row delivered", func() (bool, string) {
		n := countRows(t, db, "delivered_at IS NULL")
		return n == 0, strconv.Itoa(n) + " rows pending"
	})
	retried := countRows(t, db, "attempts > 1")

	stored := readUUIDs(t, env, project, topic)
	seen := map[string]int{}
	pos := map[string]int{}
	for i, u := range order {
		pos[u] = i
	}
	last := map[string]int{}
	for _, u := range stored {
		seen[u]++
		if k := keyOf[u]; k != "" {
			if p, ok := last[k]; ok && pos[u] < p {
				t.Errorf("key %s: row committed %d-th stored after the %d-th", k, pos[u], p)
			}
			last[k] = pos[u]
		}
	}
	dups, missing := 0, 0
	for _, u := range order {
		switch n := seen[u]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%d rows, %d stored, %d duplicates, %d missing; %d rows retried by the relay, %d 5xx, %d refused as duplicates",
		len(order), len(stored), dups, missing, retried, failed.Load(), refused.Load())
	if dups != 0 || missing != 0 || len(stored) != len(order) {
		t.Fatalf("%d duplicates, %d missing, %d stored of %d rows; want every row once", dups, missing, len(stored), len(order))
	}
	if perCall == 1 && (failed.Load() != 1 || refused.Load() != 1 || retried != 2) {
		t.Fatalf("%d 5xx, %d refused, %d rows retried; want 1, 1 and 2: the faults did not happen as planned",
			failed.Load(), refused.Load(), retried)
	}
	if perCall != 1 && (failed.Load() != 1 || refused.Load() < 1) {
		t.Fatalf("%d 5xx, %d refused; want 1 and at least 1 (the lost answer's row): the faults did not happen as planned",
			failed.Load(), refused.Load())
	}
}

// readUUIDs returns the message UUIDs stored in a logstore, shard by shard in order.
func readUUIDs(t *testing.T, env *testutil.SLSEnv, project, logstore string) []string {
	t.Helper()
	shards, err := env.Server.Shards(project, logstore)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sh := range shards {
		groups, err := env.Server.LogGroups(project, logstore, sh.ShardID)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			for _, l := range g.Group.Logs {
				for _, c := range l.Contents {
					if c.GetKey() == "wm_uuid" {
						out = append(out, c.GetValue())
					}
				}
			}
		}
	}
	return out
}
