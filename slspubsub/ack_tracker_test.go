package slspubsub

import "testing"

func TestAckTracker(t *testing.T) {
	type ack struct {
		cursor int64
		index  int
	}
	tests := []struct {
		name string
		acks []ack
		want int64
	}{
		{"nothing acked", nil, 10},
		{"first group partly acked", []ack{{10, 0}, {10, 1}}, 10},
		{"first group acked", []ack{{10, 0}, {10, 1}, {10, 2}}, 11},
		{"out of order: later groups acked first", []ack{{11, 0}, {12, 1}, {12, 0}}, 10},
		{"out of order: all acked", []ack{{12, 1}, {11, 0}, {10, 2}, {12, 0}, {10, 0}, {10, 1}}, 13},
		{"duplicate acks do not count twice", []ack{{10, 0}, {10, 0}, {10, 0}, {10, 1}}, 10},
		{"unknown positions ignored", []ack{{9, 0}, {10, 7}, {99, 0}}, 10},
		{"hole in the middle", []ack{{10, 0}, {10, 1}, {10, 2}, {12, 0}, {12, 1}}, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newAckTracker(10)
			tr.add(10, 3, 0)
			tr.add(11, 1, 0)
			tr.add(12, 2, 0)
			tr.fetched(13)
			for _, a := range tt.acks {
				tr.ack(a.cursor, a.index)
			}
			if got := tr.committed(); got != tt.want {
				t.Fatalf("committed = %d, want %d", got, tt.want)
			}
			if got := tr.drained(); got != (tt.want == 13) {
				t.Fatalf("drained = %v", got)
			}
		})
	}
}

func TestAckTrackerEmptyAndPreAcked(t *testing.T) {
	tr := newAckTracker(5)
	if got := tr.committed(); got != 5 {
		t.Fatalf("committed of an empty tracker = %d, want 5", got)
	}
	tr.add(5, 3, 2) // resumed after index 1 of group 5
	tr.add(6, 0, 0) // an empty group is complete at once
	tr.fetched(7)
	if got := tr.committed(); got != 5 {
		t.Fatalf("committed = %d, want 5", got)
	}
	tr.ack(5, 2)
	if got := tr.committed(); got != 7 {
		t.Fatalf("committed = %d, want 7", got)
	}
}

func TestAckTrackerCompacts(t *testing.T) {
	tr := newAckTracker(0)
	for c := int64(0); c < 1000; c++ {
		tr.add(c, 1, 0)
		tr.fetched(c + 1)
		if c > 0 {
			tr.ack(c-1, 0)
		}
		if got := tr.committed(); got != c {
			t.Fatalf("committed = %d, want %d", got, c)
		}
	}
	if len(tr.groups)-tr.head != 1 || cap(tr.groups) > 512 {
		t.Fatalf("tracker kept %d groups (cap %d)", len(tr.groups)-tr.head, cap(tr.groups))
	}
}
