package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// SLS error codes the library compares. They are spelled exactly as SLS
// spells them.
const (
	// CodeLogStoreNotExist: the logstore named by a request does not exist.
	CodeLogStoreNotExist = "LogStoreNotExist"
	// CodeLogStoreAlreadyExist: CreateLogStore named an existing logstore.
	CodeLogStoreAlreadyExist = "LogStoreAlreadyExist"
	// CodeProjectNotExist: the project of the request does not exist.
	CodeProjectNotExist = "ProjectNotExist"
	// CodeConsumerGroupNotExist: the consumer group does not exist.
	CodeConsumerGroupNotExist = "ConsumerGroupNotExist"
	// CodeConsumerGroupAlreadyExist: CreateConsumerGroup named an existing group.
	CodeConsumerGroupAlreadyExist = "ConsumerGroupAlreadyExist"
	// CodeConsumerNotExist: a checkpoint came from a consumer the group no
	// longer counts (its heartbeats lapsed past the group's timeout). SLS
	// spells it this way.
	CodeConsumerNotExist = "ConsumerNotExsit"
	// CodeConsumerNotMatch: a checkpoint came from a consumer that does not
	// hold the shard (the group handed it to another consumer).
	CodeConsumerNotMatch = "ConsumerNotMatch"
	// CodeInvalidSequenceID: a PostLogStoreLogs request carried a seqid that
	// is not greater than the last one written for its hash key, so the batch
	// was already written (SLS idempotent writes).
	CodeInvalidSequenceID = "InvalidSequenceId"
	// CodeInvalidCursor: a cursor does not belong to the shard.
	CodeInvalidCursor = "InvalidCursor"
	// CodeShardNotExist: the shard does not exist.
	CodeShardNotExist = "ShardNotExist"
	// codeShardNotExistCG is how consumer-group calls spell it.
	codeShardNotExistCG = "ShardNotExsit"
	// CodeShardReadOnly: a write reached a readonly (split or merged) shard.
	CodeShardReadOnly = "ShardReadOnly"
	// CodeUnauthorized: the request is not allowed for the credentials.
	CodeUnauthorized = "Unauthorized"
	// CodeSignatureNotMatch: the signature does not match; usually a wrong
	// AccessKeySecret.
	CodeSignatureNotMatch = "SignatureNotMatch"
	// CodeShardWriteQuotaExceed: the shard's write quota is exhausted.
	CodeShardWriteQuotaExceed = "ShardWriteQuotaExceed"
	// CodeShardReadQuotaExceed: the shard's read quota is exhausted.
	CodeShardReadQuotaExceed = "ReadQuotaExceed"
	// CodeBadResponse is not an SLS code: the library sets it when a response
	// could not be understood (an error body that is not SLS's JSON, missing
	// or inconsistent headers, a body that does not decompress).
	CodeBadResponse = "BadResponse"
)

// Error is an error answered by SLS, or a response the library could not
// understand (Code CodeBadResponse). Use errors.As to inspect it:
//
//	var e *slspubsub.Error
//	if errors.As(err, &e) && e.Code == slspubsub.CodeLogStoreNotExist { ... }
type Error struct {
	// Op is the SLS operation, e.g. "PutLogs", "PullLogs", "GetCursor".
	Op string
	// Project and Logstore name what the request addressed; Logstore is
	// empty for project-level operations.
	Project, Logstore string
	// HTTPStatus is the response's status code.
	HTTPStatus int
	// Code is SLS's errorCode, e.g. "ShardWriteQuotaExceed".
	Code string
	// Message is SLS's errorMessage, or a description of what was wrong with
	// the response.
	Message string
	// RequestID is the x-log-requestid response header, which SLS support
	// asks for; empty when the response had none.
	RequestID string
}

// Error formats e as
// "slspubsub: PutLogs proj/store: 403 ShardWriteQuotaExceed: shard write quota exceed (request id ABC)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("slspubsub: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(e.Project)
	if e.Logstore != "" {
		b.WriteByte('/')
		b.WriteString(e.Logstore)
	}
	fmt.Fprintf(&b, ": %d %s: %s", e.HTTPStatus, e.Code, e.Message)
	if e.RequestID != "" {
		b.WriteString(" (request id ")
		b.WriteString(e.RequestID)
		b.WriteByte(')')
	}
	return b.String()
}

// IsRetryable reports whether a failed call may succeed when repeated:
//   - network failures: connection refused or reset, a response cut short,
//     an HTTP request that timed out (ClientConfig.RequestTimeout);
//   - HTTP 5xx and 429 answers;
//   - HTTP 403 answers whose code names a quota or a QPS limit
//     ("ShardWriteQuotaExceed", "ReadQuotaExceed", "Write QPS Exceed" ...).
//
// Everything else is final: 400, 401, 404, other 403s (Unauthorized,
// SignatureNotMatch), and the cancellation or deadline of the caller's
// context.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var se *Error
	if errors.As(err, &se) {
		return retryableStatus(se.HTTPStatus, se.Code)
	}
	var te *requestTimeoutError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

func retryableStatus(status int, code string) bool {
	switch {
	case status >= 500 && status <= 599, status == http.StatusTooManyRequests:
		return true
	case status == http.StatusForbidden:
		return isQuotaCode(code)
	}
	return false
}

// isQuotaCode reports whether an SLS error code names an exhausted quota or
// QPS limit; SLS spells these several ways ("ShardWriteQuotaExceed",
// "ReadQuotaExceed", "Write QPS Exceed").
func isQuotaCode(code string) bool {
	c := strings.ToLower(code)
	return strings.Contains(c, "quota") || strings.Contains(c, "qps")
}

// requestTimeoutError reports that one HTTP request exceeded
// ClientConfig.RequestTimeout while the caller's context was still live. It
// is retryable, unlike the caller's own deadline, and deliberately does not
// unwrap to context.DeadlineExceeded so that callers who stop on their own
// deadline do not mistake it for theirs. It is a net.Error that times out.
type requestTimeoutError struct {
	msg string
}

func (e *requestTimeoutError) Error() string { return e.msg }

// Timeout reports true: the request timed out.
func (e *requestTimeoutError) Timeout() bool { return true }

// Temporary reports true: a later request may succeed.
func (e *requestTimeoutError) Temporary() bool { return true }

// isHandedOver reports whether err is SLS refusing a consumer-group
// checkpoint because the shard is no longer this consumer's (the SDK's
// consumer library treats the same two codes as a lost shard, not a failure).
func isHandedOver(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return strings.EqualFold(e.Code, CodeConsumerNotMatch) || strings.EqualFold(e.Code, CodeConsumerNotExist) ||
		strings.EqualFold(e.Code, "ConsumerNotExist")
}
