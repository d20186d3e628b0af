package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCommittedUpToDate checks that internal/cuda/kernels_gen.go is what
// kernelgen makes from the committed .cu files, without clang or a GPU
// (scripts/cuda-build-check.sh checks it through kernels/gen.sh too).
func TestCommittedUpToDate(t *testing.T) {
	got, err := generate("../kernels")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../kernels_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("internal/cuda/kernels_gen.go differs from what kernelgen makes from kernels/*.cu: run internal/cuda/kernels/gen.sh")
	}
}

// ptxSlot is the PTX parameter type each slot helper fills: the kernel reads
// a pointer as .u64, an int as .u32 (the low half of its 8-byte slot), a
// float as .f32 and a double as .f64.
var ptxSlot = map[string]string{"ptrArg": ".u64", "intArg": ".u32", "f32Arg": ".f32", "f64Arg": ".f64"}

var ptxParamRE = regexp.MustCompile(`\.param (\.[a-z0-9]+) `)

// TestLaunchersMatchPTX checks every launcher against the compiled kernel:
// the committed PTX must have an entry of that name whose parameters are, in
// order, the types the launcher's slots hold. A .cu edit without
// regenerating the PTX, or a parameter type the marshalling misreads, fails
// here rather than on a GPU.
func TestLaunchersMatchPTX(t *testing.T) {
	files, err := filepath.Glob("../kernels/*.cu")
	if err != nil || len(files) == 0 {
		t.Fatalf("no .cu files: %v", err)
	}
	count := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := parse(filepath.Base(f), string(src))
		if err != nil {
			t.Fatal(err)
		}
		ptx, err := os.ReadFile(strings.TrimSuffix(f, ".cu") + ".ptx")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			count++
			head := ".visible .entry " + k.name + "("
			i := bytes.Index(ptx, []byte(head))
			if i < 0 {
				t.Errorf("%s: no entry %s in the PTX", f, k.name)
				continue
			}
			decl := ptx[i+len(head):]
			decl = decl[:bytes.IndexByte(decl, ')')]
			var got []string
			for _, m := range ptxParamRE.FindAllSubmatch(decl, -1) {
				got = append(got, string(m[1]))
			}
			var want []string
			for _, p := range k.params {
				want = append(want, ptxSlot[p.slot])
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s: %s: PTX parameters %v, launcher slots %v", f, k.name, got, want)
			}
		}
	}
	if count == 0 {
		t.Fatal("no kernels found")
	}
}

func TestParse(t *testing.T) {
	src := `// KERNEL zd_commented(int n) is not a kernel.
/* nor KERNEL zd_blocked(int n) */
KERNEL zd_two_lines(float *y, const float *__restrict__ x,
                    int b, int type, double s,
                    float eps, unsigned short *col, const long long *ids) {
}
KERNEL zd_none() {}
`
	ks, err := parse("t.cu", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 2 || ks[0].name != "zd_two_lines" || ks[1].name != "zd_none" || len(ks[1].params) != 0 {
		t.Fatalf("kernels %+v", ks)
	}
	var got []string
	for _, p := range ks[0].params {
		got = append(got, p.name+" "+p.goType+" "+p.slot)
	}
	want := []string{
		"y cu.DevicePtr ptrArg", "x cu.DevicePtr ptrArg", "bArg int intArg", "typeArg int intArg",
		"s float64 f64Arg", "eps float32 f32Arg", "col cu.DevicePtr ptrArg", "ids cu.DevicePtr ptrArg",
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Fatalf("params\n got %q\nwant %q", got, want)
	}
	if c := ks[0].params[1].c; c != "const float *__restrict__ x" {
		t.Errorf("C declaration %q", c)
	}
	out, err := render(ks)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"func (b *Backend) zdTwoLines(grid int, y, x cu.DevicePtr, bArg, typeArg int, s float64, eps float32, col, ids cu.DevicePtr) {",
		`b.launch(kernelZdTwoLines, grid, []uint64{ptrArg(y), ptrArg(x), intArg(kernelZdTwoLines, "b", bArg), intArg(kernelZdTwoLines, "type", typeArg), f64Arg(s), f32Arg(eps), ptrArg(col), ptrArg(ids)})`,
		"func (b *Backend) zdNone(grid int) {",
		`kernelZdNone:     {file: "t.ptx", name: "zd_none"},`,
	} {
		if !strings.Contains(string(out), line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"KERNEL zd_k(long long n) {}", `kernels/t.cu: kernel zd_k: parameter n has type "long long", which kernelgen cannot pass`},
		{"KERNEL zd_k(unsigned n) {}", `parameter n has type "unsigned"`},
		{"KERNEL zd_k(float **p) {}", `parameter p has type "float **"`},
		{"KERNEL zd_k(char *p) {}", `parameter p has type "char *"`},
		{"KERNEL zd_k(float) {}", `parameter "float" has no type or no name`},
		{"KERNEL zd_k(float *y, int n[]) {}", `"n[]" is not a name`},
		{`extern "C" __global__ void zd_k(int n) {}`, "kernels/t.cu: declares a __global__ function without the KERNEL macro"},
		{"KERNEL zdK(int n) {}", "kernels/t.cu: kernel zdK: name kernels zd_ and lower-case words"},
		{"KERNEL zd_k__x(int n) {}", "kernel zd_k__x: name kernels zd_"},
		{"KERNEL zd_k(int b, int bArg) {}", "kernel zd_k: parameter bArg: give each parameter its own name"},
		{"KERNEL zd_k(int _) {}", "kernel zd_k: parameter _: give each parameter its own name"},
	} {
		_, err := parse("t.cu", tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := generate(dir); err == nil || !strings.Contains(err.Error(), "no .cu files") {
		t.Errorf("empty folder: error %v", err)
	}
	for name, src := range map[string]string{"a.cu": "KERNEL zd_k(int n) {}", "b.cu": "KERNEL zd_k(int n) {}"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := generate(dir)
	if err == nil || !strings.Contains(err.Error(), "kernels/b.cu: kernel zd_k has the launcher name zdK of a kernel in kernels/a.cu") {
		t.Errorf("duplicate kernel: error %v", err)
	}
}

// FuzzParse checks that parse refuses or accepts any text without a panic,
// and that what it accepts renders to Go that parses.
func FuzzParse(f *testing.F) {
	f.Add("KERNEL zd_act(float *y, const float *x, int act, int n) {}")
	f.Add("KERNEL zd_k(double b, float grid, int type) {}\nKERNEL zd_none() {}")
	f.Add("/* KERNEL zd_x(int n) */ KERNEL zd_a_1(int n) {} KERNEL zd_a1(int n) {}")
	f.Fuzz(func(t *testing.T, src string) {
		ks, err := parse("f.cu", src)
		if err != nil {
			return
		}
		if _, err := render(ks); err != nil {
			t.Fatalf("accepted %q but rendered Go that does not parse: %v", src, err)
		}
	})
}
