// Error classes: which errors are a request's own (told to that client) and
// which are the database's (named after it, so that a client knows which).

package backends

import (
	"context"
	"errors"
	"fmt"
)

// dbErr names the database in err, unless err is a request's own failure
// or its context's, or the backend is closing.
func (e *Engine) dbErr(err error) error {
	switch {
	case err == nil, e.cfg.Database == "", isUserErr(err), errors.Is(err, ErrClosed), errors.Is(err, ErrRefused),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.As(err, new(callerError)):
		return err
	}
	return fmt.Errorf("%s: %w", e.cfg.Database, err)
}

// isUserErr reports whether err is a request's own failure (reported to that
// client) rather than a database failure (which fails the batch).
func isUserErr(err error) bool {
	return errors.Is(err, ErrCompacted) || errors.Is(err, ErrFutureRev) ||
		errors.Is(err, ErrKeyNotFound) || errors.Is(err, ErrLeaseNotFound) ||
		errors.Is(err, ErrLeaseExists) || errors.Is(err, ErrKeyTooLarge) ||
		errors.Is(err, ErrAuthOldRevision)
}
