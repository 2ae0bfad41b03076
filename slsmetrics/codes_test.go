package slsmetrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// TestErrorCodeLabels: the code label is SLS's error code, a failure class, or a fixed placeholder for a code
// unfit as a label value (too long, or with characters a server should not send), so its values stay bounded.
func TestErrorCodeLabels(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{&slspubsub.Error{HTTPStatus: 403, Code: "ShardWriteQuotaExceed"}, "ShardWriteQuotaExceed"},
		{fmt.Errorf("publish: %w", &slspubsub.Error{HTTPStatus: 403, Code: "Write QPS Exceed"}), "Write QPS Exceed"},
		{&slspubsub.Error{HTTPStatus: 502}, "http_502"},
		{&slspubsub.Error{HTTPStatus: 500, Code: "bad\ncode"}, "invalid_code"},
		{&slspubsub.Error{HTTPStatus: 500, Code: strings.Repeat("x", 65)}, "invalid_code"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "canceled"},
	} {
		if got := slspubsub.ErrorCode(tc.err); got != tc.want {
			t.Errorf("ErrorCode(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
