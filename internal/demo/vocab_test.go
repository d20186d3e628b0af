package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// The written folder loads with the tokenizer package, and every caption becomes the start token,
// one id per word (word i of Words has id i), the end token, and end-token padding up to
// TokenLength, without truncation. (transformers 5.24's CLIPTokenizer, run by hand on these
// folders, gave the same ids.)
func TestTokenizerFolder(t *testing.T) {
	for _, grid := range []int{0, 3} {
		opts := Options{Size: 32, Grid: grid}
		dir := t.TempDir()
		if err := WriteTokenizer(dir, opts); err != nil {
			t.Fatal(err)
		}
		tk, err := tokenizer.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		words := Words()
		end := tk.VocabSize() - 1
		if tk.BOS() != end-1 || tk.EOS() != end || tk.Pad() != end {
			t.Fatalf("start/end/pad ids %d %d %d, want %d %d %d", tk.BOS(), tk.EOS(), tk.Pad(), end-1, end, end)
		}
		for i, w := range words {
			if ids := tk.Encode(w); !slices.Equal(ids, []int{i}) {
				t.Errorf("%q: ids %v, want [%d]", w, ids, i)
			}
		}
		ps := Positions(grid)
		if ps == nil {
			ps = []Position{NoPosition}
		}
		maxLen := opts.TokenLength()
		for _, k := range Combos(All) {
			for _, p := range ps {
				caption := Caption(Labels{k.Color, k.Shape, p})
				want := []int64{int64(tk.BOS())}
				for _, w := range strings.Fields(caption) {
					want = append(want, int64(slices.Index(words, w)))
				}
				want = append(want, int64(tk.EOS()))
				if len(want) > maxLen {
					t.Fatalf("%q: %d tokens, TokenLength %d", caption, len(want), maxLen)
				}
				n0 := len(want)
				for len(want) < maxLen {
					want = append(want, int64(tk.Pad()))
				}
				ids, n := tk.Tokens(caption, maxLen)
				if !slices.Equal(ids, want) || n != n0 {
					t.Errorf("Tokens(%q) = %v, %d; want %v, %d", caption, ids, n, want, n0)
				}
				if got := tk.Decode(tk.Encode(caption)); got != caption {
					t.Errorf("Decode(Encode(%q)) = %q", caption, got)
				}
			}
		}
	}
}

// Writing the folder twice gives the same bytes.
func TestWriteTokenizerDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if err := WriteTokenizer(dir, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"} {
		x, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(b, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two writes", name)
		}
	}
}
