package slstest

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/pierrec/lz4/v4"
)

// handlePutLogs serves PutLogs (load-balanced, /logstores/{ls} and
// /shards/lb) and PostLogStoreLogs (/shards/route?key=<hash>[&seqid=<n>]).
func (s *Server) handlePutLogs(rq *request) *Error {
	data, logs, e := s.decodePutBody(rq)
	if e != nil {
		return e
	}
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return e
	}
	var key string
	var seq int64
	hasSeq := false
	if rq.op == OpPostLogStoreLogs {
		k, err := normalizeHashKey(rq.param("key"))
		if err != nil {
			return errorf(http.StatusBadRequest, CodeInvalidKey, "%v", err)
		}
		key = k
		if v := rq.param("seqid"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter seqid=%q must be a non-negative integer", v)
			}
			seq, hasSeq = n, true
		}
	}
	if logs == 0 {
		rq.reply("application/json", nil, nil)
		return nil
	}
	g := storedGroup{data: data, received: s.now().UnixNano(), logs: int32(logs)}
	if hasSeq {
		// The sequence check and the append form one step per logstore,
		// so that two retries of one batch cannot both be written.
		ls.mu.Lock()
		defer ls.mu.Unlock()
		if last, ok := ls.seqIDs[key]; ok && seq <= last {
			return errorf(http.StatusBadRequest, CodeInvalidSequenceID, "sequence id %d for hash key %s is not greater than the last written, %d", seq, key, last)
		}
	} else {
		ls.mu.RLock()
		defer ls.mu.RUnlock()
	}
	var sh *shard
	if key != "" {
		sh = ls.route(key)
	} else if rw := ls.readWriteShards(); len(rw) > 0 {
		sh = rw[rand.IntN(len(rw))]
	}
	if sh == nil {
		return errorf(http.StatusInternalServerError, CodeInternalServerError, "no readwrite shard of logstore %s accepts key %q", rq.logstore, key)
	}
	rq.shard = sh.id
	if e := sh.quota.admitWrite(s.now(), len(data)); e != nil {
		return e
	}
	if _, e := sh.appendGroup(g); e != nil {
		return e
	}
	if hasSeq {
		ls.seqIDs[key] = seq
	}
	rq.reply("application/json", nil, nil)
	return nil
}

// routeShard returns the id of the readwrite shard a PostLogStoreLogs
// request's key routes to, or -1 when it cannot be routed.
func (s *Server) routeShard(rq *request) int {
	key, err := normalizeHashKey(rq.param("key"))
	if err != nil {
		return -1
	}
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return -1
	}
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if sh := ls.route(key); sh != nil {
		return sh.id
	}
	return -1
}

// decodePutBody checks a PutLogs request's headers and body and returns
// the decompressed, validated LogGroup bytes and their number of logs.
func (s *Server) decodePutBody(rq *request) ([]byte, int, *Error) {
	h := rq.r.Header
	if ct := h.Get("Content-Type"); ct != "application/x-protobuf" {
		return nil, 0, errorf(http.StatusBadRequest, CodeInvalidContentType, "Content-Type %q is not application/x-protobuf", ct)
	}
	rawHeader := h.Get("x-log-bodyrawsize")
	if rawHeader == "" {
		return nil, 0, errorf(http.StatusBadRequest, CodeMissingBodyRawSize, "x-log-bodyrawsize header is missing")
	}
	raw, err := strconv.Atoi(rawHeader)
	if err != nil || raw < 0 {
		return nil, 0, errorf(http.StatusBadRequest, CodeInvalidBodyRawSize, "x-log-bodyrawsize %q is not a size", rawHeader)
	}
	limits := s.opts.limits
	if raw > limits.MaxPutBytes {
		return nil, 0, errorf(http.StatusBadRequest, CodePostBodyTooLarge, "body of %d bytes exceeds the limit of %d bytes", raw, limits.MaxPutBytes)
	}
	data := rq.body
	switch ct := strings.ToLower(h.Get("x-log-compresstype")); ct {
	case "":
		if len(data) != raw {
			return nil, 0, errorf(http.StatusBadRequest, CodeInvalidBodyRawSize, "body has %d bytes, x-log-bodyrawsize says %d", len(data), raw)
		}
		data = data[:len(data):len(data)]
	case "lz4", "zstd":
		if data, err = s.codec.decompress(ct, data, raw); err != nil {
			return nil, 0, errorf(http.StatusBadRequest, CodePostBodyUncompressError, "%v", err)
		}
	default:
		return nil, 0, errorf(http.StatusBadRequest, CodeInvalidCompressType, "x-log-compresstype %q is not lz4 or zstd", ct)
	}
	logs, err := scanLogGroup(data)
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, CodePostBodyInvalid, "the body is not a valid LogGroup: %v", err)
	}
	if logs > limits.MaxPutLogs {
		return nil, 0, errorf(http.StatusBadRequest, CodePostBodyTooLarge, "%d logs exceed the limit of %d per request", logs, limits.MaxPutLogs)
	}
	return data, logs, nil
}

var pullBufs = sync.Pool{New: func() any { return new([]byte) }}

// handlePullLogs serves PullLogs: up to count LogGroups from cursor (and
// before end_cursor), as a compressed LogGroupList.
func (s *Server) handlePullLogs(rq *request) *Error {
	sh, e := s.shardForRead(rq)
	if e != nil {
		return e
	}
	from, e := rq.parseCursor(sh, "cursor")
	if e != nil {
		return e
	}
	_, stop, _ := sh.bounds()
	if rq.param("end_cursor") != "" {
		if stop, e = rq.parseCursor(sh, "end_cursor"); e != nil {
			return e
		}
	}
	count, e := rq.intParam("count")
	if e != nil {
		return e
	}
	if count < 1 || count > 1000 {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "count %d must be between 1 and 1000", count)
	}
	method := "lz4"
	if enc := rq.r.Header.Get("Accept-Encoding"); strings.Contains(enc, "zstd") && !strings.Contains(enc, "lz4") {
		method = "zstd"
	}
	groups := sh.read(from, stop, count, s.opts.limits.MaxPullBytes)
	rawSize := 0
	for _, g := range groups {
		rawSize += listEntrySize(g.data)
	}
	if e := sh.quota.admitRead(s.now(), rawSize); e != nil {
		return e
	}
	next := from + int64(len(groups))
	if len(groups) == 0 {
		// End of the shard (or of end_cursor): SLS answers with the request
		// cursor as the next cursor, no groups and an empty body.
		rq.reply("application/x-protobuf", nil, func(h http.Header) {
			h.Set("x-log-cursor", encodeCursor(from))
			h.Set("x-log-count", "0")
			h.Set("x-log-bodyrawsize", "0")
		})
		return nil
	}
	bufp := pullBufs.Get().(*[]byte)
	defer pullBufs.Put(bufp)
	raw := (*bufp)[:0]
	if need := rawSize + lz4.CompressBlockBound(rawSize); cap(raw) < need {
		raw = make([]byte, 0, need)
	}
	for _, g := range groups {
		raw = appendLogGroupListEntry(raw, g.data)
	}
	body, err := s.codec.compress(method, raw[len(raw):], raw)
	*bufp = raw
	if err != nil {
		return errorf(http.StatusInternalServerError, CodeInternalServerError, "compress response: %v", err)
	}
	rq.reply("application/x-protobuf", body, func(h http.Header) {
		h.Set("x-log-cursor", encodeCursor(next))
		h.Set("x-log-count", strconv.Itoa(len(groups)))
		h.Set("x-log-bodyrawsize", strconv.Itoa(rawSize))
		h.Set("x-log-compresstype", method)
		h.Set("x-log-read-last-cursor", strconv.FormatInt(next-1, 10))
	})
	return nil
}
