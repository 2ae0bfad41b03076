package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

func TestErrorString(t *testing.T) {
	cases := []struct {
		err  *Error
		want string
	}{
		{&Error{Op: "PutLogs", Project: "proj", Logstore: "store", HTTPStatus: 403, Code: "ShardWriteQuotaExceed",
			Message: "shard write quota exceed", RequestID: "ABC"},
			"slspubsub: PutLogs proj/store: 403 ShardWriteQuotaExceed: shard write quota exceed (request id ABC)"},
		{&Error{Op: "CreateLogStore", Project: "proj", HTTPStatus: 400, Code: "ParameterInvalid", Message: "bad"},
			"slspubsub: CreateLogStore proj: 400 ParameterInvalid: bad"},
	}
	for _, tc := range cases {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestIsRetryable(t *testing.T) {
	slsErr := func(status int, code string) error {
		return &Error{Op: "PutLogs", Project: "p", HTTPStatus: status, Code: code, Message: "m", RequestID: "R"}
	}
	wrapped := func(err error) error { return fmt.Errorf("slspubsub: publish: %w", err) }
	urlErr := func(err error) error { return &url.Error{Op: "Post", URL: "http://p.host/logstores/s", Err: err} }
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500", slsErr(500, "InternalServerError"), true},
		{"502 bad response", slsErr(502, CodeBadResponse), true},
		{"503", slsErr(503, "ServerBusy"), true},
		{"504 wrapped", wrapped(slsErr(504, "GatewayTimeout")), true},
		{"429", slsErr(429, "TooManyRequests"), true},
		{"403 ShardWriteQuotaExceed", slsErr(403, "ShardWriteQuotaExceed"), true},
		{"403 WriteQuotaExceed", slsErr(403, "WriteQuotaExceed"), true},
		{"403 ReadQuotaExceed", slsErr(403, "ReadQuotaExceed"), true},
		{"403 ShardReadQuotaExceed", slsErr(403, "ShardReadQuotaExceed"), true},
		{"403 Write QPS Exceed", slsErr(403, "Write QPS Exceed"), true},
		{"403 ProjectQpsExceed", slsErr(403, "ProjectQpsExceed"), true},
		{"403 quota wrapped", wrapped(slsErr(403, "ShardWriteQuotaExceed")), true},
		{"403 Unauthorized", slsErr(403, "Unauthorized"), false},
		{"403 no code", slsErr(403, ""), false},
		{"401 SignatureNotMatch", slsErr(401, "SignatureNotMatch"), false},
		{"401 Unauthorized", slsErr(401, "Unauthorized"), false},
		{"400 InvalidSequenceId", slsErr(400, CodeInvalidSequenceID), false},
		{"400 PostBodyTooLarge", slsErr(400, "PostBodyTooLarge"), false},
		{"404 LogStoreNotExist", slsErr(404, CodeLogStoreNotExist), false},
		{"200 bad response", slsErr(200, CodeBadResponse), false},
		{"5xx quota code is by status", slsErr(500, "Unauthorized"), true},
		{"context canceled", context.Canceled, false},
		{"deadline exceeded", context.DeadlineExceeded, false},
		{"url error canceled", wrapped(urlErr(context.Canceled)), false},
		{"url error deadline", urlErr(context.DeadlineExceeded), false},
		{"request timeout", &requestTimeoutError{msg: "request timed out after 30s"}, true},
		{"request timeout wrapped", wrapped(&requestTimeoutError{msg: "x"}), true},
		{"connection refused", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), true},
		{"connection reset", wrapped(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"bare ECONNRESET", syscall.ECONNRESET, true},
		{"EPIPE", fmt.Errorf("write: %w", syscall.EPIPE), true},
		{"unexpected EOF", wrapped(io.ErrUnexpectedEOF), true},
		{"url error EOF", urlErr(io.EOF), true},
		{"dns error", urlErr(&net.DNSError{Err: "no such host", Name: "p.host"}), true},
		{"plain error", errors.New("boom"), false},
		{"config error", fmt.Errorf("slspubsub: invalid ClientConfig: %w", errors.New("Project: must be set")), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsRetryable(tc.err); got != tc.want {
				t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRequestTimeoutErrorIsNotCallersDeadline(t *testing.T) {
	var err error = &requestTimeoutError{msg: "request timed out after 1s"}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Error("a request timeout must not look like the caller's deadline")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Error("a request timeout must be a net.Error that timed out")
	}
}

func TestCompressionString(t *testing.T) {
	for c, want := range map[Compression]string{CompressionLZ4: "lz4", CompressionZstd: "zstd", CompressionNone: "none", 7: "Compression(7)"} {
		if got := c.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(c), got, want)
		}
	}
	var zero Compression
	if zero != CompressionLZ4 {
		t.Error("the zero Compression must be lz4, the default")
	}
}
