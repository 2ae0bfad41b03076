package slstest

import (
	"net/http"
	"sort"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// The methods below change and inspect the server's state directly, without
// HTTP, for tests. Their errors are *Error values carrying the SLS code the
// same call over HTTP would answer with.

// CreateProject creates a project.
func (s *Server) CreateProject(name, description string) error {
	if e := validName("project", name, 3, 63); e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.projects[name]; ok {
		return errorf(http.StatusBadRequest, CodeProjectAlreadyExist, "project %s already exists", name)
	}
	s.projects[name] = &project{name: name, description: description, created: s.now(), logstores: make(map[string]*logstore)}
	return nil
}

// DeleteProject deletes a project and everything in it.
func (s *Server) DeleteProject(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.projects[name]; !ok {
		return errProjectNotExist(name)
	}
	delete(s.projects, name)
	return nil
}

// CreateLogStore creates a logstore with shards readwrite shards splitting
// the hash space evenly, creating the project first when it does not exist.
func (s *Server) CreateLogStore(projectName, name string, shards int) error {
	if _, e := s.getProject(projectName); e != nil {
		if e := s.CreateProject(projectName, ""); e != nil && e.(*Error).Code != CodeProjectAlreadyExist {
			return e
		}
	}
	return asError(s.createLogStore(projectName, name, LogStoreConfig{TTL: 30, ShardCount: shards}))
}

// asError converts e to an error without turning a nil *Error into a
// non-nil error interface.
func asError(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

func (s *Server) createLogStore(projectName, name string, cfg LogStoreConfig) *Error {
	if e := validName("logstore", name, 3, 63); e != nil {
		return e
	}
	if cfg.ShardCount < 1 || cfg.ShardCount > 256 {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "shardCount %d must be between 1 and 256", cfg.ShardCount)
	}
	p, e := s.getProject(projectName)
	if e != nil {
		return e
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.logstores[name]; ok {
		return errorf(http.StatusBadRequest, CodeLogStoreAlreadyExist, "logstore %s already exists", name)
	}
	now := s.now()
	ls := &logstore{
		project:  projectName,
		name:     name,
		created:  now,
		modified: now,
		config:   cfg,
		groups:   make(map[string]*consumerGroup),
		seqIDs:   make(map[string]int64),
	}
	bounds := splitRange(minHashKey, maxHashKey, cfg.ShardCount)
	for i := 0; i < cfg.ShardCount; i++ {
		ls.shards = append(ls.shards, s.newShard(i, bounds[i], bounds[i+1], nil, now))
	}
	ls.nextID = cfg.ShardCount
	p.logstores[name] = ls
	return nil
}

func (s *Server) newShard(id int, begin, end string, parents []int, now time.Time) *shard {
	return &shard{
		id:      id,
		begin:   begin,
		end:     end,
		parents: parents,
		created: now,
		base:    cursorBase + s.shardSeq.Add(1)*cursorStride,
		quota:   newShardQuota(&s.quota),
	}
}

// DeleteLogStore deletes a logstore, its data and its consumer groups.
func (s *Server) DeleteLogStore(projectName, name string) error {
	p, e := s.getProject(projectName)
	if e != nil {
		return e
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.logstores[name]; !ok {
		return errLogStoreNotExist(name)
	}
	delete(p.logstores, name)
	return nil
}

// Shards lists a logstore's shards, readonly ones included, by id.
func (s *Server) Shards(projectName, logstoreName string) ([]ShardInfo, error) {
	ls, e := s.getLogStore(projectName, logstoreName)
	if e != nil {
		return nil, e
	}
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	return ls.shardInfos(), nil
}

// SplitShard splits a readwrite shard in two at key (32 hex digits; "" is the
// midpoint of its range). The shard becomes readonly; the result is the
// parent followed by the two new readwrite shards, as SLS answers.
func (s *Server) SplitShard(projectName, logstoreName string, shardID int, key string) ([]ShardInfo, error) {
	infos, e := s.splitShard(projectName, logstoreName, shardID, key, 2)
	return infos, asError(e)
}

func (s *Server) splitShard(projectName, logstoreName string, shardID int, key string, n int) ([]ShardInfo, *Error) {
	ls, e := s.getLogStore(projectName, logstoreName)
	if e != nil {
		return nil, e
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	parent := ls.shardByID(shardID)
	if parent == nil {
		return nil, errShardNotExist(shardID)
	}
	if _, _, ro := parent.bounds(); ro {
		return nil, errorf(http.StatusBadRequest, CodeShardReadOnly, "shard %d is readonly and cannot be split", shardID)
	}
	var bounds []string
	if key != "" {
		k, err := normalizeHashKey(key)
		if err != nil || k <= parent.begin || !(k < parent.end) {
			return nil, errorf(http.StatusBadRequest, CodeInvalidKey, "split key %q must lie strictly inside shard %d's range [%s, %s)", key, shardID, parent.begin, parent.end)
		}
		bounds = []string{parent.begin, k, parent.end}
	} else {
		if n < 2 || n > 64 {
			return nil, errorf(http.StatusBadRequest, CodeParameterInvalid, "shardCount %d must be between 2 and 64", n)
		}
		bounds = splitRange(parent.begin, parent.end, n)
		for i := 1; i < len(bounds); i++ {
			if bounds[i] <= bounds[i-1] {
				return nil, errorf(http.StatusBadRequest, CodeParameterInvalid, "shard %d's range is too narrow to split in %d", shardID, n)
			}
		}
	}
	now := s.now()
	children := make([]*shard, 0, len(bounds)-1)
	for i := 0; i+1 < len(bounds); i++ {
		children = append(children, s.newShard(ls.nextID, bounds[i], bounds[i+1], []int{shardID}, now))
		ls.nextID++
	}
	parent.setReadOnly()
	ls.shards = append(ls.shards, children...)
	ls.modified = now
	out := []ShardInfo{parent.info()}
	for _, c := range children {
		out = append(out, c.info())
	}
	return out, nil
}

// MergeShards merges a readwrite shard with its right neighbour (the
// readwrite shard whose range begins where its range ends). Both become
// readonly. The result is, as SLS answers, the new readwrite shard followed
// by the two readonly ones.
func (s *Server) MergeShards(projectName, logstoreName string, shardID int) ([]ShardInfo, error) {
	infos, e := s.mergeShards(projectName, logstoreName, shardID)
	return infos, asError(e)
}

func (s *Server) mergeShards(projectName, logstoreName string, shardID int) ([]ShardInfo, *Error) {
	ls, e := s.getLogStore(projectName, logstoreName)
	if e != nil {
		return nil, e
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	left := ls.shardByID(shardID)
	if left == nil {
		return nil, errShardNotExist(shardID)
	}
	if _, _, ro := left.bounds(); ro {
		return nil, errorf(http.StatusBadRequest, CodeShardReadOnly, "shard %d is readonly and cannot be merged", shardID)
	}
	var right *shard
	for _, sh := range ls.readWriteShards() {
		if sh.begin == left.end {
			right = sh
		}
	}
	if right == nil {
		return nil, errorf(http.StatusBadRequest, CodeParameterInvalid, "shard %d has no readwrite right neighbour to merge with", shardID)
	}
	now := s.now()
	merged := s.newShard(ls.nextID, left.begin, right.end, []int{left.id, right.id}, now)
	ls.nextID++
	left.setReadOnly()
	right.setReadOnly()
	ls.shards = append(ls.shards, merged)
	ls.modified = now
	return []ShardInfo{merged.info(), left.info(), right.info()}, nil
}

func (sh *shard) setReadOnly() {
	sh.mu.Lock()
	sh.readOnly = true
	sh.mu.Unlock()
}

// StoredLogGroup is a LogGroup as the server stored it.
type StoredLogGroup struct {
	Cursor      string        // the group's cursor
	ReceiveTime time.Time     // when the server received it
	Group       *sls.LogGroup // the group, decoded
}

// LogGroups returns every LogGroup stored in a shard, in order.
func (s *Server) LogGroups(projectName, logstoreName string, shardID int) ([]StoredLogGroup, error) {
	sh, e := s.getShard(projectName, logstoreName, shardID)
	if e != nil {
		return nil, e
	}
	begin, end, _ := sh.bounds()
	groups := sh.read(begin, end, int(end-begin), int(^uint(0)>>1))
	out := make([]StoredLogGroup, len(groups))
	for i, g := range groups {
		lg := new(sls.LogGroup)
		if err := lg.Unmarshal(g.data); err != nil {
			return nil, errorf(http.StatusInternalServerError, CodeInternalServerError, "stored group %d of shard %d: %v", i, shardID, err)
		}
		out[i] = StoredLogGroup{Cursor: encodeCursor(begin + int64(i)), ReceiveTime: time.Unix(0, g.received), Group: lg}
	}
	return out, nil
}

// Cursors returns a shard's begin and end cursors.
func (s *Server) Cursors(projectName, logstoreName string, shardID int) (begin, end string, err error) {
	sh, e := s.getShard(projectName, logstoreName, shardID)
	if e != nil {
		return "", "", e
	}
	b, en, _ := sh.bounds()
	return encodeCursor(b), encodeCursor(en), nil
}

// AppendLogGroup writes g to one shard directly, bypassing routing, and
// returns its cursor. A readonly shard refuses with ShardReadOnly.
func (s *Server) AppendLogGroup(projectName, logstoreName string, shardID int, g *sls.LogGroup) (string, error) {
	data, err := g.Marshal()
	if err != nil {
		return "", errorf(http.StatusBadRequest, CodePostBodyInvalid, "log group: %v", err)
	}
	ls, e := s.getLogStore(projectName, logstoreName)
	if e != nil {
		return "", e
	}
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	sh := ls.shardByID(shardID)
	if sh == nil {
		return "", errShardNotExist(shardID)
	}
	c, e := sh.appendGroup(storedGroup{data: data, received: s.now().UnixNano(), logs: int32(len(g.Logs))})
	if e != nil {
		return "", e
	}
	return encodeCursor(c), nil
}

// ConsumerGroupState returns the server-side state of a consumer group:
// its consumers, and per shard the holder, status and checkpoint.
func (s *Server) ConsumerGroupState(projectName, logstoreName, group string) (ConsumerGroupState, error) {
	ls, e := s.getLogStore(projectName, logstoreName)
	if e != nil {
		return ConsumerGroupState{}, e
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	g, ok := ls.groups[group]
	if !ok {
		return ConsumerGroupState{}, errGroupNotExist(group)
	}
	return g.state(ls.cgShards(), s.now()), nil
}

// AddAccount adds or replaces (by AccessKeyID) an account.
func (s *Server) AddAccount(a Account) { s.auth.setAccount(a) }

// RemoveAccount removes an account; its requests fail from then on.
func (s *Server) RemoveAccount(accessKeyID string) { s.auth.removeAccount(accessKeyID) }

func (s *Server) getProject(name string) (*project, *Error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.projects[name]
	if !ok {
		return nil, errProjectNotExist(name)
	}
	return p, nil
}

func (s *Server) getLogStore(projectName, name string) (*logstore, *Error) {
	p, e := s.getProject(projectName)
	if e != nil {
		return nil, e
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	ls, ok := p.logstores[name]
	if !ok {
		return nil, errLogStoreNotExist(name)
	}
	return ls, nil
}

func (s *Server) getShard(projectName, logstoreName string, id int) (*shard, *Error) {
	ls, e := s.getLogStore(projectName, logstoreName)
	if e != nil {
		return nil, e
	}
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	sh := ls.shardByID(id)
	if sh == nil {
		return nil, errShardNotExist(id)
	}
	return sh, nil
}

func (s *Server) projectNames() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.projects))
	for n := range s.projects {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func errProjectNotExist(name string) *Error {
	return errorf(http.StatusNotFound, CodeProjectNotExist, "The Project does not exist : %s", name)
}

func errLogStoreNotExist(name string) *Error {
	return errorf(http.StatusNotFound, CodeLogStoreNotExist, "logstore %s does not exist", name)
}

func errShardNotExist(id int) *Error {
	return errorf(http.StatusNotFound, CodeShardNotExist, "shard %d does not exist", id)
}

func errGroupNotExist(name string) *Error {
	return errorf(http.StatusNotFound, CodeConsumerGroupNotExist, "consumer group %s does not exist", name)
}

// validName checks a project or logstore name as SLS does: lowercase
// letters, digits, hyphens (and underscores for logstores), starting and
// ending with a letter or digit.
func validName(kind, name string, minLen, maxLen int) *Error {
	ok := len(name) >= minLen && len(name) <= maxLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		edge := i == 0 || i == len(name)-1
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && !edge:
		case c == '_' && kind == "logstore" && !edge:
		default:
			ok = false
		}
	}
	if !ok {
		return errorf(http.StatusBadRequest, CodeParameterInvalid, "%s name %q is invalid: %d-%d lowercase letters, digits or hyphens, starting and ending with a letter or digit", kind, name, minLen, maxLen)
	}
	return nil
}
