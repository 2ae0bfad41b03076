package main

import (
	"context"
	"testing"
)

// TestJoin runs the example's data: aligned, every order meets its
// payment; unaligned, the same data loses matches.
func TestJoin(t *testing.T) {
	srv, cfg, n, err := setup(3)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	aligned, err := join(context.Background(), cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	free, err := join(context.Background(), cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d orders: matched aligned %d, unaligned %d (late events %d)", n, aligned.matched, free.matched, free.late)
	if aligned.matched != n || aligned.late != 0 {
		t.Errorf("aligned: matched %d of %d, %d late events", aligned.matched, n, aligned.late)
	}
	if free.matched >= n {
		t.Errorf("unaligned matched %d of %d: the data does not show the loss", free.matched, n)
	}
}
