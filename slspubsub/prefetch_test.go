package slspubsub

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// countingTransport sums the LogGroups of every PullLogs answer.
type countingTransport struct {
	base   http.RoundTripper
	groups atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusOK && r.URL.Query().Get("type") == "logs" {
		n, _ := strconv.Atoi(resp.Header.Get("x-log-count"))
		c.groups.Add(int64(n))
	}
	return resp, err
}

// With a backlog far larger than PrefetchBytes, a FetchCount of 1000 and a
// handler that never acks, the Subscriber fetches about PrefetchBytes worth
// of groups and stops: pulls are sized to the budget instead of taking
// FetchCount groups at once (invariant 5: memory bounded by configuration
// under any backlog).
func TestSubscriberPullsSizedToPrefetchBudget(t *testing.T) {
	const (
		groups        = 200
		valueBytes    = 4000
		prefetchBytes = 64 << 10
	)
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	big := strings.Repeat("x", valueBytes)
	for i := range groups {
		rec, err := DefaultMarshaler{}.Marshal(testLogstore, message.NewMessage(strconv.Itoa(i), []byte(big)))
		if err != nil {
			t.Fatal(err)
		}
		g := LogGroup{Logs: []Log{rec.Log}}
		if _, err := env.Server.AppendLogGroup(testProject, testLogstore, 0, toSDK(&g)); err != nil {
			t.Fatal(err)
		}
	}
	counter := &countingTransport{base: env.HTTPClient.Transport}
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.HTTPClient = &http.Client{Transport: counter}
		c.FetchCount = 1000
		c.PrefetchBytes = prefetchBytes
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stReceive(t, ch, 1, false) // never acked: the shard's budget only fills
	stNothing(t, ch)
	// A group decodes to a little over valueBytes; the budget holds about
	// prefetchBytes/valueBytes = 16 of them, plus the first probe pull.
	fetched := counter.groups.Load()
	if limit := int64(prefetchBytes/valueBytes + probeCount); fetched > limit {
		t.Fatalf("fetched %d groups of ~%d bytes with PrefetchBytes %d and nothing acked; want at most %d",
			fetched, valueBytes, prefetchBytes, limit)
	}
	if fetched < 2 {
		t.Fatalf("fetched %d groups; the budget has room for more", fetched)
	}
}
