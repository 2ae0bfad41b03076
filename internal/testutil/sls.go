package testutil

import (
	"net/http"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// SLSEnv is a started SLS emulator and the settings an SDK client needs to
// reach it.
type SLSEnv struct {
	Server          *slstest.Server
	Endpoint        string       // give to the SDK as its endpoint
	AccessKeyID     string       // an account the server accepts
	AccessKeySecret string       // its secret
	HTTPClient      *http.Client // dials the emulator whatever host the SDK asks for
}

// SLS starts an emulator for the test, closed on cleanup. opts are passed
// to slstest.NewServer; without a WithAccount option the server accepts
// slstest.DefaultAccessKeyID / DefaultAccessKeySecret, which the returned
// settings carry.
func SLS(t testing.TB, opts ...slstest.Option) *SLSEnv {
	t.Helper()
	srv, err := slstest.NewServer(opts...)
	if err != nil {
		t.Fatalf("testutil: start SLS emulator: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("testutil: close SLS emulator: %v", err)
		}
	})
	return &SLSEnv{
		Server:          srv,
		Endpoint:        srv.Endpoint(),
		AccessKeyID:     slstest.DefaultAccessKeyID,
		AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient:      srv.HTTPClient(),
	}
}

// Client returns an SDK client signed with the environment's account and
// wired to the emulator. The SDK's retry timeout is lowered to 5 s so a test
// that makes the server fail does not wait for the SDK's default of 90 s.
func (e *SLSEnv) Client() *sls.Client {
	c := &sls.Client{
		Endpoint:        e.Endpoint,
		AccessKeyID:     e.AccessKeyID,
		AccessKeySecret: e.AccessKeySecret,
		HTTPClient:      e.HTTPClient,
	}
	c.SetRetryTimeout(5 * time.Second)
	return c
}

// LogStore creates project/logstore with the given number of shards on the
// emulator, failing the test on error.
func (e *SLSEnv) LogStore(t testing.TB, project, logstore string, shards int) {
	t.Helper()
	if err := e.Server.CreateLogStore(project, logstore, shards); err != nil {
		t.Fatalf("testutil: create logstore %s/%s: %v", project, logstore, err)
	}
}
