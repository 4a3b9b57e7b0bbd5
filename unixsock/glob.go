package unixsock

// globMatch matches s against a Redis glob pattern (as stringmatchlen):
// * any sequence, ? any byte, [abc] [^abc] [a-z] classes, \x escapes x.
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	starP, starI := -1, 0 // backtrack point of the last *
	for i < len(s) {
		if p < len(pattern) {
			switch pattern[p] {
			case '*':
				for p < len(pattern) && pattern[p] == '*' {
					p++
				}
				if p == len(pattern) {
					return true
				}
				starP, starI = p, i
				continue
			case '?':
				p, i = p+1, i+1
				continue
			case '[':
				if np, ok := matchClass(pattern, p, s[i]); ok {
					p, i = np, i+1
					continue
				}
			case '\\':
				if p+1 < len(pattern) && pattern[p+1] == s[i] {
					p, i = p+2, i+1
					continue
				}
				if p+1 == len(pattern) && s[i] == '\\' {
					p, i = p+1, i+1
					continue
				}
			default:
				if pattern[p] == s[i] {
					p, i = p+1, i+1
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the class starting at pattern[p] == '[' and
// returns the index after the class.
func matchClass(pattern string, p int, c byte) (int, bool) {
	p++
	not := p < len(pattern) && pattern[p] == '^'
	if not {
		p++
	}
	match := false
	for p < len(pattern) && pattern[p] != ']' {
		switch {
		case pattern[p] == '\\' && p+1 < len(pattern):
			p++
			if pattern[p] == c {
				match = true
			}
			p++
		case p+2 < len(pattern) && pattern[p+1] == '-' && pattern[p+2] != ']':
			lo, hi := pattern[p], pattern[p+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			if c >= lo && c <= hi {
				match = true
			}
			p += 3
		default:
			if pattern[p] == c {
				match = true
			}
			p++
		}
	}
	if p < len(pattern) {
		p++ // the ']'
	}
	return p, match != not
}
