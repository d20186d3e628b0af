package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
)

// The special tokens, CLIP's: the start token, and the end token that also pads and stands for
// unknown symbols, as in SD 1.x.
const (
	startToken = "<|startoftext|>"
	endToken   = "<|endoftext|>"
)

// Words are the demo's vocabulary: every word a caption can hold. In the tokenizer WriteTokenizer
// writes, word i is the single token id i; the start and end tokens are the last two ids.
func Words() []string {
	w := []string{"a", "an"}
	w = append(w, colorNames[:]...)
	w = append(w, shapeNames[:]...)
	w = append(w, "at", "the", "top", "bottom", "left", "right", "center")
	return w
}

// tokenizerFiles returns vocab.json's map and merges.txt's pairs for a CLIP BPE that turns each of
// Words into one token "word</w>". A word's BPE starts from its letters, the last one carrying
// "</w>"; every merge joins a letter to the suffix after it ("c"+"ircle</w>"), so the only pair that
// can merge is always the last two symbols, and a vocabulary word merges into itself whatever the
// ranks. The vocabulary holds the words, then the other suffixes and letters the merges pass
// through (sorted), then the start and end tokens.
func tokenizerFiles() (vocab map[string]int, merges [][2]string) {
	words := Words()
	vocab = make(map[string]int)
	for i, w := range words {
		vocab[w+"</w>"] = i
	}
	var extra []string
	add := func(tok string) {
		if _, ok := vocab[tok]; !ok && !slices.Contains(extra, tok) {
			extra = append(extra, tok)
		}
	}
	seen := map[[2]string]bool{}
	for _, w := range words {
		add(w[len(w)-1:] + "</w>")
		for k := len(w) - 2; k >= 0; k-- {
			pair := [2]string{w[k : k+1], w[k+1:] + "</w>"}
			add(pair[0])
			add(w[k:] + "</w>")
			if !seen[pair] {
				seen[pair] = true
				merges = append(merges, pair)
			}
		}
	}
	slices.Sort(extra)
	for _, tok := range append(extra, startToken, endToken) {
		vocab[tok] = len(vocab)
	}
	return vocab, merges
}

// WriteTokenizer writes the demo's CLIP tokenizer into dir (created if needed) in transformers'
// format: vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json, with
// model_max_length opts.TokenLength(). CLIPTokenizer and the tokenizer package read it.
func WriteTokenizer(dir string, opts Options) error {
	vocab, merges := tokenizerFiles()
	vocabJSON, err := marshal(vocab, "")
	if err != nil {
		return err
	}
	var m strings.Builder
	m.WriteString("#version: 0.2\n")
	for _, p := range merges {
		m.WriteString(p[0] + " " + p[1] + "\n")
	}
	special := func(content string) map[string]any {
		return map[string]any{"content": content, "lstrip": false, "normalized": true, "rstrip": false, "single_word": false}
	}
	// tokenizer_config.json writes the same tokens as transformers' AddedToken objects.
	added := func(content string) map[string]any {
		t := special(content)
		t["__type"] = "AddedToken"
		return t
	}
	stm := map[string]any{
		"bos_token": special(startToken),
		"eos_token": special(endToken),
		"unk_token": special(endToken),
		"pad_token": endToken,
	}
	cfg := map[string]any{
		"add_prefix_space": false,
		"bos_token":        added(startToken),
		"eos_token":        added(endToken),
		"unk_token":        added(endToken),
		"pad_token":        endToken,
		"do_lower_case":    true,
		"errors":           "replace",
		"model_max_length": opts.TokenLength(),
		"tokenizer_class":  "CLIPTokenizer",
	}
	stmJSON, err := marshal(stm, "  ")
	if err != nil {
		return err
	}
	cfgJSON, err := marshal(cfg, "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("demo tokenizer: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"vocab.json", vocabJSON},
		{"merges.txt", []byte(m.String())},
		{"special_tokens_map.json", stmJSON},
		{"tokenizer_config.json", cfgJSON},
	} {
		if _, err := atomicfile.Write(filepath.Join(dir, f.name), func(w io.Writer) error {
			_, err := w.Write(f.data)
			return err
		}); err != nil {
			return fmt.Errorf("demo tokenizer: %w", err)
		}
	}
	return nil
}

// marshal encodes v as JSON with keys sorted, "<" and ">" written as themselves (as transformers
// writes them) and each level indented by indent ("": one line), ending in a newline.
func marshal(v any, indent string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("demo tokenizer: %w", err)
	}
	return b.Bytes(), nil
}

// VocabSize is the number of tokens in the demo tokenizer: the text
// encoder's vocab_size.
func VocabSize() int {
	vocab, _ := tokenizerFiles()
	return len(vocab)
}
