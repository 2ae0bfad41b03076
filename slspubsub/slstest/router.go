package slstest

import (
	"net/http"
	"strconv"
	"strings"
)

// Operation names an SLS API call. The names are SLS's own; they select
// faults (Fault.Op) and are what RequestInfo reports.
type Operation string

// The operations the emulator serves.
const (
	OpCreateProject       Operation = "CreateProject"
	OpGetProject          Operation = "GetProject"
	OpUpdateProject       Operation = "UpdateProject"
	OpDeleteProject       Operation = "DeleteProject"
	OpListProject         Operation = "ListProject"
	OpCreateLogStore      Operation = "CreateLogStore"
	OpGetLogStore         Operation = "GetLogStore"
	OpUpdateLogStore      Operation = "UpdateLogStore"
	OpDeleteLogStore      Operation = "DeleteLogStore"
	OpListLogStores       Operation = "ListLogStores"
	OpPutLogs             Operation = "PutLogs"          // POST /logstores/{ls} and /shards/lb
	OpPostLogStoreLogs    Operation = "PostLogStoreLogs" // POST /logstores/{ls}/shards/route?key=
	OpListShards          Operation = "ListShards"
	OpSplitShard          Operation = "SplitShard"
	OpMergeShards         Operation = "MergeShards"
	OpGetCursor           Operation = "GetCursor"
	OpGetCursorTime       Operation = "GetCursorTime"
	OpPullLogs            Operation = "PullLogs"
	OpCreateConsumerGroup Operation = "CreateConsumerGroup"
	OpUpdateConsumerGroup Operation = "UpdateConsumerGroup"
	OpDeleteConsumerGroup Operation = "DeleteConsumerGroup"
	OpListConsumerGroup   Operation = "ListConsumerGroup"
	OpHeartBeat           Operation = "ConsumerGroupHeartBeat"
	OpUpdateCheckPoint    Operation = "ConsumerGroupUpdateCheckPoint"
	OpGetCheckPoint       Operation = "GetConsumerGroupCheckPoint"
)

// action is the RAM action that guards op.
func (op Operation) action() string {
	switch op {
	case OpPutLogs, OpPostLogStoreLogs:
		return "log:PostLogStoreLogs"
	case OpGetCursor, OpGetCursorTime, OpPullLogs:
		return "log:GetCursorOrData"
	}
	return "log:" + string(op)
}

// parseRoute maps method and path to the operation and its names. It checks
// the request's shape only; whether the named things exist is for the
// handler to say.
func parseRoute(rq *request) *Error {
	method := rq.r.Method
	parts := strings.Split(strings.Trim(rq.r.URL.Path, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		parts = nil
	}
	bad := func() *Error {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "unsupported request: %s %s", method, rq.r.URL.Path)
	}
	needProject := func(op Operation) *Error {
		rq.op = op
		if rq.project == "" {
			return errorf(http.StatusBadRequest, CodeProjectNotExist, "the request names no project (host %q)", rq.r.Host)
		}
		return nil
	}
	switch len(parts) {
	case 0:
		switch method {
		case http.MethodGet:
			if rq.project == "" {
				rq.op = OpListProject
				return nil
			}
			return needProject(OpGetProject)
		case http.MethodPost:
			return needProject(OpCreateProject)
		case http.MethodPut:
			return needProject(OpUpdateProject)
		case http.MethodDelete:
			return needProject(OpDeleteProject)
		}
		return bad()
	}
	if parts[0] != "logstores" {
		return bad()
	}
	if len(parts) == 1 {
		switch method {
		case http.MethodGet:
			return needProject(OpListLogStores)
		case http.MethodPost:
			return needProject(OpCreateLogStore)
		}
		return bad()
	}
	rq.logstore = parts[1]
	switch {
	case len(parts) == 2:
		switch method {
		case http.MethodGet:
			return needProject(OpGetLogStore)
		case http.MethodPut:
			return needProject(OpUpdateLogStore)
		case http.MethodDelete:
			return needProject(OpDeleteLogStore)
		case http.MethodPost:
			return needProject(OpPutLogs)
		}
	case parts[2] == "shards":
		return parseShardRoute(rq, parts[3:], needProject, bad)
	case parts[2] == "consumergroups":
		return parseGroupRoute(rq, parts[3:], needProject, bad)
	}
	return bad()
}

func parseShardRoute(rq *request, rest []string, needProject func(Operation) *Error, bad func() *Error) *Error {
	method := rq.r.Method
	if len(rest) == 0 {
		if method == http.MethodGet {
			return needProject(OpListShards)
		}
		return bad()
	}
	if len(rest) != 1 {
		return bad()
	}
	switch rest[0] {
	case "route":
		if method == http.MethodPost {
			return needProject(OpPostLogStoreLogs)
		}
		return bad()
	case "lb":
		if method == http.MethodPost {
			return needProject(OpPutLogs)
		}
		return bad()
	}
	id, err := strconv.Atoi(rest[0])
	if err != nil || id < 0 {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "shard id %q is not a shard number", rest[0])
	}
	rq.shard = id
	switch method {
	case http.MethodGet:
		switch t := rq.param("type"); t {
		case "cursor":
			return needProject(OpGetCursor)
		case "cursor_time":
			return needProject(OpGetCursorTime)
		case "logs":
			return needProject(OpPullLogs)
		default:
			return errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter type=%q is not one of cursor, cursor_time, logs", t)
		}
	case http.MethodPost:
		switch a := rq.param("action"); a {
		case "split":
			return needProject(OpSplitShard)
		case "merge":
			return needProject(OpMergeShards)
		default:
			return errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter action=%q is not one of split, merge", a)
		}
	}
	return bad()
}

func parseGroupRoute(rq *request, rest []string, needProject func(Operation) *Error, bad func() *Error) *Error {
	method := rq.r.Method
	if len(rest) == 0 {
		switch method {
		case http.MethodGet:
			return needProject(OpListConsumerGroup)
		case http.MethodPost:
			return needProject(OpCreateConsumerGroup)
		}
		return bad()
	}
	if len(rest) != 1 || rest[0] == "" {
		return bad()
	}
	rq.group = rest[0]
	switch method {
	case http.MethodGet:
		return needProject(OpGetCheckPoint)
	case http.MethodPut:
		return needProject(OpUpdateConsumerGroup)
	case http.MethodDelete:
		return needProject(OpDeleteConsumerGroup)
	case http.MethodPost:
		switch t := rq.param("type"); t {
		case "heartbeat":
			return needProject(OpHeartBeat)
		case "checkpoint":
			return needProject(OpUpdateCheckPoint)
		default:
			return errorf(http.StatusBadRequest, CodeParameterInvalid, "parameter type=%q is not one of heartbeat, checkpoint", t)
		}
	}
	return bad()
}
