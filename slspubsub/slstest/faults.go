package slstest

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Fault describes trouble to inject into the requests it matches. A request
// matches when every non-zero selector (Op, Project, Logstore, Shards)
// matches it. Of the actions, Latency combines with the others; at most one
// of Status, Reset and Truncate should be set.
//
// Faults are deterministic: the Nth matching request meets the same fate on
// every run with the same seed (WithSeed) and the same order of requests.
type Fault struct {
	Op       Operation // "" matches every operation
	Project  string    // "" matches every project
	Logstore string    // "" matches every logstore
	Shards   []int     // nil matches every shard (and operations naming none)

	// Skip lets the first Skip matching requests through untouched.
	Skip int
	// Times is how many requests the fault hits before it retires; 0 means
	// no limit.
	Times int
	// Probability, when in (0, 1), hits a matching request with that
	// chance, drawn from the server's seeded source; 0 hits every one.
	Probability float64

	// Latency delays the request before it is handled (or answered with the
	// fault's error).
	Latency time.Duration
	// Status, when non-zero, answers the request with this HTTP status and
	// SLS error Code / Message instead of handling it (e.g. 500
	// InternalServerError, 503 ServerBusy, 403 ShardWriteQuotaExceed).
	Status  int
	Code    string
	Message string
	// Reset closes the connection without answering (a TCP reset).
	Reset bool
	// Truncate handles the request but sends only the first half of the
	// response body before closing the connection, so the client reads a
	// short body.
	Truncate bool
}

// ErrorFault is a Fault that answers every op request with an SLS error.
func ErrorFault(op Operation, status int, code string) Fault {
	return Fault{Op: op, Status: status, Code: code, Message: "injected by slstest"}
}

type faultEntry struct {
	id   uint64
	f    Fault
	seen int // matching requests so far
	hits int
}

// faultInjector holds the active faults; mu serializes the random draws so
// they follow the order requests arrive in.
type faultInjector struct {
	mu     sync.Mutex
	rng    *rand.Rand
	nextID uint64
	faults []*faultEntry
	count  atomic.Int32 // len(faults), read without the lock
}

// active reports whether any fault is injected; requests skip the fault
// machinery entirely when none is.
func (fi *faultInjector) active() bool { return fi.count.Load() > 0 }

func newFaultInjector(seed int64) *faultInjector {
	return &faultInjector{rng: rand.New(rand.NewPCG(uint64(seed), 0x5157e57))}
}

// InjectFault activates f and returns a function that removes it.
func (s *Server) InjectFault(f Fault) (remove func()) {
	fi := s.faults
	fi.mu.Lock()
	fi.nextID++
	id := fi.nextID
	fi.faults = append(fi.faults, &faultEntry{id: id, f: f})
	fi.count.Store(int32(len(fi.faults)))
	fi.mu.Unlock()
	return func() {
		fi.mu.Lock()
		defer fi.mu.Unlock()
		fi.faults = slices.DeleteFunc(fi.faults, func(e *faultEntry) bool { return e.id == id })
		fi.count.Store(int32(len(fi.faults)))
	}
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	s.faults.faults = nil
	s.faults.count.Store(0)
	s.faults.mu.Unlock()
}

func (f *Fault) matches(rq *request) bool {
	return (f.Op == "" || f.Op == rq.op) &&
		(f.Project == "" || f.Project == rq.project) &&
		(f.Logstore == "" || f.Logstore == rq.logstore) &&
		(f.Shards == nil || slices.Contains(f.Shards, rq.shard))
}

// pick returns the faults that hit rq, updating their counters.
func (fi *faultInjector) pick(rq *request) []Fault {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	var hit []Fault
	for _, e := range fi.faults {
		if !e.f.matches(rq) {
			continue
		}
		e.seen++
		if e.seen <= e.f.Skip || (e.f.Times > 0 && e.hits >= e.f.Times) {
			continue
		}
		if p := e.f.Probability; p > 0 && p < 1 && fi.rng.Float64() >= p {
			continue
		}
		e.hits++
		hit = append(hit, e.f)
	}
	return hit
}

// apply injects the faults hitting rq. It returns done when it has already
// dealt with the connection (a reset), or the error to answer with.
func (fi *faultInjector) apply(rq *request) (done bool, e *Error) {
	if !fi.active() {
		return false, nil
	}
	for _, f := range fi.pick(rq) {
		if f.Latency > 0 {
			t := time.NewTimer(f.Latency)
			select {
			case <-t.C:
			case <-rq.r.Context().Done():
				t.Stop()
			}
		}
		switch {
		case f.Reset:
			resetConnection(rq.w)
			return true, nil
		case f.Status != 0:
			msg := f.Message
			if msg == "" {
				msg = "injected by slstest"
			}
			return false, errorf(f.Status, f.Code, "%s", msg)
		case f.Truncate:
			rq.truncate = &truncatingWriter{ResponseWriter: rq.w}
			rq.w = rq.truncate
		}
	}
	return false, nil
}

// resetConnection closes the request's connection with a TCP reset.
func resetConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// truncatingWriter buffers a response and, in finish, sends its headers
// (with the full Content-Length) and only half of its body, then aborts the
// connection.
type truncatingWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (t *truncatingWriter) WriteHeader(status int) { t.status = status }

func (t *truncatingWriter) Write(p []byte) (int, error) { return t.body.Write(p) }

func (t *truncatingWriter) finish() {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	body := t.body.Bytes()
	t.ResponseWriter.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	t.ResponseWriter.WriteHeader(t.status)
	_, _ = t.ResponseWriter.Write(body[:len(body)/2])
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler) // net/http closes the connection
}
