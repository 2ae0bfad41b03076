package slspubsub

import "time"

// Content is one key/value pair of a log, or one tag of a LogGroup.
type Content struct {
	Key   string
	Value string
}

// Log is one SLS log: a time and ordered key/value contents.
type Log struct {
	// Time is the log time. SLS keeps whole seconds plus an optional
	// nanosecond part (TimeNs), so any time.Time round-trips exactly.
	Time     time.Time
	Contents []Content
}

// LogGroup is a batch of logs sharing a topic, a source, a machine UUID and
// tags: the unit SLS writes and reads.
type LogGroup struct {
	Topic       string
	Source      string
	MachineUUID string
	Category    string
	Tags        []Content
	Logs        []Log
}
