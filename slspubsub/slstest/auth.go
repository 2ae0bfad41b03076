package slstest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Account is an identity the emulator accepts. Register it with the server; a
// request is accepted only when it is signed with the AccessKeySecret of a
// registered AccessKeyID (V1 or V4 signature, as the aliyun-log-go-sdk signs).
type Account struct {
	// AccessKeyID identifies the account; it is the key accounts are stored by.
	AccessKeyID string
	// AccessKeySecret is the signing secret. The emulator never puts it in an
	// error message.
	AccessKeySecret string
	// SecurityToken, when set, makes this an STS identity: every request must
	// carry exactly this token in x-acs-security-token. When empty, a request
	// that carries a token is rejected (InvalidSecurityToken), as a token
	// belongs to STS credentials only.
	SecurityToken string
	// Expiration, when non-zero, is when the STS token stops being accepted:
	// requests at or after it fail with SecurityTokenExpired. It is ignored
	// when SecurityToken is empty.
	Expiration time.Time
	// Policy is a RAM-style allow-list checked for every operation. Nil allows
	// every action on every resource; an empty non-nil slice allows nothing.
	// The emulator keeps its own copy: changing the slice after registering
	// the account has no effect.
	Policy []Permission
}

// Permission allows the operations matching Action on the resources matching
// Resource. A request is allowed when at least one Permission of the account's
// Policy matches both its action and its resource.
//
// Both fields are globs in which '*' matches any run of characters (including
// '/' and the empty run) and every other character matches itself.
//
// Action is compared with the operation's RAM action name, e.g.
// "log:PostLogStoreLogs" (PutLogs), "log:GetCursorOrData" (GetCursor,
// PullLogs), "log:CreateLogStore", "log:ConsumerGroupHeartBeat";
// "log:*" and "log:Get*" are typical patterns. Action matching ignores ASCII
// case, as RAM does.
//
// Resource is compared, case-sensitively, with the resource of the operation:
//   - "<project>/<logstore>/consumergroup/<group>" for an operation on a
//     consumer group (create, update, delete, heartbeat, checkpoints), as
//     SLS checks them, and "<project>/<logstore>/consumergroup/*" for
//     ListConsumerGroup;
//   - "<project>/<logstore>" for any other operation on a logstore or on
//     anything inside it (shards, cursors, logs);
//   - "<project>" for a project-level operation (CreateProject, GetProject,
//     ListLogStores, CreateLogStore, ...);
//   - "" for an operation that names no project (ListProject).
//
// So "myproject/*" covers every logstore of myproject but not the
// project-level calls on it; grant those with "myproject" (or "myproject*",
// which also matches other projects whose name starts with "myproject"), and
// use "*" for everything.
type Permission struct {
	Action   string
	Resource string
}

// requestTimeSkewLimit is how far the signed request time may lie from the
// server's clock, in either direction, as on SLS.
const requestTimeSkewLimit = 15 * time.Minute

// Wire names and constants of the two signature versions, as the SDK
// (signature.go, signature_v4.go) spells them.
const (
	authSchemeV1            = "LOG "
	authSchemeV4            = "SLS4-HMAC-SHA256 "
	authAlgorithmV4         = "SLS4-HMAC-SHA256"
	authServiceV4           = "sls"
	authTerminatorV4        = "aliyun_v4_request"
	authSecretPrefixV4      = "aliyun_v4"
	authDateLayoutV4        = "20060102T150405Z"
	authEmptyPayloadSHA256  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	authHeaderSecurityToken = "x-acs-security-token"
	authHeaderLogDate       = "x-log-date"
	authHeaderContentSHA256 = "x-log-content-sha256"
	authHeaderLogMetaPrefix = "x-log-meta-"
	authHeaderLogPrefix     = "x-log-"
	authHeaderAcsPrefix     = "x-acs-"
	authHeaderContentMD5    = "Content-MD5"
	authHeaderContentType   = "content-type"
	authHeaderHost          = "host"
	authSignatureHelpSuffix = "; check the AccessKeySecret, and that no signed header, query parameter or body " +
		"was changed or added after signing (x-log-*/x-acs-* headers from Client.CommonHeaders are added after signing)"
)

// authenticator verifies request signatures and STS tokens against a set of
// accounts. It is safe for concurrent use.
//
// It verifies exactly what the SDK signs. Headers the SDK adds after signing
// (Client.CommonHeaders) cannot be told apart from signed ones by a server:
// an x-log-* or x-acs-* header among them breaks the V1 signature (and the V4
// one unless it is x-log-meta-*), exactly as on SLS.
type authenticator struct {
	disabled atomic.Bool

	mu       sync.RWMutex
	accounts map[string]Account // by AccessKeyID
}

func newAuthenticator() *authenticator {
	return &authenticator{accounts: make(map[string]Account)}
}

// setAccount adds acc, or replaces the account with the same AccessKeyID.
func (a *authenticator) setAccount(acc Account) {
	acc.Policy = slices.Clone(acc.Policy) // keeps nil nil and empty empty
	a.mu.Lock()
	a.accounts[acc.AccessKeyID] = acc
	a.mu.Unlock()
}

// removeAccount forgets the account; requests signed by it then fail with
// Unauthorized. Removing an unknown AccessKeyID does nothing.
func (a *authenticator) removeAccount(accessKeyID string) {
	a.mu.Lock()
	delete(a.accounts, accessKeyID)
	a.mu.Unlock()
}

// setDisabled turns every check of authenticate off (true) or back on.
func (a *authenticator) setDisabled(disabled bool) { a.disabled.Store(disabled) }

// authenticate verifies the request's signature (V1 "LOG <ak>:<sig>" or V4
// "SLS4-HMAC-SHA256 Credential=...,Signature=..."), its STS token, its time
// (Date for V1, x-log-date for V4; more than 15 minutes from now fails with
// RequestTimeTooSkewed) and its body digest (V1 Content-MD5, V4
// x-log-content-sha256). body is the raw request body exactly as received,
// still compressed if it was sent compressed.
//
// It returns a copy of the matching account, or nil and nil when
// authentication is disabled; on failure, nil and an SLS-shaped *Error whose
// message never contains a secret, a token or a server-computed signature.
// Checks run in this order: the Authorization header's form, the request time's
// presence and format, the account and its token, the signature, the body
// digest, the clock skew.
func (a *authenticator) authenticate(r *http.Request, body []byte, now time.Time) (*Account, *Error) {
	if a.disabled.Load() {
		return nil, nil
	}
	authz := r.Header.Get("Authorization")
	switch {
	case authz == "":
		return nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "Authorization does not exist in http header")
	case strings.HasPrefix(authz, authSchemeV1):
		return a.authenticateV1(r, authz[len(authSchemeV1):], body, now)
	case strings.HasPrefix(authz, authSchemeV4):
		return a.authenticateV4(r, authz[len(authSchemeV4):], body, now)
	default:
		return nil, errorf(http.StatusUnauthorized, CodeUnauthorized,
			"Authorization header must use the LOG (V1) or SLS4-HMAC-SHA256 (V4) scheme")
	}
}

// authenticateV1 verifies "LOG <AccessKeyId>:<Signature>": base64 of
// HMAC-SHA1(secret, stringToSignV1).
func (a *authenticator) authenticateV1(r *http.Request, cred string, body []byte, now time.Time) (*Account, *Error) {
	i := strings.LastIndexByte(cred, ':')
	if i < 0 {
		return nil, errorf(http.StatusUnauthorized, CodeUnauthorized,
			"invalid Authorization header: want LOG <AccessKeyId>:<Signature>")
	}
	accessKeyID, signature := cred[:i], cred[i+1:]
	if accessKeyID == "" {
		return nil, errMissAccessKeyID()
	}
	date := r.Header.Get("Date")
	if date == "" {
		return nil, errorf(http.StatusBadRequest, CodeMissingDate, "Date does not exist in http header")
	}
	requestTime, ok := parseRequestDateV1(date)
	if !ok {
		return nil, errorf(http.StatusBadRequest, CodeInvalidDateFormat, "Date %q must follow RFC822 (RFC1123 GMT)", date)
	}
	acc, e := a.identify(r, accessKeyID, now)
	if e != nil {
		return nil, e
	}
	mac := hmac.New(sha1.New, []byte(acc.AccessKeySecret))
	mac.Write([]byte(stringToSignV1(r)))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(signature), []byte(want)) {
		return nil, errSignatureNotMatch(accessKeyID)
	}
	if e := checkContentMD5(r, body); e != nil {
		return nil, e
	}
	if e := checkRequestTime(requestTime, now); e != nil {
		return nil, e
	}
	return acc, nil
}

// parseRequestDateV1 accepts the HTTP date formats (the SDK sends RFC1123 with
// "GMT") and RFC1123 with a numeric zone.
func parseRequestDateV1(s string) (time.Time, bool) {
	if t, err := http.ParseTime(s); err == nil {
		return t, true
	}
	for _, layout := range []string{time.RFC1123Z, time.RFC1123} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// stringToSignV1 rebuilds SignerV1's string to sign from the request as
// received: METHOD, Content-MD5, Content-Type, Date, the canonical x-log-* and
// x-acs-* headers and the canonical resource, separated by "\n".
func stringToSignV1(r *http.Request) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(r.Header.Get(authHeaderContentMD5))
	b.WriteByte('\n')
	b.WriteString(r.Header.Get("Content-Type"))
	b.WriteByte('\n')
	b.WriteString(r.Header.Get("Date"))
	b.WriteByte('\n')

	// Every x-log-* and x-acs-* header, lowercased, value trimmed, "k:v"
	// sorted by name and joined by "\n".
	headers := collectSignedHeaders(r.Header, func(name string) bool {
		return strings.HasPrefix(name, authHeaderLogPrefix) || strings.HasPrefix(name, authHeaderAcsPrefix)
	})
	for i, h := range headers {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(h.name)
		b.WriteByte(':')
		b.WriteString(strings.TrimSpace(h.value))
	}
	b.WriteByte('\n')

	// The escaped path, then "?" and the decoded query sorted by key. As in
	// the SDK, repeated values of a key are written one after another with
	// no separator between them ("k=1k=2").
	b.WriteString(r.URL.EscapedPath())
	if r.URL.RawQuery != "" {
		query := r.URL.Query()
		b.WriteByte('?')
		for i, k := range sortedQueryKeys(query) {
			if i > 0 {
				b.WriteByte('&')
			}
			for _, v := range query[k] {
				b.WriteString(k)
				b.WriteByte('=')
				b.WriteString(v)
			}
		}
	}
	return b.String()
}

// checkContentMD5 checks the V1 body digest: uppercase hex MD5 of the body as
// sent. A request with a body must carry it, or the body would be unsigned.
func checkContentMD5(r *http.Request, body []byte) *Error {
	got := r.Header.Get(authHeaderContentMD5)
	if got == "" && len(body) == 0 {
		return nil
	}
	if got == "" {
		return errorf(http.StatusUnauthorized, CodeSignatureNotMatch,
			"request has a body but no Content-MD5 header, so the body is not signed")
	}
	sum := md5.Sum(body)
	if got != strings.ToUpper(hex.EncodeToString(sum[:])) {
		return errorf(http.StatusUnauthorized, CodeSignatureNotMatch,
			"Content-MD5 does not match the request body (want the uppercase hex MD5 of the body as sent)")
	}
	return nil
}

// credentialV4 is the parsed Authorization of a V4 request.
type credentialV4 struct {
	accessKeyID string
	date        string // yyyymmdd of the scope
	region      string
	signature   string // hex
}

func (c credentialV4) scope() string {
	return c.date + "/" + c.region + "/" + authServiceV4 + "/" + authTerminatorV4
}

// parseAuthorizationV4 parses
// "Credential=<ak>/<yyyymmdd>/<region>/sls/aliyun_v4_request,Signature=<hex>"
// (the part after the scheme). The AccessKeyId is everything before the last
// four '/'-separated fields of the credential.
func parseAuthorizationV4(s string) (credentialV4, bool) {
	var cred, sig string
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return credentialV4{}, false
		}
		switch k {
		case "Credential":
			cred = v
		case "Signature":
			sig = v
		}
	}
	fields := strings.Split(cred, "/")
	n := len(fields)
	if n < 5 || sig == "" {
		return credentialV4{}, false
	}
	c := credentialV4{
		accessKeyID: strings.Join(fields[:n-4], "/"),
		date:        fields[n-4],
		region:      fields[n-3],
		signature:   sig,
	}
	if len(c.date) != 8 || c.region == "" || fields[n-2] != authServiceV4 || fields[n-1] != authTerminatorV4 {
		return credentialV4{}, false
	}
	return c, true
}

// authenticateV4 verifies an SLS4-HMAC-SHA256 signature: hex of
// HMAC-SHA256(signingKey, stringToSign), the key derived from the secret, the
// scope date and the scope region (any region is accepted).
func (a *authenticator) authenticateV4(r *http.Request, params string, body []byte, now time.Time) (*Account, *Error) {
	cred, ok := parseAuthorizationV4(params)
	if !ok {
		return nil, errorf(http.StatusUnauthorized, CodeUnauthorized,
			"invalid Authorization header: want SLS4-HMAC-SHA256 "+
				"Credential=<AccessKeyId>/<yyyymmdd>/<region>/sls/aliyun_v4_request,Signature=<hex>")
	}
	if cred.accessKeyID == "" {
		return nil, errMissAccessKeyID()
	}
	dateTime := r.Header.Get(authHeaderLogDate)
	if dateTime == "" {
		return nil, errorf(http.StatusBadRequest, CodeMissingDate, "x-log-date does not exist in http header")
	}
	requestTime, err := time.Parse(authDateLayoutV4, dateTime)
	if err != nil || len(dateTime) != len(authDateLayoutV4) {
		return nil, errorf(http.StatusBadRequest, CodeInvalidDateFormat,
			"x-log-date %q must be in the format yyyyMMddTHHmmssZ", dateTime)
	}
	acc, e := a.identify(r, cred.accessKeyID, now)
	if e != nil {
		return nil, e
	}
	if cred.date != dateTime[:8] {
		return nil, errorf(http.StatusUnauthorized, CodeSignatureNotMatch,
			"credential scope date %s does not match x-log-date %s", cred.date, dateTime)
	}
	payloadHash := r.Header.Get(authHeaderContentSHA256)
	sum := sha256.Sum256([]byte(canonicalRequestV4(r, payloadHash)))
	stringToSign := authAlgorithmV4 + "\n" + dateTime + "\n" + cred.scope() + "\n" + hex.EncodeToString(sum[:])
	key := signingKeyV4(acc.AccessKeySecret, cred.date, cred.region)
	want := hex.EncodeToString(hmacSHA256(key, stringToSign))
	if !hmac.Equal([]byte(cred.signature), []byte(want)) {
		return nil, errSignatureNotMatch(cred.accessKeyID)
	}
	if e := checkContentSHA256(r.Method, payloadHash, body); e != nil {
		return nil, e
	}
	if e := checkRequestTime(requestTime, now); e != nil {
		return nil, e
	}
	return acc, nil
}

// canonicalRequestV4 rebuilds SignerV4's canonical request:
//
//	METHOD \n escaped path \n query \n headers \n signed names \n payload hash
//
// The query is sorted by key, only the first value of each key counts, and a
// value is written percent-encoded after "=" (nothing after an empty value).
// The headers are host (r.Host, as the SDK signs the Host it connects to),
// content-type and every x-log-* (but x-log-meta-*) and x-acs-* header: names
// lowercased and sorted, values as received, each "name:value\n".
func canonicalRequestV4(r *http.Request, payloadHash string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(r.URL.EscapedPath())
	b.WriteByte('\n')
	query := r.URL.Query()
	for i, k := range sortedQueryKeys(query) {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		if v := percentEncodeV4(query[k][0]); v != "" {
			b.WriteByte('=')
			b.WriteString(v)
		}
	}
	b.WriteByte('\n')

	headers := collectSignedHeaders(r.Header, func(name string) bool {
		if strings.HasPrefix(name, authHeaderLogMetaPrefix) || name == authHeaderHost {
			return false // host comes from r.Host below
		}
		return strings.HasPrefix(name, authHeaderLogPrefix) || strings.HasPrefix(name, authHeaderAcsPrefix) ||
			name == authHeaderContentType
	})
	headers = append(headers, signedHeaderField{name: authHeaderHost, value: r.Host})
	slices.SortFunc(headers, func(x, y signedHeaderField) int { return strings.Compare(x.name, y.name) })
	for _, h := range headers {
		b.WriteString(h.name)
		b.WriteByte(':')
		b.WriteString(h.value)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	for i, h := range headers {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(h.name)
	}
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

// percentEncodeV4 is SignerV4.percentEncode: query escaping with %20 for space.
func percentEncodeV4(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// signingKeyV4 derives the V4 key: HMAC-SHA256 chained from "aliyun_v4"+secret
// over the date, the region, "sls" and "aliyun_v4_request".
func signingKeyV4(secret, date, region string) []byte {
	key := hmacSHA256([]byte(authSecretPrefixV4+secret), date)
	key = hmacSHA256(key, region)
	key = hmacSHA256(key, authServiceV4)
	return hmacSHA256(key, authTerminatorV4)
}

func hmacSHA256(key []byte, message string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(message))
	return mac.Sum(nil)
}

// checkContentSHA256 checks the V4 body digest: lowercase hex SHA-256 of the
// body as sent. The one exception mirrors SignerV4.SignWithOption with
// computeContentHash false (the SDK's PutObject): a PUT may declare the
// empty-body digest for a body it chose not to hash.
func checkContentSHA256(method, got string, body []byte) *Error {
	if got == "" {
		return errorf(http.StatusUnauthorized, CodeSignatureNotMatch, "x-log-content-sha256 does not exist in http header")
	}
	sum := sha256.Sum256(body)
	if got == hex.EncodeToString(sum[:]) || (method == http.MethodPut && got == authEmptyPayloadSHA256) {
		return nil
	}
	return errorf(http.StatusUnauthorized, CodeSignatureNotMatch,
		"x-log-content-sha256 does not match the request body (want the lowercase hex SHA-256 of the body as sent)")
}

// signedHeaderField is one header taking part in a signature: its lowercased name
// and its first value.
type signedHeaderField struct{ name, value string }

// signedHeaders returns the headers whose lowercased name passes keep, sorted
// by name. For a header sent several times only the first value counts (the
// SDK sends each header once).
func collectSignedHeaders(h http.Header, keep func(lowerName string) bool) []signedHeaderField {
	var fields []signedHeaderField
	for name, values := range h {
		lower := strings.ToLower(name)
		if !keep(lower) {
			continue
		}
		var v string
		if len(values) > 0 {
			v = values[0]
		}
		fields = append(fields, signedHeaderField{name: lower, value: v})
	}
	slices.SortFunc(fields, func(x, y signedHeaderField) int { return strings.Compare(x.name, y.name) })
	return fields
}

func sortedQueryKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// identify finds the account and checks its STS token and the token's
// expiration. It returns a copy of the account that shares nothing with the
// stored one.
func (a *authenticator) identify(r *http.Request, accessKeyID string, now time.Time) (*Account, *Error) {
	a.mu.RLock()
	acc, ok := a.accounts[accessKeyID]
	a.mu.RUnlock()
	if !ok {
		return nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "AccessKeyId not found: %s", accessKeyID)
	}
	acc.Policy = slices.Clone(acc.Policy)
	token := r.Header.Get(authHeaderSecurityToken)
	switch {
	case acc.SecurityToken == "" && token != "":
		return nil, errorf(http.StatusUnauthorized, CodeInvalidSecurityToken,
			"AccessKeyId %s is not an STS identity, but the request carries x-acs-security-token", accessKeyID)
	case acc.SecurityToken == "":
		return &acc, nil
	case token == "":
		return nil, errorf(http.StatusUnauthorized, CodeInvalidSecurityToken,
			"AccessKeyId %s is an STS identity: x-acs-security-token does not exist in http header", accessKeyID)
	case subtle.ConstantTimeCompare([]byte(token), []byte(acc.SecurityToken)) != 1:
		return nil, errorf(http.StatusUnauthorized, CodeInvalidSecurityToken,
			"The security token you provided is invalid (AccessKeyId %s)", accessKeyID)
	case !acc.Expiration.IsZero() && !now.Before(acc.Expiration):
		return nil, errorf(http.StatusUnauthorized, CodeSecurityTokenExpired,
			"The security token you provided has expired (AccessKeyId %s, expired at %s)",
			accessKeyID, acc.Expiration.UTC().Format(time.RFC3339))
	}
	return &acc, nil
}

// checkRequestTime rejects a request signed more than requestTimeSkewLimit
// away from now.
func checkRequestTime(requestTime, now time.Time) *Error {
	if d := now.Sub(requestTime); d > requestTimeSkewLimit || d < -requestTimeSkewLimit {
		return errorf(http.StatusBadRequest, CodeRequestTimeTooSkewed,
			"Request time %s is too skewed from server time %s (at most %s either way)",
			requestTime.UTC().Format(http.TimeFormat), now.UTC().Format(http.TimeFormat), requestTimeSkewLimit)
	}
	return nil
}

func errMissAccessKeyID() *Error {
	return errorf(http.StatusUnauthorized, CodeMissAccessKeyID, "AccessKeyId does not exist in Authorization header")
}

// errSignatureNotMatch names the AccessKeyId only: neither the secret nor the
// expected signature may leak to the caller.
func errSignatureNotMatch(accessKeyID string) *Error {
	return errorf(http.StatusUnauthorized, CodeSignatureNotMatch,
		"signature of the request by AccessKeyId %s not matched%s", accessKeyID, authSignatureHelpSuffix)
}

// authorize checks acc's Policy for action on project/logstore (logstore ""
// for a project-level call, project "" for a call that names no project;
// group non-empty for a consumer-group call, "*" for ListConsumerGroup); see
// Permission for the matching rules. A nil acc (authentication disabled) and
// a nil Policy allow everything. A denial is 403 Unauthorized naming the
// action and the resource in SLS's words, e.g. "denied by sts or ram,
// action: log:PostLogStoreLogs, resource: acs:log:*:*:project/p/logstore/l".
func authorize(acc *Account, action, project, logstore, group string) *Error {
	if acc == nil || acc.Policy == nil {
		return nil
	}
	resource := project
	if logstore != "" {
		resource = project + "/" + logstore
		if group != "" {
			resource += "/consumergroup/" + group
		}
	}
	for _, p := range acc.Policy {
		if policyGlobMatch(p.Action, action, true) && policyGlobMatch(p.Resource, resource, false) {
			return nil
		}
	}
	arn := "acs:log:*:*:project/"
	switch {
	case project == "":
		arn += "*"
	case logstore == "":
		arn += project
	default:
		arn += project + "/logstore/" + logstore
		if group != "" {
			arn += "/consumergroup/" + group
		}
	}
	return errorf(http.StatusForbidden, CodeUnauthorized, "denied by sts or ram, action: %s, resource: %s", action, arn)
}

// policyGlobMatch reports whether s matches pattern, in which '*' matches any
// run of bytes and every other byte matches itself (ignoring ASCII case when
// fold is set). It runs in O(len(pattern)*len(s)) at worst, without recursion.
func policyGlobMatch(pattern, s string, fold bool) bool {
	p, i := 0, 0
	starP, starI := -1, 0 // position after the last '*' seen, and where its run ends in s
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			starP, starI = p, i
			p++
		case p < len(pattern) && (pattern[p] == s[i] || fold && asciiLower(pattern[p]) == asciiLower(s[i])):
			p++
			i++
		case starP >= 0:
			starI++ // let the last '*' swallow one more byte and retry
			p, i = starP+1, starI
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func asciiLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
