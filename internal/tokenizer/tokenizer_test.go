package tokenizer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// The golden files hold what transformers gives for every caption of
// testdata/tokenizer/captions.txt (testdata/gen/gen_tokenizer.py): tokenizer.safetensors from
// transformers 5's CLIPTokenizer (the Fast flavor), tokenizer_slow.safetensors from the Python
// CLIPTokenizer of transformers 4.x without ftfy (the Slow flavor). Ids are integers: every
// comparison is exact.

const maxLen = 77 // CLIP's context length in SD 1.x and 2.x

func bpeGz(t testing.TB) string {
	return filepath.Join(golden.Root(t), "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
}

// readCaptions reads captions.txt (one JSON string per line) and its SHA-256, which the golden
// files record so that a changed corpus without regenerated goldens fails.
func readCaptions(t testing.TB) ([]string, string) {
	t.Helper()
	path := filepath.Join(golden.Root(t), "tokenizer", "captions.txt")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	if lines[len(lines)-1] != "" {
		t.Fatalf("%s: the last line must end with a newline", path)
	}
	captions := make([]string, len(lines)-1)
	for i, line := range lines[:len(lines)-1] {
		if err := json.Unmarshal([]byte(line), &captions[i]); err != nil {
			t.Fatalf("%s: line %d: %v", path, i+1, err)
		}
	}
	sum := sha256.Sum256(raw)
	return captions, hex.EncodeToString(sum[:])
}

var (
	vocabOnce   sync.Once
	vocabJSON   []byte
	mergesText  []byte
	vocabTokens []string
	vocabMerges [][2]string
	vocabErr    error
)

// clipFiles returns vocab.json and merges.txt built from CLIP's BPE file, as the generator writes
// them.
func clipFiles(t testing.TB) ([]byte, []byte) {
	t.Helper()
	vocabOnce.Do(func() {
		vocabTokens, vocabMerges, vocabErr = clipVocab(bpeGz(t))
		if vocabErr != nil {
			return
		}
		vocab := make(map[string]int, len(vocabTokens))
		for i, tok := range vocabTokens {
			vocab[tok] = i
		}
		vocabJSON, vocabErr = json.Marshal(vocab)
		var b strings.Builder
		b.WriteString("#version: 0.2\n")
		for _, m := range vocabMerges {
			b.WriteString(m[0] + " " + m[1] + "\n")
		}
		mergesText = []byte(b.String())
	})
	if vocabErr != nil {
		t.Fatal(vocabErr)
	}
	return vocabJSON, mergesText
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeFolder makes a tokenizer folder like an SD model's: vocab.json, merges.txt and the config
// files of testdata/tokenizer/<kind>/.
func writeFolder(t testing.TB, kind string) string {
	t.Helper()
	dir := t.TempDir()
	vocab, merges := clipFiles(t)
	writeFile(t, filepath.Join(dir, "vocab.json"), vocab)
	writeFile(t, filepath.Join(dir, "merges.txt"), merges)
	for _, name := range []string{"special_tokens_map.json", "tokenizer_config.json"} {
		data, err := os.ReadFile(filepath.Join(golden.Root(t), "tokenizer", kind, name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), data)
	}
	return dir
}

// checkCorpus compares Encode and Tokens on every caption with the golden tensors of one kind.
func checkCorpus(t *testing.T, tk *Tokenizer, c *golden.Case, kind string) {
	t.Helper()
	captions, sha := readCaptions(t)
	if want := c.Meta(t, "captions_sha256"); want != sha {
		t.Fatalf("%s was made from another captions.txt (sha256 %s, file has %s): regenerate it", c.Path, want, sha)
	}
	content, _ := c.I64(t, kind+".content")
	offsets, _ := c.I64(t, kind+".offsets")
	padded, shape := c.I64(t, kind+".input_ids")
	lengths, _ := c.I64(t, kind+".length")
	if len(offsets) != len(captions)+1 || !slices.Equal(shape, []int{len(captions), maxLen}) {
		t.Fatalf("%s: %d offsets and input_ids %v for %d captions", c.Path, len(offsets), shape, len(captions))
	}
	bad := 0
	for i, text := range captions {
		want := content[offsets[i]:offsets[i+1]]
		got := tk.Encode(text)
		if !slices.Equal(toInt64(got), want) {
			bad++
			if bad <= 10 {
				t.Errorf("%s caption %d %q:\n Encode %v\n   want %v", kind, i+1, text, got, want)
			}
		}
		ids, n := tk.Tokens(text, maxLen)
		if row := padded[i*maxLen : (i+1)*maxLen]; !slices.Equal(ids, row) || int64(n) != lengths[i] {
			bad++
			if bad <= 10 {
				k := min(maxLen, max(n, int(lengths[i]))+1) // the ids up to the first padding
				t.Errorf("%s caption %d %q:\n Tokens %v (n %d)\n   want %v (n %d)", kind, i+1, text, ids[:k], n, row[:k], lengths[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d mismatches over %d captions", kind, bad, len(captions))
	}
}

func toInt64(ids []int) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

func TestMatchesTransformers(t *testing.T) {
	c := golden.Load(t, "tokenizer.safetensors")
	for _, kind := range []string{"sd1", "sd2"} {
		t.Run(kind, func(t *testing.T) {
			tk, err := Load(writeFolder(t, kind))
			if err != nil {
				t.Fatal(err)
			}
			checkCorpus(t, tk, c, kind)
		})
	}
}

func TestMatchesSlowTransformers4(t *testing.T) {
	c := golden.Load(t, "tokenizer_slow.safetensors")
	for _, kind := range []string{"sd1", "sd2"} {
		t.Run(kind, func(t *testing.T) {
			tk, err := Load(writeFolder(t, kind))
			if err != nil {
				t.Fatal(err)
			}
			checkCorpus(t, tk.WithFlavor(Slow), c, kind)
		})
	}
}

// FromBPEGz builds the same tokenizer as an SD 1.x folder.
func TestFromBPEGz(t *testing.T) {
	tk, err := FromBPEGz(bpeGz(t))
	if err != nil {
		t.Fatal(err)
	}
	if tk.VocabSize() != 49408 || tk.BOS() != 49406 || tk.EOS() != 49407 || tk.Pad() != 49407 {
		t.Fatalf("vocab %d, bos %d, eos %d, pad %d; CLIP has 49408 tokens, bos 49406, eos and pad 49407",
			tk.VocabSize(), tk.BOS(), tk.EOS(), tk.Pad())
	}
	checkCorpus(t, tk, golden.Load(t, "tokenizer.safetensors"), "sd1")
}

// specialCase is one entry of testdata/tokenizer/special_cases.json: special-token settings as
// config files write them.
type specialCase struct {
	Name            string          `json:"name"`
	TokenizerConfig json.RawMessage `json:"tokenizer_config"`
	SpecialTokens   json.RawMessage `json:"special_tokens_map"`
}

// TestSpecialTokenSettings loads each folder of special_cases.json, and the same folder as
// transformers 5 saves it (tokenizer.json), and compares the ids of the probes (special tokens
// in other case, inside words, "!") with transformers'.
func TestSpecialTokenSettings(t *testing.T) {
	c := golden.Load(t, "tokenizer.safetensors")
	var probes []string
	if err := json.Unmarshal([]byte(c.Meta(t, "probes")), &probes); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(golden.Root(t), "tokenizer", "special_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []specialCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	vocab, merges := clipFiles(t)
	pairs, err := json.Marshal(vocabMerges)
	if err != nil {
		t.Fatal(err)
	}
	tokenizerJSON := func(addedTokens string) []byte {
		return fmt.Appendf(nil, `{"version": "1.0", "added_tokens": %s, "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": %s, "merges": %s}}`,
			addedTokens, vocab, pairs)
	}
	check := func(t *testing.T, dir, tensor string) {
		tk, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := c.I64(t, tensor)
		for i, p := range probes {
			got, _ := tk.Tokens(p, maxLen)
			if row := want[i*maxLen : (i+1)*maxLen]; !slices.Equal(got, row) {
				t.Errorf("%s probe %q:\n got %v\nwant %v", tensor, p, got, row)
			}
		}
	}
	savedSeen := map[string]bool{} // several settings save to the same files; load each once
	for _, sc := range cases {
		t.Run(sc.Name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "vocab.json"), vocab)
			writeFile(t, filepath.Join(dir, "merges.txt"), merges)
			writeFile(t, filepath.Join(dir, "tokenizer_config.json"), sc.TokenizerConfig)
			if sc.SpecialTokens != nil {
				writeFile(t, filepath.Join(dir, "special_tokens_map.json"), sc.SpecialTokens)
			}
			check(t, dir, "case."+sc.Name+".input_ids")

			added, config := c.Meta(t, "case."+sc.Name+".saved_added_tokens"), c.Meta(t, "case."+sc.Name+".saved_config")
			if savedSeen[added+"\x00"+config] {
				return
			}
			savedSeen[added+"\x00"+config] = true
			saved := t.TempDir()
			writeFile(t, filepath.Join(saved, "tokenizer.json"), tokenizerJSON(added))
			writeFile(t, filepath.Join(saved, "tokenizer_config.json"), []byte(config))
			check(t, saved, "case."+sc.Name+".saved_input_ids")
		})
	}
}

// Encode from many goroutines at once (sharing the BPE cache) gives what one goroutine gives.
func TestConcurrentEncode(t *testing.T) {
	captions, _ := readCaptions(t)
	tk, err := FromBPEGz(bpeGz(t))
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]int, len(captions))
	for i, c := range captions {
		want[i] = tk.Encode(c)
	}
	fresh, err := FromBPEGz(bpeGz(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, len(captions))
	for g := range 8 {
		wg.Go(func() {
			for k := range captions {
				i := (k*7 + g*31) % len(captions)
				if got := fresh.Encode(captions[i]); !slices.Equal(got, want[i]) {
					errs <- fmt.Sprintf("goroutine %d, caption %q: %v, want %v", g, captions[i], got, want[i])
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Decode gives back the cleaned caption with one space between pieces, so encoding it again
// gives the same ids; captions made of lowercase words come back as they were.
func TestDecode(t *testing.T) {
	captions, _ := readCaptions(t)
	tk, err := FromBPEGz(bpeGz(t))
	if err != nil {
		t.Fatal(err)
	}
	plain := 0
	for _, c := range captions {
		if strings.Contains(strings.ToLower(c), "<|") {
			continue // a special-token string decodes to nothing (or "<| endoftext |>")
		}
		ids := tk.Encode(c)
		text := tk.Decode(ids)
		if again := tk.Encode(text); !slices.Equal(again, ids) {
			t.Errorf("caption %q decodes to %q, which encodes to %v, not %v", c, text, again, ids)
		}
		if strings.Trim(c, "abcdefghijklmnopqrstuvwxyz ") == "" {
			plain++
			if want := strings.Join(strings.Fields(c), " "); text != want {
				t.Errorf("caption %q decodes to %q, want %q", c, text, want)
			}
		}
	}
	if plain < 20 {
		t.Errorf("only %d captions of plain lowercase words; the corpus should hold more", plain)
	}
	if got := tk.Decode([]int{tk.BOS(), 320, 2368, tk.EOS(), tk.Pad()}); got != "a cat" {
		t.Errorf("Decode(bos, a, cat, eos, pad) = %q, want %q", got, "a cat")
	}
}

// BenchmarkEncode tokenizes the caption corpus with a warm BPE cache (the steady state of a
// training run); BenchmarkEncodeCold empties the cache first, so every piece goes through BPE.
func BenchmarkEncode(b *testing.B) {
	captions, _ := readCaptions(b)
	tk, err := FromBPEGz(bpeGz(b))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range captions {
		tk.Encode(c)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range captions {
			tk.Tokens(c, maxLen)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(captions)), "ns/caption")
}

func BenchmarkEncodeCold(b *testing.B) {
	captions, _ := readCaptions(b)
	tk, err := FromBPEGz(bpeGz(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tk.cache = newBPECache()
		for _, c := range captions {
			tk.Tokens(c, maxLen)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(captions)), "ns/caption")
}
