package slstest

import (
	"net/http"
	"sort"
	"strconv"
	"time"
)

// consumerGroupJSON is the wire shape of a consumer group. CreateConsumerGroup
// names it "consumerGroup", ListConsumerGroup answers with "name".
type consumerGroupJSON struct {
	Name    string `json:"consumerGroup,omitempty"`
	Timeout int    `json:"timeout"`
	Order   bool   `json:"order"`
}

func (s *Server) handleCreateConsumerGroup(rq *request) *Error {
	var body consumerGroupJSON
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	if body.Name == "" {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "consumerGroup name is missing")
	}
	if body.Timeout <= 0 || body.Timeout > 86400 {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "timeout %d must be between 1 and 86400 seconds", body.Timeout)
	}
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return e
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if _, ok := ls.groups[body.Name]; ok {
		return errorf(http.StatusBadRequest, CodeConsumerGroupAlreadyExist, "consumer group %s already exists", body.Name)
	}
	if len(ls.groups) >= s.opts.limits.MaxConsumerGroups {
		return errorf(http.StatusBadRequest, CodeConsumerGroupQuotaExceed, "logstore %s already has %d consumer groups", rq.logstore, len(ls.groups))
	}
	ls.groups[body.Name] = newConsumerGroup(body.Name, time.Duration(body.Timeout)*time.Second, body.Order)
	rq.reply("application/json", nil, nil)
	return nil
}

// groupOf looks up the request's logstore and consumer group and locks the
// logstore; the caller must call the returned unlock.
func (s *Server) groupOf(rq *request) (*logstore, *consumerGroup, func(), *Error) {
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return nil, nil, nil, e
	}
	ls.mu.Lock()
	g, ok := ls.groups[rq.group]
	if !ok {
		ls.mu.Unlock()
		return nil, nil, nil, errGroupNotExist(rq.group)
	}
	return ls, g, ls.mu.Unlock, nil
}

func (s *Server) handleUpdateConsumerGroup(rq *request) *Error {
	var body struct {
		Order   *bool `json:"order"`
		Timeout int   `json:"timeout"`
	}
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	if body.Timeout < 0 || body.Timeout > 86400 {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "timeout %d must be between 1 and 86400 seconds", body.Timeout)
	}
	_, g, unlock, e := s.groupOf(rq)
	if e != nil {
		return e
	}
	defer unlock()
	order := g.InOrder
	if body.Order != nil {
		order = *body.Order
	}
	g.update(time.Duration(body.Timeout)*time.Second, order)
	rq.reply("application/json", nil, nil)
	return nil
}

func (s *Server) handleDeleteConsumerGroup(rq *request) *Error {
	ls, _, unlock, e := s.groupOf(rq)
	if e != nil {
		return e
	}
	defer unlock()
	delete(ls.groups, rq.group)
	rq.reply("application/json", nil, nil)
	return nil
}

func (s *Server) handleListConsumerGroup(rq *request) *Error {
	ls, e := s.getLogStore(rq.project, rq.logstore)
	if e != nil {
		return e
	}
	type listed struct {
		Name    string `json:"name"`
		Timeout int    `json:"timeout"`
		Order   bool   `json:"order"`
	}
	ls.mu.RLock()
	out := make([]listed, 0, len(ls.groups))
	for _, g := range ls.groups {
		out = append(out, listed{Name: g.Name, Timeout: int(g.Timeout / time.Second), Order: g.InOrder})
	}
	ls.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return rq.replyJSON(out)
}

func (rq *request) consumer() (string, *Error) {
	c := rq.param("consumer")
	if c == "" {
		return "", errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter consumer is missing")
	}
	return c, nil
}

func (s *Server) handleHeartBeat(rq *request) *Error {
	consumer, e := rq.consumer()
	if e != nil {
		return e
	}
	var held []int
	if e := rq.decodeJSON(&held); e != nil {
		return e
	}
	ls, g, unlock, e := s.groupOf(rq)
	if e != nil {
		return e
	}
	assigned := g.heartbeat(consumer, held, ls.cgShards(), s.now())
	unlock()
	return rq.replyJSON(assigned)
}

func (s *Server) handleUpdateCheckPoint(rq *request) *Error {
	consumer, e := rq.consumer()
	if e != nil {
		return e
	}
	force := rq.param("forceSuccess") == "true"
	var body struct {
		Checkpoint string `json:"checkpoint"`
		Shard      *int   `json:"shard"`
	}
	if e := rq.decodeJSON(&body); e != nil {
		return e
	}
	if body.Shard == nil {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "shard is missing from the checkpoint body")
	}
	ls, g, unlock, e := s.groupOf(rq)
	if e != nil {
		return e
	}
	defer unlock()
	if sh := ls.shardByID(*body.Shard); sh != nil {
		v, ok := decodeCursor(body.Checkpoint)
		begin, end, _ := sh.bounds()
		if !ok || v < begin || v > end {
			return errorf(http.StatusBadRequest, CodeInvalidCursor, "checkpoint %q is not a cursor of shard %d", body.Checkpoint, *body.Shard)
		}
	}
	if e := g.updateCheckpoint(consumer, *body.Shard, body.Checkpoint, force, ls.cgShards(), s.now()); e != nil {
		return e
	}
	rq.reply("application/json", nil, nil)
	return nil
}

func (s *Server) handleGetCheckPoint(rq *request) *Error {
	ls, g, unlock, e := s.groupOf(rq)
	if e != nil {
		return e
	}
	entries := g.checkpoints(ls.cgShards())
	unlock()
	if v := rq.param("shard"); v != "" {
		id, err := strconv.Atoi(v)
		if err != nil {
			return errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter shard=%q is not a shard number", v)
		}
		kept := entries[:0]
		for _, c := range entries {
			if c.Shard == id {
				kept = append(kept, c)
			}
		}
		entries = kept
	}
	return rq.replyJSON(entries)
}
