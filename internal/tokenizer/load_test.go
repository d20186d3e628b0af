package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLoadErrors checks that a broken folder gives an error naming the file at fault.
func TestLoadErrors(t *testing.T) {
	vocab, merges := clipFiles(t)
	tests := []struct {
		name  string
		files map[string]string // file name -> content; "" drops the file
		want  []string          // substrings of the error
	}{
		{"empty folder", map[string]string{"vocab.json": "", "merges.txt": ""}, []string{"neither tokenizer.json nor vocab.json"}},
		{"no merges", map[string]string{"merges.txt": ""}, []string{"merges.txt", "tokenizer.json"}},
		{"vocab not JSON", map[string]string{"vocab.json": "{"}, []string{"vocab.json"}},
		{"merge line", map[string]string{"merges.txt": "#version: 0.2\ni n\nt h e\n"}, []string{"merges.txt", "line 3", "two symbols"}},
		{"merge unknown", map[string]string{"merges.txt": "#version: 0.2\ni n\nq☃ x\n"}, []string{"merge 2", "not in the vocabulary"}},
		{"config not JSON", map[string]string{"tokenizer_config.json": "[1,"}, []string{"tokenizer_config.json"}},
		{"special map not JSON", map[string]string{"special_tokens_map.json": "nope"}, []string{"special_tokens_map.json"}},
		{"pad not in vocab", map[string]string{"special_tokens_map.json": `{"pad_token": "<pad>"}`}, []string{"pad_token", `"<pad>"`, "not in the vocabulary"}},
		{"pad not a token", map[string]string{"tokenizer_config.json": `{"pad_token": 7}`}, []string{"tokenizer_config.json", "pad_token"}},
		{"tokenizer.json not BPE", map[string]string{"tokenizer.json": `{"model": {"type": "WordPiece"}}`}, []string{"tokenizer.json", "WordPiece"}},
		{"tokenizer.json merge", map[string]string{"tokenizer.json": `{"model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 0}, "merges": [["a"]]}}`}, []string{"tokenizer.json", "merge 1"}},
		{"tokenizer.json added", map[string]string{"tokenizer.json": `{"added_tokens": [{"content": "x"}], "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {}, "merges": []}}`}, []string{"tokenizer.json", "added_tokens[0]"}},
		// Ids that would size the id table past any memory, or give the text encoder ids it has
		// no embedding for.
		{"vocab id past the end", map[string]string{"vocab.json": `{"<|startoftext|>": 0, "<|endoftext|>": 4611686018427387904}`}, []string{"<|endoftext|>", "4611686018427387904", "numbers them 0 to 1"}},
		{"added id past the end", map[string]string{"tokenizer_config.json": `{"added_tokens_decoder": {"99999999": {"content": "<|endoftext|>", "special": true}}}`}, []string{"tokenizer_config.json", "added_tokens_decoder", "99999999"}},
		{"added id negative", map[string]string{"tokenizer_config.json": `{"added_tokens_decoder": {"-3": {"content": "<|endoftext|>", "special": true}}}`}, []string{"tokenizer_config.json", "added_tokens_decoder", "-3"}},
		{"tokenizer.json added id past the end", map[string]string{"tokenizer.json": `{"added_tokens": [{"id": 7, "content": "x"}], "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 0}, "merges": []}}`}, []string{"tokenizer.json", "added_tokens", `"x" has id 7`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"vocab.json": string(vocab), "merges.txt": string(merges)}
			for name, content := range tc.files {
				files[name] = content
			}
			for name, content := range files {
				if content != "" {
					writeFile(t, filepath.Join(dir, name), []byte(content))
				}
			}
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Load finds the tokenizer/ folder of a model folder, and the settings of an SD 2.x folder
// give its pad id, 0 ("!"), while SD 1.x pads with <|endoftext|>.
func TestLoadModelFolder(t *testing.T) {
	for _, tc := range []struct {
		kind string
		pad  int
	}{{"sd1", 49407}, {"sd2", 0}} {
		model := t.TempDir()
		if err := os.Rename(writeFolder(t, tc.kind), filepath.Join(model, "tokenizer")); err != nil {
			t.Fatal(err)
		}
		tk, err := Load(model)
		if err != nil {
			t.Fatal(err)
		}
		if tk.BOS() != 49406 || tk.EOS() != 49407 || tk.Pad() != tc.pad {
			t.Errorf("%s: bos %d eos %d pad %d, want 49406 49407 %d", tc.kind, tk.BOS(), tk.EOS(), tk.Pad(), tc.pad)
		}
	}
}

// tokenizer.json written by tokenizers before 0.20 holds each merge as one "a b" string; it
// loads to the same tokenizer as the pairs of newer files (which TestSpecialTokenSettings checks
// against transformers).
func TestTokenizerJSONJoinedMerges(t *testing.T) {
	vocab, _ := clipFiles(t)
	joined := make([]string, len(vocabMerges))
	for i, m := range vocabMerges {
		joined[i] = m[0] + " " + m[1]
	}
	merges, err := json.Marshal(joined)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "tokenizer.json"), fmt.Appendf(nil,
		`{"added_tokens": [], "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": %s, "merges": %s}}`, vocab, merges))
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := FromBPEGz(bpeGz(t))
	if err != nil {
		t.Fatal(err)
	}
	captions, _ := readCaptions(t)
	for _, c := range captions {
		if !strings.Contains(c, "<|") && !slices.Equal(got.Encode(c), want.Encode(c)) {
			t.Errorf("caption %q: %v, want %v", c, got.Encode(c), want.Encode(c))
		}
	}
}

// BenchmarkLoad reads an SD tokenizer folder (vocab.json, merges.txt and the config files).
func BenchmarkLoad(b *testing.B) {
	dir := writeFolder(b, "sd1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFromBPEGzBomb: a small gzip file that unpacks to more than any BPE file is refused once
// the bound is passed, not read into memory whole.
func TestFromBPEGzBomb(t *testing.T) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zero := make([]byte, 1<<20)
	for range maxBPEText>>20 + 1 {
		zw.Write(zero)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bomb.txt.gz")
	writeFile(t, p, b.Bytes())
	_, err := FromBPEGz(p)
	if err == nil || !strings.Contains(err.Error(), "unpacks to more than 64 MiB") {
		t.Errorf("error %v, want one saying the file unpacks to too much", err)
	}
}
