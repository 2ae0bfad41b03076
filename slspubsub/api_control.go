package slspubsub

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// This file is the control plane of the API client: shards, cursors,
// logstores, consumer groups and checkpoints, with the SDK's wire format
// (log_store.go, client_store.go, log_project.go, client_consumer.go) and a
// context. None of these calls retries.

// doJSON sends a request and, when out is not nil, decodes the JSON answer
// into it.
func (c *apiClient) doJSON(ctx context.Context, op, method, uri string, headers map[string]string, body []byte, out any) error {
	resp, err := c.do(ctx, op, method, uri, headers, body)
	if err != nil {
		return err
	}
	if out == nil {
		drainAndClose(resp) // the 200 is the answer; a body cut short changes nothing
		return nil
	}
	defer resp.Body.Close()
	return c.decodeBody(op, uri, resp, out)
}

// jsonHeaders returns the headers of a request whose body is JSON. The
// consumer-group calls send x-log-bodyrawsize 0 whatever their body, as the
// SDK does.
func jsonHeaders(rawSize int) map[string]string {
	return map[string]string{
		headerBodyRawSize: strconv.Itoa(rawSize),
		headerContentType: contentTypeJSON,
	}
}

func logstoreURI(logstore string) string { return "/logstores/" + url.PathEscape(logstore) }

func shardURI(logstore string, shard int) string {
	return logstoreURI(logstore) + "/shards/" + strconv.Itoa(shard)
}

func groupURI(logstore, group string) string {
	return logstoreURI(logstore) + "/consumergroups/" + url.PathEscape(group)
}

// listShards returns the logstore's shards, readwrite and readonly, with
// their hash ranges (GET /logstores/{ls}/shards).
func (c *apiClient) listShards(ctx context.Context, logstore string) ([]sls.Shard, error) {
	var shards []sls.Shard
	err := c.doJSON(ctx, opListShards, http.MethodGet, logstoreURI(logstore)+"/shards", map[string]string{}, nil, &shards)
	return shards, err
}

// getCursor returns the cursor of a shard at from: "begin", "end", or a
// unix time in seconds (decimal), meaning the first LogGroup received at or
// after it (GET /logstores/{ls}/shards/{id}?type=cursor&from=..).
func (c *apiClient) getCursor(ctx context.Context, logstore string, shard int, from string) (string, error) {
	uri := shardURI(logstore, shard) + "?type=cursor&from=" + url.QueryEscape(from)
	var out struct {
		Cursor string `json:"cursor"`
	}
	resp, err := c.do(ctx, opGetCursor, http.MethodGet, uri, map[string]string{}, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := c.decodeBody(opGetCursor, uri, resp, &out); err != nil {
		return "", err
	}
	if out.Cursor == "" {
		return "", c.badResponse(opGetCursor, uri, resp, "the answer has no cursor")
	}
	return out.Cursor, nil
}

// cursorValue is getCursor decoded to the cursor's int64 value; a cursor
// that does not decode is a BadResponse.
func (c *apiClient) cursorValue(ctx context.Context, logstore string, shard int, from string) (int64, error) {
	cur, err := c.getCursor(ctx, logstore, shard, from)
	if err != nil {
		return 0, err
	}
	v, ok := cursorToInt64(cur)
	if !ok {
		return 0, &Error{Op: opGetCursor, Logstore: logstore, Code: CodeBadResponse, Message: "invalid cursor " + cur}
	}
	return v, nil
}

// getCursorTime returns the server receive time (whole seconds) of the
// LogGroup at cursor (GET /logstores/{ls}/shards/{id}?cursor=..&type=cursor_time).
func (c *apiClient) getCursorTime(ctx context.Context, logstore string, shard int, cursor string) (time.Time, error) {
	uri := shardURI(logstore, shard) + "?cursor=" + url.QueryEscape(cursor) + "&type=cursor_time"
	var out struct {
		CursorTime *int64 `json:"cursor_time"`
	}
	resp, err := c.do(ctx, opGetCursorTime, http.MethodGet, uri, map[string]string{}, nil)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	if err := c.decodeBody(opGetCursorTime, uri, resp, &out); err != nil {
		return time.Time{}, err
	}
	if out.CursorTime == nil {
		return time.Time{}, c.badResponse(opGetCursorTime, uri, resp, "the answer has no cursor_time")
	}
	return time.Unix(*out.CursorTime, 0), nil
}

// decodeBody reads a JSON answer into out.
func (c *apiClient) decodeBody(op, uri string, resp *http.Response, out any) error {
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONBody))
	if err != nil {
		return fmt.Errorf("slspubsub: %s %s: read response: %w", op, c.target(uri), err)
	}
	if err := json.Unmarshal(buf, out); err != nil {
		return c.badResponse(op, uri, resp, "the answer is not the expected JSON (%v): %s", err, snippet(buf))
	}
	return nil
}

// createLogStore creates a logstore with ttlDays of retention and shards
// readwrite shards, without automatic splitting (POST /logstores). An
// existing logstore fails with CodeLogStoreAlreadyExist.
func (c *apiClient) createLogStore(ctx context.Context, name string, ttlDays, shards int) error {
	// The body of the SDK's LogProject.CreateLogStore, field for field.
	body, err := json.Marshal(struct {
		Name          string `json:"logstoreName"`
		TTL           int    `json:"ttl"`
		ShardCount    int    `json:"shardCount"`
		AutoSplit     bool   `json:"autoSplit"`
		MaxSplitShard int    `json:"maxSplitShard"`
		WebTracking   bool   `json:"enable_tracking"`
	}{Name: name, TTL: ttlDays, ShardCount: shards})
	if err != nil {
		return fmt.Errorf("slspubsub: %s %s/%s: %w", opCreateLogStore, c.project, name, err)
	}
	h := jsonHeaders(len(body))
	h["Accept-Encoding"] = "deflate" // as the SDK sends; SLS does not compress JSON answers
	err = c.doJSON(ctx, opCreateLogStore, http.MethodPost, "/logstores", h, body, nil)
	return withLogstore(err, name)
}

// withLogstore names the logstore in an *Error of a project-level call.
func withLogstore(err error, logstore string) error {
	if e, ok := err.(*Error); ok && e.Logstore == "" {
		e.Logstore = logstore
	}
	return err
}

// getLogStore returns nil when the logstore exists, an *Error with
// CodeLogStoreNotExist when it does not (GET /logstores/{ls}).
func (c *apiClient) getLogStore(ctx context.Context, name string) error {
	return c.doJSON(ctx, opGetLogStore, http.MethodGet, logstoreURI(name), map[string]string{}, nil, nil)
}

// createConsumerGroup creates g on logstore (POST
// /logstores/{ls}/consumergroups, body {"consumerGroup","timeout","order"}).
// An existing group fails with CodeConsumerGroupAlreadyExist.
func (c *apiClient) createConsumerGroup(ctx context.Context, logstore string, g sls.ConsumerGroup) error {
	body, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("slspubsub: %s %s/%s: %w", opCreateConsumerGroup, c.project, logstore, err)
	}
	return c.doJSON(ctx, opCreateConsumerGroup, http.MethodPost, logstoreURI(logstore)+"/consumergroups", jsonHeaders(0), body, nil)
}

// updateConsumerGroup sets g's order and, when g.Timeout > 0, its timeout
// (PUT /logstores/{ls}/consumergroups/{cg}).
func (c *apiClient) updateConsumerGroup(ctx context.Context, logstore string, g sls.ConsumerGroup) error {
	update := map[string]any{"order": g.InOrder} // a map, as the SDK: keys in sorted order
	if g.Timeout > 0 {
		update["timeout"] = g.Timeout
	}
	body, err := json.Marshal(update)
	if err != nil {
		return fmt.Errorf("slspubsub: %s %s/%s: %w", opUpdateConsumerGroup, c.project, logstore, err)
	}
	return c.doJSON(ctx, opUpdateConsumerGroup, http.MethodPut, groupURI(logstore, g.ConsumerGroupName), jsonHeaders(0), body, nil)
}

// listConsumerGroups returns the logstore's consumer groups (GET
// /logstores/{ls}/consumergroups; the list names a group "name", not
// "consumerGroup").
func (c *apiClient) listConsumerGroups(ctx context.Context, logstore string) ([]sls.ConsumerGroup, error) {
	var raw []struct {
		Name    string `json:"name"`
		Timeout int    `json:"timeout"`
		Order   bool   `json:"order"`
	}
	if err := c.doJSON(ctx, opListConsumerGroup, http.MethodGet, logstoreURI(logstore)+"/consumergroups", map[string]string{}, nil, &raw); err != nil {
		return nil, err
	}
	groups := make([]sls.ConsumerGroup, len(raw))
	for i, r := range raw {
		groups[i] = sls.ConsumerGroup{ConsumerGroupName: r.Name, Timeout: r.Timeout, InOrder: r.Order}
	}
	return groups, nil
}

// heartbeat tells the group that consumer is alive and holds the shards
// held, and returns the shards the server assigns to it (POST
// /logstores/{ls}/consumergroups/{cg}?consumer=..&type=heartbeat, body a
// JSON array of shard ids).
func (c *apiClient) heartbeat(ctx context.Context, logstore, group, consumer string, held []int) ([]int, error) {
	if held == nil {
		held = []int{}
	}
	body, err := json.Marshal(held)
	if err != nil {
		return nil, fmt.Errorf("slspubsub: %s %s/%s: %w", opHeartBeat, c.project, logstore, err)
	}
	uri := groupURI(logstore, group) + "?consumer=" + url.QueryEscape(consumer) + "&type=heartbeat"
	var assigned []int
	if err := c.doJSON(ctx, opHeartBeat, http.MethodPost, uri, jsonHeaders(0), body, &assigned); err != nil {
		return nil, err
	}
	if assigned == nil {
		assigned = []int{}
	}
	return assigned, nil
}

// updateCheckpoint stores cursor as the group's checkpoint of shard (POST
// /logstores/{ls}/consumergroups/{cg}?consumer=..&forceSuccess=..&type=checkpoint).
// Without force, SLS refuses it unless consumer holds the shard.
func (c *apiClient) updateCheckpoint(ctx context.Context, logstore, group, consumer string, shard int, cursor string, force bool) error {
	body, err := json.Marshal(map[string]any{"shard": shard, "checkpoint": cursor})
	if err != nil {
		return fmt.Errorf("slspubsub: %s %s/%s: %w", opUpdateCheckPoint, c.project, logstore, err)
	}
	uri := groupURI(logstore, group) + "?consumer=" + url.QueryEscape(consumer) +
		"&forceSuccess=" + strconv.FormatBool(force) + "&type=checkpoint"
	return c.doJSON(ctx, opUpdateCheckPoint, http.MethodPost, uri, jsonHeaders(0), body, nil)
}

// getCheckpoints returns the group's checkpoints, one per shard it has seen
// (GET /logstores/{ls}/consumergroups/{cg}).
func (c *apiClient) getCheckpoints(ctx context.Context, logstore, group string) ([]sls.ConsumerGroupCheckPoint, error) {
	var cps []sls.ConsumerGroupCheckPoint
	if err := c.doJSON(ctx, opGetCheckPoint, http.MethodGet, groupURI(logstore, group), map[string]string{}, nil, &cps); err != nil {
		return nil, err
	}
	return cps, nil
}
