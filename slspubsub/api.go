package slspubsub

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// This file is the data plane of a thin SLS API client. It speaks the wire
// protocol of aliyun-log-go-sdk (request.go, client_request.go, log_store.go)
// and signs with the SDK's own signers, but unlike the SDK it takes a
// context, never retries (the Publisher and Subscriber own the retry
// policy), can send PostLogStoreLogs' seqid, and pools its buffers.

// Operation names, as SLS names its API calls. They appear in Error.Op.
const (
	opPutLogs             = "PutLogs"
	opPostLogStoreLogs    = "PostLogStoreLogs"
	opPullLogs            = "PullLogs"
	opListShards          = "ListShards"
	opGetCursor           = "GetCursor"
	opGetCursorTime       = "GetCursorTime"
	opCreateLogStore      = "CreateLogStore"
	opGetLogStore         = "GetLogStore"
	opCreateConsumerGroup = "CreateConsumerGroup"
	opUpdateConsumerGroup = "UpdateConsumerGroup"
	opListConsumerGroup   = "ListConsumerGroup"
	opHeartBeat           = "ConsumerGroupHeartBeat"
	opUpdateCheckPoint    = "ConsumerGroupUpdateCheckPoint"
	opGetCheckPoint       = "GetConsumerGroupCheckPoint"
)

// Wire names the SDK uses (signature.go, config.go).
const (
	apiVersion           = "0.6.0"
	headerAPIVersion     = "x-log-apiversion"
	headerBodyRawSize    = "x-log-bodyrawsize"
	headerCompressType   = "x-log-compresstype"
	headerSecurityToken  = "x-acs-security-token"
	headerLogDate        = "x-log-date"
	headerContentType    = "Content-Type"
	headerDate           = "Date"
	headerHost           = "Host"
	headerUserAgent      = "User-Agent"
	headerContentLength  = "Content-Length"
	headerRequestID      = "x-log-requestid"
	headerCursor         = "x-log-cursor"
	headerCount          = "x-log-count"
	headerReadLastCursor = "x-log-read-last-cursor"
	contentTypeProtobuf  = "application/x-protobuf"
	contentTypeJSON      = "application/json"
	dateLayoutV4         = "20060102T150405Z"
)

// maxErrorBody bounds how much of an error response is read; maxJSONBody
// bounds a JSON answer of the control plane.
const (
	maxErrorBody = 64 << 10
	maxJSONBody  = 16 << 20
)

// apiClient sends signed SLS requests for one project. It is safe for
// concurrent use.
type apiClient struct {
	project   string
	host      string // "<project>.<endpoint host>", the Host header and the signed host
	baseURL   string // scheme + host
	client    *http.Client
	transport *http.Transport // the default client's, closed by close; nil for a caller's client
	timeout   time.Duration
	userAgent string
	authV4    bool
	region    string
	creds     sls.CredentialsProvider
}

// newAPIClient validates cfg, applies its defaults and returns a client.
func newAPIClient(cfg ClientConfig) (*apiClient, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, _ := endpointHost(cfg.Endpoint) // validated
	scheme := "http://"
	if endpointIsHTTPS(cfg.Endpoint) {
		scheme = "https://"
	}
	c := &apiClient{
		project:   cfg.Project,
		host:      cfg.Project + "." + host,
		client:    cfg.HTTPClient,
		timeout:   cfg.RequestTimeout,
		userAgent: cfg.UserAgent,
		authV4:    cfg.AuthVersion == sls.AuthV4,
		region:    cfg.Region,
		creds:     cfg.CredentialsProvider,
	}
	c.baseURL = scheme + c.host
	if c.creds == nil {
		c.creds = sls.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.AccessKeySecret, cfg.SecurityToken)
	}
	if c.client == nil {
		c.transport = newTransport()
		c.client = &http.Client{Transport: c.transport}
	}
	return c, nil
}

// newTransport returns the default Transport: net/http's defaults, with
// enough idle connections per host for many concurrent PutLogs and
// PullLogs to one endpoint (net/http keeps only 2), the SDK's idle
// timeout, which stays below SLS's keep-alive, and a write buffer that
// holds a typical group-commit request whole (see transportWriteBuffer).
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 128
	t.IdleConnTimeout = 55 * time.Second
	t.WriteBufferSize = transportWriteBuffer
	return t
}

// transportWriteBuffer is the default Transport's per-connection write
// buffer. net/http writes a request's headers into it and copies the body
// behind them; a request larger than the buffer costs a second write
// system call and a copy buffer of up to 32 KiB allocated for the rest of
// the body. With net/http's 4 KiB, that is every PutLogs request of more
// than a few dozen logs; 64 KiB holds a request of a few hundred ~200-byte
// logs (compressed) in one write. A connection's buffer is allocated once,
// when it is dialled.
const transportWriteBuffer = 64 << 10

// close releases the idle connections of the client's own Transport; a
// caller's HTTPClient is left alone.
func (c *apiClient) close() {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
}

// do sends one signed request and returns the response when SLS answered
// 200; the caller must close its Body, which also releases the request's
// timeout. It adds the common headers (Host, x-log-apiversion, User-Agent,
// the STS token), signs with credentials fetched from the provider for this
// request, and bounds the request with RequestTimeout. headers is modified.
// It never retries.
//
// Errors: a non-200 answer is an *Error carrying SLS's code, message and
// request id (Code CodeBadResponse when the body is not SLS's JSON); a
// transport failure is wrapped with %w and names op, and classifies with
// IsRetryable.
func (c *apiClient) do(ctx context.Context, op, method, uri string, headers map[string]string, body []byte) (*http.Response, error) {
	return c.send(ctx, op, method, uri, headers, body, nil, false)
}

// send is do with an optional pooled body buffer, which returns to its pool
// once net/http no longer reads it; fastSign lets V1 signatures come from
// signV1 (byte for byte the SDK's, for fewer allocations).
func (c *apiClient) send(ctx context.Context, op, method, uri string, headers map[string]string,
	body []byte, pooled *[]byte, fastSign bool) (*http.Response, error) {
	release := func() {
		if pooled != nil {
			putBodyBuffer(pooled)
		}
	}
	if err := c.sign(method, uri, headers, body, fastSign); err != nil {
		release()
		return nil, fmt.Errorf("slspubsub: %s %s: %w", op, c.target(uri), err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	var reader io.Reader
	if pooled == nil && body != nil {
		// net/http can replay (GetBody) a body it knows to be a bytes.Reader.
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, c.baseURL+uri, reader)
	if err != nil {
		cancel()
		release()
		return nil, fmt.Errorf("slspubsub: %s %s: %w", op, c.target(uri), err)
	}
	if pooled != nil && len(body) == 0 {
		release()
	} else if pooled != nil {
		// Not replayable: once closed, the buffer belongs to the pool again.
		rb := &requestBody{pooled: pooled}
		rb.r.Reset(body)
		req.Body, req.ContentLength = rb, int64(len(body))
	}
	req.Header = make(http.Header, len(headers))
	setHeaders(req.Header, headers)
	resp, err := c.client.Do(req)
	if err != nil {
		err = classifyContextError(ctx, rctx, c.timeout, err)
		cancel()
		return nil, fmt.Errorf("slspubsub: %s %s: %w", op, c.target(uri), err)
	}
	resp.Body = &responseBody{rc: resp.Body, parent: ctx, ctx: rctx, cancel: cancel, timeout: c.timeout}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, c.statusError(op, uri, resp)
	}
	return resp, nil
}

// setHeaders copies headers into h with canonical keys, without the
// allocations of one key and one slice per header that h.Set would cost.
func setHeaders(h http.Header, headers map[string]string) {
	values := make([]string, 0, len(headers))
	for k, v := range headers {
		if k == headerHost || k == headerContentLength {
			continue // net/http writes these from req.Host and req.ContentLength
		}
		ck, ok := canonicalKeys[k]
		if !ok {
			ck = http.CanonicalHeaderKey(k)
		}
		values = append(values, v)
		h[ck] = values[len(values)-1 : len(values) : len(values)]
	}
}

// canonicalKeys maps the header names requests carry to their canonical
// form.
var canonicalKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{headerAPIVersion, headerBodyRawSize, headerCompressType, headerSecurityToken,
		headerLogDate, headerContentType, headerDate, headerUserAgent, "x-log-signaturemethod",
		"x-log-content-sha256", "Content-MD5", "Authorization", "Accept", "Accept-Encoding"} {
		m[k] = http.CanonicalHeaderKey(k)
	}
	return m
}()

// sign adds the common headers and the signature, as the SDK's
// Client.request does. With fast, a V1 signature comes from signV1 when it
// can produce the SDK's bytes.
func (c *apiClient) sign(method, uri string, headers map[string]string, body []byte, fast bool) error {
	cred, err := c.creds.GetCredentials()
	if err != nil {
		return fmt.Errorf("get credentials: %w", err)
	}
	headers[headerHost] = c.host
	headers[headerAPIVersion] = apiVersion
	headers[headerUserAgent] = c.userAgent
	if _, ok := headers[headerBodyRawSize]; !ok {
		headers[headerBodyRawSize] = "0"
	}
	if cred.SecurityToken != "" {
		headers[headerSecurityToken] = cred.SecurityToken
	}
	if body != nil {
		if _, ok := headers[headerContentType]; !ok {
			return errors.New("a request with a body needs a Content-Type")
		}
	}
	var signer sls.Signer
	now := time.Now().UTC()
	if c.authV4 {
		headers[headerLogDate] = now.Format(dateLayoutV4)
		signer = sls.NewSignerV4(cred.AccessKeyID, cred.AccessKeySecret, c.region)
	} else {
		headers[headerDate] = now.Format(http.TimeFormat) // RFC 1123 with "GMT", as the SDK sends
		if fast && signV1(method, uri, headers, body, cred.AccessKeyID, cred.AccessKeySecret) {
			return nil
		}
		signer = sls.NewSignerV1(cred.AccessKeyID, cred.AccessKeySecret)
	}
	if err := signer.Sign(method, uri, headers, body); err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	return nil
}

// target names what a request addresses: "project" or "project/logstore".
func (c *apiClient) target(uri string) string {
	if ls := logstoreOf(uri); ls != "" {
		return c.project + "/" + ls
	}
	return c.project
}

// logstoreOf extracts the logstore from a "/logstores/{name}..." URI.
func logstoreOf(uri string) string {
	rest, ok := strings.CutPrefix(uri, "/logstores/")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// statusError reads a non-200 response into an *Error.
func (c *apiClient) statusError(op, uri string, resp *http.Response) error {
	e := &Error{
		Op:         op,
		Project:    c.project,
		Logstore:   logstoreOf(uri),
		HTTPStatus: resp.StatusCode,
		RequestID:  resp.Header.Get(headerRequestID),
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		// The status line arrived; the body did not. Keep the status (a 5xx
		// stays retryable) and say what happened.
		e.Code, e.Message = CodeBadResponse, "reading the error body: "+err.Error()
		return e
	}
	var body struct {
		Code    string `json:"errorCode"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(buf, &body) != nil || body.Code == "" {
		e.Code, e.Message = CodeBadResponse, "the error body is not SLS's JSON: "+snippet(buf)
		return e
	}
	e.Code, e.Message = body.Code, body.Message
	return e
}

// badResponse is the *Error for a 200 response the client cannot use.
func (c *apiClient) badResponse(op, uri string, resp *http.Response, format string, args ...any) *Error {
	return &Error{
		Op:         op,
		Project:    c.project,
		Logstore:   logstoreOf(uri),
		HTTPStatus: resp.StatusCode,
		Code:       CodeBadResponse,
		Message:    fmt.Sprintf(format, args...),
		RequestID:  resp.Header.Get(headerRequestID),
	}
}

// snippet quotes the start of a response body for an error message.
func snippet(b []byte) string {
	const max = 256
	if len(b) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		return strconv.Quote(string(b[:cut])) + "..."
	}
	return strconv.Quote(string(b))
}

// classifyContextError explains a transport error caused by a context:
// the request's own timeout becomes a retryable *requestTimeoutError; the
// caller's cancellation or deadline is made visible to errors.Is.
func classifyContextError(parent, rctx context.Context, timeout time.Duration, err error) error {
	if perr := parent.Err(); perr != nil {
		if errors.Is(err, perr) {
			return err
		}
		return fmt.Errorf("%w: %w", perr, err)
	}
	if rctx.Err() != nil {
		return &requestTimeoutError{msg: "request timed out after " + timeout.String() + ": " + err.Error()}
	}
	return err
}

// responseBody releases the request's timeout when closed and classifies
// read errors caused by a context as classifyContextError does.
type responseBody struct {
	rc          io.ReadCloser
	parent, ctx context.Context
	cancel      context.CancelFunc
	timeout     time.Duration
}

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = classifyContextError(b.parent, b.ctx, b.timeout, err)
	}
	return n, err
}

func (b *responseBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// requestBody is a request body over a byte slice. When its buffer came
// from the pool, Close returns it there exactly once: net/http closes a
// request body when it will not read it any more, possibly after Do
// returned.
type requestBody struct {
	r      bytes.Reader
	pooled *[]byte
	closed atomic.Bool
}

func (b *requestBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *requestBody) Close() error {
	if b.closed.CompareAndSwap(false, true) && b.pooled != nil {
		putBodyBuffer(b.pooled)
	}
	return nil
}

// Pools of request bodies, response bodies and header maps. Buffers
// larger than maxPooledBuffer are left to the garbage collector so that one
// huge request does not pin its memory.
const maxPooledBuffer = 16 << 20

var (
	bodyBuffers = sync.Pool{New: func() any { return new([]byte) }}
	headerMaps  = sync.Pool{New: func() any { return make(map[string]string, 16) }}
)

func getBodyBuffer() *[]byte { return bodyBuffers.Get().(*[]byte) }

func putBodyBuffer(b *[]byte) {
	if cap(*b) <= maxPooledBuffer {
		*b = (*b)[:0]
		bodyBuffers.Put(b)
	}
}

func getHeaders() map[string]string { return headerMaps.Get().(map[string]string) }

func putHeaders(h map[string]string) {
	clear(h)
	headerMaps.Put(h)
}

// maxUnpooledBody is the largest compressed PutLogs body allocated per
// request rather than taken from the pool (see putLogs): it fits the
// default Transport's write buffer with the headers.
const maxUnpooledBody = transportWriteBuffer - 4<<10

// putLogs writes rawLogGroup, one encoded sls.LogGroup (appendLogGroup),
// compressed with compression. Without a hashKey it is PutLogs
// (POST /logstores/{ls}, SLS picks the shard); with one it is
// PostLogStoreLogs (POST /logstores/{ls}/shards/route?key=..), routed to the
// shard whose range holds the key. seqID >= 0, only with a hashKey, adds
// SLS's idempotent-write sequence id: SLS rejects a seqid not greater than
// the last one written for the key with CodeInvalidSequenceID. An empty
// rawLogGroup sends nothing, as in the SDK.
func (c *apiClient) putLogs(ctx context.Context, logstore, hashKey string, seqID int64, rawLogGroup []byte, compression Compression) error {
	if len(rawLogGroup) == 0 {
		return nil
	}
	op, uri := opPutLogs, logstoreURI(logstore)
	if hashKey != "" {
		op, uri = opPostLogStoreLogs, uri+"/shards/route?key="+url.QueryEscape(hashKey)
		if seqID >= 0 {
			uri += "&seqid=" + strconv.FormatInt(seqID, 10)
		}
	} else if seqID >= 0 {
		return fmt.Errorf("slspubsub: %s %s/%s: a sequence id needs a hash key", op, c.project, logstore)
	}
	if !compression.valid() {
		return fmt.Errorf("slspubsub: %s %s/%s: unknown compression %v", op, c.project, logstore, compression)
	}
	// A small body goes in a buffer of its own, as a bytes.Reader: net/http
	// then writes the headers and the body in one system call (it flushes
	// the headers first for any other body type) and replays it if the
	// connection turns out dead before anything was written. A large one,
	// where that write no longer matters, comes from the pool and returns
	// to it when net/http closes it.
	var buf *[]byte
	var body []byte
	var err error
	if bound := compressBound(compression, len(rawLogGroup)); bound <= maxUnpooledBody {
		body, err = compress(compression, make([]byte, 0, bound), rawLogGroup)
	} else {
		buf = getBodyBuffer()
		body, err = compress(compression, (*buf)[:0], rawLogGroup)
		*buf = body
	}
	if err != nil {
		if buf != nil {
			putBodyBuffer(buf)
		}
		return fmt.Errorf("slspubsub: %s %s/%s: compress: %w", op, c.project, logstore, err)
	}
	h := getHeaders()
	defer putHeaders(h)
	h[headerBodyRawSize] = strconv.Itoa(len(rawLogGroup))
	h[headerContentType] = contentTypeProtobuf
	if compression != CompressionNone {
		h[headerCompressType] = compression.String()
	}
	resp, err := c.send(ctx, op, http.MethodPost, uri, h, body, buf, true)
	if err != nil {
		return err
	}
	// The 200 means SLS stored the group: an error while draining the
	// (empty) body must not turn the write into a failure, or a retry would
	// write it twice.
	drainAndClose(resp)
	return nil
}

// drainAndClose reads the rest of a response body, so that its connection
// can be reused, and closes it.
func drainAndClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
}

// pullResult is one PullLogs answer.
type pullResult struct {
	// Data is the decompressed LogGroupList (decodeLogGroupList), newly
	// allocated and owned by the caller; nil when the answer holds no groups.
	Data []byte
	// NextCursor is where the next pull starts (x-log-cursor). At the end of
	// the shard (or of endCursor) it equals the request's cursor and Count
	// is 0.
	NextCursor string
	// Count is the number of LogGroups in Data (x-log-count).
	Count int
	// RawSize is len(Data) as SLS declared it (x-log-bodyrawsize).
	RawSize int
	// ReadLastCursor is the cursor of the last group returned, as a decimal
	// int64 (x-log-read-last-cursor); group i of Count has cursor
	// ReadLastCursor-Count+1+i, base64-encoded as SLS cursors are. -1 when
	// SLS did not send it.
	ReadLastCursor int64
	// WireBytes is the size of the body as received, compressed.
	WireBytes int
}

// groupCursor returns the cursor of group i (0 <= i < Count) of the answer,
// computed from ReadLastCursor as the SDK computes (*sls.LogGroup).GetCursor,
// or "" when SLS did not send x-log-read-last-cursor.
func (r *pullResult) groupCursor(i int) string {
	if r.ReadLastCursor < 0 || i < 0 || i >= r.Count {
		return ""
	}
	v := r.ReadLastCursor - int64(r.Count) + 1 + int64(i)
	var buf [20]byte
	return base64.StdEncoding.EncodeToString(strconv.AppendInt(buf[:0], v, 10))
}

// pullLogs reads up to count (1..1000) LogGroups of a shard from cursor,
// stopping before endCursor when it is not empty. compression selects the
// response encoding (Accept-Encoding lz4 or zstd; CompressionNone asks for
// lz4, as SLS always compresses PullLogs answers). The answer's headers are
// validated like the SDK validates them; an inconsistent answer is an
// *Error with Code CodeBadResponse.
func (c *apiClient) pullLogs(ctx context.Context, logstore string, shard int, cursor, endCursor string,
	count int, compression Compression) (pullResult, error) {
	uri := pullURI(logstore, shard, cursor, endCursor, count)
	h := getHeaders()
	defer putHeaders(h)
	h[headerBodyRawSize] = "0"
	h["Accept"] = contentTypeProtobuf
	if compression == CompressionZstd {
		h["Accept-Encoding"] = "zstd"
	} else {
		h["Accept-Encoding"] = "lz4"
	}
	resp, err := c.do(ctx, opPullLogs, http.MethodGet, uri, h, nil)
	if err != nil {
		return pullResult{ReadLastCursor: -1}, err
	}
	defer resp.Body.Close()
	buf := getBodyBuffer()
	defer putBodyBuffer(buf)
	*buf, err = readBody(resp, (*buf)[:0], compressBound(CompressionLZ4, maxRawSize))
	if err != nil {
		return pullResult{ReadLastCursor: -1}, fmt.Errorf("slspubsub: %s %s: read response: %w", opPullLogs, c.target(uri), err)
	}
	return c.pullAnswer(uri, resp, *buf)
}

// pullURI is the PullLogs URI, its query parameters in url.Values.Encode's
// (sorted) order, as the SDK sends them.
func pullURI(logstore string, shard int, cursor, endCursor string, count int) string {
	uri := shardURI(logstore, shard) + "?count=" + strconv.Itoa(count) + "&cursor=" + url.QueryEscape(cursor)
	if endCursor != "" {
		uri += "&end_cursor=" + url.QueryEscape(endCursor)
	}
	return uri + "&type=logs"
}

// pullAnswer validates the headers of a PullLogs answer, as the SDK does,
// and decompresses its body.
func (c *apiClient) pullAnswer(uri string, resp *http.Response, body []byte) (pullResult, error) {
	res := pullResult{ReadLastCursor: -1, WireBytes: len(body)}
	hd := resp.Header
	var err error
	if res.NextCursor = hd.Get(headerCursor); res.NextCursor == "" {
		return res, c.badResponse(opPullLogs, uri, resp, "the answer has no %s header", headerCursor)
	}
	if res.Count, err = strconv.Atoi(hd.Get(headerCount)); err != nil || res.Count < 0 {
		return res, c.badResponse(opPullLogs, uri, resp, "%s %q is not a count", headerCount, hd.Get(headerCount))
	}
	if res.RawSize, err = strconv.Atoi(hd.Get(headerBodyRawSize)); err != nil || res.RawSize < 0 || res.RawSize > maxRawSize {
		return res, c.badResponse(opPullLogs, uri, resp, "%s %q is not a size up to %d",
			headerBodyRawSize, hd.Get(headerBodyRawSize), maxRawSize)
	}
	if v := hd.Get(headerReadLastCursor); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			res.ReadLastCursor = n
		} // else: optional, and the SDK ignores a malformed one too
	}
	if res.RawSize == 0 {
		return res, nil
	}
	method := hd.Get(headerCompressType)
	if method != "lz4" && method != "zstd" {
		return res, c.badResponse(opPullLogs, uri, resp, "%s %q is not lz4 or zstd", headerCompressType, method)
	}
	if res.Data, err = decompress(method, body, res.RawSize); err != nil {
		return res, c.badResponse(opPullLogs, uri, resp, "%v", err)
	}
	return res, nil
}

// readBody appends the whole response body to buf, refusing more than limit
// bytes.
func readBody(resp *http.Response, buf []byte, limit int) ([]byte, error) {
	if n := resp.ContentLength; n > int64(limit) {
		return buf, fmt.Errorf("body of %d bytes exceeds %d", n, limit)
	} else if n > 0 && cap(buf)-len(buf) < int(n)+1 {
		// +1: room to observe EOF without growing.
		nb := make([]byte, len(buf), len(buf)+int(n)+1)
		copy(nb, buf)
		buf = nb
	}
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				return buf, fmt.Errorf("body exceeds %d bytes", limit)
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Compile-time check that requestTimeoutError is a net.Error.
var _ net.Error = (*requestTimeoutError)(nil)

// signV1 signs a request as sls.SignerV1.Sign does, producing the same
// headers byte for byte (Content-MD5, x-log-signaturemethod, Authorization),
// with a few allocations instead of the SDK signer's 20 to 40 (fmt, a map,
// url.Parse, string concatenation, an HMAC per request). It handles the
// requests the Publisher sends: a URI whose path and query need no escaping
// and whose query keys are distinct, and headers whose lower-cased names are
// distinct. For anything else it changes nothing and returns false, and the
// caller signs with the SDK.
func signV1(method, uri string, headers map[string]string, body []byte, keyID, secret string) bool {
	date, ok := headers[headerDate]
	if !ok {
		return false // the SDK's signer reports the error
	}
	path, query, _ := strings.Cut(uri, "?")
	if !plainURIPart(path, true) {
		return false
	}
	st := v1Signers.Get().(*v1SignState)
	defer v1Signers.Put(st)

	// CanonicalizedSLSHeaders: x-log-* and x-acs-* names, lower-cased and
	// trimmed, sorted, with trimmed values. x-log-signaturemethod is added
	// below, as the SDK adds it before collecting.
	st.headers = st.headers[:0]
	hasMethod := false
	for k, v := range headers {
		if !isASCII(k) {
			return false // for ASCII, trimming before lower-casing is the same
		}
		l := strings.TrimSpace(k)
		if hasPrefixFold(l, "x-log-") || hasPrefixFold(l, "x-acs-") {
			if k == sls.HTTPHeaderSignatureMethod {
				hasMethod = true
				v = signatureMethodV1 // the SDK sets it before collecting
			}
			st.headers = append(st.headers, v1Header{strings.ToLower(l), strings.TrimSpace(v)})
		}
	}
	if !hasMethod {
		st.headers = append(st.headers, v1Header{"x-log-signaturemethod", signatureMethodV1})
	}
	slices.SortFunc(st.headers, func(a, b v1Header) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(st.headers); i++ {
		if st.headers[i].name == st.headers[i-1].name {
			return false // two spellings of one name: the SDK keeps one at random
		}
	}

	// CanonicalizedResource: the path, then the query sorted by key.
	st.query = st.query[:0]
	for rest := query; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k == "" || !plainURIPart(k, false) || !plainURIPart(v, false) {
			return false
		}
		st.query = append(st.query, v1Header{k, v})
	}
	slices.SortFunc(st.query, func(a, b v1Header) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(st.query); i++ {
		if st.query[i].name == st.query[i-1].name {
			return false
		}
	}

	var contentMD5 string
	b := st.buf[:0]
	b = append(b, method...)
	b = append(b, '\n')
	if body != nil {
		sum := md5.Sum(body)
		var hexSum [2 * md5.Size]byte
		for i, x := range sum {
			hexSum[2*i], hexSum[2*i+1] = upperHex[x>>4], upperHex[x&0x0f]
		}
		contentMD5 = string(hexSum[:])
		b = append(b, hexSum[:]...)
	}
	b = append(b, '\n')
	b = append(b, headers[headerContentType]...)
	b = append(b, '\n')
	b = append(b, date...)
	b = append(b, '\n')
	for i, h := range st.headers {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, h.name...)
		b = append(b, ':')
		b = append(b, h.value...)
	}
	b = append(b, '\n')
	b = append(b, path...)
	for i, q := range st.query {
		if i == 0 {
			b = append(b, '?')
		} else {
			b = append(b, '&')
		}
		b = append(b, q.name...)
		b = append(b, '=')
		b = append(b, q.value...)
	}

	if st.mac == nil || st.secret != secret {
		st.secret, st.mac = secret, hmac.New(sha1.New, []byte(secret))
	}
	st.mac.Reset()
	st.mac.Write(b)
	digest := st.mac.Sum(st.sum[:0])
	b = append(b[:0], "LOG "...)
	b = append(b, keyID...)
	b = append(b, ':')
	b = base64.StdEncoding.AppendEncode(b, digest)
	st.buf = b

	if body != nil {
		headers[sls.HTTPHeaderContentMD5] = contentMD5
	}
	headers[sls.HTTPHeaderSignatureMethod] = signatureMethodV1
	headers[sls.HTTPHeaderAuthorization] = string(b)
	return true
}

// signatureMethodV1 is the SDK's x-log-signaturemethod for V1 signatures.
const signatureMethodV1 = "hmac-sha1"

const upperHex = "0123456789ABCDEF"

// v1SignState is signV1's reusable scratch space, with the HMAC of the last
// secret it signed with.
type v1SignState struct {
	headers, query []v1Header
	buf            []byte
	sum            [sha1.Size]byte
	secret         string
	mac            hash.Hash
}

type v1Header struct{ name, value string }

var v1Signers = sync.Pool{New: func() any { return new(v1SignState) }}

// plainURIPart reports whether s reads the same escaped and unescaped in a
// URI path (path) or query: only unreserved characters (and '/' in a
// path), so that the SDK's url.Parse, EscapedPath and Query give s back
// unchanged.
func plainURIPart(s string, path bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
		case c == '/' && path:
		default:
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case in s; prefix is
// lower case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
