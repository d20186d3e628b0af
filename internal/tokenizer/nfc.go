package tokenizer

//go:generate python3 mknfc.py

import (
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// Both transformers tokenizers start with Unicode NFC, so that "é" typed as e + U+0301 and "é"
// as one rune give the same ids. The standard library has no normalizer and the module takes
// no dependency for it: nfc_tables.go carries the data (canonical decompositions, combining
// classes, primary composites) and this file the algorithm of UAX #15.

// Hangul syllables decompose and compose by arithmetic (Unicode §3.12).
const (
	hangulS0, hangulL0, hangulV0, hangulT0 = 0xAC00, 0x1100, 0x1161, 0x11A7
	hangulLN, hangulVN, hangulTN           = 19, 21, 28
	hangulNN                               = hangulVN * hangulTN
	hangulSN                               = hangulLN * hangulNN
)

type nfcData struct {
	decomp map[rune][]rune
	comp   map[[2]rune]rune
	second map[rune]bool // runes that compose with a rune before them
}

var (
	nfcOnce sync.Once
	nfcTab  nfcData
)

func nfcTables() *nfcData {
	nfcOnce.Do(func() {
		t := &nfcTab
		t.decomp = make(map[rune][]rune, 2100)
		for i := 0; i < len(nfcDecompData); {
			r, n := nfcDecompData[i], int(nfcDecompData[i+1])
			t.decomp[r] = nfcDecompData[i+2 : i+2+n]
			i += 2 + n
		}
		t.comp = make(map[[2]rune]rune, len(nfcCompData)/3)
		t.second = make(map[rune]bool)
		for i := 0; i < len(nfcCompData); i += 3 {
			t.comp[[2]rune{nfcCompData[i], nfcCompData[i+1]}] = nfcCompData[i+2]
			t.second[nfcCompData[i+1]] = true
		}
	})
	return &nfcTab
}

// combiningClass is the canonical combining class of r.
func combiningClass(r rune) uint8 {
	if r < 0x300 {
		return 0
	}
	n := len(nfcCCCData) / 3
	i := sort.Search(n, func(i int) bool { return nfcCCCData[3*i+1] >= r })
	if i < n && nfcCCCData[3*i] <= r {
		return uint8(nfcCCCData[3*i+2])
	}
	return 0
}

// nfcStable reports whether r can be copied through NFC unchanged whatever its neighbours:
// no decomposition, class 0, never the second half of a composition.
func nfcStable(t *nfcData, r rune) bool {
	if r < 0x300 {
		return true
	}
	if r >= hangulS0 && r < hangulS0+hangulSN {
		return true // decomposes to L V (T) and composes back; only a following T can join it
	}
	if r >= hangulV0 && r < hangulV0+hangulVN || r > hangulT0 && r < hangulT0+hangulTN {
		return false
	}
	_, dec := t.decomp[r]
	return !dec && !t.second[r] && combiningClass(r) == 0
}

// nfc returns s in Unicode Normalization Form C. Text made only of stable runes (all of ASCII
// and most text) comes back as is, without allocating.
func nfc(s string) string {
	t := nfcTables()
	stable := true
	for _, r := range s {
		if !nfcStable(t, r) {
			stable = false
			break
		}
	}
	if stable {
		return s
	}
	d := make([]rune, 0, len(s)) // the canonical decomposition of s
	for _, r := range s {
		d = decompose(t, d, r)
	}
	reorder(d)
	return compose(t, d)
}

func decompose(t *nfcData, d []rune, r rune) []rune {
	if r >= hangulS0 && r < hangulS0+hangulSN {
		i := r - hangulS0
		d = append(d, hangulL0+i/hangulNN, hangulV0+(i%hangulNN)/hangulTN)
		if tail := i % hangulTN; tail != 0 {
			d = append(d, hangulT0+tail)
		}
		return d
	}
	if full, ok := t.decomp[r]; ok {
		return append(d, full...)
	}
	return append(d, r)
}

// reorder sorts each run of nonzero combining classes by class, stably (the canonical ordering).
func reorder(d []rune) {
	for i := 0; i < len(d); {
		if combiningClass(d[i]) == 0 {
			i++
			continue
		}
		j := i
		for j < len(d) && combiningClass(d[j]) != 0 {
			j++
		}
		run := d[i:j]
		sort.SliceStable(run, func(a, b int) bool { return combiningClass(run[a]) < combiningClass(run[b]) })
		i = j
	}
}

// compose joins each starter with the runes after it that are not blocked from it.
func compose(t *nfcData, d []rune) string {
	out := d[:0] // composing only shortens, so it can reuse d
	starter := -1
	for _, r := range d {
		cc := combiningClass(r)
		if starter >= 0 {
			last := len(out) - 1
			var lastCC uint8
			if last != starter {
				lastCC = combiningClass(out[last])
			}
			if last == starter || lastCC != 0 && lastCC < cc {
				if c, ok := composePair(t, out[starter], r); ok {
					out[starter] = c
					continue
				}
			}
		}
		if cc == 0 {
			starter = len(out)
		}
		out = append(out, r)
	}
	var b strings.Builder
	b.Grow(len(out) * utf8.UTFMax)
	for _, r := range out {
		b.WriteRune(r)
	}
	return b.String()
}

func composePair(t *nfcData, a, b rune) (rune, bool) {
	if a >= hangulL0 && a < hangulL0+hangulLN && b >= hangulV0 && b < hangulV0+hangulVN {
		return hangulS0 + ((a-hangulL0)*hangulVN+(b-hangulV0))*hangulTN, true
	}
	if a >= hangulS0 && a < hangulS0+hangulSN && (a-hangulS0)%hangulTN == 0 && b > hangulT0 && b < hangulT0+hangulTN {
		return a + (b - hangulT0), true
	}
	c, ok := t.comp[[2]rune{a, b}]
	return c, ok
}
