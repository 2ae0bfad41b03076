package slstest

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// handle dispatches a routed, authenticated request.
func (s *Server) handle(rq *request) *Error {
	switch rq.op {
	case OpCreateProject:
		return s.handleCreateProject(rq)
	case OpGetProject:
		return s.handleGetProject(rq)
	case OpUpdateProject:
		return s.handleUpdateProject(rq)
	case OpDeleteProject:
		if e := s.DeleteProject(rq.project); e != nil {
			return e.(*Error)
		}
		rq.reply("application/json", nil, nil)
		return nil
	case OpListProject:
		return s.handleListProject(rq)
	case OpCreateLogStore:
		return s.handleCreateLogStore(rq)
	case OpGetLogStore:
		return s.handleGetLogStore(rq)
	case OpUpdateLogStore:
		return s.handleUpdateLogStore(rq)
	case OpDeleteLogStore:
		if e := s.DeleteLogStore(rq.project, rq.logstore); e != nil {
			return e.(*Error)
		}
		rq.reply("application/json", nil, nil)
		return nil
	case OpListLogStores:
		return s.handleListLogStores(rq)
	case OpListShards:
		infos, e := s.Shards(rq.project, rq.logstore)
		if e != nil {
			return e.(*Error)
		}
		return rq.replyJSON(infos)
	case OpSplitShard:
		return s.handleSplitShard(rq)
	case OpMergeShards:
		infos, e := s.mergeShards(rq.project, rq.logstore, rq.shard)
		if e != nil {
			return e
		}
		return rq.replyJSON(infos)
	case OpPutLogs, OpPostLogStoreLogs:
		return s.handlePutLogs(rq)
	case OpGetCursor:
		return s.handleGetCursor(rq)
	case OpGetCursorTime:
		return s.handleGetCursorTime(rq)
	case OpPullLogs:
		return s.handlePullLogs(rq)
	case OpCreateConsumerGroup:
		return s.handleCreateConsumerGroup(rq)
	case OpUpdateConsumerGroup:
		return s.handleUpdateConsumerGroup(rq)
	case OpDeleteConsumerGroup:
		return s.handleDeleteConsumerGroup(rq)
	case OpListConsumerGroup:
		return s.handleListConsumerGroup(rq)
	case OpHeartBeat:
		return s.handleHeartBeat(rq)
	case OpUpdateCheckPoint:
		return s.handleUpdateCheckPoint(rq)
	case OpGetCheckPoint:
		return s.handleGetCheckPoint(rq)
	}
	return errorf(http.StatusBadRequest, CodeNotSupported, "operation %s is not supported", rq.op)
}

func (rq *request) replyJSON(v any) *Error {
	body, err := json.Marshal(v)
	if err != nil {
		return errorf(http.StatusInternalServerError, CodeInternalServerError, "encode response: %v", err)
	}
	rq.reply("application/json", body, nil)
	return nil
}

// decodeJSON decodes the request body into v, answering SLS's
// PostBodyInvalid when it is not the JSON expected.
func (rq *request) decodeJSON(v any) *Error {
	if err := json.Unmarshal(rq.body, v); err != nil {
		return errorf(http.StatusBadRequest, CodePostBodyInvalid, "%s: request body is not valid JSON: %v", rq.op, err)
	}
	return nil
}

type projectJSON struct {
	Name           string `json:"projectName"`
	Description    string `json:"description"`
	Status         string `json:"status"`
	Owner          string `json:"owner"`
	Region         string `json:"region"`
	CreateTime     string `json:"createTime"`
	LastModifyTime string `json:"lastModifyTime"`
}

func (p *project) json() projectJSON {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := strconv.FormatInt(p.created.Unix(), 10)
	return projectJSON{Name: p.name, Description: p.description, Status: "Normal", Region: "slstest", CreateTime: t, LastModifyTime: t}
}

func (s *Server) handleCreateProject(rq *request) *Error {
	var body struct {
		Name        string `json:"projectName"`
		Description string `json:"description"`
	}
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	if body.Name != "" && body.Name != rq.project {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "projectName %q in the body differs from the host's project %q", body.Name, rq.project)
	}
	if e := s.CreateProject(rq.project, body.Description); e != nil {
		return e.(*Error)
	}
	rq.reply("application/json", nil, nil)
	return nil
}

func (s *Server) handleGetProject(rq *request) *Error {
	p, e := s.getProject(rq.project)
	if e != nil {
		return e
	}
	return rq.replyJSON(p.json())
}

func (s *Server) handleUpdateProject(rq *request) *Error {
	var body struct {
		Description string `json:"description"`
	}
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	p, e := s.getProject(rq.project)
	if e != nil {
		return e
	}
	p.mu.Lock()
	p.description = body.Description
	p.mu.Unlock()
	rq.reply("application/json", nil, nil)
	return nil
}

func (s *Server) handleListProject(rq *request) *Error {
	names := s.projectNames()
	offset, size, e := rq.page(len(names))
	if e != nil {
		return e
	}
	out := struct {
		Projects []projectJSON `json:"projects"`
		Count    int           `json:"count"`
		Total    int           `json:"total"`
	}{Projects: []projectJSON{}, Total: len(names)}
	for _, n := range names[offset : offset+size] {
		if p, e := s.getProject(n); e == nil {
			out.Projects = append(out.Projects, p.json())
		}
	}
	out.Count = len(out.Projects)
	return rq.replyJSON(out)
}

// page reads the offset and size parameters of a list call (size defaults
// to 500, as SLS's) and clamps them to n items.
func (rq *request) page(n int) (offset, size int, e *Error) {
	size = 500
	if rq.param("offset") != "" {
		if offset, e = rq.intParam("offset"); e != nil {
			return 0, 0, e
		}
	}
	if rq.param("size") != "" {
		if size, e = rq.intParam("size"); e != nil {
			return 0, 0, e
		}
	}
	if offset < 0 || size < 0 {
		return 0, 0, errorf(http.StatusBadRequest, CodeParameterInvalid, "offset and size must not be negative")
	}
	offset = min(offset, n)
	size = min(size, n-offset)
	return offset, size, nil
}

type logstoreJSON struct {
	Name string `json:"logstoreName"`
	LogStoreConfig
	CreateTime     int64 `json:"createTime"`
	LastModifyTime int64 `json:"lastModifyTime"`
}

func (s *Server) handleCreateLogStore(rq *request) *Error {
	var body logstoreJSON
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	if body.TTL <= 0 {
		body.TTL = 30
	}
	return orReply(rq, s.createLogStore(rq.project, body.Name, body.LogStoreConfig))
}

func orReply(rq *request, e *Error) *Error {
	if e == nil {
		rq.reply("application/json", nil, nil)
	}
	return e
}

func (s *Server) handleGetLogStore(rq *request) *Error {
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return e
	}
	ls.mu.RLock()
	out := logstoreJSON{Name: ls.name, LogStoreConfig: ls.config, CreateTime: ls.created.Unix(), LastModifyTime: ls.modified.Unix()}
	out.ShardCount = len(ls.readWriteShards())
	ls.mu.RUnlock()
	return rq.replyJSON(out)
}

func (s *Server) handleUpdateLogStore(rq *request) *Error {
	var body logstoreJSON
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return e
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	// The shard layout changes only through split and merge.
	body.ShardCount = ls.config.ShardCount
	if body.TTL <= 0 {
		body.TTL = ls.config.TTL
	}
	ls.config = body.LogStoreConfig
	ls.modified = s.now()
	rq.reply("application/json", nil, nil)
	return nil
}

func (s *Server) handleListLogStores(rq *request) *Error {
	p, e := s.getProject(rq.project)
	if e != nil {
		return e
	}
	p.mu.RLock()
	names := make([]string, 0, len(p.logstores))
	for n := range p.logstores {
		names = append(names, n)
	}
	p.mu.RUnlock()
	sort.Strings(names)
	offset, size, e := rq.page(len(names))
	if e != nil {
		return e
	}
	return rq.replyJSON(struct {
		Count     int      `json:"count"`
		Total     int      `json:"total"`
		LogStores []string `json:"logstores"`
	}{size, len(names), names[offset : offset+size]})
}

func (s *Server) handleSplitShard(rq *request) *Error {
	n := 2
	if rq.param("shardCount") != "" {
		var e *Error
		if n, e = rq.intParam("shardCount"); e != nil {
			return e
		}
	}
	infos, e := s.splitShard(rq.project, rq.logstore, rq.shard, rq.param("key"), n)
	if e != nil {
		return e
	}
	return rq.replyJSON(infos)
}

// shardForRead looks up the shard a cursor call names.
func (s *Server) shardForRead(rq *request) (*shard, *Error) {
	return s.getShard(rq.project, rq.logstore, rq.shard)
}

func (s *Server) handleGetCursor(rq *request) *Error {
	sh, e := s.shardForRead(rq)
	if e != nil {
		return e
	}
	begin, end, _ := sh.bounds()
	var c int64
	switch from := rq.param("from"); from {
	case "begin":
		c = begin
	case "end":
		c = end
	default:
		t, err := strconv.ParseInt(from, 10, 64)
		if err != nil || t < 0 {
			return errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter from=%q must be begin, end or unix seconds", from)
		}
		// Seconds past the year 2262 overflow int64 nanoseconds; every
		// group was received before them.
		ns := int64(math.MaxInt64)
		if t < math.MaxInt64/int64(time.Second) {
			ns = t * int64(time.Second)
		}
		c = sh.cursorAt(ns)
	}
	return rq.replyJSON(struct {
		Cursor string `json:"cursor"`
	}{encodeCursor(c)})
}

// parseCursor decodes cursor parameter name and checks it lies within the
// shard's [begin, end].
func (rq *request) parseCursor(sh *shard, name string) (int64, *Error) {
	raw := rq.param(name)
	v, ok := decodeCursor(raw)
	begin, end, _ := sh.bounds()
	if !ok || v < begin || v > end {
		return 0, errorf(http.StatusBadRequest, CodeInvalidCursor, "%s %q is not a cursor of shard %d", name, raw, sh.id)
	}
	return v, nil
}

func (s *Server) handleGetCursorTime(rq *request) *Error {
	sh, e := s.shardForRead(rq)
	if e != nil {
		return e
	}
	c, e := rq.parseCursor(sh, "cursor")
	if e != nil {
		return e
	}
	return rq.replyJSON(struct {
		CursorTime int64 `json:"cursor_time"`
	}{sh.receiveTime(c).Unix()})
}
