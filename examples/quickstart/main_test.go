package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// TestRun runs the quick start against the emulator: the message it
// publishes is consumed and printed, and cancelling the context ends it
// without an error.
func TestRun(t *testing.T) {
	srv, err := emulator("my-project")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: "my-project", HTTPClient: srv.HTTPClient(),
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testutil.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &out) }()

	want := regexp.MustCompile(`^\{"user":"ada","action":"login"\} \(shard [01]\)\n$`)
	testutil.Poll(t, 30*time.Second, "the published message printed", func() (bool, string) {
		return want.MatchString(out.String()), "output so far: " + out.String()
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30 s of the cancel")
	}
	if !want.MatchString(out.String()) {
		t.Fatalf("output %q, want one line matching %s", out.String(), want)
	}
}

// TestREADMEQuickStart checks that the README's quick start is the body of
// run, so the code users copy is the code this package compiles and tests.
func TestREADMEQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	section := regexp.MustCompile("(?s)\n## Quick start\n.*?```go\n(.*?)```").FindSubmatch(readme)
	if section == nil {
		t.Fatal("README.md has no Go block under a '## Quick start' heading")
	}
	body := regexp.MustCompile("(?s)\nfunc run\\([^\n]*\\{\n(.*?)\n}\n").FindSubmatch(src)
	if body == nil {
		t.Fatal("main.go has no func run")
	}
	var code []string
	for _, line := range strings.Split(string(body[1]), "\n") {
		code = append(code, strings.TrimPrefix(line, "\t"))
	}
	if got, want := strings.TrimSpace(string(section[1])), strings.TrimSpace(strings.Join(code, "\n")); !strings.Contains(got, want) {
		t.Errorf("the README quick start is not the body of run in main.go:\n--- README\n%s\n--- main.go\n%s", got, want)
	}
}
