package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Load reads a tokenizer folder: a model folder's tokenizer/ (or the model folder itself, whose
// tokenizer/ it then uses). The vocabulary and merges come from tokenizer.json when the folder
// has one (what transformers 5 saves), else from vocab.json and merges.txt; the special tokens
// and the pad token from tokenizer_config.json and special_tokens_map.json, resolved the way
// transformers 5 resolves them. The result follows the Fast flavor.
func Load(dir string) (*Tokenizer, error) {
	if !exists(filepath.Join(dir, "tokenizer.json")) && !exists(filepath.Join(dir, "vocab.json")) &&
		exists(filepath.Join(dir, "tokenizer")) {
		dir = filepath.Join(dir, "tokenizer")
	}
	var cfg map[string]json.RawMessage
	if err := readJSON(filepath.Join(dir, "tokenizer_config.json"), &cfg, true); err != nil {
		return nil, err
	}
	var (
		vocab  map[string]int
		merges [][2]string
		source []sourceToken // added tokens with their own ids and flags
		err    error
	)
	if path := filepath.Join(dir, "tokenizer.json"); exists(path) {
		vocab, merges, source, err = readTokenizerJSON(path)
	} else {
		vocab, merges, err = readVocabMerges(dir)
	}
	if err != nil {
		return nil, err
	}
	sourceKey := filepath.Join(dir, "tokenizer.json") + ": added_tokens"
	var stm map[string]json.RawMessage
	if raw, ok := cfg["added_tokens_decoder"]; ok {
		// A folder saved by transformers ≥ 4.34 lists its added tokens here; transformers then
		// ignores special_tokens_map.json.
		sourceKey = filepath.Join(dir, "tokenizer_config.json") + ": added_tokens_decoder"
		if source, err = parseAddedTokensDecoder(raw); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", sourceKey, err)
		}
	} else if err := readJSON(filepath.Join(dir, "special_tokens_map.json"), &stm, true); err != nil {
		return nil, err
	}
	// Added tokens take ids in the vocabulary or right after it; the model's embedding table
	// has a row for each, so an id past that is a damaged file.
	for _, s := range source {
		if s.id < 0 || s.id >= len(vocab)+len(source) {
			return nil, fmt.Errorf("tokenizer: %s: token %q has id %d, want 0 to %d (the vocabulary has %d tokens)",
				sourceKey, s.content, s.id, len(vocab)+len(source)-1, len(vocab))
		}
	}
	spec, err := resolveSpecials(cfg, stm, source)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", dir, err)
	}
	return build("tokenizer "+dir, vocab, merges, spec)
}

// FromBPEGz builds the tokenizer from CLIP's own BPE file (bpe_simple_vocab_16e6.txt.gz, as
// shipped with OpenAI's CLIP and open_clip) the way CLIP builds its vocabulary, with the special
// tokens as an SD 1.x folder sets them: <|startoftext|> also matched in lowercased text,
// <|endoftext|> only as written, padding with <|endoftext|>.
func FromBPEGz(path string) (*Tokenizer, error) {
	tokens, merges, err := clipVocab(path)
	if err != nil {
		return nil, err
	}
	vocab := make(map[string]int, len(tokens))
	for i, t := range tokens {
		vocab[t] = i
	}
	spec := specialSpec{
		bos: "<|startoftext|>", eos: "<|endoftext|>", pad: "<|endoftext|>", unk: "<|endoftext|>",
		added: []addedToken{
			{content: "<|startoftext|>", id: -1, normalized: true},
			{content: "<|endoftext|>", id: -1},
		},
	}
	return build(path, vocab, merges, spec)
}

// maxBPEText bounds what CLIP's BPE file may unpack to, so that a small gzip bomb cannot take
// memory without end.
const maxBPEText = 64 << 20

// clipMerges is how many merges CLIP takes from its BPE file: 49152 − 256 − 2 (lines[1:48895]).
const clipMerges = 49152 - 256 - 2

// clipVocab reads CLIP's BPE file and returns the vocabulary in id order (the byte symbols, the
// byte symbols with "</w>", each merge joined, <|startoftext|>, <|endoftext|>) and the merges.
func clipVocab(path string) ([]string, [][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxBPEText+1))
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	if len(data) > maxBPEText {
		return nil, nil, fmt.Errorf("tokenizer: %s: unpacks to more than %d MiB; CLIP's file unpacks to about 3 MiB, so this is not it", path, maxBPEText>>20)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < clipMerges+1 {
		return nil, nil, fmt.Errorf("tokenizer: %s: %d lines, want at least %d (a header and %d merges)", path, len(lines), clipMerges+1, clipMerges)
	}
	merges := make([][2]string, 0, clipMerges)
	for i, line := range lines[1 : clipMerges+1] {
		parts := strings.Fields(line)
		if len(parts) != 2 {
			return nil, nil, fmt.Errorf("tokenizer: %s: line %d: want two symbols, got %q", path, i+2, line)
		}
		merges = append(merges, [2]string{parts[0], parts[1]})
	}
	// The byte symbols come in the order of their runes: the printable bytes, then the rest.
	symbols := slices.Clone(byteSymbols[:])
	slices.Sort(symbols)
	tokens := make([]string, 0, 512+len(merges)+2)
	for _, r := range symbols {
		tokens = append(tokens, string(r))
	}
	for _, r := range symbols {
		tokens = append(tokens, string(r)+"</w>")
	}
	for _, m := range merges {
		tokens = append(tokens, m[0]+m[1])
	}
	tokens = append(tokens, "<|startoftext|>", "<|endoftext|>")
	return tokens, merges, nil
}

// readVocabMerges reads vocab.json and merges.txt. merges.txt may start with a "#version" line;
// each other line holds two symbols, in rank order.
func readVocabMerges(dir string) (map[string]int, [][2]string, error) {
	if !exists(filepath.Join(dir, "vocab.json")) {
		return nil, nil, fmt.Errorf("tokenizer: %s has neither tokenizer.json nor vocab.json: not a tokenizer folder", dir)
	}
	var vocab map[string]int
	if err := readJSON(filepath.Join(dir, "vocab.json"), &vocab, false); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "merges.txt")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w (a tokenizer folder needs vocab.json and merges.txt, or tokenizer.json)", err)
	}
	var merges [][2]string
	for i, line := range strings.Split(string(data), "\n") {
		if i == 0 && strings.HasPrefix(line, "#version") || strings.TrimSpace(line) == "" {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 2 {
			return nil, nil, fmt.Errorf("tokenizer: %s: line %d: want two symbols, got %q", path, i+1, line)
		}
		merges = append(merges, [2]string{parts[0], parts[1]})
	}
	return vocab, merges, nil
}

// sourceToken is an added token listed with its id: an entry of tokenizer.json's added_tokens
// or of tokenizer_config.json's added_tokens_decoder.
type sourceToken struct {
	id int
	tokenValue
}

// readTokenizerJSON reads the BPE model and the added tokens of a tokenizers file.
func readTokenizerJSON(path string) (map[string]int, [][2]string, []sourceToken, error) {
	var doc struct {
		AddedTokens []json.RawMessage `json:"added_tokens"`
		Model       struct {
			Type            string          `json:"type"`
			Vocab           map[string]int  `json:"vocab"`
			Merges          json.RawMessage `json:"merges"`
			EndOfWordSuffix string          `json:"end_of_word_suffix"`
		} `json:"model"`
	}
	if err := readJSON(path, &doc, false); err != nil {
		return nil, nil, nil, err
	}
	m := doc.Model
	if m.Type != "BPE" || m.EndOfWordSuffix != "</w>" {
		return nil, nil, nil, fmt.Errorf("tokenizer: %s: model is %q with end_of_word_suffix %q, want CLIP's BPE with \"</w>\"", path, m.Type, m.EndOfWordSuffix)
	}
	// tokenizers writes each merge as a pair of strings; versions before 0.20 as "a b".
	var pairs [][]string
	if err := json.Unmarshal(m.Merges, &pairs); err != nil {
		var joined []string
		if json.Unmarshal(m.Merges, &joined) != nil {
			return nil, nil, nil, fmt.Errorf("tokenizer: %s: model.merges: %w", path, err)
		}
		pairs = pairs[:0] // the failed decode may have filled some
		for _, j := range joined {
			pairs = append(pairs, strings.Split(j, " "))
		}
	}
	merges := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, nil, nil, fmt.Errorf("tokenizer: %s: merge %d is %q, want two symbols", path, i+1, p)
		}
		merges[i] = [2]string{p[0], p[1]}
	}
	var source []sourceToken
	for i, raw := range doc.AddedTokens {
		var id struct {
			ID *int `json:"id"`
		}
		v, err := parseToken(raw, false)
		if err == nil && (json.Unmarshal(raw, &id) != nil || id.ID == nil || v.isString) {
			err = errors.New("want an object with id and content")
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tokenizer: %s: added_tokens[%d]: %w", path, i, err)
		}
		source = append(source, sourceToken{id: *id.ID, tokenValue: v})
	}
	return m.Vocab, merges, source, nil
}

func parseAddedTokensDecoder(raw json.RawMessage) ([]sourceToken, error) {
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, err
	}
	var source []sourceToken
	for key, val := range entries {
		id, err := strconv.Atoi(key)
		if err != nil {
			return nil, fmt.Errorf("id %q: %w", key, err)
		}
		v, err := parseToken(val, false)
		if err != nil || v.isString {
			return nil, fmt.Errorf("token %s: want an object with content", key)
		}
		source = append(source, sourceToken{id: id, tokenValue: v})
	}
	return source, nil
}

// tokenValue is a special token as the config files write it: a plain string, or an object
// (transformers' AddedToken) with content and flags.
type tokenValue struct {
	content               string
	isString              bool
	special               bool
	normalized            *bool // nil: not given, so it follows special (normalized = !special)
	lstrip, rstrip, whole bool  // whole: single_word
}

// same is the equality of transformers' values: strings by content, AddedTokens by every field.
func (v tokenValue) same(w tokenValue) bool {
	if v.isString || w.isString {
		return v.isString == w.isString && v.content == w.content
	}
	norm := func(t tokenValue) bool {
		return t.normalized == nil && !t.special || t.normalized != nil && *t.normalized
	}
	return v.content == w.content && v.special == w.special && norm(v) == norm(w) &&
		v.lstrip == w.lstrip && v.rstrip == w.rstrip && v.whole == w.whole
}

func parseToken(raw json.RawMessage, special bool) (tokenValue, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return tokenValue{content: s, isString: true}, nil
	}
	var obj struct {
		Content    *string `json:"content"`
		Special    *bool   `json:"special"`
		Normalized *bool   `json:"normalized"`
		LStrip     bool    `json:"lstrip"`
		RStrip     bool    `json:"rstrip"`
		SingleWord bool    `json:"single_word"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return tokenValue{}, fmt.Errorf("%s is neither a string nor an object with content", raw)
	}
	v := tokenValue{content: *obj.Content, normalized: obj.Normalized, special: special,
		lstrip: obj.LStrip, rstrip: obj.RStrip, whole: obj.SingleWord}
	if obj.Special != nil && !special {
		v.special = *obj.Special
	}
	return v, nil
}

// namedKeys are transformers' special-token attributes, in the order it registers them.
var namedKeys = []string{"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}

// resolveSpecials decides the special tokens as transformers 5's CLIPTokenizer.from_pretrained
// does. The named tokens start from CLIPTokenizer's defaults, tokenizer_config.json replaces
// them and special_tokens_map.json (stm, read only when the config has no added_tokens_decoder)
// replaces those. The registrations are the source entries in id order, then each named token
// whose content none of them has and that equals no earlier registration. Whether a content is
// matched in normalized text follows its last registration: a string is not; an object is as
// it says, or, saying nothing, only if it is neither special nor a named token's content.
func resolveSpecials(cfg, stm map[string]json.RawMessage, source []sourceToken) (specialSpec, error) {
	named := map[string]tokenValue{
		"bos_token": {content: "<|startoftext|>", isString: true},
		"eos_token": {content: "<|endoftext|>", isString: true},
		"unk_token": {content: "<|endoftext|>", isString: true},
		"pad_token": {content: "<|endoftext|>", isString: true},
	}
	for _, layer := range []struct {
		file    string
		m       map[string]json.RawMessage
		special bool
	}{{"tokenizer_config.json", cfg, false}, {"special_tokens_map.json", stm, true}} {
		for _, key := range namedKeys {
			raw, ok := layer.m[key]
			if !ok || string(raw) == "null" {
				continue
			}
			v, err := parseToken(raw, layer.special)
			if err != nil {
				return specialSpec{}, fmt.Errorf("%s: %s: %w", layer.file, key, err)
			}
			named[key] = v
		}
	}
	sort.Slice(source, func(i, j int) bool { return source[i].id < source[j].id })
	namedContent := map[string]bool{}
	for _, v := range named {
		namedContent[v.content] = true
	}
	type reg struct {
		tokenValue
		id int
	}
	var regs []reg
	inSource := map[string]bool{}
	for _, s := range source {
		regs = append(regs, reg{s.tokenValue, s.id})
		inSource[s.content] = true
	}
	for _, key := range namedKeys {
		v, ok := named[key]
		if !ok || inSource[v.content] || slices.ContainsFunc(regs, func(r reg) bool { return r.same(v) }) {
			continue
		}
		regs = append(regs, reg{v, -1})
	}
	var spec specialSpec
	index := map[string]int{}
	for _, r := range regs {
		if r.content == "" {
			continue // transformers registers no empty token
		}
		norm := false
		switch {
		case r.isString:
		case r.normalized != nil:
			norm = *r.normalized
		default:
			norm = !r.special && !namedContent[r.content]
		}
		a := addedToken{content: r.content, id: r.id, normalized: norm}
		if k, ok := index[r.content]; ok {
			if a.id < 0 {
				a.id = spec.added[k].id
			}
			spec.added[k] = a
			continue
		}
		index[r.content] = len(spec.added)
		spec.added = append(spec.added, a)
	}
	spec.bos, spec.eos = named["bos_token"].content, named["eos_token"].content
	spec.pad, spec.unk = named["pad_token"].content, named["unk_token"].content
	return spec, nil
}

// readJSON decodes the JSON file at path into v. A missing file is an error unless optional.
func readJSON(path string, v any, optional bool) error {
	data, err := os.ReadFile(path)
	if optional && errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
