package slurm

import (
	"strings"
	"testing"
)

// FuzzParseHostlist: any expression either fails with an error or expands
// to at most maxHosts non-empty names without brackets or commas; one
// without brackets expands to its comma-separated items.
func FuzzParseHostlist(f *testing.F) {
	for _, seed := range []string{
		"n1", "x[001-3]", "a[9-11]", "n[1-2]-ib[0-1]", "a,b[1-2],c", "n[1-3,5]", "n[5,1-2]", "n[1,1],n1",
		"gpu[08-10]", "[1-2]x", "r[1-2]n[01-02].ib", "node-1.cluster",
		"", "a,,b", "n[1-2", "n1-2]", "n[[1]]", "n[]", "n[3-1]", "n[a-b]", "n[1-]", "n[-1]", "n[1-2-3]",
		"n[1-99999999]", "a[1-1024]b[1-1024]c[1-2]",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		hosts, err := ParseHostlist(expr)
		if err != nil {
			if hosts != nil {
				t.Errorf("ParseHostlist(%q) returned hosts with error %v", expr, err)
			}
			return
		}
		if len(hosts) == 0 || len(hosts) > maxHosts {
			t.Fatalf("ParseHostlist(%q): %d hosts", expr, len(hosts))
		}
		for _, h := range hosts {
			if h == "" || strings.ContainsAny(h, "[],") {
				t.Fatalf("ParseHostlist(%q): host %q", expr, h)
			}
		}
		if !strings.ContainsAny(expr, "[]") {
			if want := strings.Split(expr, ","); strings.Join(hosts, ",") != strings.Join(want, ",") {
				t.Errorf("ParseHostlist(%q) = %q, want %q", expr, hosts, want)
			}
		}
	})
}

// FuzzParseTasksPerNode: any SLURM_TASKS_PER_NODE value either fails or
// gives between 1 and maxHosts counts.
func FuzzParseTasksPerNode(f *testing.F) {
	for _, seed := range []string{"4", "2(x3),1", "1,3(x2)", "", "2(x)", "2(3)", "x", "2(x3", "2(x0)", "-1", "2,,1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		counts, err := ParseTasksPerNode(expr)
		if err == nil && (len(counts) == 0 || len(counts) > maxHosts) {
			t.Fatalf("ParseTasksPerNode(%q): %d counts", expr, len(counts))
		}
	})
}
