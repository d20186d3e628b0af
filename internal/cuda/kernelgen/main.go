// Command kernelgen writes the typed Go launchers of the CUDA backend's
// kernels: one method per kernel of internal/cuda/kernels/*.cu, with the
// kernel's own parameter list in Go types, so that a call with the wrong
// arguments fails to compile instead of failing on the GPU. It reads the
// signatures of the functions declared with the KERNEL macro
// (kernels/common.cuh), the way mumax3's cuda2go turns each .cu file into a
// Go wrapper. kernels/gen.sh runs it after compiling the PTX, and
// scripts/cuda-build-check.sh checks that the committed output is what it
// makes.
//
// Usage: go run ./internal/cuda/kernelgen -dir internal/cuda/kernels -o internal/cuda/kernels_gen.go
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	dir := flag.String("dir", "kernels", "folder of the .cu files")
	out := flag.String("o", "kernels_gen.go", "Go file to write")
	flag.Parse()
	src, err := generate(*dir)
	if err == nil {
		err = os.WriteFile(*out, src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kernelgen:", err)
		os.Exit(1)
	}
}
