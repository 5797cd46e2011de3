package backends

// RangeStatements names a dialect's range and count statements by key-range
// shape, so that one function picks the statement and builds its arguments
// for every dialect. Range statements take (keysOnly, key[, end][, rev],
// limit); count statements take (key[, end][, rev]).
type RangeStatements struct {
	// Indexed by shape: 0 one key, 1 [key, end), 2 every key >= key.
	Current, Log           [3]string
	CountCurrent, CountLog [3]string
	// RevTwice: the log statements use positional placeholders and name
	// the revision twice (MySQL).
	RevTwice bool
}

func (kr KeyRange) shape() int {
	switch {
	case kr.Single():
		return 0
	case kr.FromKey:
		return 2
	}
	return 1
}

// keyArgs appends key, end (for a bounded range) and rev (for a log read).
func (s *RangeStatements) keyArgs(args []any, kr KeyRange, rev int64) []any {
	args = append(args, kr.Key)
	if kr.shape() == 1 {
		args = append(args, kr.End)
	}
	if rev != 0 {
		args = append(args, rev)
		if s.RevTwice {
			args = append(args, rev)
		}
	}
	return args
}

// Range returns the statement and arguments reading kr at rev (0: the
// latest state); limit is the dialect's own value for the LIMIT
// placeholder.
func (s *RangeStatements) Range(kr KeyRange, rev int64, limit any, keysOnly bool) (string, []any) {
	q := s.Current[kr.shape()]
	if rev != 0 {
		q = s.Log[kr.shape()]
	}
	return q, append(s.keyArgs([]any{keysOnly}, kr, rev), limit)
}

// Count returns the statement and arguments counting kr at rev.
func (s *RangeStatements) Count(kr KeyRange, rev int64) (string, []any) {
	q := s.CountCurrent[kr.shape()]
	if rev != 0 {
		q = s.CountLog[kr.shape()]
	}
	return q, s.keyArgs(nil, kr, rev)
}
