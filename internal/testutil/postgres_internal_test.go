package testutil

import (
	"regexp"
	"strings"
	"testing"
)

func TestDatabaseName(t *testing.T) {
	valid := regexp.MustCompile(`^t_[a-z0-9_]*[a-z0-9]_[0-9a-f]{8}$`)
	tests := []struct {
		testName string
		prefix   string
	}{
		{"TestX", "t_testx_"},
		{"TestOffsets/two_shards#01", "t_testoffsets_two_shards_01_"},
		{"Test Ünïcode--and  spaces", "t_test_n_code_and_spaces_"},
		{"/leading/", "t_leading_"},
		{strings.Repeat("A", 200), "t_" + strings.Repeat("a", maxTestNameInDB) + "_"},
	}
	for _, tt := range tests {
		got := databaseName(tt.testName)
		if !strings.HasPrefix(got, tt.prefix) || !valid.MatchString(got) || len(got) > 63 {
			t.Errorf("databaseName(%q) = %q, want %q + 8 hex digits, at most 63 bytes", tt.testName, got, tt.prefix)
		}
	}
	if a, b := databaseName("TestX"), databaseName("TestX"); a == b {
		t.Errorf("two calls gave the same name %q", a)
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/t_x?sslmode=disable"},
		{"postgresql://u:p@h/", "postgresql://u:p@h/t_x"},
		{"postgres://h", "postgres://h/t_x"},
		{"host=/tmp dbname=postgres", "host=/tmp dbname=postgres dbname=t_x"},
	}
	for _, tt := range tests {
		got, err := withDatabase(tt.in, "t_x")
		if err != nil || got != tt.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := withDatabase("postgres://u:secret@h:bad/", "t_x"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad URL: error %v, want one that does not show the password", err)
	}
}
