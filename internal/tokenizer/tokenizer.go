// Package tokenizer is CLIP's byte-level BPE tokenizer, the text front end of Stable Diffusion
// 1.x and 2.x: it turns a caption into the ids transformers' CLIPTokenizer gives, padded the way
// the model folder says (SD 1.x pads with <|endoftext|>, SD 2.x with "!").
//
// Two transformers implementations exist and they disagree on some text (see Flavor); the
// tokenizer reproduces either one. The steps are those of the reference: split off the added
// special tokens, clean and lowercase the text, cut it into pieces with CLIP's pattern, map each
// piece's UTF-8 bytes to GPT-2's printable symbols, and merge symbol pairs by rank (BPE), the
// last symbol of a piece carrying "</w>".
package tokenizer

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// Flavor says which transformers implementation the ids follow.
type Flavor int

const (
	// Fast is transformers 5's CLIPTokenizer, which runs the tokenizers (Rust) pipeline, the
	// same as CLIPTokenizerFast of transformers 4. It is the reference stack of this project
	// and the default.
	Fast Flavor = iota
	// Slow is the Python CLIPTokenizer of transformers 4.x when ftfy is not installed. It
	// differs from Fast on control and format characters (zero-width joiners in emoji, soft
	// hyphens, BOM: Slow drops them), CJK ideographs (Slow cuts between them), capital sigma at
	// a word's end (Slow writes ς), 'ſ (a contraction for Slow), U+0345, and special-token
	// strings written in other case, depending on the folder's settings.
	Slow
)

// addedToken is a token that is cut out of the text before any BPE and stands for one id: the
// special tokens of the folder (<|startoftext|>, <|endoftext|>, and "!" where SD 2.x pads
// with it).
type addedToken struct {
	content string
	id      int
	// normalized: the Fast flavor looks for it (normalized itself) in the normalized,
	// lowercased text, so "<|ENDOFTEXT|>" matches too; otherwise only the exact string in
	// the raw text does.
	normalized bool
	normForm   string // normalizeFast(content)
}

// merge is what a symbol pair becomes: its rank in merges.txt and the id of the joined symbol.
type merge struct{ rank, id int32 }

// Tokenizer encodes captions. It is safe for concurrent use.
type Tokenizer struct {
	flavor Flavor
	vocab  map[string]int // token text (GPT-2 byte symbols) -> id
	tokens []string       // id -> token text
	merges map[uint64]merge
	// byteSym and byteEnd are the ids of each byte's symbol inside a piece and at its end
	// (with "</w>"); -1 where the vocabulary lacks it.
	byteSym, byteEnd [256]int32
	added            []addedToken
	bos, eos, pad    int
	unk              int // stands for byte symbols the vocabulary lacks
	cache            *bpeCache
}

// byteSymbols is GPT-2's bytes_to_unicode: each byte maps to a printable rune, printable
// Latin-1 bytes to themselves and the rest to U+0100 onwards, in byte order.
var byteSymbols = func() (m [256]rune) {
	n := 0
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}()

// symbolBytes inverts byteSymbols.
var symbolBytes = func() map[rune]byte {
	m := make(map[rune]byte, 256)
	for b, r := range byteSymbols {
		m[r] = byte(b)
	}
	return m
}()

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// specialSpec names the folder's special tokens by content; build resolves them to ids.
type specialSpec struct {
	bos, eos, pad, unk string
	added              []addedToken // id < 0: look the content up in the vocabulary
}

// build makes a Tokenizer from a vocabulary (token text -> id), merges in rank order and the
// special tokens. src names where they came from, for errors.
func build(src string, vocab map[string]int, merges [][2]string, spec specialSpec) (*Tokenizer, error) {
	tk := &Tokenizer{vocab: vocab, merges: make(map[uint64]merge, len(merges)), cache: newBPECache()}
	size := 0
	for tok, id := range vocab {
		if id < 0 {
			return nil, fmt.Errorf("%s: token %q has negative id %d", src, tok, id)
		}
		// Ids number the tokens from 0 (the tokenizers BPE model and CLIP's
		// own file do); a larger id is a damaged file, and sizing the id
		// table by it could take any amount of memory.
		if id >= len(vocab) {
			return nil, fmt.Errorf("%s: token %q has id %d, but a vocabulary of %d tokens numbers them 0 to %d", src, tok, id, len(vocab), len(vocab)-1)
		}
		size = max(size, id+1)
	}
	tk.tokens = make([]string, size)
	for tok, id := range vocab {
		tk.tokens[id] = tok
	}
	for b, r := range byteSymbols {
		tk.byteSym[b], tk.byteEnd[b] = -1, -1
		if id, ok := vocab[string(r)]; ok {
			tk.byteSym[b] = int32(id)
		}
		if id, ok := vocab[string(r)+"</w>"]; ok {
			tk.byteEnd[b] = int32(id)
		}
	}
	for rank, m := range merges {
		a, okA := vocab[m[0]]
		b, okB := vocab[m[1]]
		ab, okAB := vocab[m[0]+m[1]]
		if !okA || !okB || !okAB {
			return nil, fmt.Errorf("%s: merge %d (%q %q) uses a token that is not in the vocabulary", src, rank+1, m[0], m[1])
		}
		// A pair listed twice takes its later rank, as in both transformers tokenizers.
		tk.merges[pairKey(int32(a), int32(b))] = merge{rank: int32(rank), id: int32(ab)}
	}
	roles := map[string]string{spec.bos: "bos_token", spec.eos: "eos_token", spec.pad: "pad_token", spec.unk: "unk_token"}
	for _, a := range spec.added {
		if a.id < 0 {
			id, ok := vocab[a.content]
			if !ok {
				return nil, fmt.Errorf("%s: special token %q (%s) is not in the vocabulary", src, a.content, roles[a.content])
			}
			a.id = id
		}
		a.normForm = normalizeFast(a.content)
		tk.added = append(tk.added, a)
		// An added token may extend the vocabulary (Load bounds its id).
		for a.id >= len(tk.tokens) {
			tk.tokens = append(tk.tokens, "")
		}
		if tk.tokens[a.id] == "" {
			tk.tokens[a.id] = a.content
		}
	}
	for _, r := range []struct {
		id      *int
		content string
	}{{&tk.bos, spec.bos}, {&tk.eos, spec.eos}, {&tk.pad, spec.pad}, {&tk.unk, spec.unk}} {
		id, ok := tk.idOf(r.content)
		if !ok {
			return nil, fmt.Errorf("%s: %s %q is not in the vocabulary", src, roles[r.content], r.content)
		}
		*r.id = id
	}
	return tk, nil
}

// idOf is the id of a token's text: an added token's, else the vocabulary's.
func (tk *Tokenizer) idOf(content string) (int, bool) {
	for _, a := range tk.added {
		if a.content == content {
			return a.id, true
		}
	}
	id, ok := tk.vocab[content]
	return id, ok
}

// WithFlavor returns a tokenizer that shares tk's vocabulary and BPE cache and follows flavor f.
func (tk *Tokenizer) WithFlavor(f Flavor) *Tokenizer {
	c := *tk
	c.flavor = f
	return &c
}

// Flavor is the implementation the ids follow.
func (tk *Tokenizer) Flavor() Flavor { return tk.flavor }

// BOS is the id that starts every sequence Tokens makes.
func (tk *Tokenizer) BOS() int { return tk.bos }

// EOS is the id that ends every sequence Tokens makes.
func (tk *Tokenizer) EOS() int { return tk.eos }

// Pad is the id that fills a sequence up to its length: 49407 in SD 1.x, 0 ("!") in SD 2.x.
func (tk *Tokenizer) Pad() int { return tk.pad }

// VocabSize is one more than the largest id.
func (tk *Tokenizer) VocabSize() int { return len(tk.tokens) }

// Encode returns the ids of text without the start and end tokens and without truncation: what
// transformers gives for tokenizer(text, add_special_tokens=False).input_ids.
func (tk *Tokenizer) Encode(text string) []int {
	ids := make([]int, 0, len(text)/3+1)
	if tk.flavor == Slow {
		// The Python tokenizer cuts every added token out of the raw text, exactly as written,
		// then cleans each piece between them on its own.
		tk.splitAdded(text, func(a addedToken) string { return a.content }, func(gap string) {
			ids = tk.encodePieces(normalizeSlow(gap), true, ids)
		}, &ids)
		return ids
	}
	// The tokenizers pipeline cuts the tokens marked not normalized out of the raw text,
	// normalizes what is between them, then cuts the normalized ones out of that.
	raw := func(a addedToken) string {
		if a.normalized {
			return ""
		}
		return a.content
	}
	normalized := func(a addedToken) string {
		if a.normalized {
			return a.normForm
		}
		return ""
	}
	tk.splitAdded(text, raw, func(gap string) {
		tk.splitAdded(normalizeFast(gap), normalized, func(gap string) {
			ids = tk.encodePieces(gap, false, ids)
		}, &ids)
	}, &ids)
	return ids
}

// splitAdded walks s, appending to ids the id of each added token whose form (the string
// that form gives, "" for none) it finds, leftmost and then longest first, and handing the text
// between them to gap.
func (tk *Tokenizer) splitAdded(s string, form func(addedToken) string, gap func(string), ids *[]int) {
	start := 0
	for i := 0; i < len(s); i++ {
		best, bestLen := -1, 0
		for k, a := range tk.added {
			if f := form(a); f != "" && len(f) > bestLen && strings.HasPrefix(s[i:], f) {
				best, bestLen = k, len(f)
			}
		}
		if best < 0 {
			continue
		}
		if start < i {
			gap(s[start:i])
		}
		*ids = append(*ids, tk.added[best].id)
		i += bestLen - 1
		start = i + 1
	}
	if start < len(s) {
		gap(s[start:])
	}
}

// encodePieces appends the ids of normalized text. slow selects the Python tokenizer's ways: a
// case-insensitive pattern, and a piece that is a special-token string becomes that token (its
// BPE cache is seeded with them); the tokenizers pipeline instead splits such a piece again with
// GPT-2's pattern ("<|", the word, "|>") before BPE.
func (tk *Tokenizer) encodePieces(s string, slow bool, ids []int) []int {
	pretokenize(s, slow, func(p string) {
		special := p == "<|startoftext|>" || p == "<|endoftext|>"
		switch {
		case special && slow:
			if id, ok := tk.idOf(p); ok {
				ids = append(ids, id)
				return
			}
		case special:
			ids = tk.bpe("<|", ids)
			ids = tk.bpe(p[2:len(p)-2], ids)
			ids = tk.bpe("|>", ids)
			return
		}
		ids = tk.bpe(p, ids)
	})
	return ids
}

// bpe appends the ids of one piece, merging its byte symbols pair by pair, lowest rank first.
func (tk *Tokenizer) bpe(piece string, ids []int) []int {
	if word, ok := tk.cache.get(piece); ok {
		return tk.appendWord(ids, word)
	}
	word := make([]int32, len(piece)) // one symbol per byte, the last with "</w>"
	for i := 0; i < len(piece); i++ {
		word[i] = tk.byteSym[piece[i]]
	}
	word[len(word)-1] = tk.byteEnd[piece[len(piece)-1]]
	for len(word) > 1 {
		best := merge{rank: -1}
		var first, second int32
		for i := 0; i+1 < len(word); i++ {
			if m, ok := tk.merges[pairKey(word[i], word[i+1])]; ok && (best.rank < 0 || m.rank < best.rank) {
				best, first, second = m, word[i], word[i+1]
			}
		}
		if best.rank < 0 {
			break
		}
		// Join every occurrence of the pair, left to right, as CLIP's bpe() does.
		out := word[:0]
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				out = append(out, best.id)
				i++
				continue
			}
			out = append(out, word[i])
		}
		word = out
	}
	tk.cache.put(piece, word)
	return tk.appendWord(ids, word)
}

func (tk *Tokenizer) appendWord(ids []int, word []int32) []int {
	for _, id := range word {
		if id < 0 {
			ids = append(ids, tk.unk)
			continue
		}
		ids = append(ids, int(id))
	}
	return ids
}

// Tokens returns the model input for text: the start token, the caption's ids cut to maxLen-2,
// the end token, then the pad id up to maxLen (transformers' padding="max_length",
// truncation=True). n counts the tokens before the padding.
func (tk *Tokenizer) Tokens(text string, maxLen int) (ids []int64, n int) {
	if maxLen < 2 {
		panic(fmt.Sprintf("tokenizer: Tokens with maxLen %d, want at least 2 for the start and end tokens", maxLen))
	}
	content := tk.Encode(text)
	content = content[:min(len(content), maxLen-2)]
	ids = make([]int64, maxLen) // (maxLen,)
	ids[0] = int64(tk.bos)
	for i, id := range content {
		ids[1+i] = int64(id)
	}
	n = len(content) + 2
	ids[n-1] = int64(tk.eos)
	for i := n; i < maxLen; i++ {
		ids[i] = int64(tk.pad)
	}
	return ids, n
}

// Decode turns ids back into text, leaving out the added (special) tokens: each token's symbols
// become bytes again, "</w>" a space, and the ends are trimmed. Invalid UTF-8 (a cut inside a
// rune) becomes U+FFFD.
func (tk *Tokenizer) Decode(ids []int) string {
	var raw []byte
	for _, id := range ids {
		if id < 0 || id >= len(tk.tokens) || tk.isAdded(id) {
			continue
		}
		for _, r := range tk.tokens[id] {
			if b, ok := symbolBytes[r]; ok {
				raw = append(raw, b)
			} else {
				raw = utf8.AppendRune(raw, r)
			}
		}
	}
	s := strings.ReplaceAll(string(raw), "</w>", " ")
	return strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
}

func (tk *Tokenizer) isAdded(id int) bool {
	for _, a := range tk.added {
		if a.id == id {
			return true
		}
	}
	return false
}

// bpeCache remembers the BPE result of each piece, as both Python tokenizers do; the number of
// entries is capped so that a long run over many distinct words cannot grow it without bound.
type bpeCache struct {
	mu sync.RWMutex
	m  map[string][]int32
}

const bpeCacheMax = 1 << 17

func newBPECache() *bpeCache { return &bpeCache{m: make(map[string][]int32)} }

func (c *bpeCache) get(piece string) ([]int32, bool) {
	c.mu.RLock()
	w, ok := c.m[piece]
	c.mu.RUnlock()
	return w, ok
}

func (c *bpeCache) put(piece string, word []int32) {
	c.mu.Lock()
	if len(c.m) < bpeCacheMax {
		c.m[piece] = word
	}
	c.mu.Unlock()
}
