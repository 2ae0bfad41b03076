package pgcluster

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		sign int
	}{
		{"9.6", "15", -1},
		{"15", "9.6", 1},
		{"16", "16", 0},
		{"10", "9", 1},
	}
	for _, tt := range tests {
		got := compareVersions(tt.a, tt.b)
		if (got > 0) != (tt.sign > 0) || (got < 0) != (tt.sign < 0) {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.sign)
		}
	}
}
