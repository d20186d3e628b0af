// Command paritytable prints the rows that golden comparisons recorded (one
// JSON object a line, from ZD_PARITY) as a table, and exits non-zero when any failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/zerodiff/zerodiff/internal/golden"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: paritytable ROWS.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "paritytable: %v\n", err)
		os.Exit(1)
	}
	defer f.Close()
	var rows []golden.Row
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r golden.Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			fmt.Fprintf(os.Stderr, "paritytable: %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Op != rows[j].Op {
			return rows[i].Op < rows[j].Op
		}
		return rows[i].Tensor < rows[j].Tensor
	})
	fail := 0
	fmt.Printf("%-34s %-26s %-22s %10s %10s %9s %9s %s\n", "op", "tensor", "shape", "max_abs", "max_rel", "atol", "rtol", "result")
	for _, r := range rows {
		res := "pass"
		if !r.Pass {
			res = "FAIL"
			fail++
		}
		fmt.Printf("%-34s %-26s %-22s %10.2e %10.2e %9.1e %9.1e %s\n", r.Op, r.Tensor, r.Shape, r.MaxAbs, r.MaxRel, r.Abs, r.Rel, res)
	}
	fmt.Printf("%d passed, %d failed\n", len(rows)-fail, fail)
	if fail > 0 || len(rows) == 0 {
		os.Exit(1)
	}
}
