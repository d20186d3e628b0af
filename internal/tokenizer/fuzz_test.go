package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// smallFiles is a CLIP-shaped vocabulary small enough to fuzz: the byte
// symbols with and without "</w>", a few merges and the two special tokens,
// as vocab.json, merges.txt and the same as tokenizer.json.
func smallFiles(t testing.TB) (vocabJSON, mergesText, tokenizerJSON []byte) {
	var tokens []string
	for _, r := range byteSymbols {
		tokens = append(tokens, string(r))
	}
	for _, r := range byteSymbols {
		tokens = append(tokens, string(r)+"</w>")
	}
	merges := [][2]string{{"t", "h"}, {"th", "e</w>"}, {"a", "n"}, {"an", "d</w>"}, {"o", "n</w>"}}
	lines := []string{"#version: 0.2"}
	var pairs [][]string
	for _, m := range merges {
		tokens = append(tokens, m[0]+m[1])
		lines = append(lines, m[0]+" "+m[1])
		pairs = append(pairs, []string{m[0], m[1]})
	}
	tokens = append(tokens, "<|startoftext|>", "<|endoftext|>")
	vocab := map[string]int{}
	for i, tok := range tokens {
		vocab[tok] = i
	}
	var err error
	if vocabJSON, err = json.Marshal(vocab); err != nil {
		t.Fatal(err)
	}
	n := len(tokens)
	doc := map[string]any{
		"added_tokens": []map[string]any{
			{"id": n - 2, "content": "<|startoftext|>", "special": true, "normalized": true},
			{"id": n - 1, "content": "<|endoftext|>", "special": true},
		},
		"model": map[string]any{"type": "BPE", "end_of_word_suffix": "</w>", "vocab": vocab, "merges": pairs},
	}
	if tokenizerJSON, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	return vocabJSON, []byte(strings.Join(lines, "\n") + "\n"), tokenizerJSON
}

// configs are the tokenizer_config.json files of the SD 1.x and 2.x folders.
func configs(t testing.TB) [][]byte {
	var out [][]byte
	for _, v := range []string{"sd1", "sd2"} {
		b, err := os.ReadFile(filepath.Join(golden.Root(t), "tokenizer", v, "tokenizer_config.json"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// loadFuzzed writes the files given (nil: absent) into a folder and loads
// it; a tokenizer that loads must encode and decode text with ids of its
// own vocabulary.
func loadFuzzed(t *testing.T, files map[string][]byte) {
	dir := t.TempDir()
	for name, b := range files {
		if b != nil {
			writeFile(t, filepath.Join(dir, name), b)
		}
	}
	tk, err := Load(dir)
	if err != nil {
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("error %q does not name the folder or file", err)
		}
		return
	}
	for _, f := range []Flavor{Fast, Slow} {
		tf := tk.WithFlavor(f)
		for _, text := range []string{"the band and <|endoftext|> on", "A Þ ﬁ 𝔸 <|startoftext|>x", ""} {
			ids, n := tf.Tokens(text, 77)
			if n < 2 || n > 77 {
				t.Errorf("%q: %d tokens", text, n)
			}
			var plain []int
			for _, id := range ids {
				if id < 0 || int(id) >= tk.VocabSize() {
					t.Fatalf("%q: id %d outside the vocabulary of %d", text, id, tk.VocabSize())
				}
				plain = append(plain, int(id))
			}
			tf.Decode(plain)
		}
	}
}

// FuzzLoadVocabMerges loads any vocab.json, merges.txt and
// tokenizer_config.json: a tokenizer or an error naming the file, never a
// panic.
func FuzzLoadVocabMerges(f *testing.F) {
	vocab, merges, _ := smallFiles(f)
	for _, cfg := range configs(f) {
		f.Add(vocab, merges, cfg)
	}
	f.Add(vocab, merges, []byte(`{"added_tokens_decoder": {"0": {"content": "!", "special": true}}}`))
	f.Fuzz(func(t *testing.T, vocab, merges, cfg []byte) {
		loadFuzzed(t, map[string][]byte{"vocab.json": vocab, "merges.txt": merges, "tokenizer_config.json": cfg})
	})
}

// FuzzLoadTokenizerJSON loads any tokenizer.json and tokenizer_config.json.
func FuzzLoadTokenizerJSON(f *testing.F) {
	_, _, tok := smallFiles(f)
	for _, cfg := range configs(f) {
		f.Add(tok, cfg)
	}
	f.Fuzz(func(t *testing.T, tok, cfg []byte) {
		loadFuzzed(t, map[string][]byte{"tokenizer.json": tok, "tokenizer_config.json": cfg})
	})
}

// TestFuzzSeedsLoad: the fuzz seeds are working tokenizers, so fuzzing starts
// from inputs that reach the encoder.
func TestFuzzSeedsLoad(t *testing.T) {
	vocab, merges, tok := smallFiles(t)
	for name, files := range map[string]map[string][]byte{
		"vocab.json":     {"vocab.json": vocab, "merges.txt": merges, "tokenizer_config.json": configs(t)[0]},
		"tokenizer.json": {"tokenizer.json": tok, "tokenizer_config.json": configs(t)[1]},
	} {
		dir := t.TempDir()
		for n, b := range files {
			writeFile(t, filepath.Join(dir, n), b)
		}
		tk, err := Load(dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := tk.Decode(tk.Encode("the band")); got != "the band" || len(tk.Encode("the band")) != 3 {
			t.Errorf("%s: %q encodes to %v, decodes to %q", name, "the band", tk.Encode("the band"), got)
		}
	}
}
