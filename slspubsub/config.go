package slspubsub

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// DefaultRequestTimeout bounds one HTTP request when
// ClientConfig.RequestTimeout is zero.
const DefaultRequestTimeout = 30 * time.Second

// DefaultUserAgent is the User-Agent header when ClientConfig.UserAgent is
// empty.
const DefaultUserAgent = "watermill-sls"

// ClientConfig says which SLS project to talk to and how. It is embedded in
// PublisherConfig and SubscriberConfig.
//
// Credentials are either static (AccessKeyID and AccessKeySecret, plus
// SecurityToken for STS) or a CredentialsProvider, never both. Neither the
// secret nor the token ever appears in an error or in the config's printed
// form (String, GoString).
type ClientConfig struct {
	// Endpoint is the SLS endpoint of the project's region, e.g.
	// "cn-hangzhou.log.aliyuncs.com", with or without an "http://" or
	// "https://" scheme (default http, as in the SDK). Requests go to
	// "<Project>.<Endpoint>". Required.
	Endpoint string
	// Project is the SLS project holding the logstores. Required: 3 to 63
	// lowercase letters, digits or hyphens, starting and ending with a
	// letter or digit.
	Project string

	// AccessKeyID and AccessKeySecret are static credentials. Set both, or
	// set CredentialsProvider instead.
	AccessKeyID string
	// AccessKeySecret signs requests. It is never printed or put in errors.
	AccessKeySecret string
	// SecurityToken is the STS token that goes with temporary static
	// credentials; leave it empty for a permanent AccessKey. It is never
	// printed or put in errors.
	SecurityToken string
	// CredentialsProvider supplies credentials per request (for example
	// sls.NewUpdateFuncProviderAdapter for rotating STS credentials). It is
	// called before every request and must be safe for concurrent use and
	// cache what it fetches. Mutually exclusive with the static fields above.
	CredentialsProvider sls.CredentialsProvider

	// AuthVersion is the signature version: sls.AuthV1 (the default when
	// empty) or sls.AuthV4, which requires Region.
	AuthVersion sls.AuthVersionType
	// Region is the project's region id, e.g. "cn-hangzhou"; required with
	// sls.AuthV4, unused with V1.
	Region string

	// HTTPClient sends the requests. Nil means a client of its own with a
	// Transport tuned for many concurrent requests to one host (its idle
	// connections are closed when the Publisher or Subscriber closes). A
	// client given here is used as is and never modified or closed; its
	// Timeout, if any, applies on top of RequestTimeout.
	HTTPClient *http.Client
	// RequestTimeout bounds each HTTP request, from sending it to reading
	// the whole response, through the request's context. Zero means
	// DefaultRequestTimeout (30 s); negative is invalid. A request that
	// times out is retried by the Publisher and Subscriber like a network
	// error.
	RequestTimeout time.Duration
	// UserAgent is sent in the User-Agent header; empty means
	// DefaultUserAgent.
	UserAgent string
}

// setDefaults fills the zero fields that have defaults.
func (c *ClientConfig) setDefaults() {
	if c.AuthVersion == "" {
		c.AuthVersion = sls.AuthV1
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
}

// Validate reports every invalid field in one error, before or after
// defaults are applied. It never includes secret values.
func (c ClientConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if host, err := endpointHost(c.Endpoint); err != nil {
		bad("Endpoint: %w", err)
	} else if strings.Contains(host, "@") {
		// Not printed: user information may hold a password.
		bad("Endpoint: must not contain user information")
	} else if strings.ContainsAny(host, "/?# ") {
		bad("Endpoint %q: must be a host name with an optional port and scheme, without a path", c.Endpoint)
	}
	if c.Project == "" {
		bad("Project: must be set")
	} else if !validProjectName(c.Project) {
		bad("Project %q: must be 3 to 63 lowercase letters, digits or hyphens, starting and ending with a letter or digit", c.Project)
	}

	static := c.AccessKeyID != "" || c.AccessKeySecret != "" || c.SecurityToken != ""
	switch {
	case c.CredentialsProvider != nil && static:
		bad("credentials: set either CredentialsProvider or AccessKeyID/AccessKeySecret/SecurityToken, not both")
	case c.CredentialsProvider == nil && !static:
		bad("credentials: set AccessKeyID and AccessKeySecret, or CredentialsProvider")
	case c.CredentialsProvider == nil:
		if c.AccessKeyID == "" {
			bad("AccessKeyID: must be set with AccessKeySecret")
		}
		if c.AccessKeySecret == "" {
			bad("AccessKeySecret: must be set with AccessKeyID")
		}
	}

	switch c.AuthVersion {
	case "", sls.AuthV1:
	case sls.AuthV4:
		if c.Region == "" {
			bad("Region: must be set with AuthVersion %q", sls.AuthV4)
		}
	default:
		bad("AuthVersion %q: must be %q or %q", c.AuthVersion, sls.AuthV1, sls.AuthV4)
	}
	if c.RequestTimeout < 0 {
		bad("RequestTimeout %v: must not be negative", c.RequestTimeout)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("slspubsub: invalid ClientConfig: %w", errors.Join(errs...))
}

// endpointHost strips an http:// or https:// scheme and a trailing slash
// from endpoint.
func endpointHost(endpoint string) (string, error) {
	host := endpoint
	if rest, ok := strings.CutPrefix(host, "https://"); ok {
		host = rest
	} else if rest, ok := strings.CutPrefix(host, "http://"); ok {
		host = rest
	} else if strings.Contains(host, "://") {
		return "", errors.New("the scheme must be http:// or https://")
	}
	host = strings.TrimSuffix(host, "/")
	if host == "" {
		return "", errors.New("must be set")
	}
	return host, nil
}

// endpointIsHTTPS reports whether the endpoint asks for https.
func endpointIsHTTPS(endpoint string) bool { return strings.HasPrefix(endpoint, "https://") }

// validProjectName applies SLS's project naming rule.
func validProjectName(name string) bool {
	if len(name) < 3 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(name)-1:
		default:
			return false
		}
	}
	return true
}

const redacted = "[redacted]"

// String prints the config with AccessKeySecret and SecurityToken redacted,
// so that a config can be logged. It serves the %v and %+v verbs.
func (c ClientConfig) String() string {
	return "slspubsub.ClientConfig" + c.fields()
}

// GoString is String for the %#v verb: it too redacts the secrets.
func (c ClientConfig) GoString() string { return c.String() }

func (c ClientConfig) fields() string {
	secret := func(s string) string {
		if s == "" {
			return `""`
		}
		return redacted
	}
	provider := "nil"
	if c.CredentialsProvider != nil {
		provider = fmt.Sprintf("%T", c.CredentialsProvider) // the type only: a value may hold secrets
	}
	client := "nil"
	if c.HTTPClient != nil {
		client = "set"
	}
	return fmt.Sprintf("{Endpoint:%q Project:%q AccessKeyID:%q AccessKeySecret:%s SecurityToken:%s "+
		"CredentialsProvider:%s AuthVersion:%q Region:%q HTTPClient:%s RequestTimeout:%v UserAgent:%q}",
		c.Endpoint, c.Project, c.AccessKeyID, secret(c.AccessKeySecret), secret(c.SecurityToken),
		provider, c.AuthVersion, c.Region, client, c.RequestTimeout, c.UserAgent)
}
