package slurm

import (
	"slices"
	"strings"
	"testing"
)

func TestParseHostlist(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{"n1", []string{"n1"}},
		{"x[001-3]", []string{"x001", "x002", "x003"}},
		{"a[9-11]", []string{"a9", "a10", "a11"}},
		{"n[1-2]-ib[0-1]", []string{"n1-ib0", "n1-ib1", "n2-ib0", "n2-ib1"}},
		{"a,b[1-2],c", []string{"a", "b1", "b2", "c"}},
		{"n[1-3,5]", []string{"n1", "n2", "n3", "n5"}},
		{"n[5,1-2]", []string{"n5", "n1", "n2"}},
		{"n[1,1],n1", []string{"n1", "n1", "n1"}},
		{"gpu[08-10]", []string{"gpu08", "gpu09", "gpu10"}},
		{"[1-2]x", []string{"1x", "2x"}},
		{"r[1-2]n[01-02].ib", []string{"r1n01.ib", "r1n02.ib", "r2n01.ib", "r2n02.ib"}},
		{"node-1.cluster", []string{"node-1.cluster"}},
	}
	for _, tt := range tests {
		got, err := ParseHostlist(tt.expr)
		if err != nil {
			t.Errorf("ParseHostlist(%q): %v", tt.expr, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ParseHostlist(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

func TestParseHostlistErrors(t *testing.T) {
	tests := []struct {
		expr, wantErr string
	}{
		{"", "empty item 1"},
		{"a,,b", "empty item 2"},
		{"n[1-2", "not closed"},
		{"n1-2]", "without '['"},
		{"n[[1]]", "nested"},
		{"n[]", "empty brackets"},
		{"n[3-1]", "backwards"},
		{"n[a-b]", `"a-b"`},
		{"n[1-]", `"1-"`},
		{"n[-1]", `"-1"`},
		{"n[1-2-3]", `"1-2-3"`},
		{"n[1-99999999]", "more than"},
		{"a[1-1024]b[1-1024]c[1-2]", "more than"},
	}
	for _, tt := range tests {
		got, err := ParseHostlist(tt.expr)
		if err == nil {
			t.Errorf("ParseHostlist(%q) = %q, want an error containing %q", tt.expr, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseHostlist(%q) error %q, want it to contain %q", tt.expr, err, tt.wantErr)
		}
	}
}

func TestParseTasksPerNode(t *testing.T) {
	tests := []struct {
		expr string
		want []int
	}{
		{"4", []int{4}},
		{"2(x3),1", []int{2, 2, 2, 1}},
		{"1,3(x2)", []int{1, 3, 3}},
	}
	for _, tt := range tests {
		got, err := ParseTasksPerNode(tt.expr)
		if err != nil {
			t.Errorf("ParseTasksPerNode(%q): %v", tt.expr, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ParseTasksPerNode(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
	for _, bad := range []string{"", "2(x)", "2(3)", "x", "2(x3", "2(x0)", "-1", "2,,1"} {
		if got, err := ParseTasksPerNode(bad); err == nil {
			t.Errorf("ParseTasksPerNode(%q) = %v, want an error", bad, got)
		}
	}
}
