package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// sample is one tensor of every dtype, a scalar and an empty tensor.
func sample() []Tensor {
	return []Tensor{
		{Name: "w.f32", DType: tensor.F32, Shape: []int{2, 3}, F32: []float32{1, -2, 3.25, 0, float32(math.Inf(1)), 1e-30}},
		{Name: "w.f16", DType: tensor.F16, Shape: []int{4}, F32: []float32{1, 0.1, 65504, 1e-6}},
		{Name: "w.bf16", DType: tensor.BF16, Shape: []int{2, 1, 2}, F32: []float32{1, 0.1, -3e38, 1e-40}},
		{Name: "ids", DType: tensor.I64, Shape: []int{3}, I64: []int64{0, -1, 1 << 62}},
		{Name: "scalar", DType: tensor.F32, Shape: []int{}, F32: []float32{7}},
		{Name: "empty", DType: tensor.F16, Shape: []int{0, 5}, F32: []float32{}},
	}
}

// rounded is what reading back a tensor stored as dt must give for v.
func rounded(v float32, dt tensor.DType) float32 {
	switch dt {
	case tensor.F16:
		return tensor.Float32FromF16(tensor.F16FromFloat32(v))
	case tensor.BF16:
		return tensor.Float32FromBF16(tensor.BF16FromFloat32(v))
	}
	return v
}

// checkSample verifies that f holds exactly sample()'s tensors and meta.
func checkSample(t *testing.T, f *File, meta map[string]string) {
	t.Helper()
	want := sample()
	var names []string
	for _, w := range want {
		names = append(names, w.Name)
	}
	if got := f.Names(); !slices.Equal(got, names) {
		t.Errorf("Names() = %v, want %v (data-offset order)", got, names)
	}
	if len(f.Metadata()) != len(meta) {
		t.Errorf("Metadata() = %v, want %v", f.Metadata(), meta)
	}
	for k, v := range meta {
		if f.Metadata()[k] != v {
			t.Errorf("Metadata()[%q] = %q, want %q", k, f.Metadata()[k], v)
		}
	}
	for _, w := range want {
		in, ok := f.Info(w.Name)
		if !ok {
			t.Fatalf("no tensor %q", w.Name)
		}
		if in.DType != w.DType || !tensor.SameShape(in.Shape, w.Shape) {
			t.Errorf("%s: Info = %s %v, want %s %v", w.Name, in.DType, in.Shape, w.DType, w.Shape)
		}
		raw, err := f.Bytes(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(raw)) != in.End-in.Begin || len(raw) != tensor.Numel(w.Shape)*w.DType.Size() {
			t.Errorf("%s: Bytes has %d bytes, range [%d, %d]", w.Name, len(raw), in.Begin, in.End)
		}
		if w.DType == tensor.I64 {
			got, err := f.Int64(w.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, w.I64) {
				t.Errorf("%s: Int64 = %v, want %v", w.Name, got, w.I64)
			}
			if _, err := f.Float32(w.Name); err == nil || !strings.Contains(err.Error(), "I64") {
				t.Errorf("%s: Float32 of an I64 tensor: err = %v", w.Name, err)
			}
			continue
		}
		got, err := f.Float32(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(w.F32) {
			t.Fatalf("%s: Float32 has %d values, want %d", w.Name, len(got), len(w.F32))
		}
		for i, v := range w.F32 {
			if math.Float32bits(got[i]) != math.Float32bits(rounded(v, w.DType)) {
				t.Errorf("%s[%d] = %v, want %v", w.Name, i, got[i], rounded(v, w.DType))
			}
		}
		if _, err := f.Int64(w.Name); err == nil {
			t.Errorf("%s: Int64 of a %s tensor succeeded", w.Name, w.DType)
		}
	}
	if _, err := f.Float32("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Float32 of a missing tensor: err = %v", err)
	}
}

// TestRoundTrip writes every dtype with WriteFile and reads it back through
// Open, FromBytes and ReadAll.
func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	meta := map[string]string{"format": "pt", "step": "12", "note": "ünïcode \"quoted\""}
	if err := WriteFile(path, sample(), meta); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries after WriteFile, want only the file (temporary file left behind?)", len(entries))
	}

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, f, meta)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Bytes("ids"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Bytes after Close: err = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(b); n%8 != 0 {
		t.Errorf("header length %d is not padded to a multiple of 8", n)
	}
	f, err = FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, f, meta)
	f, err = ReadAll(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, f, meta)
	if _, err := ReadAll(bytes.NewReader(b), int64(len(b)-1)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("ReadAll past its limit: err = %v", err)
	}
}

// TestWriteFileReplaces checks that WriteFile replaces an existing file and
// that a failing write leaves the old file and no temporary file.
func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []Tensor{{Name: "x", DType: tensor.F32, Shape: []int{3}, F32: []float32{1}}}
	if err := WriteFile(path, bad, nil); err == nil || !strings.Contains(err.Error(), "needs 3") {
		t.Fatalf("WriteFile with 1 value for shape [3]: err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("failed WriteFile changed the file to %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("failed WriteFile left %d entries in the folder", len(entries))
	}
	if err := WriteFile(path, sample(), nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkSample(t, f, nil)
}

// TestWriter streams a tensor larger than one conversion chunk and checks
// order, length and completeness errors.
func TestWriter(t *testing.T) {
	n := 3*writeChunk + 17
	big := make([]float32, n) // (n,)
	for i := range big {
		big[i] = float32(i) * 0.37
	}
	infos := []Info{
		{Name: "big", DType: tensor.F16, Shape: []int{n}},
		{Name: "raw", DType: tensor.I64, Shape: []int{2}},
		{Name: "last", DType: tensor.BF16, Shape: []int{1}},
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, infos, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write("raw", make([]byte, 16)); err == nil || !strings.Contains(err.Error(), `expected tensor "big"`) {
		t.Errorf("out-of-order Write: err = %v", err)
	}
	if err := w.WriteFloat32("big", big[1:]); err == nil {
		t.Error("WriteFloat32 with one value short succeeded")
	}
	if err := w.WriteFloat32("big", big); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFloat32("raw", []float32{1, 2}); err == nil {
		t.Error("WriteFloat32 into an I64 tensor succeeded")
	}
	if err := w.Write("raw", make([]byte, 15)); err == nil {
		t.Error("Write with 15 bytes for an I64 (2,) tensor succeeded")
	}
	if err := w.Write("raw", make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `"last"`) {
		t.Errorf("Close with a tensor missing: err = %v", err)
	}
	if err := w.WriteFloat32("last", []float32{2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("extra", nil); err == nil {
		t.Error("Write past the declared tensors succeeded")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	f, err := FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Float32("big")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range big {
		if got[i] != rounded(v, tensor.F16) {
			t.Fatalf("big[%d] = %v, want %v", i, got[i], rounded(v, tensor.F16))
		}
	}
	if f.Metadata()["k"] != "v" {
		t.Errorf("metadata = %v", f.Metadata())
	}

	for _, bad := range [][]Info{
		{{Name: "a", DType: tensor.F32}, {Name: "a", DType: tensor.F32}},
		{{Name: "__metadata__", DType: tensor.F32}},
		{{Name: "a", DType: tensor.F32, Shape: []int{-1}}},
		{{Name: "a", DType: tensor.F32, Shape: []int{1 << 40, 1 << 40}}},
		{{Name: "a", DType: tensor.DType(9)}},
	} {
		if _, err := NewWriter(&bytes.Buffer{}, bad, nil); err == nil {
			t.Errorf("NewWriter(%v) succeeded", bad)
		}
	}
}

// TestPythonFile reads a file written by the Python safetensors library
// (testdata/gen/gen_safetensors.py); each half tensor is checked against its
// F32 twin, torch's own widening.
func TestPythonFile(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "golden", "safetensors", "python.safetensors")
	f, err := Open(path)
	if err != nil {
		t.Fatalf("%v (regenerate with `make golden`)", err)
	}
	defer f.Close()
	shapes := map[string][]int{
		"f32": {2, 3, 4}, "f16": {5, 7}, "f16_as_f32": {5, 7}, "bf16": {3, 11}, "bf16_as_f32": {3, 11},
		"i64": {2, 3}, "scalar": {}, "empty": {0, 3},
	}
	if len(f.Names()) != len(shapes) {
		t.Errorf("Names() = %v, want the %d tensors of gen_safetensors.py", f.Names(), len(shapes))
	}
	for name, shape := range shapes {
		in, ok := f.Info(name)
		if !ok || !tensor.SameShape(in.Shape, shape) {
			t.Errorf("Info(%q) = %v, %v; want shape %v", name, in, ok, shape)
		}
	}
	for _, half := range []string{"f16", "bf16"} {
		got, err := f.Float32(half)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.Float32(half + "_as_f32")
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Errorf("%s[%d] = %v, torch widened it to %v", half, i, got[i], want[i])
			}
		}
	}
	ids, err := f.Int64("i64")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{0, 1, -1, 1 << 40, -(1 << 62), 7}; !slices.Equal(ids, want) {
		t.Errorf("i64 = %v, want %v (the values in gen_safetensors.py)", ids, want)
	}
	if s, err := f.Float32("scalar"); err != nil || len(s) != 1 || s[0] != 3.5 {
		t.Errorf("scalar = %v, %v; want [3.5]", s, err)
	}
	if e, err := f.Float32("empty"); err != nil || len(e) != 0 {
		t.Errorf("empty = %v, %v; want no values", e, err)
	}
	if !strings.Contains(f.Metadata()["versions"], "torch") {
		t.Errorf("metadata = %v, want the generator's versions", f.Metadata())
	}
}

// build assembles a file from a header length, a header and n data bytes.
func build(n uint64, header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, n)
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

// file assembles a well-formed-length file around header with data bytes.
func file(header string, data int) []byte { return build(uint64(len(header)), header, data) }

// malformed are files every reader must reject, each with a word of the
// error that must explain why.
var malformed = []struct {
	name string
	b    []byte
	want string
}{
	{"empty", nil, "shorter than the 8-byte"},
	{"truncated length", []byte{1, 0, 0}, "shorter than the 8-byte"},
	{"lying header length", build(1000, `{}`, 0), "exceeds the 2 bytes"},
	{"giant header length", build(1<<62, `{}`, 0), "100000000-byte limit"},
	{"header length wraps", build(math.MaxUint64, `{}`, 0), "limit"},
	{"invalid json", file(`{"a":`, 0), "header"},
	{"not an object", file(`[]`, 0), "start with '{'"},
	{"trailing json", file(`{} {}`, 0), "trailing"},
	{"invalid utf8", file("{\"\xff\":1}", 0), "UTF-8"},
	{"unknown dtype", file(`{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`, 8), `unsupported dtype "F64"`},
	{"negative dim", file(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "negative dimension"},
	{"shape mismatch", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "needs 8 bytes"},
	{"begin after end", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}`, 8), "after end"},
	{"negative offset", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 8), "negative data_offsets"},
	{"out of range", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), "beyond the 4-byte data section"},
	{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "overlaps"},
	{"hole", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, 12), "hole"},
	{"hole at start", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "hole at the start"},
	{"uncovered tail", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8), "cover 4 bytes of the 8-byte"},
	{"data without tensors", file(`{}`, 4), "cover 0 bytes of the 4-byte"},
	{"duplicate name", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), `duplicate tensor name "a"`},
	{"duplicate metadata", file(`{"__metadata__":{},"__metadata__":{}}`, 0), "duplicate __metadata__"},
	{"numel overflow", file(`{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}`, 0), "overflows"},
	{"size overflow", file(`{"a":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,0]}}`, 0), "overflows"},
	{"huge shape", file(`{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}`, 0), "beyond the 0-byte data section"},
	{"dim beyond int64", file(`{"a":{"dtype":"F32","shape":[1e30],"data_offsets":[0,4]}}`, 4), "shape [1e30] is not a list of integers"},
	{"fractional offset", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0.5,4]}}`, 4), "data_offsets [0.5,4] is not"},
	{"missing offsets", file(`{"a":{"dtype":"F32","shape":[1]}}`, 4), "needs dtype, shape and data_offsets"},
	{"field name case", file(`{"a":{"dtYpe":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), "needs dtype"},
	{"tensor not an object", file(`{"a":[0]}`, 0), "want an object"},
	{"null tensor", file(`{"a":null}`, 0), "needs dtype"},
	{"three offsets", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 4), "3 entries"},
	{"metadata not strings", file(`{"__metadata__":{"k":1}}`, 0), "__metadata__"},
	{"dtype not a string", file(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, 4), `tensor "a"`},
}

// TestMalformed checks that each malformed file is rejected with a clear
// error, through FromBytes and through Open (whose error names the file).
func TestMalformed(t *testing.T) {
	dir := t.TempDir()
	for _, c := range malformed {
		t.Run(c.name, func(t *testing.T) {
			if f, err := FromBytes(c.b); err == nil {
				t.Fatalf("FromBytes accepted it: %v", f.Names())
			} else if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("FromBytes error %q does not mention %q", err, c.want)
			}
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, c.b, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open accepted it")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open error %q does not name %s and mention %q", err, path, c.want)
			}
		})
	}
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); err == nil || !strings.Contains(err.Error(), "missing.safetensors") {
		t.Errorf("Open of a missing file: err = %v", err)
	}
}

// TestEdgeValid accepts the odd but valid layouts the reference library accepts.
func TestEdgeValid(t *testing.T) {
	for _, c := range []struct {
		name  string
		b     []byte
		names []string
	}{
		{"no tensors", file(`{}`, 0), nil},
		{"padded header", file(`{}      `, 0), nil},
		{"unknown info fields ignored", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}`, 4), []string{"a"}},
		{"empty tensors share an offset", file(`{"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"c":{"dtype":"I64","shape":[3,0],"data_offsets":[4,4]}}`, 4), []string{"a", "b", "c"}},
		{"zero dim beside a huge one", file(`{"a":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}}`, 0), []string{"a"}},
	} {
		f, err := FromBytes(c.b)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !slices.Equal(f.Names(), c.names) {
			t.Errorf("%s: Names() = %v, want %v", c.name, f.Names(), c.names)
		}
	}
}

// TestHugeClaimsDoNotAllocate checks that rejecting headers that claim
// enormous tensors costs memory in proportion to the input, not the claim.
func TestHugeClaimsDoNotAllocate(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, c := range malformed {
		FromBytes(c.b)
	}
	runtime.ReadMemStats(&after)
	// The inputs are a few kilobytes; 1 MiB leaves room for JSON decoding
	// overhead while catching any allocation sized by a claimed shape.
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("rejecting %d malformed files allocated %d bytes", len(malformed), got)
	}
}

// FuzzOpen feeds arbitrary bytes to FromBytes: it must never panic, and
// whatever it accepts must read back consistently and survive a rewrite.
func FuzzOpen(f *testing.F) {
	for _, c := range malformed {
		f.Add(c.b)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, []Info{{Name: "a", DType: tensor.F16, Shape: []int{2}}, {Name: "b", DType: tensor.I64, Shape: []int{1}}}, map[string]string{"k": "v"})
	if err != nil {
		f.Fatal(err)
	}
	if err := w.WriteFloat32("a", []float32{1, 2}); err != nil {
		f.Fatal(err)
	}
	if err := w.Write("b", make([]byte, 8)); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := FromBytes(b)
		if err != nil {
			return
		}
		var infos []Info
		var out bytes.Buffer
		for _, name := range file.Names() {
			in, ok := file.Info(name)
			if !ok {
				t.Fatalf("Names lists %q but Info does not know it", name)
			}
			infos = append(infos, in)
		}
		w, err := NewWriter(&out, infos, file.Metadata())
		if err != nil {
			t.Fatalf("rewriting an accepted file: %v", err)
		}
		for _, in := range infos {
			raw, err := file.Bytes(in.Name)
			if err != nil || len(raw) != in.Numel()*in.DType.Size() {
				t.Fatalf("%s: Bytes = %d bytes, %v", in.Name, len(raw), err)
			}
			if in.DType == tensor.I64 {
				v, err := file.Int64(in.Name)
				if err != nil || len(v) != in.Numel() {
					t.Fatalf("%s: Int64 = %d values, %v", in.Name, len(v), err)
				}
			} else {
				v, err := file.Float32(in.Name)
				if err != nil || len(v) != in.Numel() {
					t.Fatalf("%s: Float32 = %d values, %v", in.Name, len(v), err)
				}
			}
			if err := w.Write(in.Name, raw); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		again, err := FromBytes(out.Bytes())
		if err != nil {
			t.Fatalf("rewritten file rejected: %v", err)
		}
		if !slices.Equal(again.Names(), file.Names()) {
			t.Fatalf("rewritten names %v, want %v", again.Names(), file.Names())
		}
	})
}
