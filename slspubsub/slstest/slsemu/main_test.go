package main

import (
	"bytes"
	"regexp"
	"sync"
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

func TestParseLogstore(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want logstoreSpec
		ok   bool
	}{
		{"p/l:4", logstoreSpec{"p", "l", 4}, true},
		{"p/l", logstoreSpec{"p", "l", 2}, true},
		{"p:4", logstoreSpec{}, false},
		{"/l:4", logstoreSpec{}, false},
		{"p/l:0", logstoreSpec{}, false},
		{"p/l:x", logstoreSpec{}, false},
	} {
		got, err := parseLogstore(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseLogstore(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServesSDK starts the command on a free port and uses it with the SDK.
func TestRunServesSDK(t *testing.T) {
	var out syncBuffer
	stop := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-addr", "127.0.0.1:0", "-access-key-id", "ak", "-access-key-secret", "sk", "-logstore", "demo/app-log:3"}, &out, func() {
			close(started)
			<-stop
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("run returned early: %v (output %q)", err, out.String())
	}
	m := regexp.MustCompile(`endpoint (\S+),`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no endpoint printed: %q", out.String())
	}
	if bytes.Contains([]byte(out.String()), []byte("sk")) {
		t.Errorf("output contains the secret: %q", out.String())
	}
	c := &sls.Client{Endpoint: m[1], AccessKeyID: "ak", AccessKeySecret: "sk", HTTPClient: slstest.HTTPClientFor(m[1])}
	shards, err := c.ListShards("demo", "app-log")
	if err != nil {
		t.Fatalf("ListShards: %v", err)
	}
	if len(shards) != 3 {
		t.Errorf("got %d shards, want 3", len(shards))
	}
	bad := &sls.Client{Endpoint: m[1], AccessKeyID: "ak", AccessKeySecret: "wrong", HTTPClient: slstest.HTTPClientFor(m[1])}
	if _, err := bad.ListShards("demo", "app-log"); err == nil {
		t.Error("a wrong secret was accepted")
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
