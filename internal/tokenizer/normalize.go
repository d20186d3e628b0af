package tokenizer

import (
	"strings"
	"unicode"
)

// The two transformers implementations clean text differently before the pre-tokenizer; these
// functions reproduce each one, step for step.

// normalizeFast is the normalizer of the tokenizers pipeline (transformers 5 CLIPTokenizer,
// CLIPTokenizerFast of 4.x): NFC, every run of \s turned into one space, then each rune
// lowercased on its own (full mapping, so İ becomes i + U+0307, but no final sigma).
func normalizeFast(s string) string {
	s = nfc(s)
	var b strings.Builder
	b.Grow(len(s))
	inSpace := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		writeLower(&b, r)
	}
	return b.String()
}

// writeLower writes the full lowercase mapping of r: the simple mapping, except for U+0130,
// the only rune whose lowercase is two runes.
func writeLower(b *strings.Builder, r rune) {
	if r < 0x80 {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		b.WriteByte(byte(r))
		return
	}
	if r == 'İ' {
		b.WriteString("i\u0307")
		return
	}
	b.WriteRune(unicode.ToLower(r))
}

// normalizeSlow is what the Python CLIPTokenizer of transformers 4.x does without ftfy:
// BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize, joined by spaces. It
// drops NUL, U+FFFD and control/format/unassigned runes, maps tab, newline, CR and Zs to a
// space, puts spaces around CJK ideographs, applies NFC, splits on Python's whitespace and
// lowercases each word with Python's str.lower (final sigma included).
func normalizeSlow(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == 0 || r == unicode.ReplacementChar || pyControl(r):
		case r == ' ' || r == '\t' || r == '\n' || r == '\r' || unicode.Is(unicode.Zs, r):
			b.WriteByte(' ')
		case cjkIdeograph(r):
			b.WriteByte(' ')
			b.WriteRune(r)
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	words := strings.FieldsFunc(nfc(b.String()), pySpace)
	b.Reset()
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		pyLower(&b, w)
	}
	return b.String()
}

// pyControl is BasicTokenizer's _is_control: general category C* (Cc, Cf, Cs, Co and
// unassigned Cn), except tab, newline and carriage return.
func pyControl(r rune) bool {
	if r == '\t' || r == '\n' || r == '\r' {
		return false
	}
	if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs) {
		return true
	}
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}

// pySpace is Python's str.isspace, the separator of str.split().
func pySpace(r rune) bool {
	switch {
	case r >= 0x09 && r <= 0x0D, r >= 0x1C && r <= 0x20, r == 0x85, r == 0xA0, r == 0x1680:
		return true
	case r >= 0x2000 && r <= 0x200A, r == 0x2028, r == 0x2029, r == 0x202F, r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

// cjkIdeograph is BasicTokenizer's _is_chinese_char: the CJK Unified Ideographs blocks and the
// compatibility ideographs (not kana, not hangul).
func cjkIdeograph(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FFF || r >= 0x3400 && r <= 0x4DBF || r >= 0x20000 && r <= 0x2A6DF ||
		r >= 0x2A700 && r <= 0x2B73F || r >= 0x2B740 && r <= 0x2B81F || r >= 0x2B820 && r <= 0x2CEAF ||
		r >= 0xF900 && r <= 0xFAFF || r >= 0x2F800 && r <= 0x2FA1F
}

// pyLower writes Python's w.lower(): the full lowercase mapping, and capital sigma as final
// sigma (ς) when a cased rune comes before it and none after it, case-ignorable runes skipped.
func pyLower(b *strings.Builder, w string) {
	if !strings.ContainsRune(w, 'Σ') {
		for _, r := range w {
			writeLower(b, r)
		}
		return
	}
	rs := []rune(w)
	for i, r := range rs {
		if r == 'Σ' && finalSigma(rs, i) {
			b.WriteRune('ς')
			continue
		}
		writeLower(b, r)
	}
}

func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

// cased is the Unicode Cased property: Lowercase, Uppercase or titlecase letters.
func cased(r rune) bool {
	return unicode.In(r, unicode.Ll, unicode.Lu, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// caseIgnorable is the Unicode Case_Ignorable property: Mn, Me, Cf, Lm, Sk and the
// Word_Break classes MidLetter, MidNumLet and Single_Quote.
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}
