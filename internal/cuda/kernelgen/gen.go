package main

import (
	"bytes"
	"fmt"
	"go/format"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// kernel is one KERNEL function of a .cu file.
type kernel struct {
	file   string // the .cu file's base name
	name   string // the C name, zd_act
	params []param
}

// param is one kernel parameter and the Go type its launcher takes.
type param struct {
	c      string // as declared, spaces normalized: "const float *x"
	cName  string // the C name
	name   string // the Go name
	goType string // cu.DevicePtr, int, float32 or float64
	slot   string // the helper that puts it in its 8-byte slot
}

// The scalar C types a launcher passes, with their Go type and slot helper
// (internal/cuda/module.go). Pointers of any element type travel as
// cu.DevicePtr.
var scalars = map[string][2]string{
	"int":    {"int", "intArg"},
	"float":  {"float32", "f32Arg"},
	"double": {"float64", "f64Arg"},
}

// pointees are the element types a pointer parameter may have.
var pointees = map[string]bool{
	"float": true, "double": true, "int": true, "long long": true, "unsigned short": true,
}

var (
	kernelRE     = regexp.MustCompile(`\bKERNEL\s+([A-Za-z_][A-Za-z_0-9]*)\s*\(([^)]*)\)`)
	nameRE       = regexp.MustCompile(`^zd(_[a-z0-9]+)+$`)
	globalRE     = regexp.MustCompile(`\b__global__\b`)
	identRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
	lineCommRE   = regexp.MustCompile(`//[^\n]*`)
	blockCommRE  = regexp.MustCompile(`(?s)/\*.*?\*/`)
	whitespaceRE = regexp.MustCompile(`\s+`)
)

// generate reads the .cu files of dir and returns the Go source of their
// launchers.
func generate(dir string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.cu"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .cu files", dir)
	}
	var all []kernel
	seen := map[string]string{} // kernel launcher name → file
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ks, err := parse(filepath.Base(f), string(src))
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if other, ok := seen[camel(k.name)]; ok {
				return nil, fmt.Errorf("kernels/%s: kernel %s has the launcher name %s of a kernel in kernels/%s: rename one", k.file, k.name, camel(k.name), other)
			}
			seen[camel(k.name)] = k.file
		}
		all = append(all, ks...)
	}
	return render(all)
}

// parse returns the kernels of one .cu file, in the order they appear.
func parse(file, src string) ([]kernel, error) {
	src = lineCommRE.ReplaceAllString(blockCommRE.ReplaceAllString(src, " "), "")
	if globalRE.MatchString(src) {
		return nil, fmt.Errorf("kernels/%s: declares a __global__ function without the KERNEL macro; declare kernels with KERNEL (kernels/common.cuh) so kernelgen writes their launchers", file)
	}
	var ks []kernel
	for _, m := range kernelRE.FindAllStringSubmatch(src, -1) {
		k := kernel{file: file, name: m[1]}
		if !nameRE.MatchString(k.name) {
			return nil, fmt.Errorf("kernels/%s: kernel %s: name kernels zd_ and lower-case words joined by _ (zd_act_backward), which kernelgen turns into a launcher name (zdActBackward)", file, k.name)
		}
		names := map[string]bool{}
		list := strings.TrimSpace(m[2])
		if list == "" || list == "void" {
			ks = append(ks, k)
			continue
		}
		for _, raw := range strings.Split(list, ",") {
			p, err := parseParam(raw)
			if err != nil {
				return nil, fmt.Errorf("kernels/%s: kernel %s: %w", file, k.name, err)
			}
			if names[p.name] || p.name == "_" {
				return nil, fmt.Errorf("kernels/%s: kernel %s: parameter %s: give each parameter its own name (kernelgen renames b, grid and Go keywords with an Arg suffix)", file, k.name, p.cName)
			}
			names[p.name] = true
			k.params = append(k.params, p)
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// parseParam maps one C parameter declaration to its Go parameter.
func parseParam(raw string) (param, error) {
	c := strings.TrimSpace(whitespaceRE.ReplaceAllString(raw, " "))
	fields := strings.Fields(strings.ReplaceAll(c, "*", " * "))
	if len(fields) < 2 {
		return param{}, fmt.Errorf("parameter %q has no type or no name", c)
	}
	name := fields[len(fields)-1]
	if !identRE.MatchString(name) {
		return param{}, fmt.Errorf("parameter %q: %q is not a name", c, name)
	}
	stars := 0
	var base []string
	for _, f := range fields[:len(fields)-1] {
		switch f {
		case "*":
			stars++
		case "const", "__restrict__":
		default:
			base = append(base, f)
		}
	}
	typ := strings.Join(base, " ")
	p := param{c: c, cName: name, name: goName(name)}
	switch {
	case stars == 1 && pointees[typ]:
		p.goType, p.slot = "cu.DevicePtr", "ptrArg"
	case stars == 0 && scalars[typ] != [2]string{}:
		p.goType, p.slot = scalars[typ][0], scalars[typ][1]
	default:
		return param{}, fmt.Errorf("parameter %s has type %q, which kernelgen cannot pass (use a pointer to float, double, int, long long or unsigned short, or an int, float or double)", name, strings.TrimSpace(strings.TrimSuffix(c, name)))
	}
	return p, nil
}

// goName renames a C parameter whose name Go reserves, or that the launcher
// uses itself (the receiver b and grid).
func goName(c string) string {
	if token.IsKeyword(c) || c == "b" || c == "grid" {
		return c + "Arg"
	}
	return c
}

// camel turns a kernel's C name into its launcher's: zd_im2col_bf16 → zdIm2colBf16.
func camel(name string) string {
	parts := strings.Split(name, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// id is the name of a kernel's kernelID constant.
func id(k kernel) string {
	n := camel(k.name)
	return "kernel" + strings.ToUpper(n[:1]) + n[1:]
}

// render writes the Go file: the kernel table the backend loads kernels from
// lazily, and one launcher per kernel.
func render(ks []kernel) ([]byte, error) {
	var w bytes.Buffer
	fmt.Fprintf(&w, "// Code generated by internal/cuda/kernelgen from kernels/*.cu; DO NOT EDIT.\n\n")
	fmt.Fprintf(&w, "//go:build cuda\n\npackage cuda\n\n")
	if usesPointers(ks) {
		fmt.Fprintf(&w, "import \"gorgonia.org/cu\"\n\n")
	}
	fmt.Fprintf(&w, "// The kernels of kernels/*.cu, file by file in the order they appear.\nconst (\n")
	for i, k := range ks {
		if i == 0 {
			fmt.Fprintf(&w, "%s kernelID = iota\n", id(k))
			continue
		}
		fmt.Fprintf(&w, "%s\n", id(k))
	}
	fmt.Fprintf(&w, "numKernels\n)\n\n")
	fmt.Fprintf(&w, "// kernelTable names each kernel and the PTX file that holds it.\n")
	fmt.Fprintf(&w, "var kernelTable = [numKernels]kernelSpec{\n")
	for _, k := range ks {
		fmt.Fprintf(&w, "%s: {file: %q, name: %q},\n", id(k), strings.TrimSuffix(k.file, ".cu")+".ptx", k.name)
	}
	fmt.Fprintf(&w, "}\n")
	for _, k := range ks {
		cs := make([]string, len(k.params))
		for i, p := range k.params {
			cs[i] = p.c
		}
		fmt.Fprintf(&w, "\n// %s queues %s (kernels/%s) on grid blocks of blockSize threads:\n//\n//\t%s(%s)\n",
			camel(k.name), k.name, k.file, k.name, strings.Join(cs, ", "))
		fmt.Fprintf(&w, "func (b *Backend) %s(grid int%s) {\n", camel(k.name), paramList(k.params))
		fmt.Fprintf(&w, "b.launch(%s, grid, []uint64{", id(k))
		for i, p := range k.params {
			if i > 0 {
				fmt.Fprintf(&w, ", ")
			}
			if p.slot == "intArg" {
				fmt.Fprintf(&w, "intArg(%s, %q, %s)", id(k), p.cName, p.name)
				continue
			}
			fmt.Fprintf(&w, "%s(%s)", p.slot, p.name)
		}
		fmt.Fprintf(&w, "})\n}\n")
	}
	return format.Source(w.Bytes())
}

// paramList is ", y, x cu.DevicePtr, act, n int": the parameters after grid,
// runs of one type written once.
func paramList(ps []param) string {
	var s strings.Builder
	for i, p := range ps {
		s.WriteString(", ")
		s.WriteString(p.name)
		if i+1 == len(ps) || ps[i+1].goType != p.goType {
			s.WriteString(" " + p.goType)
		}
	}
	return s.String()
}

// usesPointers reports whether any launcher takes a device pointer, and so
// the generated file imports gorgonia.org/cu.
func usesPointers(ks []kernel) bool {
	for _, k := range ks {
		for _, p := range k.params {
			if p.slot == "ptrArg" {
				return true
			}
		}
	}
	return false
}
