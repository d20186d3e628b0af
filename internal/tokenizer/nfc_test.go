package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// TestNFC compares nfc with Python's unicodedata.normalize("NFC", ...) on the inputs mknfc.py
// wrote: every rune with a canonical decomposition and its NFD, base letters with two marks in
// each order, and Hangul jamo sequences.
func TestNFC(t *testing.T) {
	path := filepath.Join(golden.Root(t), "tokenizer", "nfc_cases.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, bad := 0, 0
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		var c [2]string
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("%s: line %d: %v", path, i+1, err)
		}
		n++
		if got := nfc(c[0]); got != c[1] {
			bad++
			if bad <= 10 {
				t.Errorf("nfc(%+q) = %+q, want %+q", c[0], got, c[1])
			}
		}
	}
	if n < 5000 {
		t.Fatalf("%s: %d cases, want the full set (regenerate with go generate)", path, n)
	}
	if bad > 0 {
		t.Errorf("%d of %d NFC cases differ (tables from Unicode %s)", bad, n, nfcUnicodeVersion)
	}
}

// Text that is already NFC comes back unchanged, and without allocating when no rune needs a look.
func TestNFCKeepsStableText(t *testing.T) {
	for _, s := range []string{"", "a photo of a cat", "café crème", "ポケモン 한국어", "🔥👍🏽"} {
		if got := nfc(s); got != s {
			t.Errorf("nfc(%q) = %q", s, got)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { nfc("a photo of a café") }); allocs != 0 {
		t.Errorf("nfc of NFC text allocates %v times, want 0", allocs)
	}
}
