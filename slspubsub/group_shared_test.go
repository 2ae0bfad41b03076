package slspubsub

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// TestGroupSharedMatchesGeneralPath checks that the Subscriber's per-group
// shortcut (groupShared) builds exactly the messages the general path of
// DefaultMarshaler and ReceivedLog.SetMetadata builds, for foreign logs and
// for logs this package wrote, over groups with and without the optional
// fields, with tags SLS adds and others, and logs sharing or not their time.
func TestGroupSharedMatchesGeneralPath(t *testing.T) {
	own := message.NewMessage("id-1", []byte("payload"))
	own.Metadata.Set("user", "v")
	rec, err := DefaultMarshaler{}.Marshal("store", own)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 5).UTC()
	groups := map[string]*LogGroup{
		"bare": {Logs: []Log{{Time: t0, Contents: []Content{{Key: "a", Value: "1"}}}}},
		"full": {
			Topic: "topic", Source: "10.0.0.1", MachineUUID: "m-1",
			Tags: []Content{{Key: "__pack_id__", Value: "P-1"}, {Key: "custom", Value: "c"}, {Key: "__hostname__", Value: "h"}},
			Logs: []Log{
				{Time: t0, Contents: []Content{{Key: "a", Value: "1"}, {Key: "b", Value: "x\"y"}}},
				{Time: t0, Contents: rec.Log.Contents},
				{Time: t0.Add(time.Second), Contents: nil},
			},
		},
		"many tags": {Tags: manyTags(12), Logs: []Log{{Time: t0}, {Time: t0.Add(1)}}},
	}
	var a arena // shared by the groups, as a shard's fetch loop shares it
	for name, g := range groups {
		for _, index := range []int{0, 4095, 4096, 70000} {
			shared := newGroupShared(g, "3", mtPosition.Cursor, &a)
			for i := range g.Logs {
				p := mtPosition
				p.Index = index + i
				general := mtReceived(g, i, p)
				fast := general
				fast.shared = shared
				want, err := DefaultMarshaler{}.Unmarshal(general)
				if err != nil {
					t.Fatalf("%s log %d: general path: %v", name, i, err)
				}
				got, err := DefaultMarshaler{}.Unmarshal(fast)
				if err != nil {
					t.Fatalf("%s log %d: shared path: %v", name, i, err)
				}
				if got.UUID != want.UUID || string(got.Payload) != string(want.Payload) || !maps.Equal(got.Metadata, want.Metadata) {
					t.Errorf("%s log %d index %d: shared path built\n%s %q %v\nwant\n%s %q %v", name, i, p.Index,
						got.UUID, got.Payload, got.Metadata, want.UUID, want.Payload, want.Metadata)
				}
				mdWant, mdGot := message.Metadata{"x": "y"}, message.Metadata{"x": "y"}
				general.SetMetadata(mdWant)
				fast.SetMetadata(mdGot)
				if !maps.Equal(mdGot, mdWant) {
					t.Errorf("%s log %d: SetMetadata with shared = %v, want %v", name, i, mdGot, mdWant)
				}
			}
		}
	}
}

// TestArenaBuffers checks that the buffers an arena hands out never
// overlap: each is capped at its length, so appending to one reallocates,
// and one that outgrew its room is left where append put it.
func TestArenaBuffers(t *testing.T) {
	var a arena
	var bufs [][]byte
	want := []string{}
	for i := range 3000 { // several chunks
		text := strconv.Itoa(i) + "-" + string(make([]byte, i%40))
		b := a.keep(append(a.buf(len(text)), text...))
		if cap(b) != len(b) {
			t.Fatalf("buffer %d: cap %d, len %d", i, cap(b), len(b))
		}
		bufs, want = append(bufs, b), append(want, text)
	}
	grown := a.keep(append(a.buf(2), "longer than asked"...)) // outgrew its estimate
	next := a.keep(append(a.buf(4), "next"...))
	_ = append(bufs[0], "clobber"...)
	for i, b := range bufs {
		if string(b) != want[i] {
			t.Fatalf("buffer %d = %q, want %q", i, b, want[i])
		}
	}
	if string(grown) != "longer than asked" || string(next) != "next" {
		t.Fatalf("grown %q, next %q", grown, next)
	}
	big := a.keep(append(a.buf(arenaChunk), "big"...))
	if string(big) != "big" || cap(big) != 3 {
		t.Fatalf("big buffer %q cap %d", big, cap(big))
	}
}

func manyTags(n int) []Content {
	tags := make([]Content, n)
	for i := range tags {
		tags[i] = Content{Key: "k" + strconv.Itoa(i), Value: strconv.Itoa(i)}
	}
	return tags
}

// TestMsgContext checks the message context: values and deadline of the
// parent, done after end (with the parent's error when the parent ended),
// a Done channel asked for before or after end, and AfterFunc, which
// context.WithCancel uses to follow it.
func TestMsgContext(t *testing.T) {
	type key struct{}
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	defer cancelParent()

	c := newMsgContext(parent)
	if c.Value(key{}) != "v" || c.Err() != nil {
		t.Fatalf("new context: value %v err %v", c.Value(key{}), c.Err())
	}
	early := c.Done()
	child, cancelChild := context.WithCancel(c)
	defer cancelChild()
	ran := make(chan struct{})
	stop := context.AfterFunc(c, func() { close(ran) })
	stopped := false
	stopMe := c.AfterFunc(func() { stopped = true })
	if !stopMe() {
		t.Fatal("stop of a pending AfterFunc returned false")
	}
	select {
	case <-early:
		t.Fatal("done before end")
	default:
	}
	c.end()
	<-early
	<-c.Done()
	<-child.Done()
	<-ran
	if stop() {
		t.Error("stop after the function ran returned true")
	}
	if stopped {
		t.Error("a stopped AfterFunc ran")
	}
	if c.Err() != context.Canceled || child.Err() != context.Canceled {
		t.Errorf("Err = %v, child %v; want context.Canceled", c.Err(), child.Err())
	}
	c.end() // idempotent

	late := newMsgContext(parent)
	cancelParent()
	late.end()
	if late.Err() != context.Canceled {
		t.Errorf("Err after the parent ended = %v", late.Err())
	}
	select {
	case <-late.Done():
	default:
		t.Error("Done asked for after end is not closed")
	}
	deadlineParent, cancelDeadline := context.WithTimeout(context.Background(), time.Hour)
	defer cancelDeadline()
	dl, ok := newMsgContext(deadlineParent).Deadline()
	if want, _ := deadlineParent.Deadline(); !ok || !dl.Equal(want) {
		t.Errorf("Deadline = %v %v, want the parent's", dl, ok)
	}
}
