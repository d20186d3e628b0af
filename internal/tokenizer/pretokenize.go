package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// pretokenize splits normalized text into the pieces BPE works on, emitting them in order. It is
// CLIP's pattern, scanned by hand:
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// At each position the first alternative that matches wins (not the longest); where none
// matches (whitespace) the scan moves on one rune. With fold set it behaves as the Python
// `regex` module does under re.IGNORECASE, which the Python CLIPTokenizer uses: literals match
// up to simple case folding (so 'ſ is a contraction), and U+0345, a mark whose case fold is a
// letter, matches no alternative. Without fold it is the case-sensitive pattern of the
// tokenizers pipeline.
func pretokenize(s string, fold bool, emit func(piece string)) {
	for i := 0; i < len(s); {
		if n := matchAt(s[i:], fold); n > 0 {
			emit(s[i : i+n])
			i += n
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
}

// clipLiterals are the pattern's literal alternatives, in the pattern's order.
var clipLiterals = []string{"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}

// matchAt is the length in bytes of the pattern's match at the start of s, 0 if none.
func matchAt(s string, fold bool) int {
	for _, lit := range clipLiterals {
		if n := prefixLen(s, lit, fold); n > 0 {
			return n
		}
	}
	r, size := utf8.DecodeRuneInString(s)
	switch {
	case unicode.IsLetter(r):
		return size + runLen(s[size:], unicode.IsLetter)
	case unicode.IsNumber(r):
		return size
	case other(r, fold):
		return size + runLen(s[size:], func(r rune) bool { return other(r, fold) })
	}
	return 0
}

// other is the class [^\s\p{L}\p{N}].
func other(r rune, fold bool) bool {
	if fold && r == 0x345 {
		return false
	}
	return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r)
}

// runLen is the length in bytes of the longest prefix of s whose runes all satisfy in.
func runLen(s string, in func(rune) bool) int {
	n := 0
	for n < len(s) {
		r, size := utf8.DecodeRuneInString(s[n:])
		if !in(r) {
			break
		}
		n += size
	}
	return n
}

// prefixLen is the length in bytes of the prefix of s that matches lit (up to simple case
// folding when fold is set), 0 if s does not start with lit.
func prefixLen(s, lit string, fold bool) int {
	if !fold {
		if strings.HasPrefix(s, lit) {
			return len(lit)
		}
		return 0
	}
	n := 0
	for _, want := range lit {
		if n >= len(s) {
			return 0
		}
		r, size := utf8.DecodeRuneInString(s[n:])
		if !equalFold(r, want) {
			return 0
		}
		n += size
	}
	return n
}

// equalFold reports whether a and b are equal under simple case folding.
func equalFold(a, b rune) bool {
	if a == b {
		return true
	}
	for f := unicode.SimpleFold(a); f != a; f = unicode.SimpleFold(f) {
		if f == b {
			return true
		}
	}
	return false
}
