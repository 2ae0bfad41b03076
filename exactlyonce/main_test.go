package exactlyonce

import (
	"testing"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
