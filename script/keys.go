package script

import "strconv"

// SplitKeys splits what follows the script (or sha) of EVAL and EVALSHA,
// numkeys key... arg..., into KEYS and ARGV, with Redis's errors for a bad
// numkeys. ok is false when it answered an error reply.
func SplitKeys(rest [][]byte) (keys, args [][]byte, rep Reply, ok bool) {
	if len(rest) == 0 {
		return nil, nil, ErrorReply("ERR wrong number of arguments for 'eval' command"), false
	}
	n, err := strconv.ParseInt(string(rest[0]), 10, 64)
	if err != nil {
		return nil, nil, ErrorReply("ERR value is not an integer or out of range"), false
	}
	switch {
	case n > int64(len(rest)-1):
		return nil, nil, ErrorReply(msgNumKeysLarge), false
	case n < 0:
		return nil, nil, ErrorReply(msgNumKeysNeg), false
	}
	return rest[1 : 1+n], rest[1+n:], Reply{}, true
}

// KeySet is the set of keys a run declared in KEYS. A server whose scripts
// may only touch the keys they declare (it locks them before the run)
// checks each command's keys against it.
type KeySet map[string]struct{}

// NewKeySet returns the set of keys.
func NewKeySet(keys [][]byte) KeySet {
	s := make(KeySet, len(keys))
	for _, k := range keys {
		s[string(k)] = struct{}{}
	}
	return s
}

// Has reports whether key was declared.
func (s KeySet) Has(key []byte) bool {
	_, ok := s[string(key)]
	return ok
}

// Undeclared returns the first key of a command that was not declared. The
// key positions are the command's as Redis's COMMAND reports them: first
// and last argument index (args[0] is the command name; a negative last
// counts from the end, -1 being the last argument) and the step between
// keys; first 0 means the command takes no keys.
func (s KeySet) Undeclared(args [][]byte, first, last, step int) ([]byte, bool) {
	if first <= 0 || step <= 0 {
		return nil, false
	}
	if last < 0 {
		last = len(args) + last
	}
	for i := first; i <= last && i < len(args); i += step {
		if !s.Has(args[i]) {
			return args[i], true
		}
	}
	return nil, false
}
