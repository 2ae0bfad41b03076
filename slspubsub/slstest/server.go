package slstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is an in-process SLS endpoint. The real aliyun-log-go-sdk client
// talks to it over loopback HTTP through the client HTTPClient returns. It is
// safe for concurrent use; Close stops it.
type Server struct {
	opts     options
	ln       net.Listener
	hs       *http.Server
	endpoint string // host:port
	host     string // endpoint host without port
	auth     *authenticator
	faults   *faultInjector
	codec    *codec
	quota    atomic.Pointer[ShardQuota]

	mu       sync.RWMutex
	projects map[string]*project

	shardSeq  atomic.Int64 // hands out disjoint cursor ranges
	requestID atomic.Uint64
	idPrefix  uint32
	closeOnce sync.Once
	closeErr  error
	served    sync.WaitGroup
}

// Limits bound what one request may carry, as SLS bounds it.
type Limits struct {
	// MaxPutBytes is the largest uncompressed LogGroup a PutLogs request may
	// carry (SLS: 10 MiB). Larger bodies fail with PostBodyTooLarge.
	MaxPutBytes int
	// MaxPutLogs is the most logs one PutLogs request may carry (SLS: 40960).
	MaxPutLogs int
	// MaxPullBytes caps the uncompressed size of one PullLogs response; at
	// least one LogGroup is always returned. Default 32 MiB.
	MaxPullBytes int
	// MaxConsumerGroups is the most consumer groups per logstore (SLS: 30).
	MaxConsumerGroups int
}

// DefaultLimits are the limits SLS documents.
var DefaultLimits = Limits{
	MaxPutBytes:       10 << 20,
	MaxPutLogs:        40960,
	MaxPullBytes:      32 << 20,
	MaxConsumerGroups: 30,
}

type options struct {
	addr     string
	accounts []Account
	noAuth   bool
	seed     int64
	now      func() time.Time
	limits   Limits
	observer func(RequestInfo)
	quota    ShardQuota
}

// Option configures a Server.
type Option func(*options)

// WithAddr sets the listen address (default "127.0.0.1:0", a free port).
func WithAddr(addr string) Option { return func(o *options) { o.addr = addr } }

// WithAccount adds an account the server accepts. Without any account and
// without WithoutAuth, the server accepts the account DefaultAccessKeyID /
// DefaultAccessKeySecret.
func WithAccount(a Account) Option { return func(o *options) { o.accounts = append(o.accounts, a) } }

// WithoutAuth disables signature checks: any request is accepted, signed or
// not, and RAM policies are not enforced.
func WithoutAuth() Option { return func(o *options) { o.noAuth = true } }

// WithSeed seeds the random choices of fault injection (probabilities), so a
// run with the same requests in the same order injects the same faults.
func WithSeed(seed int64) Option { return func(o *options) { o.seed = seed } }

// WithClock replaces time.Now for receive times, consumer-group heartbeat
// expiry and signature time checks.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLimits overrides DefaultLimits; zero fields keep their defaults.
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// WithRequestObserver registers fn, called after every request with what it
// was and how it was answered. fn runs on the request's goroutine and must
// not block.
func WithRequestObserver(fn func(RequestInfo)) Option {
	return func(o *options) { o.observer = fn }
}

// The account a Server accepts when none is configured.
const (
	DefaultAccessKeyID     = "slstest-access-key-id"
	DefaultAccessKeySecret = "slstest-access-key-secret"
)

// RequestInfo describes one answered request, for WithRequestObserver.
type RequestInfo struct {
	Op       Operation
	Project  string
	Logstore string
	Shard    int // -1 when the operation names no shard
	// AccessKeyID is the account that signed the request; "" when it was
	// not authenticated (WithoutAuth, or refused before). Tests give each
	// client process its own account to tell their requests apart.
	AccessKeyID string
	Status      int
	ErrorCode   string // "" on success
	RequestID   string
	Duration    time.Duration
}

// NewServer starts a server listening on loopback.
func NewServer(opts ...Option) (*Server, error) {
	o := options{addr: "127.0.0.1:0", now: time.Now, seed: 1}
	for _, fn := range opts {
		fn(&o)
	}
	o.limits = mergeLimits(o.limits)
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("slstest: listen on %s: %w", o.addr, err)
	}
	s := &Server{
		opts:     o,
		ln:       ln,
		endpoint: ln.Addr().String(),
		auth:     newAuthenticator(),
		faults:   newFaultInjector(o.seed),
		codec:    newCodec(o.limits.MaxPutBytes),
		projects: make(map[string]*project),
		idPrefix: uint32(time.Now().UnixNano()),
	}
	s.host, _, _ = net.SplitHostPort(s.endpoint)
	s.quota.Store(&o.quota)
	s.auth.setDisabled(o.noAuth)
	if len(o.accounts) == 0 {
		o.accounts = []Account{{AccessKeyID: DefaultAccessKeyID, AccessKeySecret: DefaultAccessKeySecret}}
	}
	for _, a := range o.accounts {
		s.auth.setAccount(a)
	}
	s.hs = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.closeErr = err
		}
	}()
	return s, nil
}

func mergeLimits(l Limits) Limits {
	d := DefaultLimits
	if l.MaxPutBytes > 0 {
		d.MaxPutBytes = l.MaxPutBytes
	}
	if l.MaxPutLogs > 0 {
		d.MaxPutLogs = l.MaxPutLogs
	}
	if l.MaxPullBytes > 0 {
		d.MaxPullBytes = l.MaxPullBytes
	}
	if l.MaxConsumerGroups > 0 {
		d.MaxConsumerGroups = l.MaxConsumerGroups
	}
	return d
}

// Close stops the server, closing open connections, and waits for its
// goroutines to end.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.hs.Shutdown(ctx); err != nil {
			_ = s.hs.Close()
		}
		s.served.Wait()
	})
	return s.closeErr
}

// Endpoint is the address to give the SDK as its endpoint ("127.0.0.1:port").
// The SDK prefixes the project to it, so it must be used with HTTPClient.
func (s *Server) Endpoint() string { return s.endpoint }

// URL is the endpoint with its scheme ("http://127.0.0.1:port").
func (s *Server) URL() string { return "http://" + s.endpoint }

// HTTPClient returns a client that connects to this server whatever host a
// request names, as the SDK names "<project>.<endpoint>". Give it to
// sls.Client.HTTPClient, producer.ProducerConfig.HTTPClient or
// consumer.LogHubConfig.HTTPClient.
func (s *Server) HTTPClient() *http.Client { return HTTPClientFor(s.endpoint) }

// HTTPClientFor returns a client that sends every request to addr
// ("host:port") whatever host the request names. It reaches an emulator
// served by the slsemu command.
func HTTPClientFor(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		Timeout: 60 * time.Second,
	}
}

// projectFromHost extracts the project from a Host header:
// "<project>.<endpoint>" names a project, the bare endpoint names none.
func (s *Server) projectFromHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	switch {
	case host == s.host || net.ParseIP(host) != nil || host == "localhost":
		return ""
	case strings.HasSuffix(host, "."+s.host):
		return strings.TrimSuffix(host, "."+s.host)
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		return host[:i]
	}
	return host
}

func (s *Server) now() time.Time { return s.opts.now() }

func (s *Server) nextRequestID() string {
	// SLS request ids are 24 upper-case hex digits.
	return fmt.Sprintf("%08X%016X", s.idPrefix, s.requestID.Add(1))
}

// maxBodyBytes bounds any request body the server reads; PutLogs bodies are
// bounded by Limits.MaxPutBytes once decompressed.
const maxBodyBytes = 64 << 20

// ServeHTTP answers one SLS API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rq := &request{
		w:       w,
		r:       r,
		id:      s.nextRequestID(),
		project: s.projectFromHost(r.Host),
		shard:   -1,
		query:   r.URL.Query(),
	}
	reset, e := s.serve(rq)
	switch {
	case reset:
		rq.status = 0
	case e != nil:
		writeError(rq.w, rq.id, e)
		rq.status, rq.code = e.Status, e.Code
	}
	if fn := s.opts.observer; fn != nil {
		fn(RequestInfo{Op: rq.op, Project: rq.project, Logstore: rq.logstore, Shard: rq.shard,
			AccessKeyID: rq.accessKeyID, Status: rq.status, ErrorCode: rq.code, RequestID: rq.id,
			Duration: time.Since(start)})
	}
	if rq.truncate != nil && !reset {
		rq.truncate.finish()
	}
}

// serve handles rq; reset reports that a fault broke the connection.
func (s *Server) serve(rq *request) (reset bool, e *Error) {
	if e := parseRoute(rq); e != nil {
		return false, e
	}
	body, err := readBody(rq.w, rq.r)
	if err != nil {
		return false, errorf(http.StatusBadRequest, CodePostBodyTooLarge, "request body: %v", err)
	}
	rq.body = body
	if rq.op == OpPostLogStoreLogs && s.faults.active() {
		// Route first so that Fault.Shards selects a routed write by the
		// shard it is bound for.
		rq.shard = s.routeShard(rq)
	}
	if reset, e := s.faults.apply(rq); reset || e != nil {
		return reset, e
	}
	acc, e := s.auth.authenticate(rq.r, body, s.now())
	if e != nil {
		return false, e
	}
	if acc != nil {
		rq.accessKeyID = acc.AccessKeyID
	}
	if e := authorize(acc, rq.op.action(), rq.project, rq.logstore, rq.resourceGroup()); e != nil {
		return false, e
	}
	return false, s.handle(rq)
}

// readBody reads a request's body, at most maxBodyBytes. A body of known
// length is read into one buffer of exactly its size (io.ReadAll would grow
// one from 512 bytes, copying as it goes): a PutLogs body kept uncompressed
// holds no spare capacity, and small writes cost both clients the same.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if n := r.ContentLength; n > 0 && n <= maxBodyBytes {
		body := make([]byte, n)
		if _, err := io.ReadFull(rd, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	return io.ReadAll(rd)
}

// request is one request being served.
type request struct {
	w        http.ResponseWriter
	r        *http.Request
	id       string
	op       Operation
	project  string
	logstore string
	group    string // consumer group
	shard    int
	body     []byte
	query    map[string][]string
	status   int
	code     string
	truncate *truncatingWriter // set by a Truncate fault

	accessKeyID string // of the authenticated account
}

// resourceGroup is the consumer group a consumer-group operation acts on,
// for authorization: the one in the path, the one named in a create
// request's body, "*" for listing; "" for other operations.
func (rq *request) resourceGroup() string {
	switch rq.op {
	case OpListConsumerGroup:
		return "*"
	case OpCreateConsumerGroup:
		var body struct {
			Name string `json:"consumerGroup"`
		}
		// A body that does not parse is refused by the handler; here it
		// names no group.
		_ = json.Unmarshal(rq.body, &body)
		return body.Name
	}
	return rq.group
}

func (rq *request) param(name string) string {
	if v := rq.query[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (rq *request) intParam(name string) (int, *Error) {
	v := rq.param(name)
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter %s=%q is not an integer", name, v)
	}
	return n, nil
}

// reply sends a 200 with body and the usual SLS headers.
func (rq *request) reply(contentType string, body []byte, extra func(h http.Header)) {
	h := rq.w.Header()
	h.Set("x-log-requestid", rq.id)
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if extra != nil {
		extra(h)
	}
	rq.status = http.StatusOK
	rq.w.WriteHeader(http.StatusOK)
	_, _ = rq.w.Write(body)
}
