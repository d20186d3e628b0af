// Package slurm reads a task's place in a Slurm job from the SLURM_*
// variables srun sets: rank, world size, rank on the node, the node list
// (hostlist expressions such as `n[1-3,5]`), and the CUDA device to use.
package slurm

import (
	"fmt"
	"strconv"
	"strings"
)

// maxHosts bounds what a hostlist may expand to, so that a typo such as
// `n[1-99999999]` fails with an error instead of exhausting memory.
const maxHosts = 1 << 20

// ParseHostlist expands a Slurm hostlist expression into host names, in the
// order and with the duplicates written. Items are separated by commas
// outside brackets; a bracket holds comma-separated numbers or lo-hi ranges,
// zero-padded to the width of lo (`x[001-3]` → x001 x002 x003, `a[9-11]` →
// a9 a10 a11); several brackets in one item form a product, the first
// bracket varying slowest (`n[1-2]-ib[0-1]` → n1-ib0 n1-ib1 n2-ib0 n2-ib1).
func ParseHostlist(expr string) ([]string, error) {
	items, err := splitOutside(expr)
	if err != nil {
		return nil, fmt.Errorf("hostlist %q: %w", expr, err)
	}
	var hosts []string
	for _, item := range items {
		names, err := expandItem(item, maxHosts-len(hosts))
		if err != nil {
			return nil, fmt.Errorf("hostlist %q: item %q: %w", expr, item, err)
		}
		hosts = append(hosts, names...)
	}
	return hosts, nil
}

// splitOutside splits expr on the commas that are not inside brackets and
// checks that brackets are balanced and not nested.
func splitOutside(expr string) ([]string, error) {
	var items []string
	depth, start := 0, 0
	for i, c := range expr {
		switch c {
		case '[':
			if depth > 0 {
				return nil, fmt.Errorf("nested '[' at offset %d", i)
			}
			depth++
		case ']':
			if depth == 0 {
				return nil, fmt.Errorf("']' without '[' at offset %d", i)
			}
			depth--
		case ',':
			if depth == 0 {
				items = append(items, expr[start:i])
				start = i + 1
			}
		}
	}
	if depth > 0 {
		return nil, fmt.Errorf("'[' not closed")
	}
	items = append(items, expr[start:])
	for i, item := range items {
		if strings.TrimSpace(item) == "" {
			return nil, fmt.Errorf("empty item %d", i+1)
		}
	}
	return items, nil
}

// expandItem expands one comma-free item such as `n[1-2]-ib[0-1]` into at
// most limit names.
func expandItem(item string, limit int) ([]string, error) {
	names := []string{""}
	for item != "" {
		open := strings.IndexByte(item, '[')
		if open < 0 {
			names = appendSuffix(names, []string{item})
			break
		}
		prefix := item[:open]
		closeAt := strings.IndexByte(item, ']') // after open: splitOutside checked the nesting
		values, err := expandBracket(item[open+1 : closeAt])
		if err != nil {
			return nil, err
		}
		for i := range values {
			values[i] = prefix + values[i]
		}
		if len(names)*len(values) > limit {
			return nil, fmt.Errorf("expands to more than %d hosts", maxHosts)
		}
		names = appendSuffix(names, values)
		item = item[closeAt+1:]
	}
	return names, nil
}

// appendSuffix returns every name followed by every suffix, names varying
// slowest.
func appendSuffix(names, suffixes []string) []string {
	out := make([]string, 0, len(names)*len(suffixes))
	for _, n := range names {
		for _, s := range suffixes {
			out = append(out, n+s)
		}
	}
	return out
}

// expandBracket expands the inside of one bracket, e.g. `1-3,5` or `001-3`.
func expandBracket(body string) ([]string, error) {
	if body == "" {
		return nil, fmt.Errorf("empty brackets")
	}
	var out []string
	for part := range strings.SplitSeq(body, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isDigits(lo) || (isRange && !isDigits(hi)) {
			return nil, fmt.Errorf("bracket item %q: want N or lo-hi with decimal digits", part)
		}
		from, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bracket item %q: %w", part, err)
		}
		to := from
		if isRange {
			if to, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("bracket item %q: %w", part, err)
			}
			if to < from {
				return nil, fmt.Errorf("bracket item %q: range runs backwards", part)
			}
		}
		if to-from >= maxHosts-len(out) {
			return nil, fmt.Errorf("bracket item %q expands to more than %d hosts", part, maxHosts)
		}
		for v := from; v <= to; v++ {
			out = append(out, fmt.Sprintf("%0*d", len(lo), v))
		}
	}
	return out, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ParseTasksPerNode expands SLURM_TASKS_PER_NODE (`2(x3),1` → 2 2 2 1): the
// number of tasks on each node of the step, in node order.
func ParseTasksPerNode(expr string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(expr, ",") {
		count, reps := part, "1"
		if i := strings.IndexByte(part, '('); i >= 0 {
			if !strings.HasPrefix(part[i:], "(x") || !strings.HasSuffix(part, ")") {
				return nil, fmt.Errorf("tasks per node %q: item %q: want N or N(xM)", expr, part)
			}
			count, reps = part[:i], part[i+2:len(part)-1]
		}
		if !isDigits(count) || !isDigits(reps) {
			return nil, fmt.Errorf("tasks per node %q: item %q: want N or N(xM)", expr, part)
		}
		n, err1 := strconv.Atoi(count)
		m, err2 := strconv.Atoi(reps)
		if err1 != nil || err2 != nil || m < 1 || m > maxHosts-len(out) {
			return nil, fmt.Errorf("tasks per node %q: item %q: counts out of range", expr, part)
		}
		for range m {
			out = append(out, n)
		}
	}
	return out, nil
}
