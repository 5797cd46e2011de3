// Package notify defines Source, the change stream that wakes an instance's
// watch tailer when the database commits new revisions. A Source is a
// wake-up and a hint, never the source of truth: the tailer always reads the
// events themselves from the backend (kv_log), from its own cursor, so a
// missed, duplicated or spurious wake-up can delay an event but never lose
// or duplicate one.
package notify

import "context"

// Source reports commits. Implementations: local (in-process, after each
// commit of this process), pgnotify (PostgreSQL LISTEN/NOTIFY), binlog
// (MySQL replication), poll (a timer, for databases without a stream).
type Source interface {
	// Next blocks until the database reports a commit of a revision newer
	// than after, or ctx ends. It returns the newest revision it knows of,
	// or 0 when the stream carries no revision (the caller then reads
	// until it finds nothing new). Spurious returns are allowed.
	Next(ctx context.Context, after int64) (int64, error)
}
